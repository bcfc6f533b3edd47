"""tools/compare_occ.py: vectorised scores against the metric's own functions, the paired bootstrap
against a loop over the same draws, and the command on small hand-made frames."""
import json
import pickle

import numpy as np
import pytest

from splattingocc.evaluation.dump import dump_prediction
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


def test_scores_of_hists_match_the_metric_functions(load_tool):
    tool = load_tool('compare_occ')
    h = _random_hists(np.random.default_rng(0), 5)
    s = tool.scores_of_hists(h, FREE)
    for r in range(5):
        assert s['miou'][r] == pytest.approx(miou_from_confusion(h[r], FREE), abs=1e-12)
        assert s['geometry_iou'][r] == pytest.approx(geometry_iou_from_confusion(h[r], FREE),
                                                     abs=1e-12)
        np.testing.assert_allclose(s['iou'][r], per_class_iou(h[r]), equal_nan=True)
    assert np.isnan(s['iou'][:, 3]).all()


def test_paired_bootstrap_equals_a_loop_over_the_same_draws(load_tool):
    tool = load_tool('compare_occ')
    rng = np.random.default_rng(1)
    ha, hb = _random_hists(rng, 4), _random_hists(rng, 4)
    d = tool.paired_bootstrap(ha, hb, FREE, resamples=7, seed=3)
    draws = np.random.default_rng(3).integers(0, 4, size=(7, 4))
    for r in range(7):
        a, b = ha[draws[r]].sum(0), hb[draws[r]].sum(0)
        assert d['miou'][r] == pytest.approx(
            miou_from_confusion(a, FREE) - miou_from_confusion(b, FREE), abs=1e-12)
        assert d['geometry_iou'][r] == pytest.approx(
            geometry_iou_from_confusion(a, FREE) - geometry_iou_from_confusion(b, FREE),
            abs=1e-12)
    same = tool.paired_bootstrap(ha, ha, FREE, resamples=20)
    assert np.all(same['miou'] == 0) and np.all(same['geometry_iou'] == 0)


def _random_ray_stats(rng, n):
    """Ray counts of n units: tp <= min(gt, pred) per class, class 3 absent, free never counted."""
    gt = rng.integers(0, 40, size=(n, 18))
    pred = rng.integers(0, 40, size=(n, 18))
    gt[:, 3] = pred[:, 3] = 0
    gt[0, 5] = 0  # one unit without class 5 in its ground truth
    tp = np.sort(rng.integers(0, 1 + np.minimum(gt, pred)[:, None, :], size=(n, 3, 18)), axis=1)
    return {'tp': tp, 'gt_count': gt, 'pred_count': pred}


def test_rayiou_of_stats_matches_the_metric_function(load_tool):
    tool = load_tool('compare_occ')
    r = _random_ray_stats(np.random.default_rng(2), 6)
    got = tool.rayiou_of_stats(r['tp'], r['gt_count'], r['pred_count'], FREE)
    for u in range(6):
        want = rayiou_from_stats(r['tp'][u], r['gt_count'][u], r['pred_count'][u], FREE)
        assert got[u] == pytest.approx(want['rayiou'], abs=1e-12)
    # hand case: one class, thresholds 1/2/4 m with 1, 2, 4 of 4 gt rays right, 4 predicted
    tp = np.zeros((1, 3, 18))
    tp[0, :, 11] = [1, 2, 4]
    gt = np.zeros((1, 18))
    gt[0, 11] = 4
    # IoUs 1/7, 2/6, 4/4; the other classes are 0/0 and left out
    assert tool.rayiou_of_stats(tp, gt, gt, FREE)[0] == pytest.approx((1 / 7 + 2 / 6 + 1) / 3)


def test_paired_bootstrap_rayiou_equals_a_loop_over_the_same_draws(load_tool):
    tool = load_tool('compare_occ')
    rng = np.random.default_rng(4)
    ha, hb = _random_hists(rng, 5), _random_hists(rng, 5)
    ra, rb = _random_ray_stats(rng, 5), _random_ray_stats(rng, 5)
    d = tool.paired_bootstrap(ha, hb, FREE, resamples=9, seed=7, ray_a=ra, ray_b=rb)
    plain = tool.paired_bootstrap(ha, hb, FREE, resamples=9, seed=7)
    np.testing.assert_array_equal(d['miou'], plain['miou'])  # the rays change no other score
    assert 'rayiou' not in plain
    draws = np.random.default_rng(7).integers(0, 5, size=(9, 5))
    for r in range(9):
        a, b = ({k: v[draws[r]].sum(0) for k, v in x.items()} for x in (ra, rb))
        want = (rayiou_from_stats(a['tp'], a['gt_count'], a['pred_count'], FREE)['rayiou'] -
                rayiou_from_stats(b['tp'], b['gt_count'], b['pred_count'], FREE)['rayiou'])
        assert d['rayiou'][r] == pytest.approx(want, abs=1e-12)


def _frames(root, rng):
    """Three 6 x 6 x 4 frames in two scenes: ground truth with classes 0, 4, 11 and free."""
    gts = {}
    for scene, token in (('scene-a', 't1'), ('scene-a', 't2'), ('scene-b', 't3')):
        sem = np.full((6, 6, 4), FREE, np.uint8)
        sem[:, :, 0] = 11
        sem[rng.integers(0, 6), :, 1] = 4
        sem[0, 0, 1] = 0
        mask = np.ones_like(sem)
        mask[5] = 0
        out = root / 'gts' / scene / token
        out.mkdir(parents=True)
        np.savez_compressed(out / 'labels.npz', semantics=sem, mask_camera=mask,
                            mask_lidar=mask)
        gts[(scene, token)] = sem
    return gts


