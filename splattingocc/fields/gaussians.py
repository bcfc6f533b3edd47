"""Gaussian scene fields: a set of 3D Gaussians with class logits.

Density and class scores at a point ``p`` are the voxelizer's (``voxelizer.py``)::

    rho(p)  = sum_i o_i exp(-0.5 (p - mu_i)^T Sigma_i^-1 (p - mu_i))
    s_k(p)  = sum_i o_i exp(-0.5 ...) softmax(f_i)_k

* :class:`GaussianField`: any Gaussians (free means); grids via the exact voxelizer, truncated at
  ``cutoff`` standard deviations.
* :class:`VoxelGaussianField`: one Gaussian per voxel of a grid, each mean inside its voxel
  (``GaussianHead``); point queries sum the Gaussians of the ``window``^3 voxels nearest each
  point (``voxelizer.grid_gaussian_fields``).

The read-out thresholds ``occupancy = 1 - exp(-rho)`` at voxel centres (``SceneField``'s
scale: rho read as the optical depth of one Occ3D voxel, as the point losses read it). It is
monotone in rho: a threshold ``t`` on it picks the voxels of the threshold ``-log(1 - t)`` on rho
(the read-out threshold 0.5 on rho of the configs before this scale is ``1 - exp(-0.5)`` =
0.3934693402873666 on it).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor

from ..structures import Gaussians, replace
from ..voxelizer import grid_gaussian_density, grid_gaussian_fields, voxelize_gaussians
from .base import SceneField


class GaussianField(SceneField):
    """Gaussians with class logits as features, any means.

    Args:
        gaussians: means [B, N, 3], quats [B, N, 4], scales [B, N, 3], opacities [B, N],
            features [B, N, K] (class logits), world frame.
        box: (x0, y0, z0, x1, y1, z1) where the field is defined.
        cutoff: Gaussians reach this many standard deviations (Mahalanobis) on a grid.
    """

    def __init__(self, gaussians: Gaussians, box: Sequence[float], cutoff: float = 3.0):
        assert len(box) == 6, box
        self.gaussians = gaussians
        self.box = tuple(float(v) for v in box)
        self.cutoff = float(cutoff)
        self.num_classes = gaussians.num_features

    @property
    def batch_size(self) -> int:
        return self.gaussians.batch_size

    def renderable(self, with_positions: bool = False) -> Gaussians:
        g = self.gaussians
        feats = g.features.softmax(-1)  # [B, N, K]
        if with_positions:
            p = g.means  # [B, N, 3]
            feats = torch.cat([feats, p, p.square().sum(-1, keepdim=True)], dim=-1)  # [B, N, K+4]
        return replace(g, features=feats)

    def to_grid(self, pc_range: Sequence[float], grid_size: Sequence[int],
                ) -> Tuple[Tensor, Tensor]:
        g = self.gaussians
        out = voxelize_gaussians(g.means, g.quats, g.scales, g.opacities, g.features, pc_range,
                                 grid_size, cutoff=self.cutoff, score_mode='softmax')
        return out.density, out.scores  # [B, X, Y, Z], [B, X, Y, Z, K]

    def opacities(self) -> Tensor:
        return self.gaussians.opacities  # [B, N]

    def tensors(self) -> Dict[str, Tensor]:
        g = self.gaussians
        return dict(means=g.means, quats=g.quats, scales=g.scales, opacities=g.opacities,
                    features=g.features)


class VoxelGaussianField(GaussianField):
    """One Gaussian per voxel of the grid ``grid_size`` over ``box`` (voxel order x, y, z:
    Gaussian ``(ix * Y + iy) * Z + iz``), each mean inside its voxel.

    Args:
        gaussians, box, cutoff: see :class:`GaussianField` (N = X * Y * Z).
        grid_size: (X, Y, Z).
        window: point queries sum the Gaussians of the window^3 voxels nearest the point (2: the
            8 voxels whose centres surround it).
    """

    def __init__(self, gaussians: Gaussians, box: Sequence[float], grid_size: Sequence[int],
                 cutoff: float = 3.0, window: int = 2):
        super().__init__(gaussians, box, cutoff)
        self.grid_size = tuple(int(v) for v in grid_size)
        X, Y, Z = self.grid_size
        assert gaussians.num_gaussians == X * Y * Z, (gaussians.means.shape, self.grid_size)
        self.window = int(window)

    def density_at(self, points: Tensor,  # [B, P, 3]
                   ) -> Tensor:
        g = self.gaussians
        return grid_gaussian_density(points, g.means, g.quats, g.scales, g.opacities, self.box,
                                     self.grid_size, window=self.window)  # [B, P]

    def fields_at(self, points: Tensor,  # [B, P, 3]
                  ) -> Tuple[Tensor, Tensor]:
        g = self.gaussians
        return grid_gaussian_fields(points, g.means, g.quats, g.scales, g.opacities, self.box,
                                    self.grid_size, window=self.window, features=g.features,
                                    score_mode='softmax')  # [B, P], [B, P, K]


__all__ = ['GaussianField', 'VoxelGaussianField']
