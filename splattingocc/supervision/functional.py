"""The loss terms of SplattingOcc as pure functions (the supervision modules call them).

Definitions (M labelled rays, per-ray weights w_r >= 0, default 1; a weight 0 ignores a ray):

* SILog depth (Eigen et al. 2014, in the form of BTS / AdaBins, lambda = 0.85 as there, without
  their factor 10: scale with ``loss_weight``)::

      d_r  = log(max(pred_r, min_depth)) - log(gt_r)              on rays with gt_r > 0
      E[x] = sum_r w_r x_r / sum_r w_r
      SILog = sqrt(max(E[d^2] - lambda * E[d]^2, 0) + eps)         eps = 1e-6 keeps the gradient
                                                                   finite at a perfect prediction
* L1 depth: E[|pred - gt|] on rays with gt > 0.
* Rendered semantic cross entropy: the renderer composites per-Gaussian class PROBABILITIES
  (softmax of the logits) with the blending weights, giving ``p_r = sum_i T_i alpha_i softmax(f_i)``
  whose entries sum to the ray's alpha (<= 1). The loss is ``-log(p_r[c_r] + eps)`` with class
  weights ``cw``, averaged as torch's weighted CE: ``sum_r w_r cw[c_r] l_r / sum_r w_r cw[c_r]``.
  It is not renormalised by alpha on purpose: a ray that hits nothing (alpha -> 0) is penalised,
  so the semantic loss also asks for opaque surfaces where LiDAR saw one. Label 255 is ignored.
* Class-balanced weights: from the config (a list) or from label counts ``n_c`` as
  ``(n_total / (K_present * n_c)) ** power`` for present classes (absent classes get 0 weight,
  which does not matter as they have no rays); power 1 = inverse frequency, 0.5 = its square root.
* LSS depth loss (BEVDepth's supervision of the lifted depth distribution): per feature cell with a
  label, ``-log(p[bin(gt)] + eps)`` averaged over those cells (the categorical CE; BEVDepth uses
  BCE on the same one-hot target, which for a softmax differs only in the negatives' terms).
* Image semantic loss (optional, with ``LSSViewTransform(semantic_classes=K)``): the per-cell
  class logits of the lift, bilinearly upsampled to the label map's size (pixel centres at +0.5,
  ``align_corners=False``), scored by torch's class-weighted cross entropy against the 2D semantic
  labels (255 ignored), the class weights as above. A 2D label on the image branch, as the LSS
  depth loss is.
* Opacity sparsity (L1): mean opacity over Gaussians, a prior for the regions no ray labels (the
  sky above the LiDAR's reach, space behind surfaces): without it their opacity is whatever the
  network extrapolates, and the voxelizer turns it into false occupancy.
* Opacity entropy: mean over Gaussians of ``-(o log o + (1 - o) log(1 - o))``, pushing opacities
  to 0 or 1.
* Ray distortion (optional; a splatting-friendly form of Mip-NeRF 360's distortion loss): the
  renderer also composites each Gaussian's (or sample's) world position p and |p|^2, giving per
  ray the blending-weight distribution's variance ``E[|p|^2] - |E[p]|^2`` (m^2, weights normalised
  by alpha); its weighted mean over labelled rays is small when a ray's contributions come from
  one place (a sharp surface) rather than spread along it.
* Free space along the rays (``FreeSpaceLoss``; a line-of-sight prior as in Urban Radiance
  Fields, Rematas et al. 2022, from the depth labels only): a labelled pixel with depth d says
  the camera ray is empty before its hit. S points per ray at camera depths drawn stratified in
  ``[near, far]`` and inside the field's box get its density rho (``SceneField.density_at``);
  the loss is the weighted mean of rho over those points, which is the BCE of the occupancy
  ``q = 1 - exp(-rho)`` against "free" (``-log(1 - q) = rho``). ``far`` keeps the points off the
  hit surface: either ``(1 - rel_margin) d`` (for flat ground seen from height h a point at depth
  t lies ``h (1 - t / d)`` above it), or per class (``FreeSpaceLoss.flat_classes``): a fixed
  height above a ground hit, a fixed distance before any other hit.
* Surface points (``SurfaceLoss``; the other half of the line-of-sight prior, still
  from the 2D labels only): the labelled hit itself, the pixel back-projected with its depth
  (pushed ``behind`` metres further along the ray), is occupied and has the pixel's class. With
  the field's density rho and class scores s there (``SceneField.fields_at``: for Gaussians what
  the voxelizer computes at a voxel centre), ``loss_surface_occ`` is the weighted mean of
  ``-log(q + eps)``, ``q = 1 - exp(-rho)`` (BCE against "occupied") and ``loss_surface_sem`` the
  class-weighted CE ``-log(s[c] / sum(s) + eps)``. Rendering alone asks for an opaque PROJECTION
  of the Gaussians; the read-out thresholds the density at voxel centres, and this term asks
  for that quantity where LiDAR saw a surface.
* 3D occupancy (``VolumeSupervision``): with the field's density rho and class scores
  s on a grid, occupancy probability ``q = 1 - exp(-rho)``; ``loss_occ3d`` = mean BCE(q, occupied)
  and ``loss_sem3d`` = class-weighted mean over occupied voxels of ``-log(s[c] / sum(s) + eps)``.
* 3D semantic cross entropy (``VolumeSupervision`` with ``SemanticVoxelCELoss``; the 3D baselines
  of BEVStereo-occ and RenderOcc predict every voxel's class, free included): with class scores
  s over all K = num_classes labels (free among them), ``loss_voxel_ce`` = the class-weighted mean
  over the scored voxels of ``-log(s[c] / sum(s) + eps)`` (torch's weighted CE convention:
  ``sum_v cw[c_v] l_v / sum_v cw[c_v]``). It sets no threshold: the read-out takes the argmax.
* Render consistency (``RenderConsistencySupervision``; GaussRender, Chambon et al., ICCV 2025):
  the predicted and the ground-truth occupancy, both as Gaussians at voxel centres, rendered into
  the same views. Per view image (P pixels), with the renders' class features f (composited
  class probabilities, not normalised), alpha a and alpha-normalised depth d of the renderer::

      sem_p   = f_p + (1 - a_p) e_free            the background (what no Gaussian covers) is
                                                  free space, as GaussRender's free-class
                                                  background colour
      D_p     = a_p d_p                           accumulated (not normalised) depth
      l_sem   = mean over p, k of |sem_pred - sem_gt|            (L1 over P x K)
      l_depth = mean over p with D_gt,p > min_depth of |D_pred - D_gt| / depth_norm

  each averaged over the view images (``l_depth`` over the images with a depth pixel).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F


IGNORE = 255


def zero_loss(t: Tensor) -> Tensor:
    """A zero that keeps ``t`` in the graph (for batches without any labelled ray)."""
    return t.sum() * 0.0


def check_labels(labels: Tensor, num_classes: int, ignore_index: int, what: str) -> None:
    valid = labels != ignore_index
    if valid.any():
        lo, hi = int(labels[valid].min()), int(labels[valid].max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f'{what}: class index {hi if hi >= num_classes else lo} is outside 0..'
                f'{num_classes - 1} (ignore index {ignore_index}); check the label files and the '
                'num_classes of the model config')


def silog_loss(pred: Tensor,  # [M]
               target: Tensor,  # [M]
               weight: Optional[Tensor] = None,  # [M]
               lam: float = 0.85, min_depth: float = 1e-3, eps: float = 1e-6) -> Tensor:
    """Scale-invariant log depth loss (definition in the module docstring).

    Args:
        pred: [M] predicted depth (metres).
        target: [M] label depth, 0 = no label.
        weight: [M] per-ray weights (None = 1).
    Returns:
        scalar.
    """
    assert pred.shape == target.shape and pred.dim() == 1, (pred.shape, target.shape)
    w = torch.ones_like(target) if weight is None else weight.to(target.dtype)
    assert w.shape == target.shape, (w.shape, target.shape)
    valid = (target > 0) & (w > 0)
    if not bool(valid.any()):
        return zero_loss(pred)
    w = w[valid]
    d = torch.log(pred[valid].clamp_min(min_depth)) - torch.log(target[valid])
    wsum = w.sum()
    mean_d2 = (w * d * d).sum() / wsum
    mean_d = (w * d).sum() / wsum
    return torch.sqrt((mean_d2 - lam * mean_d * mean_d).clamp_min(0.0) + eps)


def l1_depth_loss(pred: Tensor,  # [M]
                  target: Tensor,  # [M]
                  weight: Optional[Tensor] = None,  # [M]
                  ) -> Tensor:
    """Weighted mean |pred - target| over rays with target > 0.

    Args:
        pred: [M], target: [M] (0 = no label), weight: [M] or None.
    """
    assert pred.shape == target.shape and pred.dim() == 1, (pred.shape, target.shape)
    w = torch.ones_like(target) if weight is None else weight.to(target.dtype)
    valid = (target > 0) & (w > 0)
    if not bool(valid.any()):
        return zero_loss(pred)
    w = w[valid]
    return (w * (pred[valid] - target[valid]).abs()).sum() / w.sum()


def class_balanced_weights(labels: Tensor,  # [...]
                           num_classes: int, power: float = 1.0,
                           ignore_index: int = IGNORE) -> Tensor:
    """(n_total / (K_present * n_c)) ** power per class from label counts; 0 for absent classes.

    Args:
        labels: [...] integer labels (ignore_index skipped).
    Returns:
        [num_classes] float weights.
    """
    lab = labels[labels != ignore_index].long()
    check_labels(lab, num_classes, ignore_index, 'class_balanced_weights')
    counts = torch.bincount(lab, minlength=num_classes).float()  # [K]
    present = counts > 0
    w = torch.zeros(num_classes, device=labels.device)
    if bool(present.any()):
        w[present] = (counts.sum() / (present.sum() * counts[present])) ** power
    return w


def rendered_semantic_ce(probs: Tensor,  # [M, K]
                         labels: Tensor,  # [M]
                         class_weight: Optional[Tensor] = None,  # [K]
                         weight: Optional[Tensor] = None,  # [M]
                         ignore_index: int = IGNORE, eps: float = 1e-6) -> Tensor:
    """Cross entropy on alpha-composited class probabilities (module docstring).

    Args:
        probs: [M, K] composited probabilities (entries sum to the ray's alpha).
        labels: [M] class indices, ignore_index = no label.
        class_weight: [K] or None.
        weight: [M] per-ray weights or None.
    Returns:
        scalar.
    """
    assert probs.dim() == 2 and labels.shape == probs.shape[:1], (probs.shape, labels.shape)
    M, K = probs.shape
    check_labels(labels, K, ignore_index, 'rendered_semantic_ce')
    w = torch.ones(M, device=probs.device, dtype=probs.dtype) if weight is None else \
        weight.to(probs.dtype)
    valid = (labels != ignore_index) & (w > 0)
    if not bool(valid.any()):
        return zero_loss(probs)
    lab = labels[valid].long()
    w = w[valid]
    if class_weight is not None:
        assert class_weight.shape == (K,), (class_weight.shape, K)
        w = w * class_weight.to(probs)[lab]
    p = probs[valid].gather(1, lab[:, None])[:, 0]  # [V]
    nll = -torch.log(p.clamp_min(0.0) + eps)
    denom = w.sum()
    if float(denom) <= 0:
        return zero_loss(probs)
    return (w * nll).sum() / denom


def lss_depth_loss(depth_prob: Tensor,  # [B, N, D, Hf, Wf]
                   target_bin: Tensor,  # [B, N, Hf, Wf]
                   eps: float = 1e-6) -> Tensor:
    """Categorical CE of the lifted depth distribution against the label's bin (-1 = no label).

    Args:
        depth_prob: [B, N, D, Hf, Wf] softmax over D.
        target_bin: [B, N, Hf, Wf] long bin index or -1.
    """
    assert depth_prob.dim() == 5, depth_prob.shape
    assert target_bin.shape == depth_prob.shape[:2] + depth_prob.shape[3:], \
        (target_bin.shape, depth_prob.shape)
    valid = target_bin >= 0
    if not bool(valid.any()):
        return zero_loss(depth_prob)
    p = depth_prob.permute(0, 1, 3, 4, 2)[valid]  # [V, D]
    p = p.gather(1, target_bin[valid][:, None])[:, 0]  # [V]
    return -torch.log(p + eps).mean()


def image_semantic_ce(logits: Tensor,  # [B, N, K, Hf, Wf]
                      labels: Tensor,  # [B, N, h, w]
                      class_weight: Optional[Tensor] = None,  # [K]
                      ignore_index: int = IGNORE) -> Tensor:
    """Class-weighted CE of upsampled per-cell logits against label maps (module docstring)."""
    assert logits.dim() == 5, logits.shape
    assert labels.dim() == 4 and labels.shape[:2] == logits.shape[:2], \
        (labels.shape, logits.shape)
    K = logits.shape[2]
    check_labels(labels, K, ignore_index, 'image_semantic_ce')
    if not bool((labels != ignore_index).any()):
        return zero_loss(logits)
    up = F.interpolate(logits.flatten(0, 1), size=tuple(labels.shape[-2:]), mode='bilinear',
                       align_corners=False)  # [B*N, K, h, w]
    cw = None if class_weight is None else class_weight.to(up)
    return F.cross_entropy(up, labels.flatten(0, 1).long(), weight=cw, ignore_index=ignore_index)


def opacity_entropy(opacities: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean binary entropy of the opacities [...] (0 when every opacity is 0 or 1)."""
    o = opacities.clamp(eps, 1 - eps)
    return -(o * torch.log(o) + (1 - o) * torch.log(1 - o)).mean()


def ray_position_variance(mean_pos: Tensor,  # [M, 3]
                          mean_sq: Tensor,  # [M]
                          alpha: Tensor,  # [M]
                          weight: Optional[Tensor] = None,  # [M]
                          min_alpha: float = 1e-3) -> Tensor:
    """Weighted mean over rays of the variance of the contributing positions (module docstring).

    Args:
        mean_pos: [M, 3] composited positions sum_i w_i p_i (not normalised).
        mean_sq: [M] composited squared norms sum_i w_i |p_i|^2 (not normalised).
        alpha: [M] sum_i w_i.
        weight: [M] per-ray weights or None; rays with alpha < min_alpha are skipped.
    """
    assert mean_pos.dim() == 2 and mean_pos.shape[1] == 3, mean_pos.shape
    assert mean_sq.shape == alpha.shape == mean_pos.shape[:1], (mean_sq.shape, alpha.shape)
    w = torch.ones_like(alpha) if weight is None else weight.to(alpha.dtype)
    valid = (alpha >= min_alpha) & (w > 0)
    if not bool(valid.any()):
        return zero_loss(mean_pos)
    a = alpha[valid]
    var = mean_sq[valid] / a - (mean_pos[valid] / a[:, None]).square().sum(-1)
    w = w[valid]
    return (w * var.clamp_min(0.0)).sum() / w.sum()


def occupancy_3d_losses(density: Tensor,  # [B, X, Y, Z]
                        scores: Tensor,  # [B, X, Y, Z, K]
                        semantics: Tensor,  # [B, X, Y, Z]
                        free_label: int,
                        mask: Optional[Tensor] = None,  # [B, X, Y, Z]
                        class_weight: Optional[Tensor] = None,  # [K]
                        eps: float = 1e-6,
                        balance: bool = False) -> Tuple[Tensor, Tensor]:
    """3D supervision of voxelized Gaussians: (occupancy BCE, semantic CE) as in the docstring.

    ``balance``: the occupancy BCE is the mean of two halves, the mean over free voxels and the
    mean over occupied voxels weighted by ``class_weight`` of their label (uniform when None),
    instead of one mean over all voxels (where rare classes' voxels weigh next to nothing).

    Args:
        density: [B, X, Y, Z] voxelizer density (>= 0).
        scores: [B, X, Y, Z, K] class scores; K = classes without free (free_label == K) or with.
        semantics: [B, X, Y, Z] ground truth labels, free_label = free, 255 = ignore.
        mask: optional [B, X, Y, Z] voxels to use (e.g. mask_camera); None = all.
        class_weight: [K] or None.
    """
    assert density.dim() == 4 and scores.shape[:4] == density.shape, (density.shape, scores.shape)
    assert semantics.shape == density.shape, (semantics.shape, density.shape)
    K = scores.shape[-1]
    sem = semantics.long()
    use = sem != IGNORE
    if mask is not None:
        assert mask.shape == density.shape, (mask.shape, density.shape)
        use = use & mask.bool()
    if not bool(use.any()):
        return zero_loss(density), zero_loss(scores)
    occ = (sem != free_label) & use
    q = (1 - torch.exp(-density[use])).clamp(eps, 1 - eps)
    tgt = occ[use].to(q.dtype)
    bce = -(tgt * torch.log(q) + (1 - tgt) * torch.log(1 - q))
    loss_occ = bce.mean()
    if not bool(occ.any()):
        return loss_occ, zero_loss(scores)
    lab = sem[occ]
    check_labels(lab, K, IGNORE, 'occupancy_3d_losses')
    if balance:
        pos = tgt > 0
        w = torch.ones_like(q[pos]) if class_weight is None else \
            class_weight.to(q)[sem[use][pos]]
        loss_pos = (w * bce[pos]).sum() / w.sum().clamp_min(eps)
        loss_neg = bce[~pos].mean() if bool((~pos).any()) else zero_loss(density)
        loss_occ = 0.5 * (loss_pos + loss_neg)
    s = scores[occ]  # [V, K]
    p = s / s.sum(-1, keepdim=True).clamp_min(eps)
    loss_sem = rendered_semantic_ce(p, lab, class_weight=class_weight, eps=eps)
    return loss_occ, loss_sem


def voxel_semantic_ce(scores: Tensor,  # [B, X, Y, Z, K]
                      semantics: Tensor,  # [B, X, Y, Z]
                      mask: Optional[Tensor] = None,  # [B, X, Y, Z]
                      class_weight: Optional[Tensor] = None,  # [K]
                      eps: float = 1e-6) -> Tensor:
    """Cross entropy of every scored voxel's class, free included (module docstring).

    Args:
        scores: [B, X, Y, Z, K] non-negative class scores over all K labels (any scale).
        semantics: [B, X, Y, Z] labels in 0..K-1, ``IGNORE`` = not scored.
        mask: [B, X, Y, Z] voxels to score (e.g. mask_camera); None = all.
        class_weight: [K] or None (uniform).
    Returns:
        scalar.
    """
    assert scores.dim() == 5 and semantics.shape == scores.shape[:4], (scores.shape,
                                                                      semantics.shape)
    K = scores.shape[-1]
    use = semantics.long() != IGNORE
    if mask is not None:
        assert mask.shape == semantics.shape, (mask.shape, semantics.shape)
        use = use & mask.bool()
    if not bool(use.any()):
        return zero_loss(scores)
    lab = semantics.long()[use]  # [M]
    check_labels(lab, K, IGNORE, 'voxel_semantic_ce')
    # rendered_semantic_ce of the normalised scores, with only the label's probability formed:
    # no [M, K] copies of the grid's scores (forward or backward), the same numbers
    flat = scores.reshape(-1, K)  # [V, K]
    idx = use.reshape(-1).nonzero().squeeze(1)  # [M]
    p = flat[idx, lab] / flat.sum(-1).index_select(0, idx).clamp_min(eps)  # [M]
    w = torch.ones_like(p) if class_weight is None else class_weight.to(p)[lab]  # [M]
    denom = w.sum()
    if float(denom) <= 0:
        return zero_loss(scores)
    return (w * -torch.log(p.clamp_min(0.0) + eps)).sum() / denom


def free_space_loss(density: Tensor,  # [M, S]
                    valid: Tensor,  # [M, S]
                    weight: Optional[Tensor] = None,  # [M]
                    ) -> Tensor:
    """Weighted mean density of the free-space points (module docstring)."""
    assert density.shape == valid.shape and density.dim() == 2, (density.shape, valid.shape)
    w = valid.to(density.dtype)
    if weight is not None:
        w = w * weight.to(density.dtype)[:, None]
    denom = w.sum()
    if float(denom) <= 0:
        return zero_loss(density)
    return (w * density).sum() / denom


def surface_losses(density: Tensor,  # [M]
                   scores: Optional[Tensor],  # [M, K]
                   labels: Optional[Tensor],  # [M]
                   valid: Tensor,  # [M]
                   weight: Optional[Tensor] = None,  # [M]
                   class_weight: Optional[Tensor] = None,  # [K]
                   ignore_index: int = IGNORE, eps: float = 1e-6,
                   occ_target: Optional[float] = None,
                   occ_class_weight: bool = False) -> Tuple[Tensor, Tensor]:
    """(occupancy term, semantic term) at the labelled hit points (module docstring).

    Args:
        density: [M] density rho at each ray's hit point.
        scores: [M, K] class scores there (sum = rho), or None (no semantic term: returns 0).
        labels: [M] the rays' classes (ignore_index = none), needed with ``scores``.
        valid: [M] bool, rays with a hit point (labelled depth, inside the box).
        weight: [M] per-ray weights or None.
        occ_target: None: the occupancy term is the BCE ``-log(1 - exp(-rho) + eps)``; a number
            t: the hinge ``max(t - rho, 0)`` (the free-space term's linear penalty mirrored:
            bounded pressure, nothing once the density reaches t).
    """
    assert density.dim() == 1 and valid.shape == density.shape, (density.shape, valid.shape)
    w = valid.to(density.dtype)
    if weight is not None:
        w = w * weight.to(density.dtype)
    denom = w.sum()
    if float(denom) <= 0:
        return zero_loss(density), zero_loss(density)
    if occ_target is None:
        per_ray = -torch.log(1 - torch.exp(-density) + eps)
    else:
        per_ray = (occ_target - density).clamp_min(0)
    if occ_class_weight:
        if labels is None or class_weight is None:
            raise ValueError('surface_losses: occ_class_weight=True needs labels and class_weight')
        lab = labels.long()
        labelled = valid & (lab != ignore_index)
        cw_ray = class_weight.to(density.dtype)[torch.where(labelled, lab, torch.zeros_like(lab))]
        w_occ = w * torch.where(labelled, cw_ray, torch.ones_like(cw_ray))
        denom_occ = w_occ.sum()
        loss_occ = (w_occ * per_ray).sum() / denom_occ.clamp_min(eps)
    else:
        loss_occ = (w * per_ray).sum() / denom
    if scores is None:
        return loss_occ, zero_loss(density)
    assert labels is not None and scores.shape[:1] == density.shape, (scores.shape, density.shape)
    lab = torch.where(valid, labels.long(), torch.full_like(labels.long(), ignore_index))
    p = scores / scores.sum(-1, keepdim=True).clamp_min(eps)
    loss_sem = rendered_semantic_ce(p, lab, class_weight, w, ignore_index=ignore_index, eps=eps)
    return loss_occ, loss_sem


def auxiliary_ray_weights(frame_offset: Tensor,  # [B, C]
                          sem_labels: Tensor,  # [B, C, P]
                          aux_weight: float = 0.3,
                          dynamic_classes: Sequence[int] = (),
                          ignore_index: int = IGNORE) -> Tensor:
    """Per-ray weights for current (1) and adjacent-frame (``aux_weight``) cameras (RenderOcc).

    Rays of adjacent frames whose label is a dynamic class (objects that move between frames)
    get weight 0 for every loss term.

    Args:
        frame_offset: [B, C] 0 for the current frame's cameras, +-k for adjacent frames.
        sem_labels: [B, C, P] semantic labels of the sampled rays (ignore_index = none).
    Returns:
        [B, C, P] float weights.
    """
    assert frame_offset.dim() == 2 and sem_labels.shape[:2] == frame_offset.shape, \
        (frame_offset.shape, sem_labels.shape)
    aux = (frame_offset != 0)[..., None].expand_as(sem_labels)  # [B, C, P]
    w = torch.where(aux, torch.full(sem_labels.shape, float(aux_weight), device=sem_labels.device),
                    torch.ones(sem_labels.shape, device=sem_labels.device))
    if len(dynamic_classes):
        dyn = torch.isin(sem_labels.long(),
                         torch.as_tensor(list(dynamic_classes), device=sem_labels.device))
        w = torch.where(aux & dyn, torch.zeros_like(w), w)
    return w


def with_background(features: Tensor,  # [..., K]
                    alpha: Tensor,  # [...]
                    channel: int) -> Tensor:
    """``features`` with the untouched transmittance ``1 - alpha`` added to channel ``channel``
    (a render over a background of that class, module docstring: render consistency).

    Args:
        features: [..., K] composited features; alpha: [...] accumulated alpha in [0, 1].
    Returns:
        [..., K], same dtype.
    """
    assert features.shape[:-1] == alpha.shape, (features.shape, alpha.shape)
    K = features.shape[-1]
    if not 0 <= channel < K:
        raise ValueError(f'with_background: channel {channel} is not in [0, {K})')
    onehot = F.one_hot(torch.tensor(channel, device=features.device), K).to(features.dtype)
    return features + (1.0 - alpha)[..., None] * onehot


def render_consistency_l1(pred_sem: Tensor,  # [I, P, K]
                          pred_depth: Tensor,  # [I, P]
                          gt_sem: Tensor,  # [I, P, K]
                          gt_depth: Tensor,  # [I, P]
                          depth_norm: float, min_depth: float = 0.1) -> Tuple[Tensor, Tensor]:
    """(semantic L1, depth L1) of a predicted render against a ground-truth render (module
    docstring: render consistency), each the mean over the I view images of a per-image mean.

    Args:
        pred_sem, gt_sem: [I, P, K] class features with the background in the free channel
            (``with_background``).
        pred_depth, gt_depth: [I, P] accumulated depth (alpha times the normalised depth).
        depth_norm: metres that count 1 in the depth term; min_depth: a pixel scores depth only
            where the ground-truth render's accumulated depth exceeds it.
    Returns:
        (l_sem, l_depth) scalars; l_depth is a graph-connected 0 without any such pixel.
    """
    assert pred_sem.dim() == 3 and pred_sem.shape == gt_sem.shape, (pred_sem.shape, gt_sem.shape)
    assert pred_depth.shape == pred_sem.shape[:2] == gt_depth.shape, \
        (pred_depth.shape, gt_depth.shape, pred_sem.shape)
    if not depth_norm > 0:
        raise ValueError(f'render_consistency_l1: depth_norm must be > 0, got {depth_norm}')
    l_sem = (pred_sem - gt_sem.to(pred_sem)).abs().mean(dim=(1, 2)).mean()
    valid = gt_depth > min_depth  # [I, P]
    n = valid.sum(1)  # [I]
    has = n > 0
    if not bool(has.any()):
        return l_sem, zero_loss(pred_depth)
    err = torch.where(valid, (pred_depth - gt_depth.to(pred_depth)).abs(),
                      torch.zeros_like(pred_depth)) / float(depth_norm)  # [I, P]
    per_image = err.sum(1)[has] / n[has].to(err.dtype)  # [I']
    return l_sem, per_image.mean()


__all__ = [
    'IGNORE', 'silog_loss', 'l1_depth_loss', 'class_balanced_weights', 'rendered_semantic_ce',
    'lss_depth_loss', 'image_semantic_ce', 'opacity_entropy', 'ray_position_variance',
    'occupancy_3d_losses', 'voxel_semantic_ce', 'free_space_loss', 'surface_losses',
    'auxiliary_ray_weights', 'zero_loss', 'check_labels', 'with_background',
    'render_consistency_l1'
]
