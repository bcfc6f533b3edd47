"""Occ3DMetric's 'ap', 'sweep' and 'render' metrics: accumulation over samples equals the pure
functions on the pooled data; clear errors when the outputs lack what a metric needs."""
import numpy as np
import pytest
import torch

from splattingocc.evaluation.functional import (average_precision_from_histogram,
                                                occupancy_ap_histogram, threshold_grid)
from splattingocc.evaluation.metrics.occ_metric import Occ3DMetric

C, FREE = 18, 17
NAMES = [f'c{i}' for i in range(17)] + ['free']


def _sample(rng, shape=(6, 5, 4)):
    occ = rng.random(shape)
    labels = rng.integers(0, 17, shape).astype(np.uint8)
    probs = rng.random(shape + (17, ))
    probs /= probs.sum(-1, keepdims=True)
    gt = rng.integers(0, C, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.5] = FREE
    mask = (rng.random(shape) < 0.8).astype(np.uint8)
    out = dict(semantics=np.where(occ >= 0.4, labels, FREE).astype(np.uint8), occupancy=occ,
               class_labels=labels, class_probs=probs.astype(np.float16),
               render=dict(depth=np.array([10.0, 4.0, 0.0], np.float32),
                           gt_depth=np.array([8.0, 4.0, 5.0], np.float32),
                           classes=np.array([1, 2, 3], np.uint8),
                           gt_classes=np.array([1, 2, 255], np.uint8)))
    return out, gt, mask


def test_metric_pools_ap_sweep_and_render_over_samples():
    rng = np.random.default_rng(0)
    samples = [_sample(rng) for _ in range(3)]
    metric = Occ3DMetric(NAMES, C, FREE, metrics=['miou', 'ap', 'sweep', 'render'],
                         thresholds=threshold_grid([0.4], base=[0.1, 0.7]))
    for i, (out, gt, mask) in enumerate(samples):
        batch = dict(voxel_semantics=torch.from_numpy(gt[None]),
                     mask_camera=torch.from_numpy(mask[None]))
        metric.process(batch, [dict(out, sample_token=f't{i}')])
    m = metric.compute_metrics(metric.results)
    # occupancy AP on the pooled (float16-rounded) scores
    edges = metric.thresholds
    h = sum(occupancy_ap_histogram(o['occupancy'].astype(np.float16).astype(np.float32), g, k,
                                   FREE, edges) for o, g, k in samples)
    assert m['occupancy_AP'] == pytest.approx(100 * average_precision_from_histogram(h), abs=1e-3)
    assert np.isfinite(m['mAP']) and all(f'AP_c{i}' in m for i in range(17))
    # the sweep at the configured read-out (0.4) is the metric's own mIoU of 'semantics'
    sweep = metric.sweep
    j = int(np.nonzero(sweep['thresholds'] == 0.4)[0][0])
    assert 100 * sweep['miou'][j] == pytest.approx(m['mIoU'], abs=1e-3)
    assert m['sweep_best_mIoU'] >= m['mIoU'] - 1e-6
    assert m['sweep_best_threshold'] == sweep['best_threshold']
    # render: three copies of the hand case of test_threshold_sweep_ap.py (pixels 10/8, 4/4, 0/5)
    assert m['depth_AbsRel'] == pytest.approx((0.25 + 0 + 1) / 3, abs=1e-6)
    assert m['depth_RMSE'] == pytest.approx(np.sqrt((4 + 0 + 25) / 3), abs=1e-6)
    assert m['depth_delta1'] == pytest.approx(100 / 3, abs=1e-3)
    assert m['render_accuracy'] == 100.0 and m['render_pixels'] == 6
    assert m['render_mIoU'] == 100.0  # classes 1 and 2, both right; the rest never seen


def test_metric_errors_name_what_is_missing():
    rng = np.random.default_rng(1)
    out, gt, mask = _sample(rng)
    batch = dict(voxel_semantics=torch.from_numpy(gt[None]),
                 mask_camera=torch.from_numpy(mask[None]))
    with pytest.raises(KeyError, match='LoadLabels2D'):
        Occ3DMetric(NAMES, C, FREE, metrics=['render']).process(
            batch, [{k: v for k, v in out.items() if k != 'render'}])
    with pytest.raises(KeyError, match='class_probs'):
        Occ3DMetric(NAMES, C, FREE, metrics=['ap']).process(
            batch, [{k: v for k, v in out.items() if k != 'class_probs'}])
    with pytest.raises(ValueError, match='unknown metrics'):
        Occ3DMetric(NAMES, C, FREE, metrics=['apx'])
