"""tools/analysis/compare_occ.py: the command on small hand-made frames."""
import json
import pickle

import numpy as np
import pytest

from splattingocc.cli import compare_occ as tool
from splattingocc.evaluation.dump import dump_prediction

FREE = 17


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


def test_command_perfect_against_all_free(tmp_path):
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


def test_command_errors(tmp_path):
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


def test_command_rayiou(tmp_path):
    """--info adds RayIoU: a 6 x 6 x 4 grid of 0.4 m voxels centred on the ego origin (a dataset
    config of that geometry), identity poses; the perfect prediction scores 100, all free 0."""
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
