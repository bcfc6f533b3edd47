"""Read-out: a scene field -> Occ3D labels on the evaluation grid.

``labels = argmax of the class scores`` where ``field.occupancy(density) >= threshold``, else
``free_label``; the class scores and density come from ``field.to_grid`` at the grid's voxel
centres (for Gaussians the exact voxelizer, for a density grid trilinear resampling). The
argmax rules for K = num_classes (free among the classes) and K = num_classes - 1 (occupied
classes only) are ``voxelizer.scores_to_semantics``'s.

The threshold is on the scale of ``SceneField.occupancy`` for every representation: the opacity
of one Occ3D voxel, in [0, 1]. The occupancy is computed and compared in float64 (from the
field's float32 density), so a threshold ``1 - exp(-r)`` on it picks exactly the voxels of the
threshold ``r`` on a Gaussian field's density, and the threshold sweep of
``evaluation/functional/threshold_sweep.py`` over ``predict``'s occupancy reproduces the labels
of this module at every threshold of its grid. ``tools/test.py --calibrate`` chooses the
threshold on the val split and later runs set it (``model.readout.threshold``) from that file.

``threshold=None`` is the argmax read-out of a field trained to score free space as a class
(K = num_classes, e.g. by ``SemanticVoxelCELoss``): every voxel takes its highest-scoring label,
free included, and only a voxel without any score is free; no threshold is involved (nothing to
calibrate).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

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
        threshold: a voxel is occupied where ``field.occupancy(density)`` (the opacity of one
            voxel, in [0, 1]) is at least this; None: the argmax read-out (module docstring).
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
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f'OccupancyReadout: threshold {threshold} is not in [0, 1]; it is '
                             'on the scale of field.occupancy, the opacity of one voxel (a '
                             'threshold r on a Gaussian density is 1 - exp(-r) on it)')
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
            return scores_to_semantics(field.occupancy(density.double()), scores,
                                       self.threshold, self.free_label, self.num_classes,
                                       self.label_dtype)
        if scores.shape[-1] != self.num_classes:
            raise ValueError(f'OccupancyReadout(threshold=None): the argmax read-out needs a score '
                             f'for every label, free included ({self.num_classes}), got '
                             f'{scores.shape[-1]}: set the head\'s num_classes to '
                             f'{self.num_classes} or give a threshold')
        total = scores.sum(-1)  # [B, X, Y, Z]; 0 where no element reaches the voxel
        return scores_to_semantics(total, scores, torch.finfo(total.dtype).tiny, self.free_label,
                                   self.num_classes, self.label_dtype)

    @torch.no_grad()
    def predict(self, field: SceneField, threshold: Optional[float] = None) -> Dict[str, Tensor]:
        """Labels and the continuous scores behind them.

        Returns:
            dict of
            'semantics': [B, X, Y, Z] labels at ``threshold`` (default: ``self.threshold``),
                equal to ``forward``'s;
            'occupancy': [B, X, Y, Z] float64, what the threshold is compared with (for the
                argmax read-out, ``threshold=None``: the probability of being occupied,
                ``1 - s_free / sum(s)``, 0 where no element reaches the voxel);
            'class_labels': [B, X, Y, Z] the label of each voxel where occupied (the argmax;
                free only where free is a field class and wins);
            'class_probs': [B, X, Y, Z, C - 1] float32, the class probabilities given occupied:
                the field's class scores of the C - 1 non-free classes (label order, free left
                out) normalised to sum to 1 (0 where all scores are 0).
        """
        t = self.threshold if threshold is None else float(threshold)
        density, scores = self.fields(field)
        if t is None:  # the argmax read-out: free is a class of the field
            semantics = self.forward(field)
            total = scores.double().sum(-1)  # [B, X, Y, Z]
            occupancy = torch.where(total > 0, 1 - scores[..., self.free_label].double()
                                    / total.clamp_min(1e-300), torch.zeros_like(total))
            class_labels = scores_to_semantics(total, scores, float('-inf'), self.free_label,
                                               self.num_classes, self.label_dtype)
        else:
            occupancy = field.occupancy(density.double())  # [B, X, Y, Z]
            class_labels = scores_to_semantics(occupancy, scores, float('-inf'), self.free_label,
                                               self.num_classes, self.label_dtype)
            semantics = class_labels.masked_fill(occupancy < t, self.free_label)
        occ_scores = scores.float()  # [B, X, Y, Z, K]
        if occ_scores.shape[-1] == self.num_classes:  # free among the field's classes
            keep = [k for k in range(self.num_classes) if k != self.free_label]
            occ_scores = occ_scores[..., keep]  # [B, X, Y, Z, C - 1]
        total = occ_scores.sum(-1, keepdim=True)
        probs = torch.where(total > 0, occ_scores / total.clamp_min(1e-30),
                            torch.zeros_like(occ_scores))
        return dict(semantics=semantics, occupancy=occupancy, class_labels=class_labels,
                    class_probs=probs)

    def extra_repr(self) -> str:
        return f'pc_range={self.pc_range}, occ_size={self.occ_size}, threshold={self.threshold}'


__all__ = ['OccupancyReadout']
