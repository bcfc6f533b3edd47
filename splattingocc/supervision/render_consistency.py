"""Render consistency (GaussRender, Chambon et al., ICCV 2025): a plug-in loss for 3D-supervised
models that renders the predicted and the ground-truth occupancy into the same views and compares
the two renders' depth and semantics.

Both sides are Gaussians at the voxel centres of one render grid (``grid_size``: the Occ3D grid,
as GaussRender, or a coarser one that divides it), identity rotation and the same standard
deviation ``gaussian_scale`` x voxel size per axis (GaussRender: 0.27 m on 0.4 m voxels). Sources
of each setting: ``docs/render-consistency.md``.

* **Ground truth** (no gradient): one Gaussian per occupied voxel (``voxel_semantics`` not free,
  not ignored, inside ``mask_camera`` with ``mask_camera=True``), opacity 1, one-hot class
  features (``voxelizer.gaussians_from_voxels``); a coarser grid takes the labels of
  ``volume.downsample_labels``.
* **Prediction**: the field on the render grid (``SceneField.to_grid``: density and class scores
  at the voxel centres) becomes one Gaussian per voxel, features the normalised class scores in
  label order (free channel 0 for a field without a free class) and opacity the field's occupancy
  of that voxel, ``field.occupancy(density)`` (``opacity='density'``: the field's own opacities,
  summed at the centre, as GaussRender's learned per-voxel opacity) or ``1 - p_free``
  (``opacity='free_class'``: the argmax read-out's occupancy probability; GaussRender's
  ``transfer_opacity`` without its sharpening of the free probability). Voxels the ground truth
  ignores (or outside ``mask_camera``) get opacity 0. So a prediction equal to the ground truth renders exactly as it does, whatever the field's
  elements are (its own Gaussians rendered directly would not: their sizes and places differ from
  the ground truth's voxel Gaussians), and the gradient reaches every parameter of the field
  through ``to_grid`` (the voxelizer is differentiable in means, scales, rotations, opacities and
  logits).
* **Views**: ``num_cameras`` of the sample's input cameras (``cam2img``, ``cam2ego``: the label
  cameras of the current frame, taken from the inputs so that no 2D labels are needed), drawn per
  sample with ``camera_weights`` (GaussRender: one camera, front and back twice as likely as the
  others), at ``camera_scale`` times the input resolution; and a bird's-eye view
  (``bev_size`` square pixels; None: none): a pinhole camera ``bev_height`` metres above the box's
  centre at z = 0 looking straight down, its focal length making the box's x-y extent fill the
  image at z = 0. GaussRender's camera is such a pinhole 80 m (the box's x extent) above the ego,
  400 x 400 pixels (53 degrees); a larger ``bev_height`` approaches an orthographic view (our
  renderers are pinhole). ``pixels_per_view``: render that many uniformly drawn pixels of every
  view image (None: all of them, as GaussRender).
* **Losses** (``functional.render_consistency_l1``): per view kind ('cam', 'bev'), the L1 of the
  class renders with free space as background (``loss_rc_cam_sem``, ``loss_rc_bev_sem``) and the
  L1 of the accumulated depth over the pixels where the ground truth renders something, divided
  by ``depth_norm`` (``loss_rc_cam_depth``, ``loss_rc_bev_depth``), each times its
  ``loss_weights`` entry (a view kind whose two weights are 0 is not rendered).

Logged too: ``rc_gaussians_pred`` / ``rc_gaussians_gt`` (mean count per sample of the Gaussians
that reach the render, opacity >= the renderer's ``min_opacity``) and ``time_render`` (the
renders' wall-clock time, forward and backward, as ``RaySupervision`` logs it; a config with both
modules sets ``time_render=False`` on one of them, since each key may appear once).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..fields import SceneField
from ..geometry import pixel_centres, rigid_inverse, voxel_centres
from ..registry import MODELS
from ..rendering.render_clock import RenderClock
from ..structures import Cameras, Gaussians, NetworkOutputs, RenderOutput, replace
from ..voxelizer import gaussians_from_voxels, grid_spec
from .base import Supervision, require_keys
from .functional import IGNORE, render_consistency_l1, with_background
from .volume import downsample_labels, downsample_mask

#: loss terms: (view kind, term) -> key of ``loss_weights``
TERMS = ('cam_sem', 'cam_depth', 'bev_sem', 'bev_depth')
OPACITY_MODES = ('density', 'free_class')


def label_channels(scores: Tensor,  # [..., K]
                   num_classes: int, free_label: int) -> Tensor:
    """Class probabilities in label order, [..., num_classes]: ``scores`` normalised to sum to 1
    (0 where they are all 0), with a 0 free channel inserted when the field has no free class
    (K = num_classes - 1, the non-free classes in label order)."""
    K = scores.shape[-1]
    total = scores.sum(-1, keepdim=True)
    probs = scores / total.clamp_min(1e-12)  # [..., K]
    if K == num_classes:
        return probs
    if K != num_classes - 1:
        raise ValueError(f'RenderConsistencySupervision: the field has K={K} classes but '
                         f'num_classes={num_classes}; K must be num_classes (free included) or '
                         'num_classes - 1')
    zero = probs.new_zeros(probs.shape[:-1] + (1, ))
    return torch.cat([probs[..., :free_label], zero, probs[..., free_label:]], -1)


def voxel_gaussians(features: Tensor,  # [B, X, Y, Z, K]
                    opacities: Tensor,  # [B, X, Y, Z]
                    pc_range: Sequence[float], scale: Sequence[float]) -> Gaussians:
    """One Gaussian per voxel of the grid of ``opacities`` over ``pc_range``: at the voxel
    centre, identity rotation, standard deviations ``scale`` (3 numbers, metres), the given
    opacities and features; N = X * Y * Z in (x, y, z) order."""
    assert opacities.dim() == 4 and features.shape[:4] == opacities.shape, \
        (features.shape, opacities.shape)
    B, X, Y, Z = opacities.shape
    N = X * Y * Z
    dev, dt = opacities.device, opacities.dtype
    means = voxel_centres(pc_range, (X, Y, Z), dev, dt).reshape(1, N, 3).expand(B, N, 3)
    quats = torch.tensor([1.0, 0, 0, 0], device=dev, dtype=dt).expand(B, N, 4)
    scales = torch.tensor([float(s) for s in scale], device=dev, dtype=dt).expand(B, N, 3)
    return Gaussians(means=means, quats=quats, scales=scales,
                     opacities=opacities.reshape(B, N),
                     features=features.reshape(B, N, features.shape[-1]))


def drop_faint(g: Gaussians, min_opacity: float) -> Gaussians:
    """The Gaussians with opacity >= ``min_opacity``, in their order (per sample; a sample with
    fewer keeps some faint ones at the end so that the batch stays rectangular). Exact for a
    splatting render: a Gaussian below 1/255 opacity neither contributes nor gets a gradient.
    The renderer would prune them too, but by opacity rank; keeping the order makes a scene
    render the same whichever side built it (the renderer's stop at transmittance 1e-4 depends
    on the order of Gaussians at equal depth, which voxel centres have)."""
    with torch.no_grad():
        keep = g.opacities >= min_opacity  # [B, N]
        n = max(int(keep.sum(1).max()), 1) if keep.numel() else 0
        if n == g.num_gaussians:
            return g
        idx = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n]  # [B, n]

    def pick(t: Tensor) -> Tensor:  # [B, N, D] -> [B, n, D]
        return t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))

    return Gaussians(means=pick(g.means), quats=pick(g.quats), scales=pick(g.scales),
                     opacities=g.opacities.gather(1, idx), features=pick(g.features))


def bev_camera(pc_range: Sequence[float], size: int, height: Optional[float] = None,
               batch_size: int = 1, device=None) -> Cameras:
    """The bird's-eye pinhole camera (module docstring): ``height`` metres (None: the box's x
    extent, GaussRender's 80 m) above the box's x-y centre at z = 0, looking down (camera x =
    world x, camera y = -world y, depth = height - z), focal length ``size * height / extent``
    so that the box's larger x-y extent fills the ``size`` x ``size`` image at z = 0."""
    x0, y0, _, x1, y1, _ = (float(v) for v in pc_range)
    h = float(x1 - x0) if height is None else float(height)
    if not h > 0:
        raise ValueError(f'RenderConsistencySupervision: bev_height must be > 0, got {height}')
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    viewmat = torch.tensor([[1.0, 0, 0, -cx], [0, -1, 0, cy], [0, 0, -1, h], [0, 0, 0, 1]],
                           device=device)
    f = size * h / max(x1 - x0, y1 - y0)
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]], device=device)
    return Cameras(viewmats=viewmat.expand(batch_size, 1, 4, 4),
                   Ks=K.expand(batch_size, 1, 3, 3), width=int(size), height=int(size))


