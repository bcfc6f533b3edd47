"""Occ3D-nuScenes metric for mmengine: mIoU (camera mask), geometry IoU, mIoU without mask, RayIoU;
optionally occupancy AP and per-class AP, the occupancy-threshold sweep (calibration) and the
rendering metrics at labelled pixels (``score_stats.py``).

The math lives in ``splattingocc.evaluation.functional``; this class only accumulates and reports.
``process`` turns every sample into a few small count arrays (an 18 x 18 confusion matrix per mask
setting and, for RayIoU, per-class ray counts) and appends exactly one result per sample, so
mmengine's ``collect_results`` (which drops the samples a distributed sampler padded on) counts
every sample once. ``compute_metrics`` sums the counts over the dataset and derives the scores.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from splattingocc.registry import METRICS

from ..dump import load_occ_gt
from ..functional.occ_miou import (confusion_matrix, confusion_matrix_pair,
                                   geometry_iou_from_confusion, miou_from_confusion,
                                   per_class_iou)
from ..functional.ray_iou import (RAY_IOU_THRESHOLDS, lidar_ray_directions, rayiou_frame_stats,
                                  rayiou_from_stats)
from ..functional.threshold_sweep import DEFAULT_THRESHOLDS, threshold_grid
from ..ray_origins import (MAX_RAY_ORIGINS, RAY_ORIGIN_XY_LIMIT, RAY_ORIGINS_KEY, load_infos,
                           ray_origins_by_token)
from .score_stats import (SCORE_METRICS, ap_frame_result, render_frame_result,
                          score_stats_metrics, summarize_score_stats, sweep_frame_result)

__all__ = ['Occ3DMetric', 'occ_frame_result', 'summarize_occ_results', 'format_occ_table']


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _batch_item(data_batch: Any, key: str, i: int):
    """Entry ``key`` of sample ``i`` from a collated dict batch or a list of sample dicts."""
    if isinstance(data_batch, dict):
        if key not in data_batch:
            return None
        return data_batch[key][i]
    if isinstance(data_batch, (list, tuple)):
        item = data_batch[i]
        return item.get(key) if isinstance(item, dict) else None
    return None


def _meta_item(data_batch: Any, key: str, i: int):
    """``meta[key]`` of sample ``i``: collated ('meta' is a dict of lists / batched tensors) or a
    list of per-sample metas."""
    if isinstance(data_batch, dict):
        meta = data_batch.get('meta')
        if isinstance(meta, dict):
            return meta[key][i] if key in meta else None
        meta = meta[i] if isinstance(meta, (list, tuple)) else None
    elif isinstance(data_batch, (list, tuple)):
        item = data_batch[i]
        meta = item.get('meta') if isinstance(item, dict) else None
    else:
        meta = None
    return meta.get(key) if isinstance(meta, dict) else None


def occ_frame_result(pred: np.ndarray,  # [X, Y, Z] int
                     gt: np.ndarray,  # [X, Y, Z] int
                     mask: Optional[np.ndarray],  # [X, Y, Z] or None
                     num_classes: int,
                     free_label: int,
                     ignore_label: int = 255,
                     origins: Optional[np.ndarray] = None,  # [K, 3] (RayIoU) or None
                     pc_range: Optional[Sequence[float]] = None,
                     voxel_size=None,
                     dirs: Optional[np.ndarray] = None,  # [D, 3]
                     name: str = 'prediction') -> dict:
    """The counts one frame contributes: 'hist' [C, C] (inside ``mask``), 'hist_nomask' [C, C]
    and, when ``origins`` is given, 'ray' {'tp' [T, C], 'gt_count' [C], 'pred_count' [C]}."""
    if mask is None:
        hist = confusion_matrix(pred, gt, None, num_classes, ignore_label, name)
        result = {'hist': hist, 'hist_nomask': hist}
    else:
        hist, hist_nomask = confusion_matrix_pair(pred, gt, mask, num_classes, ignore_label, name)
        result = {'hist': hist, 'hist_nomask': hist_nomask}
    if origins is not None:
        stats = rayiou_frame_stats(pred, gt, origins, pc_range, voxel_size, num_classes,
                                   free_label, ignore_label, dirs=dirs, name=name)
        result['ray'] = {k: stats[k] for k in ('tp', 'gt_count', 'pred_count')}
    return result


def summarize_occ_results(results: Sequence[dict], class_names: Sequence[str], free_label: int,
                          thresholds: Sequence[float] = RAY_IOU_THRESHOLDS) -> dict:
    """Sum per-sample counts and compute all scores (fractions, NaN where undefined).

    Args:
        results: per-sample dicts with 'hist' [C, C], optional 'hist_nomask' [C, C] and optional
            'ray' {'tp' [T, C], 'gt_count' [C], 'pred_count' [C]}.

    Returns:
        dict with 'frames', 'hist', 'iou' [C], 'miou', 'geometry_iou', and when available
        'iou_nomask' [C], 'miou_nomask', 'ray' (the output of ``rayiou_from_stats``).
    """
    C = len(class_names)
    out = {'frames': len(results)}
    hist = np.zeros((C, C), dtype=np.int64)
    for r in results:
        hist += r['hist']
    out['hist'] = hist
    out['iou'] = per_class_iou(hist)
    out['miou'] = miou_from_confusion(hist, free_label)
    out['geometry_iou'] = geometry_iou_from_confusion(hist, free_label)
    if results and all('hist_nomask' in r for r in results):
        h2 = sum(r['hist_nomask'] for r in results)
        out['iou_nomask'] = per_class_iou(h2)
        out['miou_nomask'] = miou_from_confusion(h2, free_label)
        out['geometry_iou_nomask'] = geometry_iou_from_confusion(h2, free_label)
    if results and all('ray' in r for r in results):
        tp = sum(r['ray']['tp'] for r in results)
        gt_count = sum(r['ray']['gt_count'] for r in results)
        pred_count = sum(r['ray']['pred_count'] for r in results)
        out['ray'] = rayiou_from_stats(tp, gt_count, pred_count, free_label)
        out['ray']['thresholds'] = list(thresholds)
    return out


def format_occ_table(summary: dict, class_names: Sequence[str], free_label: int) -> str:
    """A plain-text table of per-class scores (percent) and the means (with 'ap' in the summary:
    an AP column, occupancy AP on the last line)."""
    cols = ['IoU']
    if 'iou_nomask' in summary:
        cols.append('IoU(no mask)')
    ray = summary.get('ray')
    if ray is not None:
        cols += [f'RayIoU@{t:g}' for t in ray['thresholds']]
    ap = summary.get('ap')
    if ap is not None:
        cols.append('AP')
    width = max(len(n) for n in class_names) + 2
    lines = ['class'.ljust(width) + ''.join(c.rjust(14) for c in cols)]
    lines.append('-' * len(lines[0]))

    def fmt(v):
        return f'{100 * v:14.2f}' if np.isfinite(v) else f'{"nan":>14}'

    k = 0
    for i, name in enumerate(class_names):
        if i == free_label:
            continue
        row = name.ljust(width) + fmt(summary['iou'][i])
        if 'iou_nomask' in summary:
            row += fmt(summary['iou_nomask'][i])
        if ray is not None:
            row += ''.join(fmt(ray['per_class'][j][k]) for j in range(len(ray['thresholds'])))
        if ap is not None:
            row += fmt(ap['class_ap'][k])
        lines.append(row)
        k += 1
    lines.append('-' * len(lines[0]))
    row = 'mean'.ljust(width) + fmt(summary['miou'])
    if 'iou_nomask' in summary:
        row += fmt(summary['miou_nomask'])
    if ray is not None:
        row += ''.join(fmt(v) for v in ray['rayiou_at'])
    if ap is not None:
        row += fmt(ap['map'])
    lines.append(row)
    lines.append(f"frames: {summary['frames']}   geometry IoU: {100 * summary['geometry_iou']:.2f}"
                 + (f"   RayIoU: {100 * ray['rayiou']:.2f}" if ray is not None else '')
                 + (f"   occupancy AP: {100 * ap['occupancy_ap']:.2f}" if ap is not None else ''))
    return '\n'.join(lines)


@METRICS.register_module()
class Occ3DMetric(BaseMetric):
    """Occ3D semantic occupancy metric (mIoU over ``mask_camera`` as Occ3D defines it, RayIoU as
    SparseOcc defines it).

    Model outputs (``data_samples``): one dict per sample with 'semantics' uint8 [X, Y, Z]
    (``free_label`` = free) and 'sample_token'. Ground truth: ``data_batch['voxel_semantics']`` and
    ``data_batch['mask_camera']`` / ``['mask_lidar']`` ([B, X, Y, Z]) when the pipeline loads them,
    else the Occ3D file at ``meta['occ_path']``. RayIoU origins: ``meta['ray_origins']``
    ([B, 8, 3], NaN-padded, from the ``LoadRayOrigins`` transform) when present, else looked up by
    sample token in ``ann_file`` (see ``splattingocc.evaluation.ray_origins``).

    Args:
        class_names: the C class names in label order (free included), e.g. the dataset config's.
        num_classes: C.
        free_label: the free class index (17).
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the grid (needed for 'ray').
        voxel_size: voxel edge(s) in metres (needed for 'ray').
        use_camera_mask: evaluate mIoU inside ``mask_camera`` (the Occ3D protocol).
        use_lidar_mask: evaluate inside ``mask_lidar`` instead (when use_camera_mask is False).
        metrics: 'miou' and/or 'ray'; 'ap' (occupancy AP and per-class AP inside the mask, from
            the outputs' 'occupancy' and 'class_probs'), 'sweep' (the mIoU / geometry IoU of
            the read-out at every threshold of ``thresholds``, from 'occupancy' and
            'class_labels'; the curve is kept in ``self.sweep``), 'render' (depth and semantics
            of the renders at the labelled pixels, from the outputs' 'render').
        thresholds: the threshold grid of 'sweep' and the score bin edges of 'ap' (default
            ``functional.threshold_sweep.DEFAULT_THRESHOLDS``).
        ann_file: info pkl with the poses of every keyframe (RayIoU origins when the batch has no
            ``meta['ray_origins']``).
        ignore_label: ground-truth value that is never evaluated (255).
        collect_device, prefix, collect_dir: as ``mmengine.evaluator.BaseMetric``; without a
            prefix the keys are plain ('mIoU', 'RayIoU', ...).

    ``compute_metrics`` returns percentages: 'mIoU', 'geometry_IoU', one key per class name (IoU
    of that class), 'mIoU_no_mask', 'geometry_IoU_no_mask', and with 'ray': 'RayIoU',
    'RayIoU@1', 'RayIoU@2', 'RayIoU@4'; with 'ap', 'sweep', 'render' the keys of
    ``score_stats.score_stats_metrics``.
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 class_names: Sequence[str],
                 num_classes: int,
                 free_label: int,
                 pc_range: Optional[Sequence[float]] = None,
                 voxel_size=None,
                 use_camera_mask: bool = True,
                 use_lidar_mask: bool = False,
                 metrics: Sequence[str] = ('miou', ),
                 ann_file: Optional[str] = None,
                 ignore_label: int = 255,
                 max_ray_origins: int = MAX_RAY_ORIGINS,
                 ray_origin_xy_limit: float = RAY_ORIGIN_XY_LIMIT,
                 thresholds: Optional[Sequence[float]] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        # A placeholder prefix avoids mmengine's "prefix not set" warning; keys stay plain.
        super().__init__(collect_device=collect_device, prefix=prefix or 'occ3d',
                         collect_dir=collect_dir)
        self.prefix = prefix
        if isinstance(metrics, str):
            metrics = [metrics]
        unknown = set(metrics) - {'miou', 'ray', *SCORE_METRICS}
        if unknown:
            raise ValueError(f"Occ3DMetric: unknown metrics {sorted(unknown)}; use 'miou', "
                             f"'ray', {', '.join(repr(m) for m in SCORE_METRICS)}")
        self.thresholds = threshold_grid(base=thresholds) if thresholds is not None \
            else DEFAULT_THRESHOLDS
        self.sweep: Optional[dict] = None  # the last 'sweep' curve (compute_metrics)
        self.class_names = list(class_names)
        self.num_classes = int(num_classes)
        if len(self.class_names) != self.num_classes:
            raise ValueError(f'Occ3DMetric: {len(self.class_names)} class_names but num_classes='
                             f'{self.num_classes}')
        if not 0 <= free_label < self.num_classes:
            raise ValueError(f'Occ3DMetric: free_label {free_label} outside 0..{num_classes - 1}')
        self.free_label = int(free_label)
        self.use_camera_mask = use_camera_mask
        self.use_lidar_mask = use_lidar_mask
        self.metrics = list(metrics)
        self.ignore_label = ignore_label
        self.ann_file = ann_file
        self.max_ray_origins = max_ray_origins
        self.ray_origin_xy_limit = ray_origin_xy_limit
        self._origins_by_token = None
        if 'ray' in self.metrics:
            if pc_range is None or voxel_size is None:
                raise ValueError("Occ3DMetric: metrics 'ray' needs pc_range and voxel_size (take "
                                 'them from configs/_base_/datasets/occ3d_nuscenes.py)')
        self.pc_range = None if pc_range is None else list(pc_range)
        self.voxel_size = voxel_size
        self._dirs = lidar_ray_directions() if 'ray' in self.metrics else None

    # ------------------------------------------------------------------ helpers
    def _ray_origins(self, data_batch: Any, i: int, token: str) -> np.ndarray:
        o = _meta_item(data_batch, RAY_ORIGINS_KEY, i)
        if o is not None:
            o = _to_numpy(o).astype(np.float64)
            return o[np.isfinite(o).all(axis=1)]
        if self.ann_file is None:
            raise KeyError("Occ3DMetric: RayIoU needs ray origins: set the metric's ann_file to "
                           "the info pkl, or add dict(type='LoadRayOrigins', ann_file=...) after "
                           'the packing transform of the test pipeline')
        if self._origins_by_token is None:
            self._origins_by_token = ray_origins_by_token(
                load_infos(self.ann_file), self.max_ray_origins, self.ray_origin_xy_limit)
        if token not in self._origins_by_token:
            raise KeyError(f'Occ3DMetric: sample {token} is not in ann_file {self.ann_file}')
        return self._origins_by_token[token]

    def _ground_truth(self, data_batch: Any, i: int):
        sem = _batch_item(data_batch, 'voxel_semantics', i)
        if sem is not None:
            cam = _batch_item(data_batch, 'mask_camera', i)
            lidar = _batch_item(data_batch, 'mask_lidar', i)
            return (_to_numpy(sem), None if cam is None else _to_numpy(cam),
                    None if lidar is None else _to_numpy(lidar))
        occ_path = _meta_item(data_batch, 'occ_path', i)
        if occ_path is None:
            raise KeyError("Occ3DMetric: the data batch has neither 'voxel_semantics' nor "
                           "meta['occ_path']; load the Occ3D ground truth in the test pipeline")
        gt = load_occ_gt(occ_path)
        return gt['semantics'], gt['mask_camera'], gt['mask_lidar']

    # ------------------------------------------------------------------ BaseMetric API
    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for i, out in enumerate(data_samples):
            if not isinstance(out, dict) or 'semantics' not in out:
                raise KeyError("Occ3DMetric: every model output must be a dict with 'semantics' "
                               '[X, Y, Z]; got ' + (str(sorted(out)) if isinstance(out, dict)
                                                    else type(out).__name__))
            pred = _to_numpy(out['semantics'])
            token = out.get('sample_token') or _meta_item(data_batch, 'sample_token', i)
            meta_token = _meta_item(data_batch, 'sample_token', i)
            if meta_token is not None and out.get('sample_token') and meta_token != token:
                raise ValueError(f'Occ3DMetric: output {i} is sample {token} but the batch holds '
                                 f'{meta_token}')
            gt, mask_cam, mask_lidar = self._ground_truth(data_batch, i)
            name = f'prediction of sample {token}'
            if self.use_camera_mask:
                if mask_cam is None:
                    raise KeyError(f"Occ3DMetric: no 'mask_camera' for sample {token}; load it or "
                                   'set use_camera_mask=False')
                mask = mask_cam
            elif self.use_lidar_mask:
                if mask_lidar is None:
                    raise KeyError(f"Occ3DMetric: no 'mask_lidar' for sample {token}")
                mask = mask_lidar
            else:
                mask = None
            origins = (self._ray_origins(data_batch, i, token) if 'ray' in self.metrics
                       else None)
            result = occ_frame_result(pred, gt, mask, self.num_classes, self.free_label,
                                      self.ignore_label, origins, self.pc_range, self.voxel_size,
                                      self._dirs, name)
            if 'sweep' in self.metrics:
                result.update(sweep_frame_result(out, gt, mask, self.thresholds,
                                                 self.num_classes, self.ignore_label, name))
            if 'ap' in self.metrics:
                result.update(ap_frame_result(out, gt, mask, self.free_label, self.thresholds,
                                              self.ignore_label, name))
            if 'render' in self.metrics:
                result.update(render_frame_result(out, self.num_classes, self.ignore_label,
                                                  name))
            result['token'] = token
            self.results.append(result)

    def compute_metrics(self, results: List[dict]) -> dict:
        s = summarize_occ_results(results, self.class_names, self.free_label)
        extra = summarize_score_stats(results, self.free_label, self.thresholds)
        s.update({k: v for k, v in extra.items() if k == 'ap'})
        self.sweep = extra.get('sweep')
        print_log('\n' + format_occ_table(s, self.class_names, self.free_label), logger='current',
                  level=logging.INFO)

        def pct(v):
            return round(float(v) * 100, 4) if np.isfinite(v) else float('nan')

        metrics = {'mIoU': pct(s['miou']), 'geometry_IoU': pct(s['geometry_iou'])}
        for i, name in enumerate(self.class_names):
            if i != self.free_label:
                metrics[name] = pct(s['iou'][i])
        if 'miou_nomask' in s:
            metrics['mIoU_no_mask'] = pct(s['miou_nomask'])
            metrics['geometry_IoU_no_mask'] = pct(s['geometry_iou_nomask'])
        if 'ray' in s:
            metrics['RayIoU'] = pct(s['ray']['rayiou'])
            for t, v in zip(s['ray']['thresholds'], s['ray']['rayiou_at']):
                metrics[f'RayIoU@{t:g}'] = pct(v)
        metrics.update(score_stats_metrics(extra, self.class_names, self.free_label))
        metrics['frames'] = s['frames']
        return metrics
