"""Volume (3D) supervision: the field on a voxel grid against the Occ3D ground truth.

:class:`VolumeSupervision` puts the field on a grid (``SceneField.to_grid``: density and class
scores at the voxel centres) and scores it with its volume losses:

* ``grid_size=None``: the grid of the labels themselves (the Occ3D grid), exact labels;
* ``grid_size=(X, Y, Z)`` dividing the label grid: a coarser grid (cheaper on a CPU); each
  coarse voxel takes the most frequent label of its block (``downsample_labels``; ties go to the
  lower class index, so occupied classes win over free = the last index) and is in the mask if
  any of its voxels is (``downsample_mask``).

``mask_camera=True`` restricts the losses to the ``mask_camera`` voxels (where Occ3D scores).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..registry import MODELS
from ..structures import NetworkOutputs
from .base import Supervision, merge_terms, require_keys
from .base import class_weight_setting
from .functional import IGNORE, class_balanced_weights, occupancy_3d_losses, voxel_semantic_ce


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
                         'VolumeSupervision.grid_size must divide the Occ3D grid')
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


@dataclass
class VolumeBatch:
    """The field on a grid and that grid's labels, as the volume losses see them.

    Attributes:
        density: [B, X, Y, Z] the field's density rho at the voxel centres.
        scores: [B, X, Y, Z, K] its class scores there.
        semantics: [B, X, Y, Z] labels (``free_label`` = free, 255 = ignore).
        mask: [B, X, Y, Z] bool voxels to score, or None (all).
        free_label: the free label.
    """

    density: Tensor
    scores: Tensor
    semantics: Tensor
    mask: Optional[Tensor]
    free_label: int


@MODELS.register_module()
class Occupancy3DLoss(nn.Module):
    """``occupancy_3d_losses`` with weights for its occupancy and semantic terms:
    ``loss_occ3d`` (BCE of ``1 - exp(-rho)`` against occupied) and ``loss_sem3d`` (class-weighted
    CE of the normalised scores over occupied voxels).

    Args:
        occ_weight, sem_weight: multipliers of the BCE and CE terms.
        class_weight: None, a list of K weights, or 'batch' (from the occupied voxels' labels).
        power: exponent of the batch inverse frequency.
        balance: balanced, class-weighted occupancy BCE (``occupancy_3d_losses``).
    """

    def __init__(self, occ_weight: float = 1.0, sem_weight: float = 1.0,
                 class_weight: Union[None, str, Sequence[float]] = None, power: float = 0.5,
                 balance: bool = False):
        super().__init__()
        self.occ_weight, self.sem_weight, self.power = occ_weight, sem_weight, power
        self.balance = bool(balance)
        self.mode = class_weight if isinstance(class_weight, str) else None
        self.register_buffer('class_weight', None if class_weight is None or self.mode else
                             torch.tensor([float(c) for c in class_weight]), persistent=False)

    def score(self, density: Tensor, scores: Tensor, semantics: Tensor, free_label: int,
              mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(occupancy term, semantic term); shapes as ``VolumeBatch``."""
        cw = self.class_weight
        if self.mode == 'batch':
            sem = semantics.long()
            occ = (sem != free_label) & (sem != IGNORE)
            cw = class_balanced_weights(sem[occ], scores.shape[-1], self.power)
        loss_occ, loss_sem = occupancy_3d_losses(density, scores, semantics, free_label, mask, cw,
                                                 balance=self.balance)
        return self.occ_weight * loss_occ, self.sem_weight * loss_sem

    def forward(self, vol: VolumeBatch) -> Dict[str, Tensor]:
        occ, sem = self.score(vol.density, vol.scores, vol.semantics, vol.free_label, vol.mask)
        return dict(loss_occ3d=occ, loss_sem3d=sem)


@MODELS.register_module()
class SemanticVoxelCELoss(nn.Module):
    """``loss_voxel_ce = loss_weight * voxel_semantic_ce(scores, labels, mask, class weights)``:
    every scored voxel's class, free included, so the field needs one class score per label
    (``num_classes``, free among them) and the read-out takes the argmax (``OccupancyReadout``
    with ``threshold=None``). The 3D baselines of BEVStereo-occ (``bevdet_occ.py``,
    ``loss_single``: unweighted CE over 18 classes) and RenderOcc predict the same thing.

    Args:
        class_weight: None (uniform, as BEVStereo-occ's loss), a list of K weights, or 'batch'
            (``class_balanced_weights`` of the scored voxels' labels with ``power``).
        power: exponent of the batch inverse frequency.
        loss_weight: multiplier.
    """

    def __init__(self, class_weight: Union[None, str, Sequence[float]] = None,
                 power: float = 0.5, loss_weight: float = 1.0, eps: float = 1e-6):
        super().__init__()
        self.mode, fixed = class_weight_setting('SemanticVoxelCELoss', class_weight)
        self.register_buffer('class_weight', fixed, persistent=False)
        self.power, self.loss_weight, self.eps = power, loss_weight, eps

    def score(self, scores: Tensor, semantics: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """scores [B, X, Y, Z, K], semantics and mask [B, X, Y, Z] (``voxel_semantic_ce``)."""
        K = scores.shape[-1]
        cw = self.class_weight
        if self.mode == 'batch':
            sem = semantics.long()
            use = sem != IGNORE
            if mask is not None:
                use = use & mask.bool()
            cw = class_balanced_weights(sem[use], K, self.power)
        return self.loss_weight * voxel_semantic_ce(scores, semantics, mask, cw, self.eps)

    def forward(self, vol: VolumeBatch) -> Dict[str, Tensor]:
        return dict(loss_voxel_ce=self.score(vol.scores, vol.semantics, vol.mask))


@MODELS.register_module()
class VolumeSupervision(Supervision):
    """3D supervision by the Occ3D ground truth (module docstring).

    Args:
        pc_range: (x0, y0, z0, x1, y1, z1) of the label grid (dataset ``point_cloud_range``).
        num_classes: labels including free; free_label: the free label.
        losses: volume losses, each ``forward(VolumeBatch) -> dict`` (``Occupancy3DLoss``,
            ``SemanticVoxelCELoss``).
        grid_size: None (the label grid) or (X, Y, Z) dividing it.
        mask_camera: score only the ``mask_camera`` voxels.
    """

    def __init__(self, pc_range: Sequence[float], num_classes: int, free_label: int,
                 losses: Sequence[dict], grid_size: Optional[Sequence[int]] = None,
                 mask_camera: bool = False):
        super().__init__()
        if len(pc_range) != 6:
            raise ValueError(f'VolumeSupervision: pc_range needs 6 numbers, got {pc_range!r}')
        if not losses:
            raise ValueError("VolumeSupervision: losses is empty; e.g. losses=[dict(type="
                             "'Occupancy3DLoss')]")
        self.pc_range = tuple(float(v) for v in pc_range)
        self.num_classes, self.free_label = int(num_classes), int(free_label)
        self.grid_size = None if grid_size is None else tuple(int(v) for v in grid_size)
        self.mask_camera = bool(mask_camera)
        self.losses = nn.ModuleList([MODELS.build(c) for c in losses])

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        require_keys('VolumeSupervision', batch, ('voxel_semantics', ),
                     'load the Occ3D ground truth in the training pipeline (LoadOcc3DLabels, '
                     "e.g. the config's train_pipeline_3d)")
        sem = batch['voxel_semantics']  # [B, X, Y, Z]
        mask = None
        if self.mask_camera:
            require_keys('VolumeSupervision(mask_camera=True)', batch, ('mask_camera', ),
                         'LoadOcc3DLabels loads it with the labels')
            mask = batch['mask_camera']
        grid = tuple(sem.shape[1:]) if self.grid_size is None else self.grid_size
        if grid != tuple(sem.shape[1:]):
            factors = [n // g for n, g in zip(sem.shape[1:], grid)]
            sem = downsample_labels(sem, factors, self.num_classes)
            mask = None if mask is None else downsample_mask(mask, factors)
        density, scores = outputs.field.to_grid(self.pc_range, grid)
        vol = VolumeBatch(density=density, scores=scores, semantics=sem, mask=mask,
                          free_label=self.free_label)
        losses: Dict[str, Tensor] = {}
        for term in self.losses:
            merge_terms(losses, term(vol), 'VolumeSupervision')
        return losses


__all__ = ['VolumeSupervision', 'VolumeBatch', 'Occupancy3DLoss', 'SemanticVoxelCELoss',
           'downsample_labels', 'downsample_mask']
