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

import functools
from typing import Optional, Sequence

import numpy as np

__all__ = [
    'confusion_matrix', 'confusion_matrix_pair', 'per_class_iou', 'miou_from_confusion',
    'geometry_iou_from_confusion', 'occ_scores_from_confusion', 'check_prediction_labels'
]


# --- fast paths for uint8 labels -----------------------------------------------------------------
# A frame's confusion is a histogram of ``gt * C + pred`` over 640,000 voxels. ``np.bincount``
# pays for a conversion to int64, a min/max pass and, when most voxels fall into one bin (free
# predicted free), stalls on consecutive increments of the same counter. The fast paths build the
# index in uint16, spread consecutive voxels over K interleaved copies of the histogram ("lanes",
# summed afterwards) and count with ``torch.bincount`` on int16 when torch is importable (numpy
# otherwise). Counts are exact either way; only the speed differs.

_MAX_BINS = 1 << 15  # lanes * bins must stay below int16's range (torch counts int16 values)
_MIN_LANED = 1 << 12  # below this many values a plain bincount is as fast


@functools.lru_cache(maxsize=8)
def _lane_offsets(n: int, lanes: int, nbins: int) -> np.ndarray:
    """[n] uint16 (read-only): ``(i % lanes) * nbins`` for voxel i."""
    off = np.tile(np.arange(lanes, dtype=np.uint16) * np.uint16(nbins), n // lanes)
    off.flags.writeable = False
    return off


@functools.lru_cache(maxsize=1)
def _torch_bincount():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        return None
    return torch.bincount


def _histogram_u16(idx: np.ndarray, nbins: int) -> np.ndarray:
    """Counts of the values of ``idx`` ([V] uint16, every value < nbins <= 2**15; modified in
    place): [nbins] int64."""
    assert idx.dtype == np.uint16 and idx.ndim == 1, (idx.dtype, idx.shape)
    assert 0 < nbins <= _MAX_BINS, nbins
    lanes = 16
    while lanes > 1 and lanes * nbins > _MAX_BINS:
        lanes //= 2
    if idx.size < _MIN_LANED:
        lanes = 1
    n = idx.size - idx.size % lanes  # the last (idx.size % lanes) values stay in lane 0
    if lanes > 1:
        idx[:n] += _lane_offsets(n, lanes, nbins)
    bincount = _torch_bincount()
    if bincount is not None:
        import torch
        # one thread: torch's min / max passes over a frame are too short to gain from a second
        # thread, whose start and spin-wait cost more CPU time than they save (E62)
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            counts = bincount(torch.from_numpy(idx.view(np.int16)),
                              minlength=lanes * nbins).numpy()
        finally:
            if threads > 1:
                torch.set_num_threads(threads)
    else:
        counts = np.bincount(idx, minlength=lanes * nbins)
    return counts.reshape(lanes, nbins).sum(axis=0, dtype=np.int64)  # [nbins]


def _label_index_u16(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``gt * C + pred`` as a new [V] uint16 array (gt, pred: [V] uint8)."""
    idx = np.multiply(gt, np.uint16(num_classes), dtype=np.uint16)
    idx += pred.astype(np.uint16)
    return idx


def _as_uint8(labels: np.ndarray, lo: Optional[int] = None,
              hi: Optional[int] = None) -> Optional[np.ndarray]:
    """``labels`` (any shape) as uint8 when it is an integer array whose values (between ``lo``
    and ``hi`` when known) all lie in 0..255; else None."""
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer) or not labels.size:
        return None
    if lo is None:
        lo, hi = int(labels.min()), int(labels.max())
    return labels.astype(np.uint8) if 0 <= lo and hi <= 255 else None


def _check_gt_rows(rows_count: np.ndarray, num_classes: int, ignore_label: int,
                   name: str) -> None:
    """Raise for ground-truth rows >= C with voxels, except ``ignore_label``'s.

    Args:
        rows_count: [R] number of evaluated voxels per ground-truth value (R >= C).
    """
    extra = np.asarray(rows_count[num_classes:]).copy()  # [R - C]
    if 0 <= ignore_label - num_classes < extra.size:
        extra[ignore_label - num_classes] = 0
    if extra.any():
        bad = (np.nonzero(extra)[0] + num_classes)[:10].tolist()
        raise ValueError(f'ground truth for {name}: class index out of range {bad}; '
                         f'expected 0..{num_classes - 1} or {ignore_label} (ignored)')


def _confusion_u16(pred: np.ndarray,  # [V] uint8
                   gt: np.ndarray,  # [V] uint8
                   keep: Optional[np.ndarray],  # [V] bool, or None
                   C: int, ignore_label: int, name: str) -> np.ndarray:
    """:func:`confusion_matrix` for uint8 labels, [C, C] int64.

    With a mask, only the 8-voxel blocks (one uint64 each) that hold an evaluated voxel are
    gathered, whole; their voxels outside the mask go to an extra bin that is dropped. That avoids
    a per-voxel boolean selection, the slowest step of a masked count.
    """
    mm = None
    if keep is not None:
        if gt.size % 8 == 0:
            kb = np.flatnonzero(keep.view(np.uint64) != 0)  # [B] blocks with an evaluated voxel
            gt = gt.view(np.uint64).take(kb).view(np.uint8)  # [8B]
            pred = pred.view(np.uint64).take(kb).view(np.uint8)
            mm = keep.view(np.uint64).take(kb).view(np.uint8)  # [8B] 0 / 1
        else:
            gt, pred = gt[keep], pred[keep]
    if gt.size == 0:
        return np.zeros((C, C), dtype=np.int64)
    rows = int(gt.max()) + 1
    if rows < C:
        rows = C
    idx = _label_index_u16(gt, pred, C)  # [V'] < rows * C
    nbins = rows * C
    if mm is not None:  # voxels outside the mask -> bin rows * C (wrapping uint16 arithmetic)
        junk = np.uint16(nbins)
        idx -= junk
        idx *= mm
        idx += junk
        nbins += 1
    counts = _histogram_u16(idx, nbins)[:rows * C].reshape(rows, C)  # [rows, C]
    if rows > C:
        _check_gt_rows(counts.sum(axis=1), C, ignore_label, name)
    return counts[:C].copy()  # [C, C]


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
    lo = 0 if np.issubdtype(pred.dtype, np.unsignedinteger) else int(pred.min())
    hi = int(pred.max())
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
    pred8 = _as_uint8(pred, 0, C - 1) if C <= 256 and C * 256 < _MAX_BINS else None
    gt8 = _as_uint8(gt) if pred8 is not None else None
    if gt8 is not None:
        pred, gt = pred8, gt8
        keep = None
        if mask is not None:
            keep = mask.reshape(-1) if mask.dtype == np.bool_ else mask.reshape(-1) != 0
            keep = np.ascontiguousarray(keep)
        return _confusion_u16(np.ascontiguousarray(pred.reshape(-1)),
                              np.ascontiguousarray(gt.reshape(-1)), keep, C, ignore_label, name)
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
    g_lo = 0 if np.issubdtype(gt.dtype, np.unsignedinteger) else int(gt.min())
    g_hi = int(gt.max())
    if g_lo < 0 or g_hi > 255:
        raise ValueError(f'ground truth for {name}: class index out of range '
                         f'[{g_lo if g_lo < 0 else g_hi}]; expected 0..{C - 1} or {ignore_label}')
    rows = max(g_hi + 1, C)  # rows >= C are checked, then dropped
    pred8 = _as_uint8(pred, 0, C - 1) if 2 * rows * C <= _MAX_BINS else None
    gt8 = _as_uint8(gt, g_lo, g_hi) if pred8 is not None else None
    if gt8 is not None:
        pred, gt = pred8, gt8
        idx = _label_index_u16(gt.reshape(-1), pred.reshape(-1), C)  # [V]
        inside = mask.reshape(-1) if mask.dtype == np.bool_ else mask.reshape(-1) != 0
        idx += np.multiply(inside.view(np.uint8), np.uint16(rows * C), dtype=np.uint16)
        counts = _histogram_u16(idx, 2 * rows * C).reshape(2, rows, C)
        if rows > C:
            _check_gt_rows(counts.sum(axis=(0, 2)), C, ignore_label, name)
        inside = counts[1, :C, :].copy()  # [C, C]
        return inside, inside + counts[0, :C, :]
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
