"""Losses of SplattingOcc: pure functions plus thin registered modules (``loss_weight`` x function).

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
* Free space along the rays (optional, ``loss_free_space``; a line-of-sight prior as in Urban
  Radiance Fields, Rematas et al. 2022, from the depth labels only): a labelled pixel with depth d
  says the camera ray is empty before its hit. S points per ray at camera depths drawn stratified
  in ``[near, far]`` and inside the predicted box get the Gaussians' density rho; the loss is the
  weighted mean of rho over those points, which is the BCE of the occupancy ``q = 1 - exp(-rho)``
  against "free" (``-log(1 - q) = rho``). ``far`` keeps the points off the hit surface: either
  ``(1 - rel_margin) d`` (for flat ground seen from height h a point at depth t lies
  ``h (1 - t / d)`` above it), or per class (``FreeSpaceLoss.flat_classes``): a fixed height above
  a ground hit, a fixed distance before any other hit.
* Surface points (optional, ``loss_surface``; the other half of the line-of-sight prior, still
  from the 2D labels only): the labelled hit itself, the pixel back-projected with its depth
  (pushed ``behind`` metres further along the ray), is occupied and has the pixel's class. With
  the Gaussians' density rho and class scores s there (``voxelizer.grid_gaussian_fields``: what
  the voxelizer computes at a voxel centre), ``loss_surface_occ`` is the weighted mean of
  ``-log(q + eps)``, ``q = 1 - exp(-rho)`` (BCE against "occupied") and ``loss_surface_sem`` the
  class-weighted CE ``-log(s[c] / sum(s) + eps)``. Rendering alone asks for an opaque PROJECTION
  of the Gaussians; the voxelizer thresholds the density at voxel centres, and this term asks
  for that quantity where LiDAR saw a surface.
* 3D occupancy (optional, ``use_3d_supervision``): with the voxelizer's density rho and class scores
  s on a grid, occupancy probability ``q = 1 - exp(-rho)``; ``loss_occ3d`` = mean BCE(q, occupied)
  and ``loss_sem3d`` = class-weighted mean over occupied voxels of ``-log(s[c] / sum(s) + eps)``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .registry import MODELS

IGNORE = 255


def _zero(t: Tensor) -> Tensor:
    """A zero that keeps ``t`` in the graph (for batches without any labelled ray)."""
    return t.sum() * 0.0


def _check_labels(labels: Tensor, num_classes: int, ignore_index: int, what: str) -> None:
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
        return _zero(pred)
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
        return _zero(pred)
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
    _check_labels(lab, num_classes, ignore_index, 'class_balanced_weights')
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
    _check_labels(labels, K, ignore_index, 'rendered_semantic_ce')
    w = torch.ones(M, device=probs.device, dtype=probs.dtype) if weight is None else \
        weight.to(probs.dtype)
    valid = (labels != ignore_index) & (w > 0)
    if not bool(valid.any()):
        return _zero(probs)
    lab = labels[valid].long()
    w = w[valid]
    if class_weight is not None:
        assert class_weight.shape == (K,), (class_weight.shape, K)
        w = w * class_weight.to(probs)[lab]
    p = probs[valid].gather(1, lab[:, None])[:, 0]  # [V]
    nll = -torch.log(p.clamp_min(0.0) + eps)
    denom = w.sum()
    if float(denom) <= 0:
        return _zero(probs)
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
        return _zero(depth_prob)
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
    _check_labels(labels, K, ignore_index, 'image_semantic_ce')
    if not bool((labels != ignore_index).any()):
        return _zero(logits)
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
        return _zero(mean_pos)
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
        return _zero(density), _zero(scores)
    occ = (sem != free_label) & use
    q = (1 - torch.exp(-density[use])).clamp(eps, 1 - eps)
    tgt = occ[use].to(q.dtype)
    bce = -(tgt * torch.log(q) + (1 - tgt) * torch.log(1 - q))
    loss_occ = bce.mean()
    if not bool(occ.any()):
        return loss_occ, _zero(scores)
    lab = sem[occ]
    _check_labels(lab, K, IGNORE, 'occupancy_3d_losses')
    if balance:
        pos = tgt > 0
        w = torch.ones_like(q[pos]) if class_weight is None else \
            class_weight.to(q)[sem[use][pos]]
        loss_pos = (w * bce[pos]).sum() / w.sum().clamp_min(eps)
        loss_neg = bce[~pos].mean() if bool((~pos).any()) else _zero(density)
        loss_occ = 0.5 * (loss_pos + loss_neg)
    s = scores[occ]  # [V, K]
    p = s / s.sum(-1, keepdim=True).clamp_min(eps)
    loss_sem = rendered_semantic_ce(p, lab, class_weight=class_weight, eps=eps)
    return loss_occ, loss_sem


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
        return _zero(density)
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
        return _zero(density), _zero(density)
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
        return loss_occ, _zero(density)
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


# ------------------------------------------------------------------ registered thin modules
@MODELS.register_module()
class SILogLoss(nn.Module):
    """``loss_weight * silog_loss(pred, target, weight, lam)``."""

    def __init__(self, lam: float = 0.85, loss_weight: float = 1.0, min_depth: float = 1e-3):
        super().__init__()
        self.lam, self.loss_weight, self.min_depth = lam, loss_weight, min_depth

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        return self.loss_weight * silog_loss(pred, target, weight, self.lam, self.min_depth)


@MODELS.register_module()
class L1DepthLoss(nn.Module):
    """``loss_weight * l1_depth_loss(pred, target, weight)``."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        return self.loss_weight * l1_depth_loss(pred, target, weight)


