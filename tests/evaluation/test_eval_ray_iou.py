"""RayIoU (SparseOcc definition): ray set, hand-computed cases, real frames vs brute force."""
import math

import numpy as np
import pytest

from splattingocc.evaluation.functional.ray_iou import (lidar_ray_directions, ray_first_hits,
                                                        rayiou_frame_stats, rayiou_from_stats)

from test_eval_ray_casting import _slab_reference  # same folder (pytest rootdir import)

OCC3D_RANGE = [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4]


def test_lidar_ray_directions_follow_sparseocc():
    d = lidar_ray_directions()
    assert d.shape == (39 * 360, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    pitch = np.rad2deg(np.arcsin(d[:, 2])).reshape(39, 360)
    assert np.ptp(pitch, axis=1).max() < 1e-9  # pitch-major, 360 azimuths each
    p = pitch[:, 0]
    np.testing.assert_allclose(p[:10], [-math.degrees(math.pi / 2 - math.atan(k))
                                        for k in range(1, 11)])
    assert p[0] == pytest.approx(-45.0)
    np.testing.assert_allclose(np.diff(p[9:]), p[9] - p[8])  # constant step after k = 10
    assert math.radians(p[-2]) < 0.21 <= math.radians(p[-1])
    az = np.rad2deg(np.arctan2(d[:360, 1], d[:360, 0])) % 360
    np.testing.assert_allclose(az, np.arange(360), atol=1e-9)


def test_hand_computed_rays_and_thresholds():
    # a 10 x 1 x 1 corridor of 1 m voxels; origin in voxel 0; one ray forward, one backward
    gt = np.full((10, 1, 1), 3, np.uint8)  # 3 = free
    pred = gt.copy()
    gt[5] = 1  # gt: class 1 at x in [5, 6): exit depth 5.5
    pred[6] = 1  # pred: class 1 at [6, 7): exit depth 6.5, error exactly 1.0
    gt[0, 0, 0] = 3
    origins = np.array([[0.5, 0.5, 0.5]])
    dirs = np.array([[1.0, 0, 0], [-1.0, 0, 0]])  # the backward ray leaves at once: discarded
    h = ray_first_hits(pred, gt, origins, [0, 0, 0, 10, 1, 1], 1.0, free_label=3, dirs=dirs)
    np.testing.assert_array_equal(h['gt_label'], [1])
    np.testing.assert_array_equal(h['pred_label'], [1])
    np.testing.assert_allclose(h['gt_depth'], [5.5])
    np.testing.assert_allclose(h['pred_depth'], [6.5])
    s = rayiou_frame_stats(pred, gt, origins, [0, 0, 0, 10, 1, 1], 1.0, num_classes=4,
                           free_label=3, dirs=dirs)
    np.testing.assert_array_equal(s['tp'][:, 1], [0, 1, 1])  # |err| = 1 is not < 1
    np.testing.assert_array_equal(s['gt_count'], [0, 1, 0, 0])
    np.testing.assert_array_equal(s['pred_count'], [0, 1, 0, 0])
    r = rayiou_from_stats(s['tp'], s['gt_count'], s['pred_count'], free_label=3)
    assert r['per_class'].shape == (3, 3)
    np.testing.assert_allclose(r['per_class'][:, 1], [0.0, 1.0, 1.0])
    assert np.isnan(r['per_class'][:, [0, 2]]).all()  # absent classes -> NaN, skipped
    np.testing.assert_allclose(r['rayiou_at'], [0.0, 1.0, 1.0])
    assert r['rayiou'] == pytest.approx(2 / 3)

    # prediction misses (free everywhere): the ray still counts for gt; pred counted as free
    s = rayiou_frame_stats(np.full_like(gt, 3), gt, origins, [0, 0, 0, 10, 1, 1], 1.0, 4, 3,
                           dirs=dirs)
    np.testing.assert_array_equal(s['pred_count'], [0, 0, 0, 1])
    np.testing.assert_array_equal(s['tp'].sum(), 0)
    # wrong class at the right depth: a false negative of 1 and a false positive of 2
    p2 = gt.copy()
    p2[5] = 2
    s = rayiou_frame_stats(p2, gt, origins, [0, 0, 0, 10, 1, 1], 1.0, 4, 3, dirs=dirs)
    np.testing.assert_array_equal(s['gt_count'], [0, 1, 0, 0])
    np.testing.assert_array_equal(s['pred_count'], [0, 0, 1, 0])
    r = rayiou_from_stats(s['tp'], s['gt_count'], s['pred_count'], free_label=3)
    np.testing.assert_allclose(r['per_class'][0], [np.nan, 0.0, 0.0])


def test_rayiou_mean_over_17_classes_including_others():
    C = 18
    tp = np.zeros((3, C), np.int64)
    gt_count = np.zeros(C, np.int64)
    pred_count = np.zeros(C, np.int64)
    gt_count[0] = pred_count[0] = tp[:, 0] = 10  # 'others' perfect
    gt_count[4] = pred_count[4] = 10  # 'car': 0 / 1 / 5 true positives
    tp[:, 4] = [0, 5, 10]
    pred_count[17] = 1000  # free is never averaged
    r = rayiou_from_stats(tp, gt_count, pred_count, free_label=17)
    assert r['per_class'].shape == (3, 17)
    np.testing.assert_allclose(r['rayiou_at'], [0.5, (1 + 5 / 15) / 2, 1.0])
    assert r['rayiou'] == pytest.approx(np.mean(r['rayiou_at']))


def _synthetic_origins():
    # lidar-like origins 1.84 m above the ego origin, spread along the road
    xs = np.linspace(-20, 20, 8)
    return np.stack([xs + 0.98, 0.3 * xs, np.full(8, 1.84)], axis=1)


@pytest.mark.parametrize('fname', ['29796060110c4163b07f06eff4af0753.labels.npz',
                                   'occupancy-vis-demo.labels.npz'])
def test_real_frame_against_itself_is_perfect(realdata, fname):
    gt = np.load(realdata / 'occ3d' / fname)['semantics']
    s = rayiou_frame_stats(gt, gt, _synthetic_origins(), OCC3D_RANGE, 0.4)
    assert s['rays'] > 50000
    np.testing.assert_array_equal(s['gt_count'], s['pred_count'])
    for t in range(3):
        np.testing.assert_array_equal(s['tp'][t], s['gt_count'])
    r = rayiou_from_stats(s['tp'], s['gt_count'], s['pred_count'])
    assert r['rayiou'] == pytest.approx(1.0)
    assert s['gt_count'][17] == 0  # rays whose gt hits nothing are discarded


def test_real_frame_perturbed_matches_brute_force(realdata):
    gt = np.load(realdata / 'occ3d' / '29796060110c4163b07f06eff4af0753.labels.npz')['semantics']
    rng = np.random.default_rng(0)
    pred = np.roll(gt, 2, axis=1)  # shifted 0.8 m sideways
    flip = rng.random(gt.shape) < 0.02
    pred[flip] = rng.integers(0, 18, flip.sum())
    origins = np.array([[0.98, 0.0, 1.84], [-12.3, 4.1, 1.9]])
    dirs = lidar_ray_directions()[::53]  # 265 rays per origin
    s = rayiou_frame_stats(pred, gt, origins, OCC3D_RANGE, 0.4, dirs=dirs)

    # independent: exact slab intersection with every occupied voxel, exit depth
    o = np.repeat(origins, len(dirs), axis=0)
    d = np.tile(dirs, (2, 1))
    gi, _, gd = _slab_reference(gt != 17, o, d, OCC3D_RANGE, 0.4)
    pi, _, pd = _slab_reference(pred != 17, o, d, OCC3D_RANGE, 0.4)
    keep = gi[:, 0] >= 0
    g = gt[gi[keep, 0], gi[keep, 1], gi[keep, 2]]
    p = np.where(pi[keep, 0] >= 0, pred[pi[keep, 0], pi[keep, 1], pi[keep, 2]], 17)
    err = np.abs(gd[keep] - pd[keep])
    for c in range(18):
        assert s['gt_count'][c] == np.sum(g == c)
        assert s['pred_count'][c] == np.sum(p == c)
        for j, t in enumerate((1, 2, 4)):
            assert s['tp'][j, c] == np.sum((g == c) & (p == c) & (err < t))
    assert s['rays'] == keep.sum() > 300
    assert 0 < s['tp'][0].sum() < s['tp'][2].sum() < s['rays']
