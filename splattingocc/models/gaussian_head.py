"""Gaussian head: one 3D Gaussian per voxel of the predicted grid (or a NeRF density grid).

Per voxel (ix, iy, iz) with centre ``c = pc_min + voxel_size * (index + 0.5)`` a 1x1x1-conv MLP
predicts raw values that are mapped to:

* mean     = c + tanh(raw_offset) * voxel_size / 2          (stays inside its voxel, per axis)
* scale    = min_scale + (max_scale - min_scale) * sigmoid(raw)   (per axis limits from the
             config; ``isotropic=True`` predicts one value used for all three axes)
* rotation = normalise(raw_quat + [1, 0, 0, 0])   [w, x, y, z] (identity when isotropic)
* opacity  = sigmoid(raw + logit(init_opacity))
* features = K semantic logits.

Semantic classes: by default K = ``num_classes - 1`` = 17, the occupied classes 0..16 only. 2D
labels never show free space (every LiDAR return hits something), so a free logit would never be
supervised by rendering; whether a voxel is free is decided by the voxelizer's density threshold
(the Gaussians' opacity), as in RenderOcc's rendering of occupied space. ``num_classes=18`` is
accepted (the voxelizer then also treats an argmax of class 17 as free).

``scene_type='density'`` turns the head into the RenderOcc baseline's head: it returns a
``DensityGrid`` (density = softplus(raw + density_bias), 1/m) with the same K logits per voxel.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..geometry import voxel_centres
from ..registry import MODELS
from ..structures import DensityGrid, Gaussians


def _per_axis(v: Union[float, Sequence[float]]) -> list:
    v = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
    assert len(v) == 3, v
    return v


@MODELS.register_module()
class GaussianHead(nn.Module):
    """Voxel features [B, C, X, Y, Z] -> Gaussians (N = X * Y * Z, voxel order x, y, z).

    Args:
        in_channels: channels of the encoded volume.
        pc_range: box of the predicted grid.
        grid_size: (X, Y, Z) of the predicted grid.
        num_classes: K semantic logits (17 = occupied classes only, the default; see module doc).
        min_scale, max_scale: scale limits in metres, a number or one per axis (x, y, z).
        isotropic: one scale per Gaussian and identity rotation.
        hidden_channels: width of the 1x1x1 MLP.
        init_opacity: opacity of every Gaussian at initialisation.
        scene_type: 'gaussians' (default) or 'density' (returns a DensityGrid for the volume
            renderer); the detector sets it from the renderer when left at 'auto'.
        density_bias: added to the raw density before softplus ('density' only).
    """

    def __init__(self, in_channels: int, pc_range: Sequence[float], grid_size: Sequence[int],
                 num_classes: int = 17, min_scale: Union[float, Sequence[float]] = 0.05,
                 max_scale: Union[float, Sequence[float]] = 1.0, isotropic: bool = False,
                 hidden_channels: int = 64, init_opacity: float = 0.1,
                 scene_type: str = 'gaussians', density_bias: float = -2.0):
        super().__init__()
        assert scene_type in ('gaussians', 'density', 'auto'), scene_type
        self.in_channels = in_channels
        self.pc_range = tuple(float(v) for v in pc_range)
        self.grid_size = tuple(int(v) for v in grid_size)
        assert len(self.pc_range) == 6 and len(self.grid_size) == 3, (pc_range, grid_size)
        self.num_classes = num_classes
        self.min_scale = _per_axis(min_scale)
        self.max_scale = _per_axis(max_scale)
        assert all(0 < a < b for a, b in zip(self.min_scale, self.max_scale)), \
            (self.min_scale, self.max_scale)
        self.isotropic = isotropic
        if isotropic and len(set(self.min_scale)) + len(set(self.max_scale)) != 2:
            raise ValueError('GaussianHead: isotropic=True needs one min_scale and one max_scale '
                             f'for all axes, got {self.min_scale}, {self.max_scale}')
        self.init_opacity = float(init_opacity)
        self.density_bias = float(density_bias)
        self.mlp = nn.Sequential(nn.Conv3d(in_channels, hidden_channels, 1), nn.ReLU(inplace=True))
        # separate output layers, so each can be built/initialised on its own
        self.offset = nn.Conv3d(hidden_channels, 3, 1)
        self.scale = nn.Conv3d(hidden_channels, 1 if isotropic else 3, 1)
        self.rotation = None if isotropic else nn.Conv3d(hidden_channels, 4, 1)
        self.opacity = nn.Conv3d(hidden_channels, 1, 1)
        self.semantics = nn.Conv3d(hidden_channels, num_classes, 1)
        for m in (self.offset, self.scale, self.rotation, self.opacity):
            if m is not None:
                nn.init.normal_(m.weight, std=1e-3)
                nn.init.zeros_(m.bias)
        self.scene_type = 'auto'
        if scene_type != 'auto':
            self.set_scene_type(scene_type)
        self.register_buffer('centres', voxel_centres(self.pc_range, self.grid_size),
                             persistent=False)
        vs = [(self.pc_range[a + 3] - self.pc_range[a]) / self.grid_size[a] for a in range(3)]
        self.register_buffer('half_voxel', torch.tensor(vs) / 2, persistent=False)
        self.register_buffer('scale_lo', torch.tensor(self.min_scale), persistent=False)
        self.register_buffer('scale_hi', torch.tensor(self.max_scale), persistent=False)

    def set_scene_type(self, scene_type: str) -> None:
        """Fix the output type; 'density' drops the Gaussian-only layers (offset, scale,
        rotation), so every remaining parameter gets a gradient (DistributedDataParallel)."""
        assert scene_type in ('gaussians', 'density'), scene_type
        self.scene_type = scene_type
        if scene_type == 'density':
            self.offset = self.scale = self.rotation = None

    def forward(self, x: Tensor):
        """x: [B, C, X, Y, Z] -> Gaussians (N = X*Y*Z) or DensityGrid (scene_type='density')."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels and \
            tuple(x.shape[2:]) == self.grid_size, (x.shape, self.in_channels, self.grid_size)
        B = x.shape[0]
        h = self.mlp(x)  # [B, hidden, X, Y, Z]
        logits = rearrange(self.semantics(h), 'b k x y z -> b x y z k')
        if self.scene_type == 'density':
            raw = self.opacity(h)[:, 0]  # [B, X, Y, Z]
            density = F.softplus(raw + self.density_bias)
            return DensityGrid(density=density, features=logits, pc_range=self.pc_range)
        assert self.scene_type == 'gaussians', \
            f'GaussianHead.scene_type is {self.scene_type!r}: the detector must resolve "auto"'

        flat = lambda t: rearrange(t, 'b c x y z -> b (x y z) c')  # noqa: E731
        return self.decode(flat(self.offset(h)), flat(self.scale(h)),
                           None if self.isotropic else flat(self.rotation(h)),
                           flat(self.opacity(h))[..., 0],
                           rearrange(logits, 'b x y z k -> b (x y z) k'))

    def decode(self, offset: Tensor, scale: Tensor, rotation, opacity: Tensor,
               logits: Tensor) -> Gaussians:
        """Raw per-Gaussian values (voxel order x, y, z) -> Gaussians, by the module docstring's
        mapping (also used to fit Gaussians directly: tools/fit_gaussians.py).

        Args:
            offset: [B, N, 3]; scale: [B, N, 1 or 3]; rotation: [B, N, 4] or None (isotropic);
            opacity: [B, N]; logits: [B, N, K]; N = X * Y * Z of ``grid_size``.
        """
        B, N = offset.shape[:2]
        assert N == self.centres[..., 0].numel(), (offset.shape, self.grid_size)
        means = self.centres.reshape(1, -1, 3) + torch.tanh(offset) * self.half_voxel  # [B, N, 3]
        scales = self.scale_lo + (self.scale_hi - self.scale_lo) * torch.sigmoid(scale)
        scales = scales.expand(B, N, 3)
        if self.isotropic or rotation is None:
            quats = means.new_tensor([1.0, 0.0, 0.0, 0.0]).expand(B, N, 4)
        else:
            q = rotation + means.new_tensor([1.0, 0.0, 0.0, 0.0])  # [B, N, 4]
            quats = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        bias = math.log(self.init_opacity / (1 - self.init_opacity))
        opacities = torch.sigmoid(opacity + bias)  # [B, N]
        return Gaussians(means=means, quats=quats, scales=scales, opacities=opacities,
                         features=logits)
