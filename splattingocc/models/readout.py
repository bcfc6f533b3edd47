"""Read-out: a scene field -> Occ3D labels on the evaluation grid.

``labels = argmax of the class scores`` where ``field.occupancy(density) >= threshold``, else
``free_label``; the class scores and density come from ``field.to_grid`` at the grid's voxel
centres (for Gaussians the exact voxelizer, for a density grid trilinear resampling). The
argmax rules for K = num_classes (free among the classes) and K = num_classes - 1 (occupied
classes only) are ``voxelizer.scores_to_semantics``'s.

``threshold=None`` is the argmax read-out of a field trained to score free space as a class
(K = num_classes, e.g. by ``SemanticVoxelCELoss``): every voxel takes its highest-scoring label,
free included, and only a voxel without any score is free; no threshold is involved.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..fields import SceneField
from ..registry import MODELS
from ..voxelizer import grid_spec, scores_to_semantics


@MODELS.register_module()
class OccupancyReadout(nn.Module):
    """The evaluation grid, its label convention and the occupancy threshold (no parameters).

    Args:
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the grid (dataset config
            ``point_cloud_range``).
        occ_size: (X, Y, Z) voxels (dataset config ``occ_size``).
        num_classes: labels including free; free_label: the free label (dataset config).
        voxel_size: optional, checked against pc_range / occ_size.
        threshold: a voxel is occupied where ``field.occupancy(density)`` is at least this;
            None: the argmax read-out (module docstring).
        label_dtype: 'uint8' (as the Occ3D ground truth) or 'int64'.
    """

    def __init__(self, pc_range: Sequence[float], occ_size: Sequence[int], num_classes: int,
                 free_label: int, voxel_size: Optional[Sequence[float]] = None,
                 threshold: Optional[float] = 0.5, label_dtype: str = 'uint8'):
        super().__init__()
        grid_spec(pc_range, occ_size, voxel_size)  # fail early on a bad config
        if label_dtype not in ('int64', 'uint8'):
            raise ValueError(f"OccupancyReadout: label_dtype must be 'int64' or 'uint8', got "
                             f'{label_dtype!r}')
        if not 0 <= int(free_label) < int(num_classes):
            raise ValueError(f'OccupancyReadout: free_label {free_label} is not in '
                             f'[0, num_classes={num_classes})')
        if label_dtype == 'uint8' and num_classes > 256:
            raise ValueError(f'OccupancyReadout: {num_classes} classes do not fit uint8 labels; '
                             "use label_dtype='int64'")
        self.pc_range = tuple(float(v) for v in pc_range)
        self.occ_size = tuple(int(n) for n in occ_size)
        self.num_classes = int(num_classes)
        self.free_label = int(free_label)
        self.threshold = None if threshold is None else float(threshold)
        self.label_dtype = torch.uint8 if label_dtype == 'uint8' else torch.int64

    def fields(self, field: SceneField) -> Tuple[Tensor, Tensor]:
        """(density [B, X, Y, Z], class scores [B, X, Y, Z, K]) of ``field`` on the grid."""
        K = field.num_classes
        if K not in (self.num_classes, self.num_classes - 1):
            raise ValueError(
                f'OccupancyReadout: the field has K={K} classes but num_classes='
                f'{self.num_classes}; K must be num_classes (free included) or num_classes - 1: '
                "fix the head's num_classes or the read-out's")
        return field.to_grid(self.pc_range, self.occ_size)

    @torch.no_grad()
    def forward(self, field: SceneField) -> Tensor:
        """Labels [B, X, Y, Z] (``label_dtype``; free = ``free_label``)."""
        density, scores = self.fields(field)
        if self.threshold is not None:
            return scores_to_semantics(field.occupancy(density), scores, self.threshold,
                                       self.free_label, self.num_classes, self.label_dtype)
        if scores.shape[-1] != self.num_classes:
            raise ValueError(f'OccupancyReadout(threshold=None): the argmax read-out needs a score '
                             f'for every label, free included ({self.num_classes}), got '
                             f'{scores.shape[-1]}: set the head\'s num_classes to '
                             f'{self.num_classes} or give a threshold')
        total = scores.sum(-1)  # [B, X, Y, Z]; 0 where no element reaches the voxel
        return scores_to_semantics(total, scores, torch.finfo(total.dtype).tiny, self.free_label,
                                   self.num_classes, self.label_dtype)

    def extra_repr(self) -> str:
        return f'pc_range={self.pc_range}, occ_size={self.occ_size}, threshold={self.threshold}'


__all__ = ['OccupancyReadout']
