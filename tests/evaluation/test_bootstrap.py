"""The paired bootstrap (splattingocc/evaluation/functional/bootstrap.py): vectorised scores against
the metric's own functions, the bootstrap against a loop over the same draws."""
import numpy as np
import pytest

from splattingocc.evaluation.functional import bootstrap
from splattingocc.evaluation.functional.occ_miou import (geometry_iou_from_confusion,
                                                         miou_from_confusion, per_class_iou)
from splattingocc.evaluation.functional.ray_iou import rayiou_from_stats

FREE = 17


def _random_hists(rng, n):
    h = rng.integers(0, 50, size=(n, 18, 18))
    h[:, 3, :] = 0  # class 3 never in the ground truth ...
    h[:, :, 3] = 0  # ... nor predicted: NaN IoU, left out of the mean
    h[0, 5, :] = 0  # class 5 absent from one matrix's ground truth only
    return h


def test_scores_of_hists_match_the_metric_functions():
    h = _random_hists(np.random.default_rng(0), 5)
    s = bootstrap.scores_of_hists(h, FREE)
    for r in range(5):
        assert s['miou'][r] == pytest.approx(miou_from_confusion(h[r], FREE), abs=1e-12)
        assert s['geometry_iou'][r] == pytest.approx(geometry_iou_from_confusion(h[r], FREE),
                                                     abs=1e-12)
        np.testing.assert_allclose(s['iou'][r], per_class_iou(h[r]), equal_nan=True)
    assert np.isnan(s['iou'][:, 3]).all()


def test_paired_bootstrap_equals_a_loop_over_the_same_draws():
    rng = np.random.default_rng(1)
    ha, hb = _random_hists(rng, 4), _random_hists(rng, 4)
    d = bootstrap.paired_bootstrap(ha, hb, FREE, resamples=7, seed=3)
    draws = np.random.default_rng(3).integers(0, 4, size=(7, 4))
    for r in range(7):
        a, b = ha[draws[r]].sum(0), hb[draws[r]].sum(0)
        assert d['miou'][r] == pytest.approx(
            miou_from_confusion(a, FREE) - miou_from_confusion(b, FREE), abs=1e-12)
        assert d['geometry_iou'][r] == pytest.approx(
            geometry_iou_from_confusion(a, FREE) - geometry_iou_from_confusion(b, FREE),
            abs=1e-12)
    same = bootstrap.paired_bootstrap(ha, ha, FREE, resamples=20)
    assert np.all(same['miou'] == 0) and np.all(same['geometry_iou'] == 0)


def _random_ray_stats(rng, n):
    """Ray counts of n units: tp <= min(gt, pred) per class, class 3 absent, free never counted."""
    gt = rng.integers(0, 40, size=(n, 18))
    pred = rng.integers(0, 40, size=(n, 18))
    gt[:, 3] = pred[:, 3] = 0
    gt[0, 5] = 0  # one unit without class 5 in its ground truth
    tp = np.sort(rng.integers(0, 1 + np.minimum(gt, pred)[:, None, :], size=(n, 3, 18)), axis=1)
    return {'tp': tp, 'gt_count': gt, 'pred_count': pred}


def test_rayiou_of_stats_matches_the_metric_function():
    r = _random_ray_stats(np.random.default_rng(2), 6)
    got = bootstrap.rayiou_of_stats(r['tp'], r['gt_count'], r['pred_count'], FREE)
    for u in range(6):
        want = rayiou_from_stats(r['tp'][u], r['gt_count'][u], r['pred_count'][u], FREE)
        assert got[u] == pytest.approx(want['rayiou'], abs=1e-12)
    # hand case: one class, thresholds 1/2/4 m with 1, 2, 4 of 4 gt rays right, 4 predicted
    tp = np.zeros((1, 3, 18))
    tp[0, :, 11] = [1, 2, 4]
    gt = np.zeros((1, 18))
    gt[0, 11] = 4
    # IoUs 1/7, 2/6, 4/4; the other classes are 0/0 and left out
    assert bootstrap.rayiou_of_stats(tp, gt, gt, FREE)[0] == pytest.approx((1 / 7 + 2 / 6 + 1) / 3)


def test_paired_bootstrap_rayiou_equals_a_loop_over_the_same_draws():
    rng = np.random.default_rng(4)
    ha, hb = _random_hists(rng, 5), _random_hists(rng, 5)
    ra, rb = _random_ray_stats(rng, 5), _random_ray_stats(rng, 5)
    d = bootstrap.paired_bootstrap(ha, hb, FREE, resamples=9, seed=7, ray_a=ra, ray_b=rb)
    plain = bootstrap.paired_bootstrap(ha, hb, FREE, resamples=9, seed=7)
    np.testing.assert_array_equal(d['miou'], plain['miou'])  # the rays change no other score
    assert 'rayiou' not in plain
    draws = np.random.default_rng(7).integers(0, 5, size=(9, 5))
    for r in range(9):
        a, b = ({k: v[draws[r]].sum(0) for k, v in x.items()} for x in (ra, rb))
        want = (rayiou_from_stats(a['tp'], a['gt_count'], a['pred_count'], FREE)['rayiou'] -
                rayiou_from_stats(b['tp'], b['gt_count'], b['pred_count'], FREE)['rayiou'])
        assert d['rayiou'][r] == pytest.approx(want, abs=1e-12)
