"""tools/eval_occ.py: dump then evaluate (JSON fields and values), SparseOcc files, errors."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from splattingocc.cli import eval_occ as tool
from splattingocc.errors import UserError
from splattingocc.evaluation.dump import dump_prediction
from splattingocc.evaluation.functional.occ_miou import (confusion_matrix,
                                                         geometry_iou_from_confusion,
                                                         miou_from_confusion, per_class_iou)
from splattingocc.paths import REPO_ROOT

FILES = {'scene-a': ('tokA', '29796060110c4163b07f06eff4af0753.labels.npz'),
         'scene-b': ('tokB', 'occupancy-vis-demo.labels.npz')}


@pytest.fixture()
def data_root(realdata, tmp_path):
    root = tmp_path / 'data'
    infos = []
    for scene, (token, fname) in FILES.items():
        d = dict(np.load(realdata / 'occ3d' / fname))
        out = root / 'gts' / scene / token
        out.mkdir(parents=True)
        np.savez_compressed(out / 'labels.npz', **d)
        l2e, e2g = np.eye(4), np.eye(4)
        l2e[:3, 3] = [0.94, 0.0, 1.84]
        infos.append(dict(token=token, scene_name=scene, timestamp=0, lidar2ego=l2e,
                          ego2global=e2g, occ_path=f'gts/{scene}/{token}/labels.npz'))
    with open(root / 'infos.pkl', 'wb') as f:
        pickle.dump({'metadata': {'version': 'test'}, 'infos': infos}, f)
    return root


def _gts(root):
    return {tok: dict(np.load(root / 'gts' / sc / tok / 'labels.npz'))
            for sc, (tok, _) in FILES.items()}


def test_round_trip_json(data_root, tmp_path):
    gts = _gts(data_root)
    preds = {}
    rng = np.random.default_rng(0)
    for scene, (tok, _) in FILES.items():
        pred = np.roll(gts[tok]['semantics'], 1, axis=0)
        flip = rng.random(pred.shape) < 0.02
        pred[flip] = rng.integers(0, 18, flip.sum())
        preds[tok] = pred
        dump_prediction(tmp_path / 'preds', scene, tok, pred)
    out = tmp_path / 'scores.json'
    tool.main(['--pred-dir', str(tmp_path / 'preds'), '--data-root', str(data_root),
               '--metric', 'miou', 'ray', '--info', str(data_root / 'infos.pkl'),
               '--json', str(out)])
    doc = json.loads(out.read_text())
    for key in ('frames', 'miou', 'per_class_iou', 'geometry_iou', 'rayiou', 'rayiou_1m',
                'rayiou_2m', 'rayiou_4m', 'miou_no_mask'):
        assert key in doc, key
    assert doc['frames'] == 2
    hist = sum(confusion_matrix(preds[t], gts[t]['semantics'], gts[t]['mask_camera'])
               for t in preds)
    assert doc['miou'] == pytest.approx(100 * miou_from_confusion(hist, 17), abs=1e-3)
    assert doc['geometry_iou'] == pytest.approx(100 * geometry_iou_from_confusion(hist, 17),
                                                abs=1e-3)
    iou = per_class_iou(hist)
    assert list(doc['per_class_iou']) == ['others', 'barrier', 'bicycle', 'bus', 'car',
                                          'construction_vehicle', 'motorcycle', 'pedestrian',
                                          'traffic_cone', 'trailer', 'truck',
                                          'driveable_surface', 'other_flat', 'sidewalk',
                                          'terrain', 'manmade', 'vegetation']
    for i, (name, v) in enumerate(doc['per_class_iou'].items()):
        assert (v is None) == bool(np.isnan(iou[i]))
        if v is not None:
            assert v == pytest.approx(100 * iou[i], abs=1e-3)
    assert 0 < doc['rayiou_1m'] <= doc['rayiou_2m'] <= doc['rayiou_4m'] < 100
    assert doc['rayiou'] == pytest.approx(np.mean([doc['rayiou_1m'], doc['rayiou_2m'],
                                                   doc['rayiou_4m']]), abs=1e-3)

    # no mask; and the ground truth itself in SparseOcc's flat layout (key 'pred') scores 100
    flat = tmp_path / 'flat'
    flat.mkdir()
    for tok, g in gts.items():
        np.savez(flat / f'{tok}.npz', pred=g['semantics'].reshape(-1))
    doc = tool.main(['--pred-dir', str(flat), '--data-root', str(data_root), '--no-camera-mask'])
    assert doc['frames'] == 2 and doc['miou'] == pytest.approx(100.0)
    assert doc['mask'] == 'none' and doc['rayiou'] is None


def test_errors_name_the_file(data_root, tmp_path):
    g = _gts(data_root)['tokA']['semantics']
    bad = tmp_path / 'bad'
    dump_prediction(bad, 'scene-a', 'tokA', np.zeros((200, 200, 8), np.uint8))
    with pytest.raises(UserError, match=r'pred\.npz: prediction shape \(200, 200, 8\)'):
        tool.main(['--pred-dir', str(bad), '--data-root', str(data_root)])
    missing = tmp_path / 'missing'
    dump_prediction(missing, 'scene-z', 'tokZ', g)
    with pytest.raises(UserError, match=r'scene-z/tokZ/labels\.npz does not exist'):
        tool.main(['--pred-dir', str(missing), '--data-root', str(data_root)])
    cls = tmp_path / 'cls'
    wrong = g.copy()
    wrong[5, 5, 5] = 19
    dump_prediction(cls, 'scene-a', 'tokA', wrong)
    with pytest.raises(UserError, match=r'tokA/pred\.npz: class index out of range \[19\]'):
        tool.main(['--pred-dir', str(cls), '--data-root', str(data_root)])
    with pytest.raises(UserError, match='--info'):
        tool.main(['--pred-dir', str(cls), '--data-root', str(data_root), '--metric', 'ray'])
    with pytest.raises(UserError, match='no predictions'):
        tool.main(['--pred-dir', str(tmp_path), '--data-root', str(data_root)])


def test_command_line_with_two_workers(data_root, tmp_path):
    for scene, (tok, _) in FILES.items():
        dump_prediction(tmp_path / 'p', scene, tok, _gts(data_root)[tok]['semantics'])
    out = tmp_path / 's.json'
    r = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'eval_occ.py'), '--pred-dir',
                        str(tmp_path / 'p'), '--data-root', str(data_root), '--workers', '2',
                        '--json', str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc['frames'] == 2 and doc['miou'] == pytest.approx(100.0)
    assert 'mean' in r.stdout
