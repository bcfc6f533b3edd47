"""The threshold sweep against a brute-force loop, AP against hand cases and scikit-learn, the
rendering metrics against hand-computed cases."""
import numpy as np
import pytest

from splattingocc.evaluation.functional import (
    DEFAULT_THRESHOLDS, average_precision_from_histogram, choose_threshold, class_ap_histograms,
    confusion_matrix, depth_error_sums, depth_metrics_from_sums, geometry_iou_from_confusion,
    mean_average_precision, miou_from_confusion, occupancy_ap_histogram, occupancy_bins,
    pixel_semantic_scores, score_histogram, sweep_confusions, sweep_histogram, sweep_scores,
    threshold_grid)

C, FREE = 18, 17


def _frame(rng, shape=(12, 10, 6), k=C):
    occ = rng.random(shape)
    occ[rng.random(shape) < 0.1] = 0.3  # exact ties with a threshold of the grid
    labels = rng.integers(0, k, shape)
    gt = rng.integers(0, C, shape)
    gt[rng.random(shape) < 0.5] = FREE
    gt[rng.random(shape) < 0.05] = 255
    mask = rng.random(shape) < 0.7
    return occ, labels, gt, mask


def test_sweep_equals_brute_force_readout_at_every_threshold():
    rng = np.random.default_rng(0)
    thresholds = threshold_grid([0.3], base=np.linspace(0.05, 0.95, 19))
    hist = 0
    frames = [_frame(rng) for _ in range(3)]
    for occ, labels, gt, mask in frames:
        hist = hist + sweep_histogram(occ, labels, gt, mask, thresholds, C)
    conf = sweep_confusions(hist, FREE)
    assert conf.shape == (len(thresholds), C, C)
    scores = sweep_scores(hist, FREE)
    for j, t in enumerate(thresholds):
        ref = sum(confusion_matrix(np.where(occ >= t, labels, FREE), gt, mask, C)
                  for occ, labels, gt, mask in frames)
        np.testing.assert_array_equal(conf[j], ref)
        assert scores['miou'][j] == pytest.approx(miou_from_confusion(ref, FREE), nan_ok=True)
        assert scores['geometry_iou'][j] == pytest.approx(geometry_iou_from_confusion(ref, FREE))


def test_sweep_hand_case_and_bins():
    # thresholds 0.2, 0.5: voxel occupancies 0.1 (free at both), 0.2 (occupied at 0.2 only),
    # 0.5 and 0.9 (occupied at both)
    t = np.array([0.2, 0.5])
    occ = np.array([0.1, 0.2, 0.5, 0.9])
    np.testing.assert_array_equal(occupancy_bins(occ, t), [0, 1, 2, 2])
    labels = np.array([3, 3, 3, 4])
    gt = np.array([3, 3, FREE, 4])
    hist = sweep_histogram(occ, labels, gt, None, t, C)
    m = sweep_confusions(hist, FREE)
    # at 0.2: gt 3 -> [free, 3], gt free -> 3, gt 4 -> 4
    assert m[0][3, FREE] == 1 and m[0][3, 3] == 1 and m[0][FREE, 3] == 1 and m[0][4, 4] == 1
    assert m[0].sum() == 4
    # at 0.5: both gt-3 voxels free
    assert m[1][3, FREE] == 2 and m[1][FREE, 3] == 1 and m[1][4, 4] == 1
    s = sweep_scores(hist, FREE)
    # 0.2: IoU_3 = 1 / (2 + 2 - 1) = 1/3, IoU_4 = 1 -> 2/3; 0.5: IoU_3 = 0, IoU_4 = 1 -> 1/2
    np.testing.assert_allclose(s['miou'], [2 / 3, 0.5])
    assert choose_threshold(t, s['miou']) == 0


def test_choose_threshold_takes_the_lowest_of_equal_maxima_and_skips_nan():
    assert choose_threshold(np.array([0.1, 0.2, 0.3]), np.array([np.nan, 0.5, 0.5])) == 1
    with pytest.raises(ValueError, match='undefined'):
        choose_threshold(np.array([0.1]), np.array([np.nan]))


def test_default_grid_is_increasing_in_the_unit_interval():
    g = DEFAULT_THRESHOLDS
    assert (np.diff(g) > 0).all() and g[0] > 0 and g[-1] < 1
    assert 0.5 in g and len(threshold_grid([0.5])) == len(g)
    assert len(threshold_grid([1 - np.exp(-0.5)])) == len(g) + 1


