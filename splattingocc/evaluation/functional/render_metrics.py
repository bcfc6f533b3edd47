"""Rendering metrics at labelled pixels: depth (AbsRel, RMSE, delta < 1.25) and rendered semantics
(pixel accuracy, mIoU).

Depth, over every pixel with a depth label ``d > 0`` and rendered depth ``p`` (pooled over the
dataset, not averaged per frame; Eigen et al.'s definitions)::

    AbsRel = mean |p - d| / d      RMSE = sqrt(mean (p - d)^2)
    delta1 = fraction with max(p / d, d / p) < 1.25       (p = 0 never counts as within)

Semantics, over every pixel with a class label (not ``ignore_label``): the rendered class is the
argmax of the composited class probabilities; a ``K x K`` confusion matrix (rows: label) summed
over the dataset gives the pixel accuracy ``trace / sum`` and the per-class IoU
``M[c, c] / (row_c + col_c - M[c, c])``, whose NaN-ignoring mean over the K classes is the mIoU
(a class neither labelled nor rendered is left out, and so is the free class).

Per-frame results are sums (``depth_error_sums``, ``confusion_matrix``), so frames add up.
Everything here is a pure function on numpy arrays.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .occ_miou import per_class_iou

__all__ = ['DELTA1', 'depth_error_sums', 'depth_metrics_from_sums', 'pixel_semantic_scores']

DELTA1 = 1.25
DEPTH_SUM_KEYS = ('count', 'abs_rel', 'sq_err', 'delta1')


def depth_error_sums(pred: np.ndarray,  # [N] float, rendered depth (metres)
                     gt: np.ndarray,  # [N] float, depth labels (metres, 0 = none)
                     ) -> dict:
    """Sums over the pixels with ``gt > 0``: 'count', 'abs_rel' (sum |p - d| / d), 'sq_err'
    (sum (p - d)^2), 'delta1' (number with max(p / d, d / p) < 1.25)."""
    assert pred.shape == gt.shape, (pred.shape, gt.shape)
    keep = gt > 0
    p = pred[keep].astype(np.float64)
    d = gt[keep].astype(np.float64)
    ratio = np.full_like(d, np.inf)
    ok = p > 0
    ratio[ok] = np.maximum(p[ok] / d[ok], d[ok] / p[ok])
    return dict(count=int(keep.sum()), abs_rel=float((np.abs(p - d) / d).sum()),
                sq_err=float(np.square(p - d).sum()), delta1=int((ratio < DELTA1).sum()))


def depth_metrics_from_sums(sums: dict) -> dict:
    """{'abs_rel', 'rmse' (metres), 'delta1' (fraction), 'count'} from summed
    ``depth_error_sums`` (NaN without pixels)."""
    n = sums['count']
    if n == 0:
        return dict(abs_rel=float('nan'), rmse=float('nan'), delta1=float('nan'), count=0)
    return dict(abs_rel=sums['abs_rel'] / n, rmse=float(np.sqrt(sums['sq_err'] / n)),
                delta1=sums['delta1'] / n, count=int(n))


def pixel_semantic_scores(hist: np.ndarray,  # [K, K] rows label, columns rendered class
                          free_label: Optional[int] = None) -> dict:
    """{'accuracy', 'miou', 'iou' [K], 'count'} of a pixel confusion matrix (NaN if empty); the
    mIoU leaves out ``free_label`` (a class no pixel label has; a render may still be free)."""
    assert hist.ndim == 2 and hist.shape[0] == hist.shape[1], hist.shape
    total = hist.sum()
    iou = per_class_iou(hist)
    sel = iou if free_label is None else np.delete(iou, free_label)
    return dict(accuracy=float(np.trace(hist) / total) if total else float('nan'),
                miou=float(np.nanmean(sel)) if np.isfinite(sel).any() else float('nan'),
                iou=iou, count=int(total))
