"""Heads: the encoded volume -> a scene field (``splattingocc.fields``), one element per voxel.

Both heads share a 1x1x1-conv MLP over the volume features [B, C, X, Y, Z] and K class logits per
voxel. Semantic classes: by default K = ``num_classes - 1`` = 17, the occupied classes 0..16
only. 2D labels never show free space (every LiDAR return hits something), so a free logit would
never be supervised by rendering; whether a voxel is free is decided by the read-out's
threshold on the field's density, as in RenderOcc's rendering of occupied space.
``num_classes=18`` is accepted (an argmax of class 17 then also reads out as free).

:class:`GaussianHead` -> ``VoxelGaussianField``: per voxel (ix, iy, iz) with centre
``c = pc_min + voxel_size * (index + 0.5)``:

* mean     = c + tanh(raw_offset) * voxel_size / 2          (stays inside its voxel, per axis)
* scale    = min_scale + (max_scale - min_scale) * sigmoid(raw)   (per axis limits from the
             config; ``isotropic=True`` predicts one value used for all three axes)
* rotation = normalise(raw_quat + [1, 0, 0, 0])   [w, x, y, z] (identity when isotropic)
* opacity  = sigmoid(raw + logit(init_opacity))
* features = K semantic logits.

:class:`FixedGaussianHead` -> ``VoxelGaussianField``: the seed code's variant ("density as
opacity"): one Gaussian per voxel at its centre, with one fixed isotropic scale and the identity
rotation; only the opacity (mapped as above) and the K logits are predicted.

:class:`DensityGridHead` -> ``DensityGridField`` (the NeRF baseline's representation): per voxel
a density ``softplus(raw + density_bias)`` (1/m) and the K logits.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..fields import DensityGridField, VoxelGaussianField
from ..geometry import voxel_centres
from ..registry import MODELS
from ..structures import DensityGrid, Gaussians


def _per_axis(v: Union[float, Sequence[float]]) -> list:
    v = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
    assert len(v) == 3, v
    return v


def _check_grid(owner: str, pc_range: Sequence[float], grid_size: Sequence[int]):
    pc_range = tuple(float(v) for v in pc_range)
    grid_size = tuple(int(v) for v in grid_size)
    if len(pc_range) != 6 or len(grid_size) != 3:
        raise ValueError(f'{owner}: pc_range needs 6 numbers and grid_size 3, got {pc_range!r}, '
                         f'{grid_size!r}')
    return pc_range, grid_size


@MODELS.register_module()
class GaussianHead(nn.Module):
    """Voxel features [B, C, X, Y, Z] -> one Gaussian per voxel (N = X * Y * Z, voxel order
    x, y, z), as a ``VoxelGaussianField``.

    Args:
        in_channels: channels of the encoded volume.
        pc_range: box of the predicted grid.
        grid_size: (X, Y, Z) of the predicted grid.
        num_classes: K semantic logits (17 = occupied classes only, the default; see module doc).
        min_scale, max_scale: scale limits in metres, a number or one per axis (x, y, z).
        isotropic: one scale per Gaussian and identity rotation.
        hidden_channels: width of the 1x1x1 MLP.
        init_opacity: opacity of every Gaussian at initialisation.
        cutoff: the field's Gaussians reach this many standard deviations (Mahalanobis) when put
            on a grid (read-out, 3D supervision; ``voxelizer.voxelize_gaussians``).
        query_window: the field's density at a point sums the Gaussians of the window^3 voxels
            nearest it (``voxelizer.grid_gaussian_fields``; 2: the 8 voxels whose centres
            surround it).
    """

    def __init__(self, in_channels: int, pc_range: Sequence[float], grid_size: Sequence[int],
                 num_classes: int = 17, min_scale: Union[float, Sequence[float]] = 0.05,
                 max_scale: Union[float, Sequence[float]] = 1.0, isotropic: bool = False,
                 hidden_channels: int = 64, init_opacity: float = 0.1, cutoff: float = 3.0,
                 query_window: int = 2):
        super().__init__()
        self.in_channels = in_channels
        self.pc_range, self.grid_size = _check_grid('GaussianHead', pc_range, grid_size)
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
        if not cutoff > 0 or int(query_window) < 1:
            raise ValueError(f'GaussianHead: needs cutoff > 0 and query_window >= 1, got '
                             f'{cutoff}, {query_window}')
        self.cutoff, self.query_window = float(cutoff), int(query_window)
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
        self.register_buffer('centres', voxel_centres(self.pc_range, self.grid_size),
                             persistent=False)
        vs = [(self.pc_range[a + 3] - self.pc_range[a]) / self.grid_size[a] for a in range(3)]
        self.register_buffer('half_voxel', torch.tensor(vs) / 2, persistent=False)
        self.register_buffer('scale_lo', torch.tensor(self.min_scale), persistent=False)
        self.register_buffer('scale_hi', torch.tensor(self.max_scale), persistent=False)

    def forward(self, x: Tensor) -> VoxelGaussianField:
        """x: [B, C, X, Y, Z] -> a field of N = X*Y*Z Gaussians."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels and \
            tuple(x.shape[2:]) == self.grid_size, (x.shape, self.in_channels, self.grid_size)
        h = self.mlp(x)  # [B, hidden, X, Y, Z]
        logits = rearrange(self.semantics(h), 'b k x y z -> b x y z k')

        def flat(t: Tensor) -> Tensor:  # [B, c, X, Y, Z] -> [B, N, c]
            return rearrange(t, 'b c x y z -> b (x y z) c')

        gaussians = self.decode(flat(self.offset(h)), flat(self.scale(h)),
                                None if self.isotropic else flat(self.rotation(h)),
                                flat(self.opacity(h))[..., 0],
                                rearrange(logits, 'b x y z k -> b (x y z) k'))
        return self.field(gaussians)

    def field(self, gaussians: Gaussians) -> VoxelGaussianField:
        """The field of Gaussians laid out on this head's grid."""
        return VoxelGaussianField(gaussians, self.pc_range, self.grid_size, cutoff=self.cutoff,
                                  window=self.query_window)

    def decode(self, offset: Tensor, scale: Tensor, rotation, opacity: Tensor,
               logits: Tensor) -> Gaussians:
        """Raw per-Gaussian values (voxel order x, y, z) -> Gaussians, by the module docstring's
        mapping (also used to fit Gaussians directly: ``fit_gaussians``).

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


@MODELS.register_module()
class FixedGaussianHead(nn.Module):
    """Voxel features [B, C, X, Y, Z] -> one Gaussian per voxel at the voxel's centre, isotropic
    with the fixed standard deviation ``scale``, identity rotation; opacity and K logits learned
    (module docstring). A ``VoxelGaussianField``.

    Args:
        in_channels, pc_range, grid_size, num_classes, hidden_channels, init_opacity, cutoff,
            query_window: as ``GaussianHead``.
        scale: the standard deviation of every Gaussian, metres.
    """

    def __init__(self, in_channels: int, pc_range: Sequence[float], grid_size: Sequence[int],
                 scale: float, num_classes: int = 17, hidden_channels: int = 64,
                 init_opacity: float = 0.1, cutoff: float = 3.0, query_window: int = 2):
        super().__init__()
        self.in_channels = in_channels
        self.pc_range, self.grid_size = _check_grid('FixedGaussianHead', pc_range, grid_size)
        if not scale > 0 or not 0 < init_opacity < 1:
            raise ValueError(f'FixedGaussianHead: needs scale > 0 and 0 < init_opacity < 1, got '
                             f'{scale}, {init_opacity}')
        self.scale_value, self.num_classes = float(scale), num_classes
        self.init_opacity = float(init_opacity)
        self.cutoff, self.query_window = float(cutoff), int(query_window)
        self.mlp = nn.Sequential(nn.Conv3d(in_channels, hidden_channels, 1), nn.ReLU(inplace=True))
        self.opacity = nn.Conv3d(hidden_channels, 1, 1)
        self.semantics = nn.Conv3d(hidden_channels, num_classes, 1)
        nn.init.normal_(self.opacity.weight, std=1e-3)
        nn.init.zeros_(self.opacity.bias)
        self.register_buffer('centres', voxel_centres(self.pc_range, self.grid_size),
                             persistent=False)

    def forward(self, x: Tensor) -> VoxelGaussianField:
        """x: [B, C, X, Y, Z] -> a field of N = X*Y*Z fixed Gaussians."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels and \
            tuple(x.shape[2:]) == self.grid_size, (x.shape, self.in_channels, self.grid_size)
        B = x.shape[0]
        h = self.mlp(x)  # [B, hidden, X, Y, Z]
        logits = rearrange(self.semantics(h), 'b k x y z -> b (x y z) k')
        raw = rearrange(self.opacity(h), 'b c x y z -> b (x y z) c')[..., 0]  # [B, N]
        bias = math.log(self.init_opacity / (1 - self.init_opacity))
        means = self.centres.reshape(1, -1, 3).expand(B, -1, 3)  # [B, N, 3]
        N = means.shape[1]
        gaussians = Gaussians(means=means, quats=means.new_tensor([1.0, 0, 0, 0]).expand(B, N, 4),
                              scales=means.new_full((B, N, 3), self.scale_value),
                              opacities=torch.sigmoid(raw + bias), features=logits)
        return VoxelGaussianField(gaussians, self.pc_range, self.grid_size, cutoff=self.cutoff,
                                  window=self.query_window)


