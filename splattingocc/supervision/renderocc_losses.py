"""RenderOcc's rendering losses (pmj110119/RenderOcc, ``mmdet3d/models/nerf/nerf_head.py``,
``NerfHead.compute_loss``), as ray loss terms of ``RaySupervision`` for ``RenderOccRenderer``.

Which rays count (upstream's label rule, ``NerfHead.forward``): those whose depth label d is in
``(0, max_depth]`` (max_depth 52 m: ``gt_depth[gt_depth > 52] = 0``, then ``mask = gt_depth >
0``), of positive ray weight. Each term is computed per sample over its rays and averaged over
the batch, as upstream (``losses[key] / density.shape[0]``). Ray weights w_r (adjacent frames,
``RaySupervision``) enter as weights of the per-ray terms; with all w_r = 1 (a single frame) every
term is upstream's.

============================ ====================== ============================================
term                          key (upstream's)       definition (pure functions below)
============================ ====================== ============================================
RenderOccSemanticLoss         loss_render_semantic   class-weighted CE of the composited logits
RenderOccDepthLoss            loss_render_depth      SILog of the rendered depth (+ 2e-7 r ...)
RenderOccEntropyLoss          loss_sdf_entropy       binary entropy of the last transmittance
RenderOccDistortionLoss       loss_sdf_distortion    Mip-NeRF 360's distortion on s, O(N)
============================ ====================== ============================================

Definitions:

* ``renderocc_semantic_ce``: torch's weighted cross entropy ``sum_r w_r cw[c_r] CE_r / sum_r w_r
  cw[c_r]`` of the composited logits ``sum_i w_i logits_i``; class weights ``1 / log(f_c +
  0.001)`` from upstream's Occ3D-nuScenes voxel counts f (:func:`renderocc_class_weights`).
* ``renderocc_silog``: ``d_r = log(depth_r + eps) - log(gt_r)``, ``sqrt(E[d^2] - lam E[d]^2)``
  (lam 0.85), means weighted by w_r; upstream adds 1e-7 inside its render (before multiplying by
  the radius) and 1e-7 again in the loss: eps = 1e-7 * radius + 1e-7.
* ``binary_entropy``: ``-(p log p + (1 - p) log(1 - p))`` of the transmittance after each ray's
  last sample, clamped to [1e-6, 1 - 1e-6], mean over rays.
* ``distortion_per_ray`` (Mip-NeRF 360, Barron et al. 2022, eq. 15, on sample midpoints m with
  one interval length ``delta`` for all samples, as upstream calls it)::

      L(w, m) = sum_{i,j} w_i w_j |m_i - m_j| + (1/3) sum_i w_i^2 delta

  in O(N) for midpoints sorted along the ray: ``sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i
  W_i - (wm)_i)`` with the exclusive prefix sums ``W_i = sum_{j<i} w_j`` and ``(wm)_i = sum_{j<i}
  w_j m_j``. Upstream takes m = s (the squashed distance), ``delta = 1 / n`` with n the number of
  composited samples of the whole sample (all its rays), and averages over the rays.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from ..registry import MODELS
from .functional import IGNORE, check_labels, zero_loss
from .ray_losses import RayLoss
from .rays import RayBatch

__all__ = ['RENDEROCC_CLASS_FREQUENCIES', 'renderocc_class_weights', 'renderocc_ray_mask',
           'renderocc_semantic_ce', 'renderocc_silog', 'binary_entropy', 'distortion_per_ray',
           'RenderOccSemanticLoss', 'RenderOccDepthLoss', 'RenderOccEntropyLoss',
           'RenderOccDistortionLoss']

#: upstream's Occ3D-nuScenes voxel counts per class, 17 occupied classes then free
#: (``nusc_class_frequencies``, nerf_head.py and render_occ.py)
RENDEROCC_CLASS_FREQUENCIES = (
    1163161, 2309034, 188743, 2997643, 20317180, 852476, 243808, 2457947, 497017, 2731022,
    7224789, 214411435, 5565043, 63191967, 76098082, 128860031, 141625221, 2307405309)


def renderocc_class_weights(frequencies: Sequence[float] = RENDEROCC_CLASS_FREQUENCIES,
                            num_classes: int = 17) -> list:
    """``1 / log(f_c + 0.001)`` for the first ``num_classes`` frequencies (upstream's
    ``balance_cls_weight=True``)."""
    return [1.0 / math.log(float(f) + 0.001) for f in list(frequencies)[:num_classes]]


# ------------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------------

def renderocc_ray_mask(depth: Tensor,  # [...]
                       weight: Optional[Tensor] = None,  # [...]
                       max_depth: float = 52.0) -> Tensor:
    """Rays that count: depth label in ``(0, max_depth]`` and weight > 0."""
    keep = (depth > 0) & (depth <= max_depth)
    if weight is not None:
        keep = keep & (weight.reshape(depth.shape) > 0)
    return keep


def renderocc_semantic_ce(logits: Tensor,  # [M, K]
                          labels: Tensor,  # [M]
                          class_weight: Optional[Tensor] = None,  # [K]
                          weight: Optional[Tensor] = None,  # [M]
                          ignore_index: int = IGNORE) -> Tensor:
    """Weighted cross entropy of composited logits (module docstring); 0 without a ray."""
    assert logits.dim() == 2 and labels.shape == logits.shape[:1], (logits.shape, labels.shape)
    M, K = logits.shape
    check_labels(labels, K, ignore_index, 'renderocc_semantic_ce')
    w = torch.ones(M, device=logits.device, dtype=logits.dtype) if weight is None else \
        weight.to(logits.dtype)
    valid = (labels != ignore_index) & (w > 0)
    if not bool(valid.any()):
        return zero_loss(logits)
    lab = labels[valid].long()
    w = w[valid]
    if class_weight is not None:
        assert class_weight.shape == (K, ), (class_weight.shape, K)
        w = w * class_weight.to(logits)[lab]
    nll = F.cross_entropy(logits[valid], lab, reduction='none')  # [V]
    return (w * nll).sum() / w.sum()


def renderocc_silog(pred: Tensor,  # [M]
                    target: Tensor,  # [M]
                    weight: Optional[Tensor] = None,  # [M]
                    lam: float = 0.85, eps: float = 0.0) -> Tensor:
    """Upstream's SILog: ``sqrt(E[d^2] - lam E[d]^2)``, ``d = log(pred + eps) - log(target)``,
    over rays with target > 0 and weight > 0 (weighted means); 0 without a ray. No clamp of
    ``pred`` and nothing added inside the root (``E[d^2] - lam E[d]^2 >= (1 - lam) E[d]^2 >=
    0``); a zero under the root (every d equal to 0) is guarded to keep the gradient finite."""
    assert pred.shape == target.shape and pred.dim() == 1, (pred.shape, target.shape)
    w = torch.ones_like(target) if weight is None else weight.to(target.dtype)
    valid = (target > 0) & (w > 0)
    if not bool(valid.any()):
        return zero_loss(pred)
    w = w[valid]
    d = torch.log(pred[valid] + eps) - torch.log(target[valid])
    mean_d2 = (w * d * d).sum() / w.sum()
    mean_d = (w * d).sum() / w.sum()
    return torch.sqrt((mean_d2 - lam * mean_d * mean_d).clamp_min(1e-12))


def binary_entropy(p: Tensor, eps: float = 1e-6) -> Tensor:
    """``-(p log p + (1 - p) log(1 - p))`` of ``p`` clamped to ``[eps, 1 - eps]`` (elementwise)."""
    p = p.clamp(eps, 1 - eps)
    return -(p * torch.log(p) + (1 - p) * torch.log(1 - p))


def distortion_per_ray(weights: Tensor,  # [R, S]
                       midpoints: Tensor,  # [R, S]
                       interval) -> Tensor:
    """Mip-NeRF 360's distortion loss of each ray in O(S) (module docstring).

    Args:
        weights: [R, S] sample weights (0 on padding).
        midpoints: [R, S] sample midpoints, non-decreasing along each ray; trailing padding
            (weight 0) may hold any finite value.
        interval: the samples' interval length: a number or [R, S].
    Returns:
        [R] ``sum_{i,j} w_i w_j |m_i - m_j| + (1/3) sum_i w_i^2 interval_i``.
    """
    assert weights.shape == midpoints.shape and weights.dim() == 2, (weights.shape,
                                                                     midpoints.shape)
    m = midpoints
    wm = weights * m
    w_before = torch.cumsum(weights, dim=-1) - weights  # [R, S] exclusive prefix sums
    wm_before = torch.cumsum(wm, dim=-1) - wm
    pairs = 2 * (weights * (m * w_before - wm_before)).sum(-1)  # [R]
    own = (weights.square() * interval).sum(-1) / 3  # [R]
    return pairs + own


# ------------------------------------------------------------------------------------------------
# the ray loss terms
# ------------------------------------------------------------------------------------------------

class _RenderOccTerm(RayLoss):
    """The rays of each sample that count (module docstring); ``per_sample`` averages a term
    over the batch."""

    def __init__(self, loss_weight: float, max_depth: float = 52.0):
        super().__init__()
        if not max_depth > 0:
            raise ValueError(f'{type(self).__name__}: max_depth must be > 0, got {max_depth}')
        self.loss_weight, self.max_depth = float(loss_weight), float(max_depth)

    @staticmethod
    def _extra(rays: RayBatch, key: str) -> Tensor:
        extras = getattr(rays.render, 'extras', None) or {}
        if key not in extras:
            raise ValueError(f"RenderOcc loss terms need the render's {key!r} "
                             "(RenderOutput.extras): render with RenderOccRenderer")
        return extras[key]

    def masks(self, rays: RayBatch):
        """(mask [B, M_b] of the rays that count, weights [B, M_b]); M_b rays per sample."""
        B = rays.depth.shape[0]
        w = rays.weight.reshape(B, -1)
        return renderocc_ray_mask(rays.depth.reshape(B, -1), w, self.max_depth), w

    def per_sample(self, values) -> Tensor:
        return self.loss_weight * torch.stack(list(values)).mean()


@MODELS.register_module()
class RenderOccSemanticLoss(_RenderOccTerm):
    """``loss_render_semantic``: ``renderocc_semantic_ce`` of the composited logits
    (``render.features``) with fixed class weights (default upstream's, 17 classes)."""

    def __init__(self, class_weight: Optional[Sequence[float]] = None, loss_weight: float = 1.0,
                 max_depth: float = 52.0):
        super().__init__(loss_weight, max_depth)
        cw = renderocc_class_weights() if class_weight is None else list(class_weight)
        self.register_buffer('class_weight', torch.tensor([float(c) for c in cw]),
                             persistent=False)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        mask, w = self.masks(rays)
        B = mask.shape[0]
        logits = rays.render.features.reshape(B, mask.shape[1], -1)  # [B, M_b, K]
        labels = rays.semantics.reshape(B, -1)
        return dict(loss_render_semantic=self.per_sample(
            renderocc_semantic_ce(logits[b], labels[b], self.class_weight, w[b] * mask[b])
            for b in range(B)))


@MODELS.register_module()
class RenderOccDepthLoss(_RenderOccTerm):
    """``loss_render_depth``: ``renderocc_silog`` of the rendered depth against the depth labels.

    Args:
        radius: the renderer's radius (upstream's 1e-7 is added before it scales the depth).
        source: which rendered depth: ``'render'`` (``render.depth``, upstream's ``r * sum_i w_i
            s_i`` in the squashed distance s) or ``'expected_z'`` (``sum_i w_i z_i``, the samples'
            camera depth as the labels, also unnormalised: not upstream's, a variant).
    """

    def __init__(self, lam: float = 0.85, loss_weight: float = 1.0, max_depth: float = 52.0,
                 radius: float = 39.0, source: str = 'render'):
        super().__init__(loss_weight, max_depth)
        if source not in ('render', 'expected_z'):
            raise ValueError(f"RenderOccDepthLoss: source must be 'render' or 'expected_z', got "
                             f'{source!r}')
        self.lam, self.eps, self.source = float(lam), 1e-7 * float(radius) + 1e-7, source

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        mask, w = self.masks(rays)
        B = mask.shape[0]
        pred = rays.render.depth if self.source == 'render' else \
            self._extra(rays, 'expected_z')
        pred = pred.reshape(B, -1)
        target = rays.depth.reshape(B, -1).to(pred.dtype)
        return dict(loss_render_depth=self.per_sample(
            renderocc_silog(pred[b], target[b], w[b] * mask[b], self.lam, self.eps)
            for b in range(B)))


@MODELS.register_module()
class RenderOccEntropyLoss(_RenderOccTerm):
    """``loss_sdf_entropy``: weighted mean over the rays of ``binary_entropy`` of the
    transmittance after each ray's last sample (``extras['last_transmittance']``)."""

    def __init__(self, loss_weight: float = 0.01, max_depth: float = 52.0, eps: float = 1e-6):
        super().__init__(loss_weight, max_depth)
        self.eps = float(eps)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        mask, w = self.masks(rays)
        B = mask.shape[0]
        last = self._extra(rays, 'last_transmittance').reshape(B, -1)
        ent = binary_entropy(last, self.eps)  # [B, M_b]
        out = []
        for b in range(B):
            wb = w[b] * mask[b]
            out.append((wb * ent[b]).sum() / wb.sum() if bool(mask[b].any())
                       else zero_loss(ent))
        return dict(loss_sdf_entropy=self.per_sample(out))


@MODELS.register_module()
class RenderOccDistortionLoss(_RenderOccTerm):
    """``loss_sdf_distortion``: weighted mean over the rays of ``distortion_per_ray`` of the
    composited samples' weights and squashed distances (``extras['weights']``, ``['s']``), with
    the interval ``1 / n`` (n: the composited samples of the sample's rays that count,
    ``extras['samples']``)."""

    def __init__(self, loss_weight: float = 0.01, max_depth: float = 52.0):
        super().__init__(loss_weight, max_depth)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        mask, w = self.masks(rays)
        B, M = mask.shape
        weights = self._extra(rays, 'weights')
        S = weights.shape[-1]
        weights = weights.reshape(B, M, S)
        s = self._extra(rays, 's').reshape(B, M, S)
        n = self._extra(rays, 'samples').reshape(B, M)
        out = []
        for b in range(B):
            if not bool(mask[b].any()):
                out.append(zero_loss(weights))
                continue
            n_b = (n[b] * mask[b]).sum().clamp_min(1)
            dist = distortion_per_ray(weights[b][mask[b]], s[b][mask[b]], 1.0 / n_b)
            wb = w[b][mask[b]]
            out.append((wb * dist).sum() / wb.sum())
        return dict(loss_sdf_distortion=self.per_sample(out))
