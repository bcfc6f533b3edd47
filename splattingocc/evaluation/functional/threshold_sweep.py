"""The Occ3D confusion matrix at every occupancy threshold of a grid, from one histogram per frame.

The read-out labels a voxel ``class_label`` where its occupancy is at least the threshold ``t``
and free otherwise (``models/readout.py``). For a fixed increasing grid of thresholds
``t_0 < ... < t_{T-1}`` a voxel with occupancy ``o`` is occupied at ``t_j`` exactly when
``j < b(o)``, ``b(o) = #{j : t_j <= o}`` (``occupancy_bins``). So the counts

    H[g, c, b] = #voxels inside the mask with ground truth g, class label c and b(o) = b

(``sweep_histogram``, [C, C, T + 1]) give the confusion matrix at every threshold of the grid
exactly, with no rounding (``sweep_confusions``):

    M_j[g, c]    = sum_{b > j} H[g, c, b]                          (c != free)
    M_j[g, free] = sum_{b > j} H[g, free, b] + sum_c sum_{b <= j} H[g, c, b]

Summed over frames, the histograms give the dataset's matrices (Occ3D's protocol), hence the
mIoU and geometry IoU curves over the grid (``sweep_scores``). Ground-truth voxels labelled
``ignore_label`` and voxels outside the mask are not counted, as in ``occ_miou``.

Everything here is a pure function on numpy arrays.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .occ_miou import geometry_iou_from_confusion, miou_from_confusion

__all__ = ['DEFAULT_THRESHOLDS', 'threshold_grid', 'occupancy_bins', 'sweep_histogram',
           'sweep_confusions', 'sweep_scores', 'choose_threshold', 'SELECTION_RULES']

#: the default grid of occupancy thresholds in (0, 1): 10 per decade from 1e-6 to 1e-3, then
#: every 0.001 up to 0.999 (1,029 values). Also the bin edges of the average precision.
DEFAULT_THRESHOLDS = np.unique(np.round(np.concatenate([
    np.geomspace(1e-6, 1e-3, 31)[:-1], np.arange(1, 1000) / 1000.0]), 12))

#: how ``choose_threshold`` picks: the largest mIoU on the grid (the first, i.e. the lowest
#: threshold, where several are equal)
SELECTION_RULES = ('max_miou', )


def threshold_grid(extra: Sequence[float] = (),
                   base: Optional[Sequence[float]] = None) -> np.ndarray:
    """The sorted, unique float64 thresholds of ``base`` (default ``DEFAULT_THRESHOLDS``) and
    ``extra`` (e.g. a configured threshold, so that the curve holds its value exactly)."""
    grid = np.asarray(DEFAULT_THRESHOLDS if base is None else base, dtype=np.float64)
    grid = np.unique(np.concatenate([grid.ravel(), np.asarray(extra, np.float64).ravel()]))
    if grid.size == 0 or not np.isfinite(grid).all():
        raise ValueError(f'threshold grid must be finite and non-empty, got {grid[:5]}...')
    return grid


def occupancy_bins(occupancy: np.ndarray,  # any shape, float
                   thresholds: np.ndarray,  # [T] increasing
                   ) -> np.ndarray:
    """b(o) = the number of thresholds <= o, int64 in 0..T, same shape as ``occupancy``: a voxel
    is occupied at ``thresholds[j]`` iff ``j < b(o)`` (the read-out's ``o >= t``)."""
    thresholds = np.asarray(thresholds)
    assert thresholds.ndim == 1 and (np.diff(thresholds) > 0).all(), 'thresholds must increase'
    return np.searchsorted(thresholds, occupancy, side='right')


def sweep_histogram(occupancy: np.ndarray,  # [X, Y, Z] float
                    class_labels: np.ndarray,  # [X, Y, Z] int
                    gt: np.ndarray,  # [X, Y, Z] int
                    mask: Optional[np.ndarray],  # [X, Y, Z] or None
                    thresholds: np.ndarray,  # [T]
                    num_classes: int,
                    ignore_label: int = 255) -> np.ndarray:
    """H [C, C, T + 1] int64 of one frame (module docstring).

    Args:
        occupancy: [X, Y, Z] what the read-out thresholds (``field.occupancy``), compared in the
            dtype given (the read-out's float64 for exact agreement).
        class_labels: [X, Y, Z] the label each voxel takes when occupied (the argmax class;
            may be free for fields whose classes include free), in [0, C).
        gt: [X, Y, Z] ground truth in [0, C) or ``ignore_label``.
        mask: [X, Y, Z] voxels counted (non-zero), or None for all.
        thresholds: [T] increasing.
        num_classes: C, free included.
    """
    assert occupancy.shape == class_labels.shape == gt.shape, \
        (occupancy.shape, class_labels.shape, gt.shape)
    keep = gt != ignore_label
    if mask is not None:
        assert mask.shape == gt.shape, (mask.shape, gt.shape)
        keep &= mask.astype(bool)
    C, T = int(num_classes), len(thresholds)
    g = gt[keep].astype(np.int64)
    c = class_labels[keep].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= C or c.min() < 0 or c.max() >= C):
        raise ValueError(f'sweep_histogram: labels outside 0..{C - 1} (ground truth '
                         f'{g.min()}..{g.max()}, class labels {c.min()}..{c.max()})')
    b = occupancy_bins(occupancy[keep], thresholds)
    flat = (g * C + c) * (T + 1) + b
    return np.bincount(flat, minlength=C * C * (T + 1)).reshape(C, C, T + 1)


def sweep_confusions(hist: np.ndarray,  # [C, C, T + 1]
                     free_label: int) -> np.ndarray:
    """M [T, C, C] int64: the confusion matrix (rows ground truth) at each threshold."""
    assert hist.ndim == 3 and hist.shape[0] == hist.shape[1], hist.shape
    # above[g, c, j] = sum_{b > j} hist[g, c, b], j = 0..T-1
    above = np.cumsum(hist[:, :, ::-1], axis=2)[:, :, ::-1][:, :, 1:]  # [C, C, T]
    below = hist.sum(axis=2, keepdims=True) - above  # [C, C, T]: sum_{b <= j}
    conf = np.moveaxis(above, 2, 0).copy()  # [T, C, C]
    conf[:, :, free_label] += np.moveaxis(below.sum(axis=1), 1, 0)  # [T, C]
    return conf


def sweep_scores(hist: np.ndarray,  # [C, C, T + 1]
                 free_label: int) -> dict:
    """{'miou': [T], 'geometry_iou': [T]} fractions (NaN where undefined) over the grid."""
    conf = sweep_confusions(hist, free_label)
    return dict(miou=np.array([miou_from_confusion(m, free_label) for m in conf]),
                geometry_iou=np.array([geometry_iou_from_confusion(m, free_label) for m in conf]))


def choose_threshold(thresholds: np.ndarray,  # [T]
                     miou: np.ndarray,  # [T]
                     rule: str = 'max_miou') -> int:
    """Index of the chosen threshold: ``'max_miou'``: the largest mIoU (the lowest threshold
    among equal ones); NaN values never win."""
    if rule not in SELECTION_RULES:
        raise ValueError(f'unknown selection rule {rule!r}; use one of {SELECTION_RULES}')
    miou = np.asarray(miou, dtype=np.float64)
    assert miou.shape == np.shape(thresholds), (miou.shape, np.shape(thresholds))
    if not np.isfinite(miou).any():
        raise ValueError('choose_threshold: the mIoU is undefined at every threshold (no '
                         'evaluated voxel?)')
    return int(np.nanargmax(miou))