def _class_weight_setting(owner: str, class_weight) -> Tuple[Optional[str], Optional[Tensor]]:
    """(mode, fixed weights) of a ``class_weight`` setting: None, 'batch' or a list of numbers."""
    if isinstance(class_weight, str):
        if class_weight != 'batch':
            raise ValueError(f"{owner}.class_weight must be None, 'batch' or a list, got "
                             f'{class_weight!r}')
        return class_weight, None
    if class_weight is None:
        return None, None
    return None, torch.tensor([float(c) for c in class_weight])


@MODELS.register_module()
class RenderedCELoss(nn.Module):
    """Class-weighted CE on composited probabilities.

    Args:
        class_weight: None (uniform), a list of K weights, or 'batch' (computed per batch from the
            sampled rays' labels with ``class_balanced_weights(power)``).
        power: exponent of the batch inverse frequency.
        loss_weight: multiplier.
    """

    def __init__(self, class_weight: Union[None, str, Sequence[float]] = None, power: float = 0.5,
                 loss_weight: float = 1.0, eps: float = 1e-6):
        super().__init__()
        self.mode, fixed = _class_weight_setting('RenderedCELoss', class_weight)
        self.register_buffer('class_weight', fixed, persistent=False)
        self.power, self.loss_weight, self.eps = power, loss_weight, eps

    def forward(self, probs: Tensor, labels: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        cw = self.class_weight
        if self.mode == 'batch':
            cw = class_balanced_weights(labels, probs.shape[-1], self.power)
        return self.loss_weight * rendered_semantic_ce(probs, labels, cw, weight, eps=self.eps)


@MODELS.register_module()
class LSSDepthLoss(nn.Module):
    """``loss_weight * lss_depth_loss(depth_prob, target_bin)``."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, depth_prob: Tensor, target_bin: Tensor) -> Tensor:
        return self.loss_weight * lss_depth_loss(depth_prob, target_bin)


@MODELS.register_module()
class ImageSemanticLoss(nn.Module):
    """``loss_weight * image_semantic_ce(logits, labels, class weights)``.

    Args:
        class_weight: None (uniform), a list of K weights, or 'batch' (per batch from the
            labels with ``class_balanced_weights(power)``).
        power: exponent of the batch inverse frequency.
        loss_weight: multiplier.
    """

    def __init__(self, class_weight: Union[None, str, Sequence[float]] = 'batch',
                 power: float = 0.5, loss_weight: float = 1.0):
        super().__init__()
        self.mode, fixed = _class_weight_setting('ImageSemanticLoss', class_weight)
        self.register_buffer('class_weight', fixed, persistent=False)
        self.power, self.loss_weight = power, loss_weight

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        cw = self.class_weight
        if self.mode == 'batch':
            cw = class_balanced_weights(labels, logits.shape[2], self.power)
        return self.loss_weight * image_semantic_ce(logits, labels, cw)


@MODELS.register_module()
class FreeSpaceLoss(nn.Module):
    """``loss_weight * free_space_loss(...)``; also draws the points' camera depths.

    Where the points stop (the margin before the hit), per ray:

    * ``flat_classes=None``: at ``(1 - rel_margin) * depth`` for every ray;
    * with ``flat_classes`` (the ground classes) and the ray's world direction r (camera z = 1):
      a ray labelled with a flat class stops ``flat_margin`` metres ABOVE its hit (at camera depth
      ``depth - flat_margin / |r_z|``: the ground is taken as horizontal there), any other labelled
      ray ``margin`` metres before its hit along the ray (``depth - margin / |r|``), a ray without
      a class at the nearer of the two.

    Args:
        samples_per_ray: S points per labelled ray.
        near: closest camera depth sampled (m).
        rel_margin: see above (used without ``flat_classes``).
        flat_classes, flat_margin, margin: see above (metres).
        ignore_index: the "no class" label.
        window: the density at a point sums the Gaussians of the window^3 voxels nearest it
            (``voxelizer.grid_gaussian_density``; 2: the 8 voxels whose centres surround it).
        sky_rays: per camera and step, this many open-sky pixels (``detector.open_sky_mask``:
            above every LiDAR return of their column) are free from ``near`` to ``sky_depth``
            (loss key ``loss_free_sky``, same weight); 0 = off.
        sky_column_window, sky_margin_rows: see ``detector.open_sky_mask``.
        surface_samples: this many more points per ray, uniform in the last ``surface_range``
            metres (camera depth) before ``far``: where a surface's Gaussians spill over in front
            of it (0 = off).
    """

    def __init__(self, loss_weight: float = 1.0, samples_per_ray: int = 8, near: float = 0.5,
                 rel_margin: float = 0.25, flat_classes: Optional[Sequence[int]] = None,
                 flat_margin: float = 0.4, margin: float = 0.8, ignore_index: int = IGNORE,
                 window: int = 2, sky_rays: int = 0, sky_depth: float = 60.0,
                 sky_column_window: int = 5, sky_margin_rows: int = 1,
                 surface_samples: int = 0, surface_range: float = 2.0):
        super().__init__()
        if samples_per_ray < 1 or not 0 <= rel_margin < 1 or near < 0 or flat_margin < 0 \
                or margin < 0:
            raise ValueError(f'FreeSpaceLoss: needs samples_per_ray >= 1, 0 <= rel_margin < 1, '
                             f'near >= 0 and margins >= 0, got {samples_per_ray}, {rel_margin}, '
                             f'{near}, {flat_margin}, {margin}')
        self.loss_weight, self.samples_per_ray = loss_weight, int(samples_per_ray)
        self.near, self.rel_margin, self.window = float(near), float(rel_margin), int(window)
        self.flat_classes = None if flat_classes is None else [int(c) for c in flat_classes]
        self.flat_margin, self.margin = float(flat_margin), float(margin)
        self.ignore_index = int(ignore_index)
        if sky_rays < 0 or sky_depth <= near or sky_column_window < 1 or sky_margin_rows < 0:
            raise ValueError(f'FreeSpaceLoss: needs sky_rays >= 0, sky_depth > near, '
                             f'sky_column_window >= 1 and sky_margin_rows >= 0, got {sky_rays}, '
                             f'{sky_depth}, {sky_column_window}, {sky_margin_rows}')
        self.sky_rays, self.sky_depth = int(sky_rays), float(sky_depth)
        if surface_samples < 0 or surface_range <= 0:
            raise ValueError(f'FreeSpaceLoss: needs surface_samples >= 0 and surface_range > 0, '
                             f'got {surface_samples}, {surface_range}')
        self.surface_samples, self.surface_range = int(surface_samples), float(surface_range)
        self.sky_column_window, self.sky_margin_rows = int(sky_column_window), int(sky_margin_rows)

    def far_depths(self, depth: Tensor, semantics: Optional[Tensor] = None,
                   dirs: Optional[Tensor] = None) -> Tensor:
        """Camera depth where each ray's free points stop (rules in the class docstring).

        Args:
            depth: [...] labelled depths (camera z).
            semantics: [...] class labels (needed with ``flat_classes``).
            dirs: [..., 3] world ray directions with camera z = 1 (needed with ``flat_classes``).
        """
        if self.flat_classes is None:
            return depth * (1 - self.rel_margin)
        if semantics is None or dirs is None:
            raise ValueError('FreeSpaceLoss: flat_classes needs the rays\' classes and directions')
        down = (-dirs[..., 2]).clamp_min(1e-6)  # metres of descent per unit camera depth
        far_flat = torch.where(dirs[..., 2] < 0, depth - self.flat_margin / down,
                               torch.zeros_like(depth))  # a ray going up cannot hit the ground
        far_other = depth - self.margin / dirs.norm(dim=-1)
        flat = torch.isin(semantics.long(), torch.as_tensor(self.flat_classes,
                                                            device=semantics.device))
        none = semantics.long() == self.ignore_index
        return torch.where(flat, far_flat,
                           torch.where(none, torch.minimum(far_flat, far_other), far_other))

    def sample_depths(self, depth: Tensor, generator=None, far: Optional[Tensor] = None):
        """depth [...] -> (camera depths [..., S], valid [..., S]): stratified in
        [near, far] (``far``: from ``far_depths``; default ``(1 - rel_margin) depth``), one uniform
        draw per stratum (the stratum centres in eval mode); rays without depth or too short for
        the margin give no valid points. With ``surface_samples`` N, N more points per ray
        follow, stratified in ``[max(near, far - surface_range), far]``."""
        S = self.samples_per_ray
        if far is None:
            far = depth * (1 - self.rel_margin)  # [...]
        if self.training:
            u = torch.rand(depth.shape + (S, ), device=depth.device, dtype=depth.dtype,
                           generator=generator)
        else:
            u = torch.full(depth.shape + (S, ), 0.5, device=depth.device, dtype=depth.dtype)
        frac = (torch.arange(S, device=depth.device, dtype=depth.dtype) + u) / S
        z = self.near + (far - self.near)[..., None] * frac
        if self.surface_samples > 0:
            N = self.surface_samples
            if self.training:
                u = torch.rand(depth.shape + (N, ), device=depth.device, dtype=depth.dtype,
                               generator=generator)
            else:
                u = torch.full(depth.shape + (N, ), 0.5, device=depth.device, dtype=depth.dtype)
            start = (far - self.surface_range).clamp_min(self.near)
            frac = (torch.arange(N, device=depth.device, dtype=depth.dtype) + u) / N
            z = torch.cat([z, start[..., None] + (far - start)[..., None] * frac], -1)
        valid = ((depth > 0) & (far > self.near))[..., None].expand_as(z)
        return z, valid

    def forward(self, density: Tensor, valid: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        return self.loss_weight * free_space_loss(density, valid, weight)


@MODELS.register_module()
class SurfaceLoss(nn.Module):
    """``surface_losses`` at the labelled hit points, each weighted.

    Args:
        occ_weight, sem_weight: multipliers of the occupancy and semantic terms (0 drops a term).
        behind: the point is taken this far (m) beyond the hit along the ray (0: the hit).
        occ_target: None (BCE) or the density of the hinge (``surface_losses``).
        class_weight: semantic class weights: None, a list, or 'batch' (``class_balanced_weights``
            of this step's labels with ``power``).
        window: Gaussians of the window^3 nearest voxels (as ``FreeSpaceLoss.window``).
        occ_class_weight: weight the occupancy term's rays by the class weights too
            (``surface_losses``); needs ``class_weight``.
    """

    def __init__(self, occ_weight: float = 1.0, sem_weight: float = 1.0, behind: float = 0.0,
                 class_weight: Union[None, str, Sequence[float]] = 'batch', power: float = 0.5,
                 occ_target: Optional[float] = None, window: int = 2,
                 occ_class_weight: bool = False,
                 ignore_index: int = IGNORE, eps: float = 1e-6):
        super().__init__()
        if occ_weight < 0 or sem_weight < 0 or behind < 0:
            raise ValueError(f'SurfaceLoss: occ_weight, sem_weight and behind must be >= 0, got '
                             f'{occ_weight}, {sem_weight}, {behind}')
        self.mode, fixed = _class_weight_setting('SurfaceLoss', class_weight)
        self.register_buffer('class_weight', fixed, persistent=False)
        self.occ_weight, self.sem_weight, self.behind = occ_weight, sem_weight, float(behind)
        self.power, self.window, self.ignore_index, self.eps = power, int(window), ignore_index, eps
        self.occ_target = None if occ_target is None else float(occ_target)
        if occ_class_weight and class_weight is None:
            raise ValueError('SurfaceLoss: occ_class_weight=True needs class_weight '
                             "('batch' or a list of weights)")
        self.occ_class_weight = bool(occ_class_weight)

    def forward(self, density: Tensor, scores: Optional[Tensor], labels: Optional[Tensor],
                valid: Tensor, weight: Optional[Tensor] = None) -> Dict[str, Tensor]:
        cw = self.class_weight
        if self.mode == 'batch' and scores is not None:
            lab = labels[valid] if labels is not None else labels
            cw = class_balanced_weights(lab, scores.shape[-1], self.power, self.ignore_index)
        occ, sem = surface_losses(density, scores if self.sem_weight > 0 else None, labels, valid,
                                  weight, cw, self.ignore_index, self.eps, self.occ_target,
                                  self.occ_class_weight)
        out = {'loss_surface_occ': self.occ_weight * occ}
        if self.sem_weight > 0:
            out['loss_surface_sem'] = self.sem_weight * sem
        return out


@MODELS.register_module()
class OpacitySparsityLoss(nn.Module):
    """``loss_weight * mean(opacities)`` (an L1 prior towards empty space)."""

    def __init__(self, loss_weight: float = 0.1):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, opacities: Tensor) -> Tensor:
        return self.loss_weight * opacities.mean()


@MODELS.register_module()
class OpacityEntropyLoss(nn.Module):
    """``loss_weight * opacity_entropy(opacities)``."""

    def __init__(self, loss_weight: float = 0.01):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, opacities: Tensor) -> Tensor:
        return self.loss_weight * opacity_entropy(opacities)


@MODELS.register_module()
class RayDistortionLoss(nn.Module):
    """``loss_weight * ray_position_variance(...)`` (the model renders the positions)."""

    def __init__(self, loss_weight: float = 0.01, min_alpha: float = 1e-3):
        super().__init__()
        self.loss_weight, self.min_alpha = loss_weight, min_alpha

    def forward(self, mean_pos: Tensor, mean_sq: Tensor, alpha: Tensor,
                weight: Optional[Tensor] = None) -> Tensor:
        return self.loss_weight * ray_position_variance(mean_pos, mean_sq, alpha, weight,
                                                        self.min_alpha)


@MODELS.register_module()
class Occupancy3DLoss(nn.Module):
    """``occupancy_3d_losses`` with weights for its occupancy and semantic terms.

    Args:
        occ_weight, sem_weight: multipliers of the BCE and CE terms.
        class_weight: None, a list of K weights, or 'batch' (from the occupied voxels' labels).
        power: exponent of the batch inverse frequency.
        balance: balanced, class-weighted occupancy BCE (``occupancy_3d_losses``).
    """

    def __init__(self, occ_weight: float = 1.0, sem_weight: float = 1.0,
                 class_weight: Union[None, str, Sequence[float]] = None, power: float = 0.5,
                 balance: bool = False):
        super().__init__()
        self.occ_weight, self.sem_weight, self.power = occ_weight, sem_weight, power
        self.balance = bool(balance)
        self.mode = class_weight if isinstance(class_weight, str) else None
        self.register_buffer('class_weight', None if class_weight is None or self.mode else
                             torch.tensor([float(c) for c in class_weight]), persistent=False)

    def forward(self, density: Tensor, scores: Tensor, semantics: Tensor, free_label: int,
                mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        cw = self.class_weight
        if self.mode == 'batch':
            sem = semantics.long()
            occ = (sem != free_label) & (sem != IGNORE)
            cw = class_balanced_weights(sem[occ], scores.shape[-1], self.power)
        loss_occ, loss_sem = occupancy_3d_losses(density, scores, semantics, free_label, mask, cw,
                                                 balance=self.balance)
        return self.occ_weight * loss_occ, self.sem_weight * loss_sem
