"""Per-frame counts and dataset summaries of the threshold sweep, average precision and the
rendering metrics, shared by ``Occ3DMetric`` (tools/test.py) and ``tools/eval_occ.py``.

Each ``*_frame_result`` turns one frame into count arrays, kept sparse (``pack``: the non-zero
entries, about 5,000 of the sweep's 333,720 and 6,000 of AP's 35,020 on a synthetic frame), so
that a metric holding one result per frame stays small on thousands of frames (sums over
frames are the dataset's counts); ``summarize_score_stats`` adds them up and derives the scores
with the pure functions of ``evaluation/functional``; ``score_stats_metrics`` flattens them into
the metric's keys. Inputs are the model's per-sample outputs (``SplattingOcc.predict``) or a dumped
``pred.npz``:

* sweep: 'occupancy' [X, Y, Z] (float64, as the read-out compares it) and 'class_labels';
* AP: 'occupancy' [X, Y, Z] and 'class_probs' [X, Y, Z, C - 1], both taken at float16 precision
  (``as_dumped``, the precision of the dump) so that tools/test.py and tools/eval_occ.py on its
  dump give the same AP;
* render: 'render' {'depth', 'classes', 'gt_depth', 'gt_classes'} [P] at the labelled pixels.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..functional.average_precision import (average_precision_from_histogram,
                                            class_ap_histograms, mean_average_precision,
                                            occupancy_ap_histogram)
from ..functional.occ_miou import confusion_matrix
from ..functional.render_metrics import (depth_error_sums, depth_metrics_from_sums,
                                         pixel_semantic_scores)
from ..functional.threshold_sweep import (DEFAULT_THRESHOLDS, choose_threshold, sweep_histogram,
                                          sweep_scores)

__all__ = ['as_dumped', 'pack', 'unpack_sum', 'sweep_frame_result', 'ap_frame_result',
           'render_frame_result', 'summarize_score_stats', 'score_stats_metrics',
           'SCORE_METRICS']

#: the metric names of this module (``Occ3DMetric(metrics=...)``)
SCORE_METRICS = ('ap', 'sweep', 'render')


def _numpy(x) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def pack(counts: np.ndarray) -> dict:
    """A count array as its non-zero entries: {'shape', 'index' (flat, int32), 'count'}."""
    flat = counts.reshape(-1)
    index = np.flatnonzero(flat)
    return dict(shape=tuple(counts.shape), index=index.astype(np.int32),
                count=flat[index].astype(np.int64))


def unpack_sum(packs: Sequence[dict]) -> np.ndarray:
    """The dense int64 sum of ``pack`` results of one shape."""
    shape = packs[0]['shape']
    total = np.zeros(int(np.prod(shape)), dtype=np.int64)
    for p in packs:
        assert p['shape'] == shape, (p['shape'], shape)
        total[p['index']] += p['count']  # indices are unique within one pack
    return total.reshape(shape)


def as_dumped(occupancy, class_probs=None):
    """(occupancy, class_probs) at the precision of the dump: float16 values (as float32)."""
    occ = _numpy(occupancy).astype(np.float16).astype(np.float32)
    probs = None if class_probs is None else _numpy(class_probs).astype(np.float16)
    return occ, probs


def _require(out: dict, keys, what: str, name: str) -> None:
    missing = [k for k in keys if out.get(k) is None]
    if missing:
        raise KeyError(f'{name}: {what} needs {missing} in the prediction (SplattingOcc.predict '
                       'returns them; a dumped pred.npz has them when written by tools/test.py '
                       '--dump-dir of this version)')


def sweep_frame_result(out: dict, gt: np.ndarray, mask: Optional[np.ndarray],
                       thresholds: np.ndarray, num_classes: int, ignore_label: int = 255,
                       name: str = 'prediction') -> dict:
    """{'sweep': packed [C, C, T + 1]} (``threshold_sweep.sweep_histogram``) of one frame."""
    _require(out, ('occupancy', 'class_labels'), 'the threshold sweep', name)
    occ = _numpy(out['occupancy'])
    hist = sweep_histogram(occ, _numpy(out['class_labels']), gt, mask, thresholds, num_classes,
                           ignore_label)
    return {'sweep': pack(hist)}


def ap_frame_result(out: dict, gt: np.ndarray, mask: Optional[np.ndarray], free_label: int,
                    edges: np.ndarray, ignore_label: int = 255,
                    name: str = 'prediction') -> dict:
    """{'ap_occupancy': [2, E + 1], 'ap_class': packed [C - 1, 2, E + 1]} score histograms."""
    _require(out, ('occupancy', 'class_probs'), 'average precision', name)
    occ, probs = as_dumped(out['occupancy'], out['class_probs'])
    if probs.shape[:-1] != gt.shape:
        raise ValueError(f'{name}: class_probs shape {probs.shape} does not match the ground '
                         f'truth {gt.shape} (expected [X, Y, Z, C - 1])')
    return {'ap_occupancy': pack(occupancy_ap_histogram(occ, gt, mask, free_label, edges,
                                                        ignore_label)),
            'ap_class': pack(class_ap_histograms(occ, probs, gt, mask, free_label, edges,
                                                 ignore_label))}


def render_frame_result(out: dict, num_classes: int, ignore_label: int = 255,
                        name: str = 'prediction') -> dict:
    """{'render_depth': depth_error_sums, 'render_semantics': [C, C] pixel confusion}."""
    r = out.get('render')
    if r is None:
        raise KeyError(f'{name}: the rendering metrics need renders at the labelled pixels '
                       "('render' in the prediction): the test pipeline must load the 2D labels "
                       '(tools/test.py --eval render adds LoadLabels2D) and the model must have a '
                       'ray supervision (a renderer)')
    return {'render_depth': depth_error_sums(_numpy(r['depth']), _numpy(r['gt_depth'])),
            'render_semantics': confusion_matrix(_numpy(r['classes']), _numpy(r['gt_classes']),
                                                 None, num_classes, ignore_label, name)}


def summarize_score_stats(results: Sequence[dict], free_label: int,
                          thresholds: Optional[np.ndarray] = None) -> dict:
    """Sums of the per-frame results present in every frame and their scores (fractions):
    'sweep' {'thresholds', 'miou', 'geometry_iou', 'best_index', 'best_threshold'},
    'ap' {'occupancy_ap', 'class_ap' [C - 1], 'map'}, 'render' {'abs_rel', 'rmse', 'delta1',
    'depth_count', 'accuracy', 'miou', 'iou' [C], 'pixel_count'}."""
    out = {}
    if not results:
        return out
    if all('sweep' in r for r in results):
        thresholds = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds)
        hist = unpack_sum([r['sweep'] for r in results])
        s = sweep_scores(hist, free_label)
        best = choose_threshold(thresholds, s['miou'])
        out['sweep'] = dict(thresholds=np.asarray(thresholds), miou=s['miou'],
                            geometry_iou=s['geometry_iou'], best_index=best,
                            best_threshold=float(thresholds[best]))
    if all('ap_occupancy' in r for r in results):
        occ = unpack_sum([r['ap_occupancy'] for r in results])
        cls = unpack_sum([r['ap_class'] for r in results])
        class_ap, m = mean_average_precision(cls)
        out['ap'] = dict(occupancy_ap=average_precision_from_histogram(occ), class_ap=class_ap,
                         map=m)
    if all('render_depth' in r for r in results):
        sums = {k: sum(r['render_depth'][k] for r in results)
                for k in results[0]['render_depth']}
        d = depth_metrics_from_sums(sums)
        hist = sum(r['render_semantics'] for r in results)
        sem = pixel_semantic_scores(hist, free_label)
        out['render'] = dict(abs_rel=d['abs_rel'], rmse=d['rmse'], delta1=d['delta1'],
                             depth_count=d['count'], accuracy=sem['accuracy'], miou=sem['miou'],
                             iou=sem['iou'], pixel_count=sem['count'])
    return out


def _pct(v) -> Optional[float]:
    return round(100.0 * float(v), 4) if v is not None and np.isfinite(v) else float('nan')


def score_stats_metrics(summary: dict, class_names: Sequence[str], free_label: int) -> dict:
    """Flat metric keys of a ``summarize_score_stats`` summary (percent unless stated):
    'occupancy_AP', 'mAP', 'AP_<class>'; 'sweep_best_threshold' (occupancy scale),
    'sweep_best_mIoU', 'sweep_best_geometry_IoU'; 'depth_AbsRel' (fraction), 'depth_RMSE'
    (metres), 'depth_delta1', 'render_accuracy', 'render_mIoU', 'render_pixels'."""
    metrics = {}
    ap = summary.get('ap')
    if ap is not None:
        metrics['occupancy_AP'] = _pct(ap['occupancy_ap'])
        metrics['mAP'] = _pct(ap['map'])
        names = [n for i, n in enumerate(class_names) if i != free_label]
        for n, v in zip(names, ap['class_ap']):
            metrics[f'AP_{n}'] = _pct(v)
    sw = summary.get('sweep')
    if sw is not None:
        i = sw['best_index']
        metrics['sweep_best_threshold'] = sw['best_threshold']
        metrics['sweep_best_mIoU'] = _pct(sw['miou'][i])
        metrics['sweep_best_geometry_IoU'] = _pct(sw['geometry_iou'][i])
    r = summary.get('render')
    if r is not None:
        metrics['depth_AbsRel'] = round(r['abs_rel'], 6) if np.isfinite(r['abs_rel']) \
            else float('nan')
        metrics['depth_RMSE'] = round(r['rmse'], 6) if np.isfinite(r['rmse']) else float('nan')
        metrics['depth_delta1'] = _pct(r['delta1'])
        metrics['render_accuracy'] = _pct(r['accuracy'])
        metrics['render_mIoU'] = _pct(r['miou'])
        metrics['render_pixels'] = int(r['pixel_count'])
    return metrics
