"""Occ3D semantic occupancy scores: confusion matrix, per-class IoU, mIoU and geometry IoU.

The definition is the one of the Occ3D-nuScenes benchmark (CVPR 2023 occupancy challenge,
``Metric_mIoU`` in its ``occ_metrics.py``): one ``C x C`` confusion matrix (rows: ground truth,
columns: prediction) is summed over every evaluated voxel of the whole dataset (never an average
of per-frame scores); voxels outside the chosen visibility mask and ground-truth voxels labelled
``ignore_label`` (255) are not counted; ``IoU_c = M[c, c] / (sum_j M[c, j] + sum_i M[i, c] -
M[c, c])``; mIoU is the NaN-ignoring mean of IoU_c over every class except free. The free class
stays in the matrix, so predicting free where the ground truth is occupied is a false negative of
that class. A class that appears neither in the ground truth nor in the prediction has a 0/0 IoU
(NaN) and is left out of the mean.

Geometry IoU treats every non-free class as "occupied" over the same voxels.

Everything here is a pure function on numpy arrays: no I/O, no printing.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = [
    'confusion_matrix', 'confusion_matrix_pair', 'per_class_iou', 'miou_from_confusion',
    'geometry_iou_from_confusion', 'occ_scores_from_confusion', 'check_prediction_labels'
]


def check_prediction_labels(pred: np.ndarray, num_classes: int, name: str = 'prediction') -> None:
    """Raise ``ValueError`` if ``pred`` (any shape, integer) holds a class outside [0, num_classes).

    Args:
        pred: integer array of class indices (any shape).
        num_classes: number of classes including free.
        name: how the error message names the array (e.g. a file path).
    """
    if pred.size == 0:
        return
    if not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(f'{name}: class labels must be integers, got dtype {pred.dtype}; '
                         'pass the argmax class indices (uint8), not scores')
    lo, hi = int(pred.min()), int(pred.max())
    if lo < 0 or hi >= num_classes:
        bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])[:10].tolist()
        raise ValueError(f'{name}: class index out of range {bad}; labels must lie in '
                         f'0..{num_classes - 1} ({num_classes - 1} = free)')


def confusion_matrix(pred: np.ndarray,  # [X, Y, Z] (any shape) int
                     gt: np.ndarray,  # [X, Y, Z] (same shape) int
                     mask: Optional[np.ndarray] = None,  # [X, Y, Z] bool / 0-1, or None
                     num_classes: int = 18,
                     ignore_label: int = 255,
                     name: str = 'prediction') -> np.ndarray:
    """The ``[C, C]`` int64 confusion matrix of one frame, rows = ground truth, cols = prediction.

    Args:
        pred: [X, Y, Z] predicted class per voxel, integers in [0, num_classes).
        gt:   [X, Y, Z] ground-truth class per voxel, in [0, num_classes) or ``ignore_label``.
        mask: [X, Y, Z] voxels to evaluate (non-zero = evaluated), e.g. Occ3D ``mask_camera``;
            ``None`` evaluates every voxel.
        num_classes: C, the number of classes including free.
        ignore_label: ground-truth value that is not evaluated.
        name: how error messages name the prediction (e.g. its file).

    Returns:
        [C, C] int64; ``M[g, p]`` = number of evaluated voxels with ground truth g and prediction p.

    Raises:
        ValueError: shapes differ, a predicted label is outside [0, C), or a ground-truth label is
            neither a class nor ``ignore_label``.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f'{name}: prediction shape {pred.shape} differs from the ground-truth '
                         f'shape {gt.shape}')
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != gt.shape:
            raise ValueError(f'{name}: mask shape {mask.shape} differs from the ground-truth '
                             f'shape {gt.shape}')
    check_prediction_labels(pred, num_classes, name)
    C = int(num_classes)
    if mask is not None:
        keep = mask if mask.dtype == np.bool_ else mask.astype(np.bool_)
        g = gt[keep]  # [V]
        p = pred[keep]  # [V]
    else:
        g = gt.reshape(-1)  # [V]
        p = pred.reshape(-1)  # [V]
    if g.size == 0:
        return np.zeros((C, C), dtype=np.int64)
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f'ground truth for {name}: labels must be integers, got {g.dtype}')
    g_lo = int(g.min())
    if g_lo < 0:
        raise ValueError(f'ground truth for {name}: negative class index {g_lo}')
    # Ground-truth rows beyond C (the ignore label, or invalid labels) land past the C*C bins and
    # are checked, then dropped. int32 products cannot overflow: labels are < 2**16 here.
    g_hi = int(g.max())
    if g_hi >= 1 << 16:
        raise ValueError(f'ground truth for {name}: class index {g_hi} out of range')
    idx = g.astype(np.int32) * C + p.astype(np.int32)  # [V]
    counts = np.bincount(idx, minlength=C * C)
    if counts.size > C * C:
        extra = counts[C * C:].copy()
        ign = ignore_label * C - C * C
        if 0 <= ign < extra.size:
            extra[ign:ign + C] = 0
        if extra.any():
            bad_rows = np.unique((np.nonzero(extra)[0] + C * C) // C)[:10].tolist()
            raise ValueError(f'ground truth for {name}: class index out of range {bad_rows}; '
                             f'expected 0..{C - 1} or {ignore_label} (ignored)')
    return counts[:C * C].reshape(C, C).astype(np.int64, copy=False)  # [C, C]


def confusion_matrix_pair(pred: np.ndarray,  # [X, Y, Z] int
                          gt: np.ndarray,  # [X, Y, Z] int
                          mask: np.ndarray,  # [X, Y, Z] bool / 0-1
                          num_classes: int = 18,
                          ignore_label: int = 255,
                          name: str = 'prediction'):
    """Both ``confusion_matrix(pred, gt, mask)`` and ``confusion_matrix(pred, gt, None)`` in one
    pass over the voxels (one ``bincount`` whose bins also encode "inside the mask").

    Args: as :func:`confusion_matrix`; ground-truth labels must lie in 0..255.

    Returns:
        (masked [C, C], unmasked [C, C]) int64.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    mask = np.asarray(mask)
    if pred.shape != gt.shape or mask.shape != gt.shape:
        raise ValueError(f'{name}: prediction shape {pred.shape}, ground-truth shape {gt.shape} '
                         f'and mask shape {mask.shape} must be equal')
    check_prediction_labels(pred, num_classes, name)
    C = int(num_classes)
    if gt.size == 0:
        z = np.zeros((C, C), dtype=np.int64)
        return z, z.copy()
    if not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f'ground truth for {name}: labels must be integers, got {gt.dtype}')
    g_lo, g_hi = int(gt.min()), int(gt.max())
    if g_lo < 0 or g_hi > 255:
        raise ValueError(f'ground truth for {name}: class index out of range '
                         f'[{g_lo if g_lo < 0 else g_hi}]; expected 0..{C - 1} or {ignore_label}')
    rows = 256  # every uint8 ground-truth value gets a row; rows >= C are checked, then dropped
    dtype = np.uint16 if 2 * rows * C <= 1 << 16 else np.int64
    idx = gt.reshape(-1).astype(dtype)  # [V]
    idx *= C
    idx += pred.reshape(-1).astype(dtype)
    idx += (mask.reshape(-1) != 0).astype(dtype) * (rows * C)  # second half: inside the mask
    counts = np.bincount(idx, minlength=2 * rows * C).reshape(2, rows, C)
    extra = counts[:, C:, :].sum(axis=(0, 2))  # [rows - C] per out-of-range gt row
    if 0 <= ignore_label - C < extra.size:
        extra[ignore_label - C] = 0
    if extra.any():
        bad = (np.nonzero(extra)[0] + C)[:10].tolist()
        raise ValueError(f'ground truth for {name}: class index out of range {bad}; '
                         f'expected 0..{C - 1} or {ignore_label} (ignored)')
    inside = counts[1, :C, :].astype(np.int64)  # [C, C]
    return inside, inside + counts[0, :C, :]


def per_class_iou(hist: np.ndarray) -> np.ndarray:
    """IoU per class from a confusion matrix ``[C, C]`` (rows gt): ``[C]`` float64, NaN for 0/0."""
    hist = np.asarray(hist)
    assert hist.ndim == 2 and hist.shape[0] == hist.shape[1], hist.shape
    tp = np.diag(hist).astype(np.float64)  # [C]
    union = hist.sum(1) + hist.sum(0) - np.diag(hist)  # [C]
    with np.errstate(divide='ignore', invalid='ignore'):
        return tp / union.astype(np.float64)


def _evaluated_classes(num_classes: int, free_label: Optional[int]) -> np.ndarray:
    keep = np.ones(num_classes, dtype=bool)
    if free_label is not None:
        keep[free_label] = False
    return keep


def miou_from_confusion(hist: np.ndarray, free_label: Optional[int] = 17) -> float:
    """NaN-ignoring mean IoU over every class except ``free_label`` (a fraction in [0, 1]).

    NaN when no evaluated class appears at all.
    """
    iou = per_class_iou(hist)
    sel = iou[_evaluated_classes(len(iou), free_label)]
    if np.all(np.isnan(sel)):
        return float('nan')
    return float(np.nanmean(sel))


def geometry_iou_from_confusion(hist: np.ndarray, free_label: int = 17) -> float:
    """IoU of "occupied" (any class except ``free_label``) over the voxels of the matrix."""
    hist = np.asarray(hist)
    occ = _evaluated_classes(hist.shape[0], free_label)
    tp = hist[np.ix_(occ, occ)].sum()  # gt occupied and predicted occupied (any class)
    gt_occ = hist[occ, :].sum()
    pred_occ = hist[:, occ].sum()
    union = gt_occ + pred_occ - tp
    return float(tp / union) if union > 0 else float('nan')


def occ_scores_from_confusion(hist: np.ndarray,  # [C, C]
                              class_names: Sequence[str],
                              free_label: int = 17) -> dict:
    """All scores of one confusion matrix, as fractions.

    Returns:
        dict with 'miou' (float), 'geometry_iou' (float), 'per_class_iou' ({name: float} for
        every class except free, NaN for classes absent from gt and prediction).
    """
    hist = np.asarray(hist)
    assert hist.shape == (len(class_names), len(class_names)), (hist.shape, len(class_names))
    iou = per_class_iou(hist)
    return {
        'miou': miou_from_confusion(hist, free_label),
        'geometry_iou': geometry_iou_from_confusion(hist, free_label),
        'per_class_iou': {n: float(iou[i]) for i, n in enumerate(class_names) if i != free_label},
    }
