"""Threshold-free occupancy scores: average precision from binned score histograms.

Occupancy AP: every voxel inside the mask (ground truth not ``ignore_label``) is a detection with
score ``o`` (the read-out's occupancy) and is positive when its ground truth is occupied (not
free). Per-class AP of class c: score ``o * p_c`` (``p_c`` the class probability given
occupied), positive when the ground truth is c (every other evaluated voxel, free included, is a
negative). mAP: the mean of the class APs over classes with at least one positive.

Binning. Scores are counted in bins of a fixed edge grid ``e_0 < ... < e_{E-1}`` (bin
``b(s) = #{j : e_j <= s}``, as ``threshold_sweep.occupancy_bins``), positives and negatives
apart (``score_histogram``: [2, E + 1]); frames add up. The precision-recall curve has one point
per bin boundary, cutting from the highest bin down, and

    AP = sum_k (R_k - R_{k+1}) P_k

(the step-wise sum of scikit-learn's ``average_precision_score``), which equals that function on
the scores replaced by their bin index: AP is exact up to the binning (scores that share a bin
are tied). With the default edges (``threshold_sweep.DEFAULT_THRESHOLDS``: 10 per decade from
1e-6 to 1e-3, then steps of 0.001) the ties are within 0.001 or 26% (relative) of each other.

Everything here is a pure function on numpy arrays.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .threshold_sweep import occupancy_bins

__all__ = ['score_histogram', 'average_precision_from_histogram', 'occupancy_ap_histogram',
           'class_ap_histograms', 'mean_average_precision']


def score_histogram(scores: np.ndarray,  # [N] float
                    positive: np.ndarray,  # [N] bool
                    edges: np.ndarray,  # [E] increasing
                    ) -> np.ndarray:
    """[2, E + 1] int64: row 0 the negatives, row 1 the positives, per score bin."""
    assert scores.shape == positive.shape, (scores.shape, positive.shape)
    b = occupancy_bins(scores, edges)
    n = len(edges) + 1
    return np.bincount(b + n * positive.astype(np.int64), minlength=2 * n).reshape(2, n)


def average_precision_from_histogram(hist: np.ndarray,  # [2, E + 1]
                                     ) -> float:
    """AP (fraction) of the binned scores (module docstring); NaN without positives."""
    assert hist.ndim == 2 and hist.shape[0] == 2, hist.shape
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    total_pos = pos.sum()
    if total_pos == 0:
        return float('nan')
    tp = np.cumsum(pos[::-1])  # cut k from the top: detections in the k + 1 highest bins
    fp = np.cumsum(neg[::-1])
    recall = tp / total_pos
    detections = tp + fp
    precision = np.divide(tp, detections, out=np.zeros_like(tp), where=detections > 0)
    d_recall = np.diff(np.concatenate([[0.0], recall]))  # 0 where no positive was added
    return float((d_recall * precision).sum())


def occupancy_ap_histogram(occupancy: np.ndarray,  # [X, Y, Z] float
                           gt: np.ndarray,  # [X, Y, Z] int
                           mask: Optional[np.ndarray],  # [X, Y, Z] or None
                           free_label: int,
                           edges: np.ndarray,  # [E]
                           ignore_label: int = 255) -> np.ndarray:
    """[2, E + 1] score histogram of one frame for occupancy AP (positive: gt not free)."""
    assert occupancy.shape == gt.shape, (occupancy.shape, gt.shape)
    keep = gt != ignore_label
    if mask is not None:
        keep &= mask.astype(bool)
    return score_histogram(occupancy[keep], gt[keep] != free_label, edges)


def class_ap_histograms(occupancy: np.ndarray,  # [X, Y, Z] float
                        class_probs: np.ndarray,  # [X, Y, Z, C - 1] float
                        gt: np.ndarray,  # [X, Y, Z] int
                        mask: Optional[np.ndarray],  # [X, Y, Z] or None
                        free_label: int,
                        edges: np.ndarray,  # [E]
                        ignore_label: int = 255) -> np.ndarray:
    """[C - 1, 2, E + 1] score histograms of one frame, one per non-free class in label order
    (column k of ``class_probs`` is label ``k`` below ``free_label``, ``k + 1`` above); the
    score of class k is ``occupancy * class_probs[..., k]`` (in float32)."""
    assert class_probs.shape[:-1] == occupancy.shape == gt.shape, \
        (class_probs.shape, occupancy.shape, gt.shape)
    keep = gt != ignore_label
    if mask is not None:
        keep &= mask.astype(bool)
    occ = occupancy[keep].astype(np.float32)  # [N]
    probs = class_probs[keep].astype(np.float32)  # [N, C - 1]
    g = gt[keep]
    out = []
    for k in range(probs.shape[1]):
        label = k if k < free_label else k + 1
        out.append(score_histogram(occ * probs[:, k], g == label, edges))
    return np.stack(out) if out else np.zeros((0, 2, len(edges) + 1), np.int64)


def mean_average_precision(class_hists: np.ndarray,  # [K, 2, E + 1]
                           ) -> tuple:
    """(per-class AP [K] with NaN for classes without positives, their NaN-ignoring mean)."""
    ap = np.array([average_precision_from_histogram(h) for h in class_hists], dtype=np.float64)
    return ap, (float(np.nanmean(ap)) if np.isfinite(ap).any() else float('nan'))
