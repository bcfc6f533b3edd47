"""Ray supervision: render the scene field into the label cameras and score it against 2D labels.

One training step of :class:`RaySupervision`:

1. **Rays.** The pixel sampler (``pixels.PixelSampler``) picks label pixels per camera (or every
   pixel, ``pixel_sampler=None``: a dense render); each ray leaves the camera centre through the
   pixel centre and carries that pixel's depth (camera z, 0 = none) and class (255 = none).
2. **Range.** A label whose LiDAR point (the pixel back-projected with its depth) lies outside
   ``label_range`` (default: the field's box) is dropped: nothing in the predicted volume can
   explain it, and fitting it pushes the scene onto the box's border. Rays keep their unfiltered
   labels too (``RayBatch.all_depth``): a ray whose hit is out of range still crossed empty space
   inside the box.
3. **Weights.** Rays of the current frame's cameras weigh 1, those of adjacent frames
   (``render_frame_offset != 0``) ``aux_weight`` (0.3, RenderOcc), and 0 where an adjacent-frame
   ray is labelled with one of ``dynamic_classes`` (objects move between frames); padding slots
   of the sampler weigh 0.
4. **Render.** ``field.renderable()`` (class probabilities as features, plus the elements'
   positions when a loss term asks for them) goes through ``renderer`` at the rays' pixels; the
   render's wall-clock time (forward and the previous step's backward) is logged as
   ``time_render`` (``rendering/render_clock.py``) on CPUs, and on CUDA only with
   ``time_render=True`` (timing there synchronises the device).
5. **Loss terms.** Every module of ``losses`` (``ray_losses.py``) gets the :class:`RayBatch` and
   returns its named terms; ``render_alpha`` (mean rendered alpha of the labelled rays) and, for
   splatting renderers, ``render_gaussians`` (Gaussians per sample that reached the render, after
   the renderer's opacity pruning) are logged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..fields import SceneField
from ..geometry import backproject, in_box, labels_in_range, pixel_centres
from ..registry import MODELS
from ..rendering.render_clock import RenderClock
from ..structures import Cameras, NetworkOutputs, RenderOutput
from .base import Supervision, merge_terms, require_keys
from .functional import IGNORE, auxiliary_ray_weights


@dataclass
class RayBatch:
    """The rays of one training step and their render, as the ray loss terms see them.

    Shapes: B samples, C cameras per sample (current and adjacent frames), P rays per camera;
    with a dense render (no pixel sampler) the per-ray tensors are [B, C, h, w] instead of
    [B, C, P] (P = h * w, row-major) and ``pixels`` is None. M = B * C * P.

    Attributes:
        field: the predicted scene.
        cameras: the label cameras (viewmats [B, C, 4, 4], Ks [B, C, 3, 3], the label size).
        pixels: [B, C, P, 2] continuous (u, v) pixel centres of the rays, or None (dense).
        depth: [B, C, P] depth labels in range (camera z; 0 = none or out of range).
        semantics: [B, C, P] class labels in range (``IGNORE`` = none or out of range).
        all_depth: [B, C, P] depth labels before the range filter.
        all_semantics: [B, C, P] class labels before the range filter.
        weight: [M] ray weights (module docstring, step 3).
        render: the renderer's output at the rays (depth, features, alpha: [B, C, P, ...]).
        class_probs: [M, K] composited class probabilities of the rays.
        positions: [M, 3] composited world positions, or None unless a term asked for them.
        position_sq: [M] composited squared norms of the positions, or None (likewise).
        gt_depth: [B, C, h, w] the full depth label maps.
        frame_offset: [B, C] 0 for the current frame's cameras, +-k for adjacent frames.
        aux_weight: weight of the adjacent frames' rays.
    """

    field: SceneField
    cameras: Cameras
    pixels: Optional[Tensor]
    depth: Tensor
    semantics: Tensor
    all_depth: Tensor
    all_semantics: Tensor
    weight: Tensor
    render: RenderOutput
    class_probs: Tensor
    positions: Optional[Tensor]
    position_sq: Optional[Tensor]
    gt_depth: Tensor
    frame_offset: Tensor
    aux_weight: float

    def ray_pixels(self) -> Tensor:
        """[B, C, P, 2] pixel centres of the rays (every pixel, row-major, for a dense render)."""
        if self.pixels is not None:
            return self.pixels
        B, C, h, w = self.depth.shape
        return pixel_centres(h, w, self.depth.device).expand(B, C, h * w, 2)


@MODELS.register_module()
class RaySupervision(Supervision):
    """2D supervision by rendering (module docstring).

    Args:
        renderer: a splatting renderer (Gaussian fields) or ``VolumeRenderer`` (density grids).
        losses: the ray loss terms (``ray_losses.py``), e.g. ``[dict(type='SILogLoss'),
            dict(type='RenderedCELoss')]``; computed in this order.
        pixel_sampler: config of ``pixels.PixelSampler``, or None for dense renders.
        aux_weight, dynamic_classes: adjacent-frame ray weights (module docstring).
        label_range: 'field' (the field's box), None (keep every label) or 6 numbers
            (x0, y0, z0, x1, y1, z1, current ego frame).
        time_render: log the render's wall-clock time as ``time_render``: 'auto' (on CPUs only,
            where it is free), True (on CUDA too: synchronises the device about ten times per
            step, the backward included) or False (``rendering/render_clock.py``).
    """

    def __init__(self, renderer: dict, losses: Sequence[dict],
                 pixel_sampler: Optional[dict] = None, aux_weight: float = 0.3,
                 dynamic_classes: Sequence[int] = (),
                 label_range: Union[None, str, Sequence[float]] = 'field',
                 time_render: Union[str, bool] = 'auto'):
        super().__init__()
        if not losses:
            raise ValueError('RaySupervision: losses is empty; give at least one ray loss, e.g. '
                             "losses=[dict(type='SILogLoss'), dict(type='RenderedCELoss')]")
        self.renderer = MODELS.build(renderer)
        self.pixel_sampler = None if pixel_sampler is None else MODELS.build(pixel_sampler)
        self.losses = nn.ModuleList([MODELS.build(c) for c in losses])
        self.aux_weight = float(aux_weight)
        self.dynamic_classes = tuple(int(c) for c in dynamic_classes)
        if isinstance(label_range, str) and label_range != 'field':
            raise ValueError(f"RaySupervision: label_range must be 'field', None or 6 numbers "
                             f'(x0, y0, z0, x1, y1, z1), got {label_range!r}')
        if label_range is not None and not isinstance(label_range, str) \
                and len(label_range) != 6:
            raise ValueError(f'RaySupervision: label_range needs 6 numbers (x0, y0, z0, x1, y1, '
                             f'z1), got {label_range!r}')
        self.label_range = label_range if label_range is None or isinstance(label_range, str) \
            else tuple(float(v) for v in label_range)
        self.with_positions = any(getattr(t, 'needs_positions', False) for t in self.losses)
        self.clock = RenderClock(time_render)  # logged as time_render

    def sample(self, gt_depth: Tensor,  # [B, C, h, w]
               gt_semantics: Tensor,  # [B, C, h, w]
               ):
        """Pixels to render and their labels (``PixelSampler``).

        Returns:
            pixels [B, C, P, 2] (None: dense render), depth labels [B, C, P] (dense:
            [B, C, h, w]), semantic labels (same shape, 255 = none), mask of real samples (same
            shape, bool).
        """
        if self.pixel_sampler is None:
            valid = torch.ones_like(gt_depth, dtype=torch.bool)
            return None, gt_depth, gt_semantics, valid
        s = self.pixel_sampler(gt_semantics, gt_depth)
        return s.pixels, s.depth, s.semantics, s.mask

    def render(self, field: SceneField, cameras: Cameras,
               pixels: Optional[Tensor] = None) -> RenderOutput:
        """Render ``field`` (class probabilities, plus positions if a term needs them) into
        ``cameras`` at ``pixels`` ([B, C, P, 2]; None = every pixel), timed by the clock."""
        device = cameras.viewmats.device
        scene = self.clock.start(field.renderable(self.with_positions), device)
        return self.clock.stop(self.renderer(scene, cameras, pixels), device)

    @torch.no_grad()
    def render_at_labels(self, field: SceneField, batch: dict,
                         box: Optional[Sequence[float]] = None) -> List[dict]:
        """Render ``field`` at every labelled pixel of the current frame's label cameras (for the
        rendering metrics at test time; no sampling, no clock).

        A pixel is used where it has a depth label whose LiDAR point lies inside ``box``
        (x0, y0, z0, x1, y1, z1, current ego frame; None: every depth label). Cameras of
        adjacent frames (``render_frame_offset != 0``) are left out.

        Returns:
            one dict per sample with, over its P used pixels (all cameras): 'depth' [P] float32
            (rendered, normalised by alpha as the renderer returns it), 'classes' [P] uint8 (the
            argmax of the composited class probabilities, a field class index in [0, K)),
            'gt_depth' [P] float32, 'gt_classes' [P] uint8 (255 = none).
        """
        require_keys('RaySupervision.render_at_labels', batch,
                     ('render_viewmats', 'render_Ks', 'gt_depth', 'gt_semantics'),
                     'load the 2D labels in the test pipeline (LoadLabels2D)')
        gt_depth = batch['gt_depth'].float()  # [B, V, h, w]
        gt_sem = batch['gt_semantics']  # [B, V, h, w]
        B, V, h, w = gt_depth.shape
        offset = batch.get('render_frame_offset')
        current = torch.ones(B, V, dtype=torch.bool, device=gt_depth.device) if offset is None \
            else offset == 0  # [B, V]
        views = current[0]
        assert bool((current == views).all()), 'the samples of a batch differ in their cameras'
        gt_depth, gt_sem = gt_depth[:, views], gt_sem[:, views]  # [B, C, h, w]
        viewmats = batch['render_viewmats'][:, views].float()
        Ks = batch['render_Ks'][:, views].float()
        C = gt_depth.shape[1]
        used = gt_depth > 0 if box is None else labels_in_range(gt_depth, viewmats, Ks, box)
        used = used.reshape(B, C, h * w)  # [B, C, h * w]
        P = max(int(used.sum(-1).max()), 1)
        # the used pixels of each camera first (stable order), padded with unused ones
        order = torch.argsort((~used).to(torch.int8), dim=-1, stable=True)[..., :P]  # [B, C, P]
        valid = torch.gather(used, -1, order)  # [B, C, P]
        pixels = pixel_centres(h, w, gt_depth.device)[order]  # [B, C, P, 2]
        cams = Cameras(viewmats=viewmats, Ks=Ks, width=w, height=h)
        out = self.renderer(field.renderable(False), cams, pixels)
        classes = out.features[..., :field.num_classes].argmax(-1)  # [B, C, P]
        depth_lab = torch.gather(gt_depth.reshape(B, C, -1), -1, order)
        sem_lab = torch.gather(gt_sem.reshape(B, C, -1), -1, order)
        results = []
        for b in range(B):
            m = valid[b]
            results.append(dict(
                depth=out.depth[b][m].float().cpu().numpy(),
                classes=classes[b][m].to(torch.uint8).cpu().numpy(),
                gt_depth=depth_lab[b][m].float().cpu().numpy(),
                gt_classes=sem_lab[b][m].clamp(0, IGNORE).to(torch.uint8).cpu().numpy()))
        return results

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        require_keys('RaySupervision', batch,
                     ('render_viewmats', 'render_Ks', 'gt_depth', 'gt_semantics'),
                     'load the 2D labels in the training pipeline (LoadLabels2D)')
        field = outputs.field
        gt_depth = batch['gt_depth'].float()  # [B, C, h, w]
        gt_sem = batch['gt_semantics']  # [B, C, h, w]
        B, C, h, w = gt_depth.shape
        assert gt_sem.shape == (B, C, h, w), (gt_sem.shape, gt_depth.shape)
        cams = Cameras(viewmats=batch['render_viewmats'].float(), Ks=batch['render_Ks'].float(),
                       width=w, height=h)
        offset = batch.get('render_frame_offset')
        if offset is None:
            offset = torch.zeros(B, C, dtype=torch.long, device=gt_depth.device)
        pixels, depth_lab, sem_lab, valid = self.sample(gt_depth, gt_sem)
        all_depth, all_sem = depth_lab, sem_lab
        box = field.box if self.label_range == 'field' else self.label_range
        if box is not None:
            pix = pixels if pixels is not None else \
                pixel_centres(h, w, gt_depth.device).expand(B, C, h * w, 2)
            keep = in_box(backproject(pix, depth_lab.reshape(B, C, -1).double(), cams.viewmats,
                                      cams.Ks), box).reshape(depth_lab.shape)
            depth_lab = torch.where(keep, depth_lab, torch.zeros_like(depth_lab))
            sem_lab = torch.where(keep, sem_lab, torch.full_like(sem_lab, IGNORE))
        out = self.render(field, cams, pixels)
        # weights from the unfiltered labels (dynamic classes of adjacent frames)
        weight = auxiliary_ray_weights(offset, all_sem.flatten(2), self.aux_weight,
                                       self.dynamic_classes)
        weight = (weight * valid.flatten(2)).reshape(-1)  # [M]
        feats = out.features.reshape(-1, out.features.shape[-1])  # [M, K (+4)]
        positions = position_sq = None
        if self.with_positions:
            positions, position_sq, feats = feats[:, -4:-1], feats[:, -1], feats[:, :-4]
        rays = RayBatch(field=field, cameras=cams, pixels=pixels, depth=depth_lab,
                        semantics=sem_lab, all_depth=all_depth, all_semantics=all_sem,
                        weight=weight, render=out, class_probs=feats, positions=positions,
                        position_sq=position_sq, gt_depth=gt_depth, frame_offset=offset,
                        aux_weight=self.aux_weight)
        losses: Dict[str, Tensor] = {}
        for term in self.losses:
            merge_terms(losses, term(rays), 'RaySupervision')
        with torch.no_grad():
            labelled = (depth_lab.reshape(-1) > 0) & (weight > 0)
            losses['render_alpha'] = out.alpha.reshape(-1)[labelled].mean() if labelled.any() \
                else out.alpha.new_zeros(())
            if out.primitives is not None:  # Gaussians per sample that reached the render
                losses['render_gaussians'] = out.alpha.new_tensor(float(out.primitives))
            # seconds: this step's render forward + the previous step's render backward
            seconds = self.clock.seconds()
            if seconds is not None:
                losses['time_render'] = out.alpha.new_tensor(seconds)
        return losses


__all__ = ['RayBatch', 'RaySupervision']