# ----------------------------------------------------------------------------- average precision
def test_ap_hand_case():
    # scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): the curve (R, P) = (1/2, 1), (1/2, 1/2),
    # (1, 2/3), (1, 1/2) -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    edges = np.array([0.05, 0.5, 0.75, 0.85])
    h = score_histogram(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0], bool), edges)
    np.testing.assert_array_equal(h, [[0, 1, 0, 1, 0], [0, 0, 1, 0, 1]])
    assert average_precision_from_histogram(h) == pytest.approx(5 / 6)
    # one bin for all: precision 1/2 at recall 1
    h1 = score_histogram(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0], bool),
                         np.array([0.01]))
    assert average_precision_from_histogram(h1) == pytest.approx(0.5)
    assert np.isnan(average_precision_from_histogram(np.zeros((2, 3), np.int64)))


def test_ap_equals_sklearn_on_binned_scores():
    sklearn = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(1)
    s = rng.random(5000) ** 3
    y = rng.random(5000) < s  # informative scores
    edges = DEFAULT_THRESHOLDS
    ref = sklearn.average_precision_score(y, occupancy_bins(s, edges))
    assert average_precision_from_histogram(score_histogram(s, y, edges)) == pytest.approx(ref)


def test_occupancy_and_class_ap_hand_case():
    # 4 voxels in the mask, one outside, one ignored; classes: 3 occupied classes + free (C = 4)
    occ = np.array([0.9, 0.6, 0.3, 0.1, 0.95, 0.9])
    probs = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0],
                      [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    gt = np.array([0, 1, 3, 0, 3, 255])
    mask = np.array([1, 1, 1, 1, 0, 1], bool)
    edges = np.arange(1, 100) / 100.0
    h = occupancy_ap_histogram(occ, gt, mask, 3, edges)
    # occupied gt: scores 0.9 (pos), 0.6 (pos), 0.3 (neg), 0.1 (pos): AP = 1/3 + 1/3 + 1/3 * 3/4
    assert average_precision_from_histogram(h) == pytest.approx(2 / 3 + 0.25)
    ch = class_ap_histograms(occ, probs, gt, mask, 3, edges)
    assert ch.shape == (3, 2, 100)
    ap, m = mean_average_precision(ch)
    # class 0: scores 0.72 (pos), 0.06, 0.15, 0.1 (pos) -> ranks 0.72 P, 0.15 N, 0.1 P, 0.06 N:
    # AP = 1/2 + 1/2 * 2/3; class 1: 0.54 (pos) first -> 1; class 2: no positive -> NaN
    np.testing.assert_allclose(ap[:2], [0.5 + 1 / 3, 1.0])
    assert np.isnan(ap[2]) and m == pytest.approx((0.5 + 1 / 3 + 1) / 2)


# ----------------------------------------------------------------------------- rendering
def test_depth_metrics_hand_case():
    pred = np.array([10.0, 4.0, 0.0, 7.0, 3.0])
    gt = np.array([8.0, 4.0, 5.0, 0.0, 2.0])  # the fourth pixel has no label
    s = depth_error_sums(pred, gt)
    # within 1.25: 4/4 only (10/8 = 1.25 is not below it, 3/2 = 1.5, a render of 0 never)
    assert s['count'] == 4 and s['delta1'] == 1
    m = depth_metrics_from_sums(s)
    assert m['abs_rel'] == pytest.approx((2 / 8 + 0 + 1 + 1 / 2) / 4)
    assert m['rmse'] == pytest.approx(np.sqrt((4 + 0 + 25 + 1) / 4))
    assert m['delta1'] == pytest.approx(0.25)
    assert np.isnan(depth_metrics_from_sums(depth_error_sums(pred[:0], gt[:0]))['rmse'])


def test_pixel_semantic_scores_hand_case():
    label = np.array([0, 0, 1, 1, 2, 255])
    rendered = np.array([0, 1, 1, 1, 0, 2])
    hist = confusion_matrix(rendered, label, None, 3)
    s = pixel_semantic_scores(hist)
    assert s['count'] == 5 and s['accuracy'] == pytest.approx(3 / 5)
    # IoU_0 = 1 / (2 + 2 - 1), IoU_1 = 2 / (2 + 3 - 2), IoU_2 = 0 / (1 + 0 - 0)
    np.testing.assert_allclose(s['iou'], [1 / 3, 2 / 3, 0.0])
    assert s['miou'] == pytest.approx(1 / 3)
    assert pixel_semantic_scores(hist, free_label=2)['miou'] == pytest.approx(1 / 2)
