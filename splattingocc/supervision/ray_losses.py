"""The loss terms of ``RaySupervision``: each takes the step's ``RayBatch`` and returns its terms.

Every term is ``loss_weight`` times a pure function of ``functional.py`` (definitions there).
``score(...)`` is that product on plain tensors; ``forward(rays)`` picks the tensors from the ray
batch. A new ray loss is one more class here (or anywhere, registered in ``MODELS``) and one
more entry in the config's ``losses`` list.

=================== ============================ ==============================================
term                 keys                         reads
=================== ============================ ==============================================
SILogLoss            loss_depth                   rendered depth vs depth labels (in range)
L1DepthLoss          loss_depth                   rendered depth vs depth labels (in range)
RenderedCELoss       loss_sem                     composited class probabilities vs classes
RayDistortionLoss    loss_distortion              composited positions (asks for them)
FreeSpaceLoss        loss_free_space (+ sky)      field density before every labelled hit
SurfaceLoss          loss_surface_occ / _sem      field density and classes at the hits
=================== ============================ ==============================================
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..fields import SceneField
from ..geometry import backproject, in_box
from ..registry import MODELS
from ..structures import Cameras
from .base import class_weight_setting
from .functional import (IGNORE, class_balanced_weights, free_space_loss, l1_depth_loss,
                         ray_position_variance, rendered_semantic_ce, silog_loss, surface_losses)
from .pixels import open_sky_mask, sample_mask_pixels
from .rays import RayBatch


class RayLoss(nn.Module):
    """Base class of the ray loss terms (module docstring).

    Attributes:
        needs_positions: the render must also composite the elements' world positions and
            their squared norms (``RayBatch.positions`` / ``position_sq``).
    """

    needs_positions = False

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        raise NotImplementedError


@MODELS.register_module()
class SILogLoss(RayLoss):
    """``loss_depth = loss_weight * silog_loss(rendered depth, depth labels, ray weights, lam)``."""

    def __init__(self, lam: float = 0.85, loss_weight: float = 1.0, min_depth: float = 1e-3):
        super().__init__()
        self.lam, self.loss_weight, self.min_depth = lam, loss_weight, min_depth

    def score(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """pred, target (0 = none), weight: [M]."""
        return self.loss_weight * silog_loss(pred, target, weight, self.lam, self.min_depth)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        return dict(loss_depth=self.score(rays.render.depth.reshape(-1), rays.depth.reshape(-1),
                                          rays.weight))


@MODELS.register_module()
class L1DepthLoss(RayLoss):
    """``loss_depth = loss_weight * l1_depth_loss(rendered depth, depth labels, ray weights)``."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def score(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """pred, target (0 = none), weight: [M]."""
        return self.loss_weight * l1_depth_loss(pred, target, weight)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        return dict(loss_depth=self.score(rays.render.depth.reshape(-1), rays.depth.reshape(-1),
                                          rays.weight))


@MODELS.register_module()
class RenderedCELoss(RayLoss):
    """``loss_sem``: class-weighted CE on the composited class probabilities.

    Args:
        class_weight: None (uniform), a list of K weights, or 'batch' (computed per batch from the
            sampled rays' labels with ``class_balanced_weights(power)``).
        power: exponent of the batch inverse frequency.
        loss_weight: multiplier.
    """

    def __init__(self, class_weight: Union[None, str, Sequence[float]] = None, power: float = 0.5,
                 loss_weight: float = 1.0, eps: float = 1e-6):
        super().__init__()
        self.mode, fixed = class_weight_setting('RenderedCELoss', class_weight)
        self.register_buffer('class_weight', fixed, persistent=False)
        self.power, self.loss_weight, self.eps = power, loss_weight, eps

    def score(self, probs: Tensor, labels: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """probs [M, K], labels [M] (``IGNORE`` = none), weight [M]."""
        cw = self.class_weight
        if self.mode == 'batch':
            cw = class_balanced_weights(labels, probs.shape[-1], self.power)
        return self.loss_weight * rendered_semantic_ce(probs, labels, cw, weight, eps=self.eps)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        return dict(loss_sem=self.score(rays.class_probs, rays.semantics.reshape(-1),
                                        rays.weight))


@MODELS.register_module()
class RayDistortionLoss(RayLoss):
    """``loss_distortion = loss_weight * ray_position_variance(...)`` over the labelled rays (the
    render composites the elements' positions for it)."""

    needs_positions = True

    def __init__(self, loss_weight: float = 0.01, min_alpha: float = 1e-3):
        super().__init__()
        self.loss_weight, self.min_alpha = loss_weight, min_alpha

    def score(self, mean_pos: Tensor, mean_sq: Tensor, alpha: Tensor,
              weight: Optional[Tensor] = None) -> Tensor:
        """mean_pos [M, 3], mean_sq [M], alpha [M], weight [M] (see ``ray_position_variance``)."""
        return self.loss_weight * ray_position_variance(mean_pos, mean_sq, alpha, weight,
                                                        self.min_alpha)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        weight = rays.weight * (rays.depth.reshape(-1) > 0)
        return dict(loss_distortion=self.score(rays.positions, rays.position_sq,
                                               rays.render.alpha.reshape(-1), weight))


@MODELS.register_module()
class FreeSpaceLoss(RayLoss):
    """``loss_free_space``: the field's density at points before each labelled hit, pushed to 0
    (``free_space_loss``); also draws the points' camera depths.

    Where the points stop (the margin before the hit), per ray:

    * ``flat_classes=None``: at ``(1 - rel_margin) * depth`` for every ray;
    * with ``flat_classes`` (the ground classes) and the ray's world direction r (camera z = 1):
      a ray labelled with a flat class stops ``flat_margin`` metres ABOVE its hit (at camera depth
      ``depth - flat_margin / |r_z|``: the ground is taken as horizontal there), any other labelled
      ray ``margin`` metres before its hit along the ray (``depth - margin / |r|``), a ray without
      a class at the nearer of the two.

    Every labelled ray counts, also one whose hit is outside the label range (its path inside the
    box is still empty): the term reads ``RayBatch.all_depth``. Points outside the field's box
    are skipped.

    Args:
        samples_per_ray: S points per labelled ray.
        near: closest camera depth sampled (m).
        rel_margin: see above (used without ``flat_classes``).
        flat_classes, flat_margin, margin: see above (metres).
        ignore_index: the "no class" label.
        sky_rays: per camera and step, this many open-sky pixels (``pixels.open_sky_mask``:
            above every LiDAR return of their column) are free from ``near`` to ``sky_depth``
            (loss key ``loss_free_sky``, same weight; adjacent frames' cameras weigh
            ``aux_weight``); 0 = off.
        sky_column_window, sky_margin_rows: see ``pixels.open_sky_mask``.
        surface_samples: this many more points per ray, uniform in the last ``surface_range``
            metres (camera depth) before ``far``: where a surface's Gaussians spill over in front
            of it (0 = off).
    """

    def __init__(self, loss_weight: float = 1.0, samples_per_ray: int = 8, near: float = 0.5,
                 rel_margin: float = 0.25, flat_classes: Optional[Sequence[int]] = None,
                 flat_margin: float = 0.4, margin: float = 0.8, ignore_index: int = IGNORE,
                 sky_rays: int = 0, sky_depth: float = 60.0, sky_column_window: int = 5,
                 sky_margin_rows: int = 1, surface_samples: int = 0,
                 surface_range: float = 2.0):
        super().__init__()
        if samples_per_ray < 1 or not 0 <= rel_margin < 1 or near < 0 or flat_margin < 0 \
                or margin < 0:
            raise ValueError(f'FreeSpaceLoss: needs samples_per_ray >= 1, 0 <= rel_margin < 1, '
                             f'near >= 0 and margins >= 0, got {samples_per_ray}, {rel_margin}, '
                             f'{near}, {flat_margin}, {margin}')
        self.loss_weight, self.samples_per_ray = loss_weight, int(samples_per_ray)
        self.near, self.rel_margin = float(near), float(rel_margin)
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

    def score(self, density: Tensor, valid: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """density [M, S], valid [M, S], weight [M] (``free_space_loss``)."""
        return self.loss_weight * free_space_loss(density, valid, weight)

    def along_rays(self, field: SceneField, cams: Cameras, pixels: Tensor, depth: Tensor,
                   weight: Tensor, semantics: Optional[Tensor] = None,
                   far: Optional[Tensor] = None) -> Tensor:
        """The term on some rays: points before each labelled depth, back-projected through
        ``cams`` into the field's box.

        Args:
            pixels: [B, C, P, 2] (u, v) ray pixels.
            depth: [B, C, P] (or [B, C, h, w] for every pixel) depth labels, 0 = none.
            weight: [B*C*P] ray weights.
            semantics: the rays' class labels (as depth; for ``flat_classes``).
            far: [B, C, P] camera depths where the points stop, overriding the rules.
        """
        B, C = depth.shape[:2]
        d = depth.reshape(B, C, -1).float()  # [B, C, P]
        if far is not None:
            far = far.reshape(B, C, -1).float()
        elif self.flat_classes is not None:
            origin = backproject(pixels[:, :, :1], torch.zeros_like(d[:, :, :1]), cams.viewmats,
                                 cams.Ks)  # [B, C, 1, 3] camera centres
            dirs = backproject(pixels, torch.ones_like(d), cams.viewmats, cams.Ks) - origin
            far = self.far_depths(d, semantics.reshape(B, C, -1), dirs)
        z, valid = self.sample_depths(d, far=far)  # [B, C, P, S]
        S = z.shape[-1]
        pix = pixels[:, :, :, None, :].expand(-1, -1, -1, S, -1).reshape(B, C, -1, 2)
        pts = backproject(pix, z.reshape(B, C, -1), cams.viewmats, cams.Ks)  # [B, C, P*S, 3]
        valid = valid & in_box(pts, field.box).reshape(valid.shape)
        density = field.density_at(pts.reshape(B, -1, 3))  # [B, C*P*S]
        return self.score(density.reshape(-1, S), valid.reshape(-1, S), weight)

    def sky(self, field: SceneField, cams: Cameras, gt_depth: Tensor, frame_offset: Tensor,
            aux_weight: float) -> Tensor:
        """The term along open-sky rays (``open_sky_mask`` of the depth label maps
        ``gt_depth`` [B, C, h, w]): ``sky_rays`` per camera, free from ``near`` to ``sky_depth``
        (camera z), cameras with ``frame_offset`` [B, C] != 0 weighted ``aux_weight``."""
        B, C = gt_depth.shape[:2]
        sky = open_sky_mask(gt_depth, self.sky_column_window, self.sky_margin_rows)
        pixels, ok = sample_mask_pixels(sky, self.sky_rays)  # [B, C, R, 2], [B, C, R]
        R = pixels.shape[2]
        w_cam = torch.where(frame_offset == 0, torch.ones_like(frame_offset, dtype=torch.float),
                            torch.full_like(frame_offset, aux_weight, dtype=torch.float))
        weight = (w_cam[:, :, None] * ok).reshape(-1)
        depth = torch.full((B, C, R), self.sky_depth, device=gt_depth.device)
        return self.along_rays(field, cams, pixels, depth, weight, far=depth)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        out = dict(loss_free_space=self.along_rays(
            rays.field, rays.cameras, rays.ray_pixels(), rays.all_depth, rays.weight,
            rays.all_semantics.flatten(2)))
        if self.sky_rays > 0:
            out['loss_free_sky'] = self.sky(rays.field, rays.cameras, rays.gt_depth,
                                            rays.frame_offset, rays.aux_weight)
        return out


@MODELS.register_module()
class SurfaceLoss(RayLoss):
    """``surface_losses`` at the labelled hit points (in range, inside the field's box), each
    weighted: ``loss_surface_occ`` (the field's density there should make it occupied) and
    ``loss_surface_sem`` (its class scores there give the pixel's class).

    Args:
        occ_weight, sem_weight: multipliers of the occupancy and semantic terms (0 drops a term).
        behind: the point is taken this far (m) beyond the hit along the ray (0: the hit).
        occ_target: None (BCE) or the density of the hinge (``surface_losses``).
        class_weight: semantic class weights: None, a list, or 'batch' (``class_balanced_weights``
            of this step's labels with ``power``).
        occ_class_weight: weight the occupancy term's rays by the class weights too
            (``surface_losses``); needs ``class_weight``.
    """

    def __init__(self, occ_weight: float = 1.0, sem_weight: float = 1.0, behind: float = 0.0,
                 class_weight: Union[None, str, Sequence[float]] = 'batch', power: float = 0.5,
                 occ_target: Optional[float] = None, occ_class_weight: bool = False,
                 ignore_index: int = IGNORE, eps: float = 1e-6):
        super().__init__()
        if occ_weight < 0 or sem_weight < 0 or behind < 0:
            raise ValueError(f'SurfaceLoss: occ_weight, sem_weight and behind must be >= 0, got '
                             f'{occ_weight}, {sem_weight}, {behind}')
        self.mode, fixed = class_weight_setting('SurfaceLoss', class_weight)
        self.register_buffer('class_weight', fixed, persistent=False)
        self.occ_weight, self.sem_weight, self.behind = occ_weight, sem_weight, float(behind)
        self.power, self.ignore_index, self.eps = power, ignore_index, eps
        self.occ_target = None if occ_target is None else float(occ_target)
        if occ_class_weight and class_weight is None:
            raise ValueError('SurfaceLoss: occ_class_weight=True needs class_weight '
                             "('batch' or a list of weights)")
        self.occ_class_weight = bool(occ_class_weight)

    def score(self, density: Tensor, scores: Optional[Tensor], labels: Optional[Tensor],
              valid: Tensor, weight: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """density [M], scores [M, K], labels [M], valid [M], weight [M] (``surface_losses``)."""
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

    def at_hits(self, field: SceneField, cams: Cameras, pixels: Tensor, depth: Tensor,
                semantics: Tensor, weight: Tensor) -> Dict[str, Tensor]:
        """The terms at the labelled hit points of some rays (``behind`` metres further along
        each ray), those inside the field's box.

        Args:
            pixels: [B, C, P, 2] (u, v) ray pixels.
            depth: [B, C, P] (or [B, C, h, w] for every pixel) depth labels, 0 = none.
            semantics: the rays' class labels (as depth, ``ignore_index`` = none).
            weight: [B*C*P] ray weights.
        """
        B, C = depth.shape[:2]
        d = depth.reshape(B, C, -1).float()  # [B, C, P]
        pts = backproject(pixels, d, cams.viewmats, cams.Ks)  # [B, C, P, 3]
        if self.behind > 0:
            origin = backproject(pixels[:, :, :1], torch.zeros_like(d[:, :, :1]), cams.viewmats,
                                 cams.Ks)  # [B, C, 1, 3] camera centres
            ray = pts - origin
            pts = pts + self.behind * ray / ray.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        valid = (d > 0) & in_box(pts, field.box).reshape(d.shape)
        density, scores = field.fields_at(pts.reshape(B, -1, 3))  # [B, C*P], [B, C*P, K]
        return self.score(density.reshape(-1), scores.reshape(-1, scores.shape[-1]),
                          semantics.reshape(-1), valid.reshape(-1), weight)

    def forward(self, rays: RayBatch) -> Dict[str, Tensor]:
        return self.at_hits(rays.field, rays.cameras, rays.ray_pixels(), rays.depth,
                            rays.semantics.flatten(2), rays.weight)

__all__ = ['RayLoss', 'SILogLoss', 'L1DepthLoss', 'RenderedCELoss', 'RayDistortionLoss',
           'FreeSpaceLoss', 'SurfaceLoss']
