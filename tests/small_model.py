"""A small SplattingOcc model and random batches for the model and supervision tests (CPU).

Importable from any test (``tests/`` is on ``sys.path``: pytest puts the root conftest's folder
there).
"""
import math

import torch

from splattingocc.geometry import rigid_inverse, voxel_centres
from splattingocc.structures import Gaussians

PC = [-8.0, -8.0, -1.0, 8.0, 8.0, 3.0]
PRED_GRID = [8, 8, 4]  # 2 m x 2 m x 1 m voxels, one Gaussian each
OCC_GRID = [16, 16, 8]  # the evaluation grid, 1 m x 1 m x 0.5 m
NUM_CLASSES, FREE = 18, 17


def ray_supervision(renderer='TorchSplatRenderer', losses=None, **overrides):
    """RaySupervision config: SILog depth + class-weighted rendered CE at 96 sampled rays."""
    cfg = dict(
        type='RaySupervision',
        renderer=dict(type=renderer) if isinstance(renderer, str) else renderer,
        pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=96,
                           num_classes=NUM_CLASSES - 1),
        losses=[dict(type='SILogLoss'), dict(type='RenderedCELoss', class_weight='batch')]
        if losses is None else losses,
        aux_weight=0.3, dynamic_classes=[2, 3, 4])
    cfg.update(overrides)
    return cfg


def volume_supervision(**overrides):
    """VolumeSupervision config on the label grid (Occupancy3DLoss)."""
    cfg = dict(type='VolumeSupervision', pc_range=PC, num_classes=NUM_CLASSES, free_label=FREE,
               losses=[dict(type='Occupancy3DLoss')])
    cfg.update(overrides)
    return cfg


def gaussian_head(**overrides):
    cfg = dict(type='GaussianHead', in_channels=8, pc_range=PC, grid_size=PRED_GRID,
               num_classes=NUM_CLASSES - 1, min_scale=0.25, max_scale=[1.0, 1.0, 0.5],
               hidden_channels=8)
    cfg.update(overrides)
    return cfg


def density_head(**overrides):
    """The NeRF baseline's head on the same grid; point densities over one 0.5 m Occ3D edge."""
    cfg = dict(type='DensityGridHead', in_channels=8, pc_range=PC, grid_size=PRED_GRID,
               num_classes=NUM_CLASSES - 1, hidden_channels=8, edge=0.5)
    cfg.update(overrides)
    return cfg


def small_model_cfg(supervision=None, density=False, **overrides):
    """The network with ``supervision`` (default: rays, LSS depth 0.5, opacity entropy 0.01);
    ``density=True``: a DensityGridHead and the VolumeRenderer in the default supervision."""
    if supervision is None:
        supervision = [ray_supervision('VolumeRenderer' if density else 'TorchSplatRenderer'),
                       dict(type='LSSDepthLoss', loss_weight=0.5)]
        if not density:
            supervision.append(dict(type='OpacityEntropyLoss', loss_weight=0.01))
    cfg = dict(
        type='SplattingOcc',
        backbone=dict(type='ResNet', depth='tiny', widths=[8, 8, 16, 16], stem_channels=8,
                      out_indices=[2, 3]),
        neck=dict(type='MergeNeck', in_channels=[16, 16], out_channels=16),
        view_transform=dict(type='LSSViewTransform', in_channels=16, out_channels=8,
                            depth_bins=[1.0, 13.0, 1.0], pc_range=PC, grid_size=PRED_GRID),
        volume_encoder=dict(type='VolumeEncoder3D', in_channels=8, channels=8, num_blocks=1),
        head=density_head() if density else gaussian_head(),
        readout=dict(type='OccupancyReadout', pc_range=PC, occ_size=OCC_GRID,
                     num_classes=NUM_CLASSES, free_label=FREE, threshold=0.3),
        supervision=supervision,
    )
    cfg.update(overrides)
    return cfg


def ring_cameras(n):
    """n cameras 1.5 m up, looking outwards horizontally (OpenCV axes) -> cam2ego [n, 4, 4]."""
    T = torch.zeros(n, 4, 4)
    for i in range(n):
        yaw = 2 * math.pi * i / n
        T[i, :3, :3] = torch.tensor([[math.sin(yaw), 0, math.cos(yaw)],
                                     [-math.cos(yaw), 0, math.sin(yaw)], [0, -1, 0.0]])
        T[i, :3, 3] = torch.tensor([0.0, 0.0, 1.5])
        T[i, 3, 3] = 1
    return T


def random_batch(B=1, N=2, F=2, H=32, W=64, ds=2, seed=0):
    """A batch of the data contract: N input cameras, F frames of label cameras (the first N
    are the current frame's), labels at 1/ds of the input size, random Occ3D labels."""
    g = torch.Generator().manual_seed(seed)
    h, w = H // ds, W // ds
    K = torch.tensor([[32.0, 0, 32], [0, 32.0, 16], [0, 0, 1]])
    Kl = K.clone()
    Kl[:2] /= ds
    cam2ego = ring_cameras(N)
    labelled = torch.rand(B, F * N, h, w, generator=g) < 0.5
    return dict(
        img=torch.rand(B, N, 3, H, W, generator=g) * 255,
        cam2img=K.expand(B, N, 3, 3).clone(),
        cam2ego=cam2ego.expand(B, N, 4, 4).clone(),
        render_viewmats=rigid_inverse(cam2ego).repeat(F, 1, 1).expand(B, F * N, 4, 4).clone(),
        render_Ks=Kl.expand(B, F * N, 3, 3).clone(),
        render_frame_offset=torch.tensor([0] * N + [-1] * N * (F - 1)).expand(B, F * N).clone(),
        gt_depth=torch.where(labelled, 2 + 8 * torch.rand(B, F * N, h, w, generator=g),
                             torch.zeros(B, F * N, h, w)),
        gt_semantics=torch.where(labelled, torch.randint(0, 17, (B, F * N, h, w), generator=g),
                                 torch.full((B, F * N, h, w), 255)),
        voxel_semantics=torch.randint(0, 18, (B, *OCC_GRID), generator=g).to(torch.uint8),
        mask_camera=torch.ones(B, *OCC_GRID, dtype=torch.uint8),
        meta=dict(sample_token=[f'tok{b}' for b in range(B)],
                  scene_name=[f'scene-{b}' for b in range(B)]),
    )


def check_grads(model):
    """Names of trainable parameters without a (nonzero) gradient; asserts the rest finite."""
    missing = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None or p.grad.abs().sum() == 0:
            missing.append(name)
        else:
            assert torch.isfinite(p.grad).all(), name
    return missing


def loss_sum(losses):
    return sum(v for k, v in losses.items() if k.startswith('loss'))


def random_voxel_gaussians(seed=0, B=1, K=5):
    """One Gaussian per voxel of PRED_GRID, mean inside its voxel, scales below a voxel."""
    g = torch.Generator().manual_seed(seed)
    N = math.prod(PRED_GRID)
    centres = voxel_centres(PC, PRED_GRID).reshape(1, N, 3)
    half = torch.tensor([(PC[a + 3] - PC[a]) / PRED_GRID[a] / 2 for a in range(3)])
    means = centres + (torch.rand(B, N, 3, generator=g) * 2 - 1) * half
    return Gaussians(means=means, quats=torch.randn(B, N, 4, generator=g),
                     scales=0.2 + 0.3 * torch.rand(B, N, 3, generator=g),
                     opacities=torch.rand(B, N, generator=g),
                     features=torch.randn(B, N, K, generator=g))