def test_command_perfect_against_all_free(tmp_path, load_tool):
    tool = load_tool('compare_occ')
    gts = _frames(tmp_path / 'data', np.random.default_rng(0))
    for (scene, token), sem in gts.items():
        dump_prediction(tmp_path / 'a', scene, token, sem)
        dump_prediction(tmp_path / 'b', scene, token, np.full_like(sem, FREE))
        half = sem.copy()
        half[:3] = FREE  # rows 0-2 free: classes there missed
        dump_prediction(tmp_path / 'c', scene, token, half)
    out = tmp_path / 'cmp.json'
    doc = tool.main(['--pred-dir', str(tmp_path / 'a'), '--ref-dir', str(tmp_path / 'b'),
                     '--data-root', str(tmp_path / 'data'), '--bootstrap', '50',
                     '--json', str(out)])
    assert json.loads(out.read_text()) == doc
    assert doc['frames'] == 3 and doc['units'] == 3
    assert doc['miou'] == {'a': 100.0, 'b': 0.0, 'difference': 100.0, 'low': 100.0,
                           'high': 100.0, 'share_a_higher': 1.0}
    assert doc['per_class_iou']['driveable_surface'] == {'a': 100.0, 'b': 0.0}
    assert doc['per_class_iou']['car'] == {'a': 100.0, 'b': 0.0}
    assert doc['per_class_iou']['bus'] == {'a': None, 'b': None}  # absent: NaN -> null
    # scene units; B = half the grid free: per-class IoU by hand inside the mask (rows 0-4)
    doc = tool.main(['--pred-dir', str(tmp_path / 'a'), '--ref-dir', str(tmp_path / 'c'),
                     '--data-root', str(tmp_path / 'data'), '--unit', 'scene',
                     '--bootstrap', '30'])
    assert doc['units'] == 2
    gt_all = np.stack([g[:5] for g in gts.values()])
    n11 = (gt_all == 11).sum()
    assert doc['per_class_iou']['driveable_surface']['b'] == pytest.approx(
        100 * (gt_all[:, 3:] == 11).sum() / n11, abs=1e-3)
    assert doc['per_class_iou']['others']['b'] == 0.0  # the one class-0 voxel is in row 0
    assert doc['miou']['difference'] > 0 and doc['miou']['low'] > 0


def test_command_errors(tmp_path, load_tool):
    tool = load_tool('compare_occ')
    gts = _frames(tmp_path / 'data', np.random.default_rng(0))
    for i, ((scene, token), sem) in enumerate(gts.items()):
        dump_prediction(tmp_path / 'a', scene, token, sem)
        if i:
            dump_prediction(tmp_path / 'b', scene, token, sem)
    with pytest.raises(SystemExit, match='scene-a/t1'):
        tool.main(['--pred-dir', str(tmp_path / 'a'), '--ref-dir', str(tmp_path / 'b'),
                   '--data-root', str(tmp_path / 'data')])
    with pytest.raises(SystemExit, match='bootstrap'):
        tool.main(['--pred-dir', str(tmp_path / 'a'), '--ref-dir', str(tmp_path / 'a'),
                   '--data-root', str(tmp_path / 'data'), '--bootstrap', '-1'])


def test_command_rayiou(tmp_path, load_tool):
    """--info adds RayIoU: a 6 x 6 x 4 grid of 0.4 m voxels centred on the ego origin (a dataset
    config of that geometry), identity poses; the perfect prediction scores 100, all free 0."""
    tool = load_tool('compare_occ')
    gts = _frames(tmp_path / 'data', np.random.default_rng(0))
    infos = []
    for i, ((scene, token), sem) in enumerate(gts.items()):
        dump_prediction(tmp_path / 'a', scene, token, sem)
        dump_prediction(tmp_path / 'b', scene, token, np.full_like(sem, FREE))
        infos.append({'token': token, 'scene_name': scene, 'timestamp': i,
                      'lidar2ego': np.eye(4), 'ego2global': np.eye(4)})
    info = tmp_path / 'infos.pkl'
    info.write_bytes(pickle.dumps({'infos': infos}))
    cfg = tmp_path / 'grid.py'
    cfg.write_text('point_cloud_range = [-1.2, -1.2, -1.0, 1.2, 1.2, 0.6]\n'
                   'voxel_size = [0.4, 0.4, 0.4]\n'
                   "class_names = ['c%d' % i for i in range(17)] + ['free']\n"
                   'free_label = 17\n')
    args = ['--pred-dir', str(tmp_path / 'a'), '--ref-dir', str(tmp_path / 'b'),
            '--data-root', str(tmp_path / 'data'), '--dataset-config', str(cfg),
            '--bootstrap', '20']
    doc = tool.main(args + ['--info', str(info)])
    assert doc['rayiou'] == {'a': 100.0, 'b': 0.0, 'difference': 100.0, 'low': 100.0,
                             'high': 100.0, 'share_a_higher': 1.0}
    assert doc['per_class_rayiou']['c11'] == {'a': 100.0, 'b': 0.0}  # the ground is hit
    assert doc['per_class_rayiou']['c3'] == {'a': None, 'b': None}  # never hit: null
    assert 'rayiou' not in tool.main(args)  # without --info: no RayIoU
    infos.pop()
    info.write_bytes(pickle.dumps({'infos': infos}))
    with pytest.raises(SystemExit, match='not in --info .*t3'):
        tool.main(args + ['--info', str(info)])