@MODELS.register_module()
class DensityGridHead(nn.Module):
    """Voxel features [B, C, X, Y, Z] -> a density grid with K logits per voxel, as a
    ``DensityGridField``.

    Args:
        in_channels: channels of the encoded volume.
        pc_range, grid_size: box and (X, Y, Z) of the predicted grid.
        num_classes: K semantic logits (see the module docstring).
        hidden_channels: width of the 1x1x1 MLP.
        density_bias: added to the raw density before the softplus (1/m).
        edge: metres: the field's point densities are the optical depth ``sigma * edge`` (one
            Occ3D voxel edge, 0.4 m, makes ``1 - exp(-rho)`` the opacity of one voxel).
    """

    def __init__(self, in_channels: int, pc_range: Sequence[float], grid_size: Sequence[int],
                 num_classes: int = 17, hidden_channels: int = 64, density_bias: float = -2.0,
                 edge: float = 0.4):
        super().__init__()
        self.in_channels = in_channels
        self.pc_range, self.grid_size = _check_grid('DensityGridHead', pc_range, grid_size)
        self.num_classes = num_classes
        self.density_bias = float(density_bias)
        if not edge > 0:
            raise ValueError(f'DensityGridHead: edge must be > 0 metres, got {edge}')
        self.edge = float(edge)
        self.mlp = nn.Sequential(nn.Conv3d(in_channels, hidden_channels, 1), nn.ReLU(inplace=True))
        self.density = nn.Conv3d(hidden_channels, 1, 1)
        self.semantics = nn.Conv3d(hidden_channels, num_classes, 1)
        nn.init.normal_(self.density.weight, std=1e-3)
        nn.init.zeros_(self.density.bias)

    def forward(self, x: Tensor) -> DensityGridField:
        """x: [B, C, X, Y, Z] -> density [B, X, Y, Z] and logits [B, X, Y, Z, K]."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels and \
            tuple(x.shape[2:]) == self.grid_size, (x.shape, self.in_channels, self.grid_size)
        h = self.mlp(x)  # [B, hidden, X, Y, Z]
        logits = rearrange(self.semantics(h), 'b k x y z -> b x y z k')
        density = F.softplus(self.density(h)[:, 0] + self.density_bias)  # [B, X, Y, Z]
        grid = DensityGrid(density=density, features=logits, pc_range=self.pc_range)
        return DensityGridField(grid, self.edge)


__all__ = ['GaussianHead', 'FixedGaussianHead', 'DensityGridHead']