@MODELS.register_module()
class RenderConsistencySupervision(Supervision):
    """Render the predicted and the ground-truth occupancy and compare (module docstring).

    Args:
        renderer: a splatting renderer config (``TorchSplatRenderer``, ``GsplatRenderer``).
        pc_range: (x0, y0, z0, x1, y1, z1) of the label grid (dataset ``point_cloud_range``).
        num_classes: labels including free; free_label: the free label.
        grid_size: None (the label grid, GaussRender) or (X, Y, Z) dividing it.
        gaussian_scale: standard deviation of every Gaussian as a fraction of the render grid's
            voxel size per axis (GaussRender: 0.27 m / 0.4 m = 0.675).
        opacity: 'density' or 'free_class' (module docstring).
        mask_camera: leave out the voxels outside ``mask_camera`` on both sides (GaussRender:
            no).
        num_cameras: sample cameras rendered per sample (None: all; 0: none).
        camera_weights: relative probability of each input camera to be drawn (None: uniform).
        camera_scale: render size / input image size.
        bev_size: pixels of the square bird's-eye image (None: no bird's-eye view).
        bev_height: metres above z = 0 of the bird's-eye camera (None: the box's x extent).
        pixels_per_view: pixels drawn per view image (None: every pixel).
        loss_weights: multipliers of the terms 'cam_sem', 'cam_depth', 'bev_sem', 'bev_depth'.
        depth_norm: {'cam': metres, 'bev': metres} dividing the depth errors (GaussRender: 50,
            100).
        min_depth: depth is scored where the ground truth's accumulated depth exceeds this.
        time_render: 'auto', True or False, as ``RaySupervision``'s (logged as ``time_render``).
    """

    def __init__(self, renderer: dict, pc_range: Sequence[float], num_classes: int,
                 free_label: int, grid_size: Optional[Sequence[int]] = None,
                 gaussian_scale: float = 0.675, opacity: str = 'density',
                 mask_camera: bool = False, num_cameras: Optional[int] = 1,
                 camera_weights: Optional[Sequence[float]] = None, camera_scale: float = 1.0,
                 bev_size: Optional[int] = 400, bev_height: Optional[float] = None,
                 pixels_per_view: Optional[int] = None,
                 loss_weights: Optional[Mapping[str, float]] = None,
                 depth_norm: Optional[Mapping[str, float]] = None, min_depth: float = 0.1,
                 time_render: Union[str, bool] = 'auto'):
        super().__init__()
        name = 'RenderConsistencySupervision'
        if len(pc_range) != 6:
            raise ValueError(f'{name}: pc_range needs 6 numbers, got {pc_range!r}')
        self.pc_range = tuple(float(v) for v in pc_range)
        self.num_classes, self.free_label = int(num_classes), int(free_label)
        if not 0 <= self.free_label < self.num_classes:
            raise ValueError(f'{name}: free_label {free_label} is not in [0, {num_classes})')
        self.grid_size = None if grid_size is None else tuple(int(v) for v in grid_size)
        if not float(gaussian_scale) > 0:
            raise ValueError(f'{name}: gaussian_scale must be > 0, got {gaussian_scale}')
        self.gaussian_scale = float(gaussian_scale)
        if opacity not in OPACITY_MODES:
            raise ValueError(f'{name}: opacity must be one of {OPACITY_MODES}, got {opacity!r}')
        self.opacity = opacity
        self.mask_camera = bool(mask_camera)
        self.num_cameras = None if num_cameras is None else int(num_cameras)
        if self.num_cameras is not None and self.num_cameras < 0:
            raise ValueError(f'{name}: num_cameras must be None or >= 0, got {num_cameras}')
        self.camera_weights = None if camera_weights is None else \
            tuple(float(w) for w in camera_weights)
        if self.camera_weights is not None and (min(self.camera_weights) < 0
                                                or not sum(self.camera_weights) > 0):
            raise ValueError(f'{name}: camera_weights must be >= 0 with a positive sum, got '
                             f'{camera_weights!r}')
        if not float(camera_scale) > 0:
            raise ValueError(f'{name}: camera_scale must be > 0, got {camera_scale}')
        self.camera_scale = float(camera_scale)
        self.bev_size = None if bev_size is None else int(bev_size)
        self.bev_height = None if bev_height is None else float(bev_height)
        if self.bev_size is not None:
            bev_camera(self.pc_range, self.bev_size, self.bev_height)  # fail early
        self.pixels_per_view = None if pixels_per_view is None else int(pixels_per_view)
        if self.pixels_per_view is not None and self.pixels_per_view < 1:
            raise ValueError(f'{name}: pixels_per_view must be None or >= 1, got '
                             f'{pixels_per_view}')
        weights = dict(cam_sem=1.0, cam_depth=1.0, bev_sem=1.0, bev_depth=1.0)
        unknown = set(loss_weights or {}) - set(TERMS)
        if unknown:
            raise ValueError(f'{name}: unknown loss_weights keys {sorted(unknown)}; the terms are '
                             f'{TERMS}')
        weights.update({k: float(v) for k, v in (loss_weights or {}).items()})
        self.loss_weights = weights
        norms = dict(cam=50.0, bev=100.0)
        unknown = set(depth_norm or {}) - set(norms)
        if unknown:
            raise ValueError(f"{name}: unknown depth_norm keys {sorted(unknown)}; give 'cam' "
                             "and 'bev'")
        norms.update({k: float(v) for k, v in (depth_norm or {}).items()})
        self.depth_norm = norms
        self.min_depth = float(min_depth)
        self.renderer = MODELS.build(renderer)
        self.clocks = {k: RenderClock(time_render) for k in ('cam', 'bev', 'gt')}

    # -- the two scenes ---------------------------------------------------------------------
    def labels(self, batch: dict) -> Tuple[Tensor, Tensor]:
        """(labels [B, X, Y, Z] on the render grid, keep [B, X, Y, Z] bool: voxels that take
        part, i.e. not ignored and, with ``mask_camera``, inside the mask)."""
        require_keys('RenderConsistencySupervision', batch, ('voxel_semantics', ),
                     'load the Occ3D ground truth in the training pipeline (LoadOcc3DLabels, '
                     "e.g. the config's train_pipeline_3d)")
        sem = batch['voxel_semantics'].long()  # [B, X, Y, Z]
        mask = None
        if self.mask_camera:
            require_keys('RenderConsistencySupervision(mask_camera=True)', batch,
                         ('mask_camera', ), 'LoadOcc3DLabels loads it with the labels')
            mask = batch['mask_camera'].bool()
        if self.grid_size is not None and self.grid_size != tuple(sem.shape[1:]):
            factors = [n // g for n, g in zip(sem.shape[1:], self.grid_size)]
            if any(n % g for n, g in zip(sem.shape[1:], self.grid_size)):
                raise ValueError(f'RenderConsistencySupervision: grid_size {self.grid_size} does '
                                 f'not divide the label grid {tuple(sem.shape[1:])}')
            sem = downsample_labels(sem, factors, self.num_classes)
            mask = None if mask is None else downsample_mask(mask, factors)
        keep = sem != IGNORE
        if mask is not None:
            keep = keep & mask
        return sem, keep

    def scale(self, grid: Sequence[int]) -> Tuple[float, float, float]:
        _, vs, _ = grid_spec(self.pc_range, grid)
        return tuple(self.gaussian_scale * v for v in vs)

    def gt_gaussians(self, sem: Tensor, keep: Tensor) -> Gaussians:
        """Ground-truth Gaussians: occupied voxels kept, opacity 1, one-hot features."""
        lab = torch.where(keep, sem, torch.full_like(sem, self.free_label))
        g = gaussians_from_voxels(lab, self.pc_range, self.free_label, self.num_classes,
                                  scale=1.0, opacity=1.0, logit=1.0)  # features one-hot
        s = torch.tensor(self.scale(sem.shape[1:]), device=g.means.device)
        return replace(g, scales=s.expand_as(g.scales).contiguous())

    def pred_gaussians(self, field: SceneField, grid: Sequence[int], keep: Tensor) -> Gaussians:
        """Predicted Gaussians at the render grid's voxel centres (module docstring)."""
        density, scores = field.to_grid(self.pc_range, grid)  # [B, X, Y, Z], [.., K]
        probs = label_channels(scores, self.num_classes, self.free_label)  # [B, X, Y, Z, C]
        if self.opacity == 'density':
            opac = field.occupancy(density)
        else:
            if scores.shape[-1] != self.num_classes:
                raise ValueError("RenderConsistencySupervision(opacity='free_class') needs a "
                                 f'field with a free class (K = {self.num_classes}), got K = '
                                 f"{scores.shape[-1]}; use opacity='density'")
            opac = 1.0 - probs[..., self.free_label]
        opac = opac.clamp(0.0, 1.0) * keep.to(opac.dtype)  # [B, X, Y, Z]
        return drop_faint(voxel_gaussians(probs, opac, self.pc_range, self.scale(grid)),
                          getattr(self.renderer, 'min_opacity', 0.0))

    # -- the views --------------------------------------------------------------------------
    def sample_cameras(self, batch: dict) -> Optional[Cameras]:
        """The drawn input cameras at ``camera_scale`` (None if none are rendered)."""
        require_keys('RenderConsistencySupervision', batch, ('img', 'cam2img', 'cam2ego'),
                     'the network inputs carry them (PackOccInputs)')
        cam2img, cam2ego = batch['cam2img'].float(), batch['cam2ego'].float()
        B, N = cam2img.shape[:2]
        H, W = batch['img'].shape[-2:]
        n = N if self.num_cameras is None else min(self.num_cameras, N)
        if n == 0:
            return None
        viewmats = rigid_inverse(cam2ego)  # [B, N, 4, 4]
        if n < N:
            w = torch.ones(N) if self.camera_weights is None else \
                torch.tensor(self.camera_weights)
            if w.numel() != N:
                raise ValueError(f'RenderConsistencySupervision: camera_weights has {w.numel()} '
                                 f'entries for {N} cameras')
            idx = torch.multinomial(w.expand(B, N), n, replacement=False).to(cam2img.device)
            viewmats = viewmats.gather(1, idx[..., None, None].expand(B, n, 4, 4))
            cam2img = cam2img.gather(1, idx[..., None, None].expand(B, n, 3, 3))
        w, h = max(1, round(W * self.camera_scale)), max(1, round(H * self.camera_scale))
        S = torch.diag(torch.tensor([w / W, h / H, 1.0], device=cam2img.device))
        return Cameras(viewmats=viewmats, Ks=S @ cam2img, width=w, height=h)

    def sample_pixels(self, cams: Cameras) -> Optional[Tensor]:
        """[B, C, P, 2] pixel centres drawn uniformly without replacement per view image (None:
        every pixel, or when P is at least the image's pixel count)."""
        B, C = cams.viewmats.shape[:2]
        n = cams.width * cams.height
        if self.pixels_per_view is None or self.pixels_per_view >= n:
            return None
        dev = cams.viewmats.device
        idx = torch.rand(B, C, n, device=dev).topk(self.pixels_per_view, -1).indices
        return pixel_centres(cams.height, cams.width, dev)[idx]  # [B, C, P, 2]

    def render(self, scene: Gaussians, cams: Cameras, pixels: Optional[Tensor],
               clock: RenderClock) -> Tuple[Tensor, Tensor]:
        """(class features with the free background [I, P, C], accumulated depth [I, P]) of
        ``scene`` in ``cams``; I = B * views."""
        dev = cams.viewmats.device
        out: RenderOutput = clock.stop(self.renderer(clock.start(scene, dev), cams, pixels), dev)
        B, V = cams.viewmats.shape[:2]
        feats = out.features.reshape(B * V, -1, out.features.shape[-1])  # [I, P, C]
        alpha = out.alpha.reshape(B * V, -1)  # [I, P]
        depth = out.depth.reshape(B * V, -1) * alpha  # [I, P] accumulated
        return with_background(feats, alpha, self.free_label), depth

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        field = outputs.field
        sem, keep = self.labels(batch)
        grid = tuple(sem.shape[1:])
        B = sem.shape[0]
        views = {}
        if self.loss_weights['cam_sem'] or self.loss_weights['cam_depth']:
            cams = self.sample_cameras(batch)
            if cams is not None:
                views['cam'] = cams
        if self.bev_size is not None and (self.loss_weights['bev_sem']
                                          or self.loss_weights['bev_depth']):
            views['bev'] = bev_camera(self.pc_range, self.bev_size, self.bev_height, B,
                                      sem.device)
        losses: Dict[str, Tensor] = {}
        if not views:
            return losses
        pred = self.pred_gaussians(field, grid, keep)
        with torch.no_grad():
            gt = self.gt_gaussians(sem, keep)
        gt_seconds = 0.0
        for kind, cams in views.items():
            pixels = self.sample_pixels(cams)
            sem_p, depth_p = self.render(pred, cams, pixels, self.clocks[kind])
            with torch.no_grad():
                sem_g, depth_g = self.render(gt, cams, pixels, self.clocks['gt'])
                gt_seconds += self.clocks['gt'].seconds() or 0.0
            l_sem, l_depth = render_consistency_l1(sem_p, depth_p, sem_g, depth_g,
                                                   self.depth_norm[kind], self.min_depth)
            losses[f'loss_rc_{kind}_sem'] = self.loss_weights[f'{kind}_sem'] * l_sem
            losses[f'loss_rc_{kind}_depth'] = self.loss_weights[f'{kind}_depth'] * l_depth
        with torch.no_grad():
            t = getattr(self.renderer, 'min_opacity', 0.0)
            losses['rc_gaussians_pred'] = (pred.opacities >= t).sum(1).float().mean()
            losses['rc_gaussians_gt'] = (gt.opacities >= t).sum(1).float().mean()
            seconds = [self.clocks[k].seconds() for k in views]
            if all(s is not None for s in seconds):
                losses['time_render'] = sem.new_tensor(sum(seconds) + gt_seconds,
                                                       dtype=torch.float32)
        return losses


__all__ = ['RenderConsistencySupervision', 'label_channels', 'voxel_gaussians', 'drop_faint',
           'bev_camera']
