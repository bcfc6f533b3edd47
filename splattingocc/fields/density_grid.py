"""A NeRF-style density grid as a scene field (the volume-rendering baseline's representation).

The grid holds a volume density sigma (1/m) and K class logits per voxel (``DensityGrid``).
Values between voxel centres are trilinear (``grid_sample``, ``align_corners=False``: voxel
centres at ``min + size * (index + 0.5)``, border values held outside). The field's
dimensionless density is the optical depth over a length ``edge``: ``rho = sigma * edge``, so
``1 - exp(-rho)`` is the opacity of a slab of that thickness:

* at points (``density_at``, ``fields_at``): ``edge`` is the field's ``edge`` (set by the head:
  one Occ3D voxel edge);
* on a grid (``to_grid``): ``edge`` is the smallest voxel edge of that grid.

The read-out thresholds ``occupancy = 1 - exp(-rho)`` on the Occ3D grid, the opacity of one
0.4 m voxel crossed along its edge (``SceneField``'s scale, shared with the Gaussian fields).
Class scores are the interpolated probabilities ``softmax(logits)`` (``to_grid``), times rho at
points (``fields_at``).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry import voxel_centres
from ..structures import DensityGrid
from .base import SceneField


def density_grid_to_voxels(grid: DensityGrid, pc_range: Sequence[float],
                           occ_size: Sequence[int]) -> Tuple[Tensor, Tensor]:
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


class DensityGridField(SceneField):
    """A density grid with class logits (module docstring).

    Args:
        grid: DensityGrid with density [B, X, Y, Z] (activated, 1/m) and logits [B, X, Y, Z, K].
        edge: metres; point densities are the optical depth ``sigma * edge``.
    """

    def __init__(self, grid: DensityGrid, edge: float):
        if not edge > 0:
            raise ValueError(f'DensityGridField: edge must be > 0 metres, got {edge}')
        self.grid = grid
        self.edge = float(edge)
        self.box = tuple(float(v) for v in grid.pc_range)
        self.num_classes = grid.features.shape[-1]

    @property
    def batch_size(self) -> int:
        return self.grid.density.shape[0]

    def renderable(self, with_positions: bool = False) -> DensityGrid:
        g = self.grid
        feats = g.features.softmax(-1)  # [B, X, Y, Z, K]
        if with_positions:
            # voxel centres: interpolating p is exact; interpolating |p|^2 adds a small constant
            # (< one voxel's squared size), the variance stays >= 0 (Jensen)
            p = voxel_centres(g.pc_range, g.density.shape[1:], device=feats.device,
                              dtype=feats.dtype).expand(feats.shape[:4] + (3, ))
            feats = torch.cat([feats, p, p.square().sum(-1, keepdim=True)], dim=-1)
        return DensityGrid(density=g.density, features=feats, pc_range=g.pc_range)

    def density_at(self, points: Tensor,  # [B, P, 3]
                   ) -> Tensor:
        return density_grid_at(self.grid, points) * self.edge  # [B, P]

    def fields_at(self, points: Tensor,  # [B, P, 3]
                  ) -> Tuple[Tensor, Tensor]:
        density, probs = density_grid_at(self.grid, points, with_probs=True)
        density = density * self.edge  # [B, P]
        return density, probs * density[..., None]  # [B, P], [B, P, K]

    def to_grid(self, pc_range: Sequence[float], grid_size: Sequence[int],
                ) -> Tuple[Tensor, Tensor]:
        return density_grid_to_voxels(self.grid, pc_range, grid_size)

    def tensors(self) -> Dict[str, Tensor]:
        return dict(density=self.grid.density, features=self.grid.features)


__all__ = ['DensityGridField', 'density_grid_to_voxels', 'density_grid_at']
