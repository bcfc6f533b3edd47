"""Paired bootstrap of the Occ3D scores of two sets of predictions on the same frames.

The units (frames, or whole scenes) are resampled with replacement; each resample sums the chosen
units' confusion matrices (and, for RayIoU, their ray counts), for A and for B alike, and takes
the difference of the scores. A class absent from a resample's ground truth and predictions is
left out of its mIoU (NaN-mean, as in Occ3D). The scores of R resamples are computed at once from
[R, ...] stacks, with the definitions of ``occ_miou.miou_from_confusion`` /
``geometry_iou_from_confusion`` and ``ray_iou.rayiou_from_stats``.

Everything here is a pure function on numpy arrays: no I/O, no printing.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ['scores_of_hists', 'rayiou_of_stats', 'bootstrap_weights', 'paired_bootstrap',
           'percentile_interval']


def scores_of_hists(hists: np.ndarray,  # [R, C, C] (rows ground truth)
                    free_label: int) -> dict:
    """mIoU and geometry IoU (fractions) of each of R confusion matrices at once, with the
    definitions of ``occ_miou.miou_from_confusion`` / ``geometry_iou_from_confusion``.

    Returns:
        dict with 'miou' [R], 'geometry_iou' [R] and 'iou' [R, C] (NaN where 0 / 0).
    """
    hists = np.asarray(hists, dtype=np.float64)
    assert hists.ndim == 3 and hists.shape[1] == hists.shape[2], hists.shape
    C = hists.shape[1]
    tp = np.einsum('rcc->rc', hists)
    union = hists.sum(2) + hists.sum(1) - tp  # [R, C]
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = tp / union  # NaN for 0 / 0
    keep = np.arange(C) != free_label
    sel = iou[:, keep]
    present = np.isfinite(sel)
    n = present.sum(1)
    with np.errstate(divide='ignore', invalid='ignore'):
        miou = np.where(n > 0, np.where(present, sel, 0.0).sum(1) / n, np.nan)
        occ_tp = hists[:, keep][:, :, keep].sum((1, 2))
        gt_occ, pred_occ = hists[:, keep].sum((1, 2)), hists[:, :, keep].sum((1, 2))
        geo_union = gt_occ + pred_occ - occ_tp
        geo = np.where(geo_union > 0, occ_tp / geo_union, np.nan)
    return {'miou': miou, 'geometry_iou': geo, 'iou': iou}


def rayiou_of_stats(tp: np.ndarray,  # [R, T, C]
                    gt_count: np.ndarray,  # [R, C]
                    pred_count: np.ndarray,  # [R, C]
                    free_label: int) -> np.ndarray:
    """RayIoU (fraction) [R] of each of R sets of summed ray counts at once, with the definition
    of ``ray_iou.rayiou_from_stats``: the NaN-ignoring mean over thresholds and non-free
    classes."""
    tp = np.asarray(tp, dtype=np.float64)
    both = (np.asarray(gt_count, dtype=np.float64) + np.asarray(pred_count, dtype=np.float64))
    assert tp.ndim == 3 and both.shape == (tp.shape[0], tp.shape[2]), (tp.shape, both.shape)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = tp / (both[:, None, :] - tp)  # [R, T, C], NaN for 0 / 0
    iou = np.delete(iou, free_label, axis=2).reshape(tp.shape[0], -1)
    present = np.isfinite(iou)
    n = present.sum(1)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(n > 0, np.where(present, iou, 0.0).sum(1) / n, np.nan)


def bootstrap_weights(units: int, resamples: int, seed: int = 0) -> np.ndarray:
    """[R, U] how often each of U units is drawn in each of R resamples with replacement.

    The draws are ``np.random.default_rng(seed).integers(0, U, size=(R, U))``: row r of that
    array lists the units of resample r.
    """
    draws = np.random.default_rng(seed).integers(0, units, size=(int(resamples), units))
    weights = np.zeros((int(resamples), units))
    np.add.at(weights, (np.arange(int(resamples))[:, None], draws), 1.0)
    return weights


def paired_bootstrap(hists_a: np.ndarray,  # [U, C, C]
                     hists_b: np.ndarray,  # [U, C, C]
                     free_label: int, resamples: int, seed: int = 0,
                     ray_a: Optional[dict] = None, ray_b: Optional[dict] = None) -> dict:
    """Differences A - B of mIoU and geometry IoU over ``resamples`` paired resamples of the U
    units (module docstring): {'miou': [R], 'geometry_iou': [R]} (fractions). With ``ray_a``
    and ``ray_b`` ({'tp' [U, T, C], 'gt_count' [U, C], 'pred_count' [U, C]}: each unit's ray
    counts), also 'rayiou' [R] over the same resamples."""
    hists_a, hists_b = np.asarray(hists_a), np.asarray(hists_b)
    assert hists_a.shape == hists_b.shape and hists_a.ndim == 3, (hists_a.shape, hists_b.shape)
    weights = bootstrap_weights(hists_a.shape[0], resamples, seed)
    sa = scores_of_hists(np.einsum('ru,ucd->rcd', weights, hists_a), free_label)
    sb = scores_of_hists(np.einsum('ru,ucd->rcd', weights, hists_b), free_label)
    out = {k: sa[k] - sb[k] for k in ('miou', 'geometry_iou')}
    if ray_a is not None and ray_b is not None:
        ra, rb = (rayiou_of_stats(np.einsum('ru,utc->rtc', weights, r['tp']),
                                  weights @ r['gt_count'], weights @ r['pred_count'], free_label)
                  for r in (ray_a, ray_b))
        out['rayiou'] = ra - rb
    return out


def percentile_interval(differences: np.ndarray) -> dict:  # [R] fractions
    """The 95 % percentile interval of bootstrap differences, in percent (rounded to 4 places),
    and the share of resamples in which A scores higher; NaN differences are left out, and with
    none left every value is None: {'low', 'high', 'share_a_higher'}."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {'low': None, 'high': None, 'share_a_higher': None}
    return {'low': round(100 * float(np.percentile(d, 2.5)), 4),
            'high': round(100 * float(np.percentile(d, 97.5)), 4),
            'share_a_higher': round(float((d > 0).mean()), 4)}
