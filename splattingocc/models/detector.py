"""SplattingOcc: images -> per-voxel 3D Gaussians -> rendered depth / semantics (train) or Occ3D
labels (test).

Data flow (shapes for B samples, N input cameras, F frames of rendering cameras)::

    img [B, N, 3, H, W] -> backbone -> neck -> [B*N, C, Hf, Wf]
      -> LSS view transform (cam2img, cam2ego) -> volume [B, C, X, Y, Z] (+ depth probs)
      -> volume encoder -> Gaussian head -> Gaussians (N_g = X*Y*Z) | DensityGrid
    loss:    renderer(scene, cameras(render_viewmats, render_Ks), sampled pixels)
             -> depth / semantic losses on the LiDAR labels (+ optional LSS depth, regulariser,
                3D supervision)
    predict: voxelizer onto the Occ3D grid -> [X, Y, Z] uint8 labels (17 = free)

Rendering supervision conventions:

* The renderer composites the per-Gaussian class probabilities softmax(logits) (see
  ``losses.rendered_semantic_ce``) and returns the alpha-normalised depth.
* Rays are label pixels chosen by the pixel sampler (rendering/pixels.py), rendered at their
  centres, with that pixel's depth and class.
* Ray weights: 1 on the current frame's cameras, ``aux_weight`` (0.3, RenderOcc) on adjacent
  frames (``render_frame_offset != 0``), where rays labelled with a ``dynamic_classes`` class get 0.
* Free space: the K semantic channels are the occupied classes (see ``gaussian_head``); whether a
  voxel is free is decided by the voxelizer's density threshold at test time.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import Tensor

from ..losses import IGNORE, auxiliary_ray_weights
from ..registry import MODELS
from ..geometry import backproject, depth_labels_min_pool, in_box, pixel_centres, voxel_centres
from ..structures import Cameras, DensityGrid, Gaussians, replace
from ..voxelizer import grid_gaussian_density, grid_gaussian_fields, voxelize_gaussians
from .render_clock import RenderClock

_IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 (torchvision's ImageNet statistics)
_IMAGENET_STD = (58.395, 57.12, 57.375)


def downsample_labels(semantics: Tensor,  # [B, X, Y, Z]
                      factors: Sequence[int], num_classes: int,
                      ignore_index: int = 255) -> Tensor:
    """Labels of a grid coarser by integer ``factors``: the most frequent label of each block
    (ignored voxels skipped; ties go to the lower class index, so occupied classes win over free
    = the last index); a block with only ignored voxels is ``ignore_index``.

    Args:
        semantics: [B, X, Y, Z] integer labels.
        factors: (fx, fy, fz) dividing (X, Y, Z).
    Returns:
        [B, X / fx, Y / fy, Z / fz] int64.
    """
    assert semantics.dim() == 4, semantics.shape
    B, X, Y, Z = semantics.shape
    fx, fy, fz = (int(f) for f in factors)
    if X % fx or Y % fy or Z % fz:
        raise ValueError(f'downsample_labels: the grid {X, Y, Z} is not divisible by {factors}; '
                         'the prediction grid must divide the Occ3D grid (model.head.grid_size)')
    x, y, z = X // fx, Y // fy, Z // fz
    lab = semantics.long().reshape(B, x, fx, y, fy, z, fz)
    block = torch.arange(B * x * y * z, device=lab.device).reshape(B, x, 1, y, 1, z, 1)
    block = block.expand_as(lab)
    valid = lab != ignore_index
    counts = torch.bincount(block[valid] * num_classes + lab[valid],
                            minlength=B * x * y * z * num_classes)
    counts = counts.reshape(B, x, y, z, num_classes)
    out = counts.argmax(-1)
    return torch.where(counts.sum(-1) > 0, out, torch.full_like(out, ignore_index))


def downsample_mask(mask: Tensor, factors: Sequence[int]) -> Tensor:
    """[B, X, Y, Z] -> [B, X / fx, Y / fy, Z / fz] bool: a block is in the mask if any voxel is."""
    B, X, Y, Z = mask.shape
    fx, fy, fz = (int(f) for f in factors)
    m = mask.bool().reshape(B, X // fx, fx, Y // fy, fy, Z // fz, fz)
    return m.any(6).any(4).any(2)


def open_sky_mask(gt_depth: Tensor,  # [B, C, h, w]
                  column_window: int = 5, margin_rows: int = 1) -> Tensor:
    """Pixels above every LiDAR return of their image column and its neighbours: [B, C, h, w]
    bool.

    Per column, the highest labelled row is found, then the highest over ``column_window``
    neighbouring columns (azimuth gaps between LiDAR points); pixels more than ``margin_rows``
    above it are open sky: the LiDAR swept that direction (its vertical field of view covers
    the cameras') and got no return within its range. A column window containing a column
    without any label gives no sky (nothing is known there).
    """
    B, C, h, w = gt_depth.shape
    rows = torch.arange(h, device=gt_depth.device).view(1, 1, h, 1).expand(B, C, h, w)
    lab = gt_depth > 0
    top = torch.where(lab, rows, torch.full_like(rows, h)).amin(2)  # [B, C, w]; h = none
    top = torch.where(top == h, torch.full_like(top, -1), top).float()  # none -> no sky
    if column_window > 1:
        pad = column_window // 2
        top = -F.max_pool1d(-top.reshape(B * C, 1, w), column_window, stride=1,
                            padding=pad).reshape(B, C, -1)[..., :w]
    return rows < (top[:, :, None, :] - margin_rows)


def sample_mask_pixels(mask: Tensor,  # [B, C, h, w]
                       num: int, generator=None) -> Tuple[Tensor, Tensor]:
    """Up to ``num`` pixels per camera drawn uniformly without replacement from a mask:
    (pixels [B, C, num, 2] (u, v) centres, valid [B, C, num] bool: False where the mask has
    fewer pixels)."""
    B, C, h, w = mask.shape
    num = min(int(num), h * w)
    score = torch.rand(B, C, h * w, device=mask.device, generator=generator)
    score = torch.where(mask.reshape(B, C, -1), score, torch.full_like(score, -1.0))
    top, idx = score.topk(num, dim=-1)  # [B, C, num]
    pixels = torch.stack([(idx % w).float() + 0.5, (idx // w).float() + 0.5], -1)
    return pixels, top >= 0


def _build(cfg):
    return None if cfg is None else MODELS.build(cfg)


def density_grid_to_voxels(grid: DensityGrid, pc_range: Sequence[float],
                           occ_size: Sequence[int]):
    """Trilinearly resamples a DensityGrid at the voxel centres of another grid.

    Returns (optical depth over one target voxel edge ``density * min_voxel_size`` [B, X, Y, Z],
    class probabilities softmax(features) [B, X, Y, Z, K]); ``1 - exp(-first)`` is the opacity of
    a target voxel crossed along its shortest edge.
    """
    B = grid.density.shape[0]
    X, Y, Z = (int(v) for v in occ_size)
    src = grid.pc_range
    axes = []
    for a, n in enumerate((X, Y, Z)):
        lo, hi = float(pc_range[a]), float(pc_range[a + 3])
        c = lo + (hi - lo) / n * (torch.arange(n, device=grid.density.device) + 0.5)
        axes.append((c - src[a]) / (src[a + 3] - src[a]) * 2 - 1)  # normalised to the source box
    gx, gy, gz = torch.meshgrid(*axes, indexing='ij')  # [X, Y, Z]
    # grid_sample's last coordinate indexes the input's last (W) axis: (z, y, x) order here
    coords = torch.stack([gz, gy, gx], dim=-1)[None].expand(B, X, Y, Z, 3).to(grid.density)
    vol = torch.cat([grid.density[:, None], grid.features.softmax(-1).permute(0, 4, 1, 2, 3)],
                    dim=1)  # [B, 1+K, Xs, Ys, Zs]
    out = F.grid_sample(vol, coords, mode='bilinear', padding_mode='border',
                        align_corners=False)  # [B, 1+K, X, Y, Z]
    vs = min((float(pc_range[a + 3]) - float(pc_range[a])) / n for a, n in enumerate((X, Y, Z)))
    return out[:, 0] * vs, out[:, 1:].permute(0, 2, 3, 4, 1)


def density_grid_at(grid: DensityGrid, points: Tensor, with_probs: bool = False):
    """Trilinear density of a DensityGrid at points [B, P, 3] -> [B, P] (the interpolation of
    ``density_grid_to_voxels``: voxel-centred samples, border values outside); with
    ``with_probs`` also the interpolated class probabilities softmax(features) [B, P, K]."""
    B, P = points.shape[:2]
    src = grid.pc_range
    lo = points.new_tensor(src[:3])
    hi = points.new_tensor(src[3:])
    norm = (points - lo) / (hi - lo) * 2 - 1  # [B, P, 3] in (x, y, z) order
    coords = norm.flip(-1).reshape(B, P, 1, 1, 3)  # grid_sample wants (z, y, x)
    vol = grid.density[:, None].to(points)
    if with_probs:
        vol = torch.cat([vol, grid.features.softmax(-1).permute(0, 4, 1, 2, 3).to(points)], 1)
    out = F.grid_sample(vol, coords, mode='bilinear', padding_mode='border',
                        align_corners=False)  # [B, 1 (+K), P, 1, 1]
    if not with_probs:
        return out.reshape(B, P)
    out = out.reshape(B, -1, P)
    return out[:, 0], out[:, 1:].transpose(1, 2)


@MODELS.register_module()
class SplattingOcc(BaseModel):
    """The network. Components are config dicts built from ``MODELS``.

    Args:
        backbone, neck, view_transform, volume_encoder, head: the network parts.
        renderer: 'TorchSplatRenderer' / 'GsplatRenderer' / 'SplatRenderer' (Gaussians) or
            'VolumeRenderer' (the head then returns a DensityGrid: ``head.scene_type='auto'``).
        voxelizer: 'GaussianVoxelizer' on the Occ3D grid (predict, 3D supervision); for the
            volume renderer only its grid, ``num_classes`` and ``free_label`` are used.
        pixel_sampler: config of the ray sampler (rendering/pixels.py), or None for dense renders.
        loss_depth, loss_sem: 2D losses (``SILogLoss`` | ``L1DepthLoss``, ``RenderedCELoss``).
        loss_lss_depth: optional ``LSSDepthLoss`` on the lifted depth distribution.
        loss_image_sem: optional ``ImageSemanticLoss`` on the lift's per-cell class logits (needs
            ``view_transform.semantic_classes`` > 0, which in turn needs this loss).
        loss_opacity: optional ``OpacitySparsityLoss`` or ``OpacityEntropyLoss`` on the Gaussians'
            opacities (Gaussian scenes only).
        loss_free_space: optional ``FreeSpaceLoss`` (losses.py) at points before each labelled
            ray's depth: the Gaussians' density there, or for a DensityGrid the optical depth
            over one Occ3D voxel edge (``density * voxel size``, trilinear): the same quantity
            ``rho`` whose ``1 - exp(-rho)`` is the voxel occupancy at test time.
        loss_surface: optional ``SurfaceLoss`` (losses.py) at each labelled ray's hit point (in
            ``label_range``): that density should make it occupied, the class scores there
            (the voxelizer's, or a DensityGrid's interpolated probabilities) give its class.
        loss_distortion: optional ``RayDistortionLoss`` (renders 4 extra feature channels: the
            world position and its squared norm).
        loss_3d: optional ``Occupancy3DLoss`` (used when ``use_3d_supervision``).
        use_2d_supervision, use_3d_supervision: which supervision trains the model.
        use_mask_camera: restrict the 3D loss to mask_camera voxels (off by default).
        loss_3d_grid: where the 3D loss is computed: 'occ' (Gaussians voxelized onto the Occ3D
            grid of the voxelizer, exact labels) or 'pred' (onto the coarser prediction grid of
            the head, labels reduced by ``downsample_labels``: much cheaper on a CPU).
        aux_weight, dynamic_classes: adjacent-frame ray weighting (see module docstring).
        label_range: 2D labels whose LiDAR point (pixel back-projected with its depth) lies
            outside this box (x0, y0, z0, x1, y1, z1, current ego frame) are ignored: nothing in
            the predicted volume can explain them (5.8% of the synthetic training labels: mostly
            building fronts above the grid's 5.4 m top or beyond 40 m), and fitting them pushes
            Gaussians onto the grid's border. 'grid' (default): the head's ``pc_range``; None
            keeps every label.
        render_min_opacity: Gaussians with a lower opacity are left out of the render. Any value
            up to 1/255 (the default) is exact: the splatting renderers skip every
            Gaussian-pixel pair with alpha = opacity * exp(-power) < 1/255, so such Gaussians
            neither contribute nor receive gradients. 0 disables the pruning.
        render_opacity_power: the renderer sees opacity ** this (default 1: the opacity itself).
            Above 1, faint Gaussians fade more than opaque ones in the render, so a stack of
            faint Gaussians along a ray costs more than one opaque one; the voxelizer still reads
            the opacity itself. Pruning (``render_min_opacity``) applies to the opacity itself.
        oracle_lift_depth: DIAGNOSTIC ONLY (default False): the LSS lift takes the LiDAR depth
            label's bin in every feature cell that has one (``LSSViewTransform``'s
            ``oracle_depth``), in training and at test, so the test pipeline must load the 2D
            labels too (``configs/splattingocc/splattingocc-tiny-synthetic-oracle-depth.py``).
            It measures what a perfect lift would give; its scores are not results.
        label_lift_prob: in training only (mode 'loss'; off at 0, the default), each feature
            cell with a LiDAR depth label lifts its context at that label's bin with this
            probability instead of at the predicted distribution (teacher forcing of the lift,
            the LSS depth loss's target; the depth loss still trains the prediction). Inference
            lifts the prediction, so the scores are results: the labels are the 2D training
            labels, seen in training only.
        density_grid_threshold: DensityGrid -> labels: a voxel is occupied where the opacity
            over one voxel edge, 1 - exp(-density * voxel_size), is at least this.
        img_mean, img_std: RGB normalisation of the 0..255 input images.
    """

    def __init__(self, backbone: dict, neck: dict, view_transform: dict, volume_encoder: dict,
                 head: dict, renderer: dict, voxelizer: dict,
                 pixel_sampler: Optional[dict] = None,
                 loss_depth: Optional[dict] = dict(type='SILogLoss'),
                 loss_sem: Optional[dict] = dict(type='RenderedCELoss'),
                 loss_lss_depth: Optional[dict] = None,
                 loss_image_sem: Optional[dict] = None,
                 loss_opacity: Optional[dict] = None,
                 loss_distortion: Optional[dict] = None,
                 loss_free_space: Optional[dict] = None,
                 loss_surface: Optional[dict] = None,
                 loss_3d: Optional[dict] = None,
                 use_2d_supervision: bool = True,
                 use_3d_supervision: bool = False,
                 use_mask_camera: bool = False,
                 loss_3d_grid: str = 'occ',
                 aux_weight: float = 0.3,
                 dynamic_classes: Sequence[int] = (),
                 label_range: Union[None, str, Sequence[float]] = 'grid',
                 render_min_opacity: float = 1.0 / 255.0,
                 render_opacity_power: float = 1.0,
                 density_grid_threshold: float = 0.5,
                 oracle_lift_depth: bool = False,
                 label_lift_prob: float = 0.0,
                 img_mean: Sequence[float] = _IMAGENET_MEAN,
                 img_std: Sequence[float] = _IMAGENET_STD,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        self.view_transform = MODELS.build(view_transform)
        self.volume_encoder = MODELS.build(volume_encoder)
        self.head = MODELS.build(head)
        self.renderer = MODELS.build(renderer)
        self.voxelizer = MODELS.build(voxelizer)
        self.pixel_sampler = _build(pixel_sampler)
        self.loss_depth = _build(loss_depth)
        self.loss_sem = _build(loss_sem)
        self.loss_lss_depth = _build(loss_lss_depth)
        self.loss_image_sem = _build(loss_image_sem)
        lift_classes = getattr(self.view_transform, 'semantic_classes', 0)
        if bool(lift_classes) != (self.loss_image_sem is not None):
            raise ValueError(
                'SplattingOcc: model.view_transform.semantic_classes (now '
                f'{lift_classes}) and model.loss_image_sem (now {loss_image_sem!r}) go together: '
                "set both (e.g. semantic_classes=num_classes - 1 and loss_image_sem=dict("
                "type='ImageSemanticLoss')) or neither")
        self.loss_opacity = _build(loss_opacity)
        self.loss_distortion = _build(loss_distortion)
        self.loss_free_space = _build(loss_free_space)
        self.loss_surface = _build(loss_surface)
        self.loss_3d = _build(loss_3d)
        if not (use_2d_supervision or use_3d_supervision):
            raise ValueError('SplattingOcc: use_2d_supervision and use_3d_supervision are both '
                             'False; enable at least one in model=dict(...)')
        if use_3d_supervision and self.loss_3d is None:
            raise ValueError('SplattingOcc: use_3d_supervision=True needs model.loss_3d, e.g. '
                             "dict(type='Occupancy3DLoss')")
        if use_2d_supervision and (self.loss_depth is None and self.loss_sem is None):
            raise ValueError('SplattingOcc: use_2d_supervision=True needs model.loss_depth or '
                             'model.loss_sem')
        self.use_2d_supervision = use_2d_supervision
        self.use_3d_supervision = use_3d_supervision
        self.use_mask_camera = use_mask_camera
        if loss_3d_grid not in ('occ', 'pred'):
            raise ValueError(f"SplattingOcc: loss_3d_grid must be 'occ' or 'pred', got "
                             f'{loss_3d_grid!r}')
        self.loss_3d_grid = loss_3d_grid
        self.aux_weight = float(aux_weight)
        self.dynamic_classes = tuple(int(c) for c in dynamic_classes)
        self.render_min_opacity = float(render_min_opacity)
        if not float(render_opacity_power) > 0:
            raise ValueError('SplattingOcc: render_opacity_power must be > 0, got '
                             f'{render_opacity_power}')
        self.render_opacity_power = float(render_opacity_power)
        if isinstance(label_range, str):
            if label_range != 'grid':
                raise ValueError(f"SplattingOcc: label_range must be 'grid', None or 6 numbers "
                                 f'(x0, y0, z0, x1, y1, z1), got {label_range!r}')
            label_range = getattr(self.head, 'pc_range', None)
            if label_range is None:
                raise ValueError("SplattingOcc: label_range='grid' needs a head with pc_range; "
                                 'give the box as 6 numbers instead')
        if label_range is not None and len(label_range) != 6:
            raise ValueError(f'SplattingOcc: label_range needs 6 numbers (x0, y0, z0, x1, y1, '
                             f'z1), got {label_range!r}')
        self.label_range = None if label_range is None else tuple(float(x) for x in label_range)
        self.density_grid_threshold = float(density_grid_threshold)
        self.oracle_lift_depth = bool(oracle_lift_depth)
        if not 0.0 <= label_lift_prob <= 1.0:
            raise ValueError('SplattingOcc: label_lift_prob must be in [0, 1], got '
                             f'{label_lift_prob!r}')
        self.label_lift_prob = float(label_lift_prob)
        self._render_clock = RenderClock()  # logged as time_render (see render_clock.py)
        self.register_buffer('img_mean', torch.tensor(img_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('img_std', torch.tensor(img_std).view(1, 3, 1, 1), persistent=False)

        if getattr(self.head, 'scene_type', 'gaussians') == 'auto':
            self.head.set_scene_type(self._renderer_scene_type())
        self.scene_type = getattr(self.head, 'scene_type', 'gaussians')
        # free label / class count of the Occ3D grid, from the voxelizer config
        self.free_label = int(self.voxelizer.free_label)
        self.num_classes = int(self.voxelizer.num_classes)

    def _renderer_scene_type(self) -> str:
        st = getattr(self.renderer, 'scene_type', None)
        if st is not None:
            return st
        return 'density' if type(self.renderer).__name__ == 'VolumeRenderer' else 'gaussians'

    # ------------------------------------------------------------------ network
    def extract_scene(self, img: Tensor,  # [B, N, 3, H, W]
                      cam2img: Tensor,  # [B, N, 3, 3]
                      cam2ego: Tensor,  # [B, N, 4, 4]
                      oracle_depth: Optional[Tensor] = None,  # [B, N, h, w] (diagnostic)
                      oracle_prob: float = 1.0,
                      ):
        """Images -> (Gaussians | DensityGrid, LSS depth probabilities [B, N, D, Hf, Wf], the
        lift's class logits [B, N, K, Hf, Wf] or None).

        Args:
            img: [B, N, 3, H, W] RGB 0..255.
            cam2img: [B, N, 3, 3] intrinsics of the input images.
            cam2ego: [B, N, 4, 4] camera -> current ego.
        """
        assert img.dim() == 5 and img.shape[2] == 3, img.shape
        B, N, _, H, W = img.shape
        assert cam2img.shape == (B, N, 3, 3), cam2img.shape
        assert cam2ego.shape == (B, N, 4, 4), cam2ego.shape
        x = (img.flatten(0, 1).float() - self.img_mean) / self.img_std  # [B*N, 3, H, W]
        feats = self.neck(self.backbone(x))  # [B*N, C, Hf, Wf]
        feats = feats.unflatten(0, (B, N))  # [B, N, C, Hf, Wf]
        if oracle_depth is None:
            lifted = self.view_transform(feats, cam2img, cam2ego, (H, W))
        else:
            lifted = self.view_transform(feats, cam2img, cam2ego, (H, W),
                                         oracle_depth=oracle_depth, oracle_prob=oracle_prob)
        volume, depth_prob = lifted[:2]
        sem_logits = lifted[2] if len(lifted) > 2 else None
        volume = self.volume_encoder(volume)  # [B, C', X, Y, Z]
        return self.head(volume), depth_prob, sem_logits

    def forward(self, mode: str = 'tensor', **batch):
        """mmengine entry: ``model(**batch, mode=...)`` with the data contract's batch keys."""
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f"SplattingOcc.forward: mode must be 'loss', 'predict' or 'tensor', "
                             f'got {mode!r}')
        for key in ('img', 'cam2img', 'cam2ego'):
            if key not in batch:
                raise KeyError(f'SplattingOcc.forward: the batch has no {key!r} (keys: '
                               f'{sorted(batch)}); check the dataset pipeline\'s packing transform')
        # the lift takes depth labels: always with the oracle (diagnostic), in training with
        # label_lift_prob
        oracle_prob = 1.0 if self.oracle_lift_depth else (
            self.label_lift_prob if mode == 'loss' else 0.0)
        oracle = None
        if oracle_prob > 0:
            if 'gt_depth' not in batch:
                switch = ('oracle_lift_depth=True' if self.oracle_lift_depth
                          else 'label_lift_prob > 0')
                raise KeyError(f'SplattingOcc: {switch} needs the batch key gt_depth in mode '
                               f'{mode!r}: add LoadLabels2D to this pipeline (see configs/'
                               'splattingocc/splattingocc-tiny-synthetic-oracle-depth.py)')
            oracle = batch['gt_depth'][:, :batch['img'].shape[1]]  # the current frame
        scene, depth_prob, sem_logits = self.extract_scene(batch['img'], batch['cam2img'],
                                                           batch['cam2ego'], oracle, oracle_prob)
        if mode == 'loss':
            return self.loss(scene, depth_prob, batch, sem_logits)
        if mode == 'predict':
            return self.predict(scene, batch)
        if isinstance(scene, Gaussians):  # 'tensor'
            return dict(means=scene.means, quats=scene.quats, scales=scene.scales,
                        opacities=scene.opacities, features=scene.features)
        return dict(density=scene.density, features=scene.features)

    # ------------------------------------------------------------------ rendering supervision
    def render_scene(self, scene):
        """The scene to render: class probabilities as features; Gaussians whose opacity is
        below ``render_min_opacity`` left out (per sample the most opaque n are kept, n = the
        largest count above the threshold in the batch, so the batch stays rectangular)."""
        if isinstance(scene, Gaussians):
            N = scene.num_gaussians
            if self.render_min_opacity > 0 and N > 0:
                with torch.no_grad():
                    n = int((scene.opacities >= self.render_min_opacity).sum(1).max())
                if n < N:
                    idx = scene.opacities.topk(max(n, 1), dim=1).indices  # [B, n]
                    pick = lambda t: t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))  # noqa
                    scene = Gaussians(means=pick(scene.means), quats=pick(scene.quats),
                                      scales=pick(scene.scales),
                                      opacities=scene.opacities.gather(1, idx),
                                      features=pick(scene.features))
            feats = scene.features.softmax(-1)  # [B, N, K]
            if self.loss_distortion is not None:
                p = scene.means  # [B, N, 3]
                feats = torch.cat([feats, p, p.square().sum(-1, keepdim=True)], dim=-1)
            if self.render_opacity_power != 1.0:
                scene = replace(scene, opacities=scene.opacities.pow(self.render_opacity_power))
            return replace(scene, features=feats)
        feats = scene.features.softmax(-1)  # [B, X, Y, Z, K]
        if self.loss_distortion is not None:
            # voxel centres: interpolating p is exact; interpolating |p|^2 adds a small constant
            # (< one voxel's squared size), the variance stays >= 0 (Jensen)
            p = voxel_centres(scene.pc_range, scene.density.shape[1:], device=feats.device,
                              dtype=feats.dtype).expand(feats.shape[:4] + (3, ))
            feats = torch.cat([feats, p, p.square().sum(-1, keepdim=True)], dim=-1)
        return DensityGrid(density=scene.density, features=feats, pc_range=scene.pc_range)

    def sample_rays(self, gt_depth: Tensor,  # [B, C, h, w]
                    gt_semantics: Tensor,  # [B, C, h, w]
                    ):
        """Pixels to render and their labels (``PixelSampler`` of rendering/pixels.py).

        Returns:
            pixels [B, C, P, 2] (None: dense render), depth labels [B, C, P] (dense: [B, C, h, w]),
            semantic labels (same shape, 255 = none), mask of real samples (same shape, bool).
        """
        if self.pixel_sampler is None:
            valid = torch.ones_like(gt_depth, dtype=torch.bool)
            return None, gt_depth, gt_semantics, valid
        s = self.pixel_sampler(gt_semantics, gt_depth)
        return s.pixels, s.depth, s.semantics, s.mask

    def loss(self, scene, depth_prob: Tensor, batch: dict,
             sem_logits: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Loss terms, one key each ('loss_depth', 'loss_sem', ...), plus detached statistics."""
        losses = {}
        if self.use_2d_supervision:
            losses.update(self.loss_2d(scene, batch))
        if self.loss_lss_depth is not None:
            gt = batch['gt_depth']
            N = batch['img'].shape[1]
            target = depth_labels_min_pool(gt[:, :N], depth_prob.shape[-2:])  # current frame
            bins = self.view_transform.depth_bin_index(target)  # [B, N, Hf, Wf]
            losses['loss_lss_depth'] = self.loss_lss_depth(depth_prob, bins)
        if self.loss_image_sem is not None:
            if 'gt_semantics' not in batch:
                raise KeyError('SplattingOcc: loss_image_sem needs the batch key gt_semantics '
                               '(LoadLabels2D in the training pipeline)')
            N = batch['img'].shape[1]
            losses['loss_image_sem'] = self.loss_image_sem(sem_logits,
                                                           batch['gt_semantics'][:, :N])
        if self.loss_opacity is not None and isinstance(scene, Gaussians):
            losses['loss_opacity'] = self.loss_opacity(scene.opacities)
        if self.use_3d_supervision:
            losses.update(self.loss_3d_terms(scene, batch))
        return losses

    def loss_2d(self, scene, batch: dict) -> Dict[str, Tensor]:
        for key in ('render_viewmats', 'render_Ks', 'gt_depth', 'gt_semantics'):
            if key not in batch:
                raise KeyError(f'SplattingOcc: 2D supervision needs {key!r} in the batch (keys: '
                               f'{sorted(batch)}); check the dataset pipeline')
        gt_depth = batch['gt_depth'].float()  # [B, C, h, w]
        gt_sem = batch['gt_semantics']  # [B, C, h, w]
        B, C, h, w = gt_depth.shape
        assert gt_sem.shape == (B, C, h, w), (gt_sem.shape, gt_depth.shape)
        cams = Cameras(viewmats=batch['render_viewmats'].float(), Ks=batch['render_Ks'].float(),
                       width=w, height=h)
        offset = batch.get('render_frame_offset')
        if offset is None:
            offset = torch.zeros(B, C, dtype=torch.long, device=gt_depth.device)
        pixels, depth_lab, sem_lab, valid = self.sample_rays(gt_depth, gt_sem)
        # the free-space term also uses rays whose hit is out of range (their path in the box is
        # still empty); ray weights come from the unfiltered labels (dynamic classes)
        free_depth, flat_sem = depth_lab, sem_lab.flatten(2)  # [B, C, P]
        if self.label_range is not None:
            pix = pixels if pixels is not None else \
                pixel_centres(h, w, gt_depth.device).expand(B, C, h * w, 2)
            keep = in_box(backproject(pix, depth_lab.reshape(B, C, -1).double(), cams.viewmats,
                                      cams.Ks), self.label_range).reshape(depth_lab.shape)
            depth_lab = torch.where(keep, depth_lab, torch.zeros_like(depth_lab))
            sem_lab = torch.where(keep, sem_lab, torch.full_like(sem_lab, IGNORE))
        device = gt_depth.device
        render_input = self._render_clock.start(self.render_scene(scene), device)
        out = self._render_clock.stop(self.renderer(render_input, cams, pixels), device)
        weight = auxiliary_ray_weights(offset, flat_sem, self.aux_weight, self.dynamic_classes)
        weight = (weight * valid.flatten(2)).reshape(-1)  # [B*C*P]
        feats = out.features.reshape(-1, out.features.shape[-1])  # [B*C*P, K (+4)]
        losses = {}
        if self.loss_distortion is not None:
            losses['loss_distortion'] = self.loss_distortion(
                feats[:, -4:-1], feats[:, -1], out.alpha.reshape(-1),
                weight * (depth_lab.reshape(-1) > 0))
            feats = feats[:, :-4]
        if self.loss_depth is not None:
            losses['loss_depth'] = self.loss_depth(out.depth.reshape(-1), depth_lab.reshape(-1),
                                                   weight)
        if self.loss_sem is not None:
            losses['loss_sem'] = self.loss_sem(feats, sem_lab.reshape(-1), weight)
        if self.loss_free_space is not None:
            losses['loss_free_space'] = self.free_space_term(scene, cams, pixels, free_depth,
                                                             weight, flat_sem)
            if self.loss_free_space.sky_rays > 0:
                losses['loss_free_sky'] = self.sky_free_space_term(scene, cams, gt_depth, offset)
        if self.loss_surface is not None:
            losses.update(self.surface_term(scene, cams, pixels, depth_lab, weight,
                                            sem_lab.flatten(2)))
        with torch.no_grad():
            labelled = (depth_lab.reshape(-1) > 0) & (weight > 0)
            losses['render_alpha'] = out.alpha.reshape(-1)[labelled].mean() if labelled.any() \
                else out.alpha.new_zeros(())
            # seconds: this step's render forward + the previous step's render backward
            losses['time_render'] = out.alpha.new_tensor(self._render_clock.seconds())
        return losses

    def free_space_term(self, scene, cams: Cameras, pixels: Optional[Tensor],
                        depth: Tensor, weight: Tensor,
                        semantics: Optional[Tensor] = None,
                        far: Optional[Tensor] = None) -> Tensor:
        """``loss_free_space`` on the rays of this step: points before each labelled depth,
        back-projected through the rendering cameras into the head's box.

        Args:
            pixels: [B, C, P, 2] (u, v) ray pixels, or None (dense: every pixel centre).
            depth: [B, C, P] (or [B, C, h, w] when dense) depth labels, 0 = none.
            weight: [B*C*P] ray weights.
            semantics: the rays' class labels (as depth; for ``FreeSpaceLoss.flat_classes``).
            far: [B, C, P] camera depths where the points stop, overriding the loss's rules.
        """
        B, C = depth.shape[:2]
        if pixels is None:
            h, w = depth.shape[2:]
            pixels = pixel_centres(h, w, depth.device).expand(B, C, h * w, 2)
        d = depth.reshape(B, C, -1).float()  # [B, C, P]
        if far is not None:
            far = far.reshape(B, C, -1).float()
        elif self.loss_free_space.flat_classes is not None:
            origin = backproject(pixels[:, :, :1], torch.zeros_like(d[:, :, :1]), cams.viewmats,
                                 cams.Ks)  # [B, C, 1, 3] camera centres
            dirs = backproject(pixels, torch.ones_like(d), cams.viewmats, cams.Ks) - origin
            far = self.loss_free_space.far_depths(d, semantics.reshape(B, C, -1), dirs)
        z, valid = self.loss_free_space.sample_depths(d, far=far)  # [B, C, P, S]
        S = z.shape[-1]
        pix = pixels[:, :, :, None, :].expand(-1, -1, -1, S, -1).reshape(B, C, -1, 2)
        pts = backproject(pix, z.reshape(B, C, -1), cams.viewmats, cams.Ks)  # [B, C, P*S, 3]
        valid = valid & in_box(pts, self.head.pc_range).reshape(valid.shape)
        if isinstance(scene, Gaussians):
            density = grid_gaussian_density(pts.reshape(B, -1, 3), scene.means, scene.quats,
                                            scene.scales, scene.opacities, self.head.pc_range,
                                            self.head.grid_size,
                                            window=self.loss_free_space.window)
        else:
            density = density_grid_at(scene, pts.reshape(B, -1, 3)) * self.voxelizer_edge()
        return self.loss_free_space(density.reshape(-1, S), valid.reshape(-1, S), weight)

    def sky_free_space_term(self, scene, cams: Cameras, gt_depth: Tensor,
                            offset: Tensor) -> Tensor:
        """``loss_free_space`` along open-sky rays (``open_sky_mask``: above every LiDAR return of
        their column): ``sky_rays`` per camera, free from ``near`` to ``sky_depth`` (camera z),
        adjacent-frame cameras weighted ``aux_weight``."""
        fs = self.loss_free_space
        B, C = gt_depth.shape[:2]
        sky = open_sky_mask(gt_depth, fs.sky_column_window, fs.sky_margin_rows)
        pixels, ok = sample_mask_pixels(sky, fs.sky_rays)  # [B, C, R, 2], [B, C, R]
        R = pixels.shape[2]
        w_cam = torch.where(offset == 0, torch.ones_like(offset, dtype=torch.float),
                            torch.full_like(offset, self.aux_weight, dtype=torch.float))
        weight = (w_cam[:, :, None] * ok).reshape(-1)
        depth = torch.full((B, C, R), fs.sky_depth, device=gt_depth.device)
        return self.free_space_term(scene, cams, pixels, depth, weight, far=depth)

    def surface_term(self, scene, cams: Cameras, pixels: Optional[Tensor], depth: Tensor,
                     weight: Tensor, semantics: Tensor) -> Dict[str, Tensor]:
        """``loss_surface`` at the rays' labelled hit points (``loss_surface.behind`` metres
        further along the ray), those inside the head's box.

        Args:
            pixels: [B, C, P, 2] (u, v) ray pixels, or None (dense: every pixel centre).
            depth: [B, C, P] (or [B, C, h, w]) depth labels, 0 = none.
            weight: [B*C*P] ray weights.
            semantics: the rays' class labels (as depth).
        """
        B, C = depth.shape[:2]
        if pixels is None:
            h, w = depth.shape[2:]
            pixels = pixel_centres(h, w, depth.device).expand(B, C, h * w, 2)
        d = depth.reshape(B, C, -1).float()  # [B, C, P]
        pts = backproject(pixels, d, cams.viewmats, cams.Ks)  # [B, C, P, 3]
        behind = self.loss_surface.behind
        if behind > 0:
            origin = backproject(pixels[:, :, :1], torch.zeros_like(d[:, :, :1]), cams.viewmats,
                                 cams.Ks)  # [B, C, 1, 3] camera centres
            ray = pts - origin
            pts = pts + behind * ray / ray.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        valid = (d > 0) & in_box(pts, self.head.pc_range).reshape(d.shape)
        pts = pts.reshape(B, -1, 3)
        if isinstance(scene, Gaussians):
            density, scores = grid_gaussian_fields(
                pts, scene.means, scene.quats, scene.scales, scene.opacities,
                self.head.pc_range, self.head.grid_size, window=self.loss_surface.window,
                features=scene.features, score_mode=self.voxelizer.score_mode)
        else:
            density, probs = density_grid_at(scene, pts, with_probs=True)
            density = density * self.voxelizer_edge()
            scores = probs * density[..., None]
        return self.loss_surface(density.reshape(-1), scores.reshape(-1, scores.shape[-1]),
                                 semantics.reshape(-1), valid.reshape(-1), weight)

    def voxelizer_edge(self) -> float:
        """Shortest voxel edge of the voxelizer's (Occ3D) grid, metres."""
        pc, size = self.voxelizer.pc_range, self.voxelizer.occ_size
        return min((float(pc[a + 3]) - float(pc[a])) / int(n) for a, n in enumerate(size))

    def occ_fields(self, scene):
        """(density [B, X, Y, Z], class scores [B, X, Y, Z, K]) on the voxelizer's (Occ3D) grid."""
        if isinstance(scene, Gaussians):
            out = self.voxelizer(scene, return_fields=True)
            return out.density, out.scores
        return density_grid_to_voxels(scene, self.voxelizer.pc_range, self.voxelizer.occ_size)

    def loss_3d_terms(self, scene, batch: dict) -> Dict[str, Tensor]:
        if 'voxel_semantics' not in batch:
            raise KeyError('SplattingOcc: use_3d_supervision=True needs the Occ3D ground truth '
                           "('voxel_semantics') in the batch: enable loading it in the pipeline")
        sem = batch['voxel_semantics']  # [B, X, Y, Z]
        mask = batch['mask_camera'] if self.use_mask_camera else None
        if self.loss_3d_grid == 'occ':
            # Gaussians: voxelizer density and scores; DensityGrid: optical depth over a voxel
            # and probabilities (the loss uses 1 - exp(-density) and normalised scores)
            density, scores = self.occ_fields(scene)
        else:
            pc_range, grid = self.head.pc_range, self.head.grid_size
            factors = [n // g for n, g in zip(sem.shape[1:], grid)]
            sem = downsample_labels(sem, factors, self.num_classes)
            mask = None if mask is None else downsample_mask(mask, factors)
            if isinstance(scene, Gaussians):
                out = voxelize_gaussians(scene.means, scene.quats, scene.scales, scene.opacities,
                                         scene.features, pc_range, grid,
                                         cutoff=self.voxelizer.cutoff,
                                         score_mode=self.voxelizer.score_mode)
                density, scores = out.density, out.scores
            else:
                density, scores = density_grid_to_voxels(scene, pc_range, grid)
        loss_occ, loss_sem = self.loss_3d(density, scores, sem, self.free_label, mask)
        return dict(loss_occ3d=loss_occ, loss_sem3d=loss_sem)

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict_semantics(self, scene) -> Tensor:
        """Occ3D labels [B, X, Y, Z] (uint8, free = free_label) of a predicted scene."""
        if isinstance(scene, Gaussians):
            return self.voxelizer(scene).to(torch.uint8)
        tau, probs = density_grid_to_voxels(scene, self.voxelizer.pc_range,
                                            self.voxelizer.occ_size)
        occupied = (1 - torch.exp(-tau)) >= self.density_grid_threshold
        K = probs.shape[-1]
        if K == self.num_classes:  # free class among the logits
            label = probs.argmax(-1)
        else:
            label = probs.argmax(-1)
            label = label + (label >= self.free_label).long()  # skip the free index
        label = torch.where(occupied & (label != self.free_label), label,
                            torch.full_like(label, self.free_label))
        return label.to(torch.uint8)

    def predict(self, scene, batch: dict) -> List[dict]:
        sem = self.predict_semantics(scene).cpu().numpy()  # [B, X, Y, Z]
        metas = _split_meta(batch.get('meta'), sem.shape[0])
        return [dict(semantics=np.ascontiguousarray(sem[b]),
                     sample_token=str(metas[b].get('sample_token', '')),
                     scene_name=str(metas[b].get('scene_name', '')))
                for b in range(sem.shape[0])]


def _split_meta(meta, batch_size: int) -> List[dict]:
    """Per-sample meta dicts from a collated dict of lists (default_collate) or a list of dicts."""
    if meta is None:
        return [{} for _ in range(batch_size)]
    if isinstance(meta, (list, tuple)):
        assert len(meta) == batch_size, (len(meta), batch_size)
        return [dict(m) for m in meta]
    out = [{} for _ in range(batch_size)]
    for k, v in meta.items():
        for b in range(batch_size):
            try:
                out[b][k] = v[b]
            except (TypeError, IndexError, KeyError):
                out[b][k] = v
    return out
