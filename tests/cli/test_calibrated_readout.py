"""tools/test.py --calibrate on the val split, --eval on test with the calibrated threshold, AP in
tools/test.py and tools/eval_occ.py, on a toy model with the real read-out (protocol_toy.py)."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # protocol_toy (custom_imports of the config)
sys.path.insert(0, str(HERE.parent / 'engine'))  # toy_components

import splattingocc.engine  # noqa: F401,E402
from splattingocc.cli import eval_occ as eval_tool  # noqa: E402
from splattingocc.cli import test as test_tool  # noqa: E402
from splattingocc.errors import UserError  # noqa: E402
from splattingocc.evaluation.functional import (confusion_matrix,  # noqa: E402
                                                miou_from_confusion)
from toy_components import unique_name  # noqa: E402

CONFIG = str(HERE / 'protocol_toy_config.py')
FREE = 17


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """A checkpoint of the toy model, the model itself and its config."""
    from mmengine.config import Config

    import protocol_toy  # noqa: F401  (registers the toy classes)
    from splattingocc.registry import MODELS
    root = tmp_path_factory.mktemp('protocol')
    cfg = Config.fromfile(CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    ckpt = root / 'iter_1.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    return dict(root=root, ckpt=ckpt, model=model, cfg=cfg)


def _run(ckpt, work_dir, *args, options=()):
    return test_tool.main([CONFIG, str(ckpt), '--work-dir', str(work_dir), *args, '--cfg-options',
                           f'experiment_name={unique_name()}', *options])


def _saved(work_dir) -> dict:
    found = sorted(Path(work_dir).glob('*/metrics.json'))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def _brute_miou(toy, split: str, threshold: float) -> float:
    """mIoU (mask_camera, percent) of the read-out at ``threshold`` on a toy split, directly."""
    from protocol_toy import ProtocolToyDataset
    spec = dict(toy['cfg'][f'{split}_dataloader']['dataset'])
    spec.pop('type')
    data = ProtocolToyDataset(**spec)
    model, hist = toy['model'], 0
    for i in range(len(data)):
        s = data[i]
        with torch.no_grad():
            field = model.field(s['x'][None])
            labels = model.readout.predict(field, threshold)['semantics'][0].numpy()
        hist = hist + confusion_matrix(labels, s['voxel_semantics'].numpy(),
                                       s['mask_camera'].numpy(), 18)
    return 100 * miou_from_confusion(hist, FREE)


def test_calibrate_on_val_then_evaluate_on_test_with_the_threshold(toy, tmp_path):
    ckpt = tmp_path / 'model.pth'
    shutil.copy(toy['ckpt'], ckpt)
    _run(ckpt, tmp_path / 'calib', '--calibrate')
    calib = json.loads(Path(f'{ckpt}.calibration.json').read_text())
    assert calib['format'] == 'splattingocc-calibration/1'
    assert calib['split'] == 'val' and calib['frames'] == 4
    curve = calib['curve']
    t, miou = np.array(curve['thresholds']), np.array(curve['miou'], dtype=float)
    assert len(t) == len(curve['geometry_iou']) > 1000 and (np.diff(t) > 0).all()
    best = int(np.nanargmax(miou))
    assert calib['threshold'] == t[best] and calib['miou'] == miou[best]
    assert calib['configured_threshold'] == pytest.approx(1 - np.exp(-0.5), abs=0)
    assert calib['configured_threshold'] in t  # the config's threshold is on the curve
    # the curve is the read-out's mIoU at those thresholds (brute force on val)
    for tj in (calib['threshold'], calib['configured_threshold'], 0.05, 0.5, 0.9):
        j = int(np.nonzero(t == tj)[0][0])
        assert miou[j] == pytest.approx(_brute_miou(toy, 'val', tj), abs=1e-3)
    assert calib['configured_miou'] == pytest.approx(_brute_miou(toy, 'val', 1 - np.exp(-0.5)),
                                                     abs=1e-3)
    saved = _saved(tmp_path / 'calib')
    assert saved['split'] == 'val' and saved['eval'] == ['calibrate']

    # evaluation on test reads the file: the threshold, where it came from, which split chose it
    metrics = _run(ckpt, tmp_path / 'test', '--eval', 'segm', 'ap')
    saved = _saved(tmp_path / 'test')
    assert saved['split'] == 'test' and saved['metrics']['frames'] == 5
    r = saved['readout']
    assert r['calibrated'] and r['source'] == 'calibration' and r['chosen_on'] == 'val'
    assert r['threshold'] == calib['threshold'] and r['calibration_file'] == f'{ckpt}' \
        '.calibration.json'
    assert metrics['mIoU'] == pytest.approx(_brute_miou(toy, 'test', calib['threshold']),
                                            abs=1e-3)
    assert 0 <= metrics['occupancy_AP'] <= 100 and 'AP_c3' in metrics and 'mAP' in metrics

    # a threshold on the command line wins over the file (and is labelled so)
    _run(ckpt, tmp_path / 'cli', options=['model.readout.threshold=0.25'])
    r = _saved(tmp_path / 'cli')['readout']
    assert r == dict(threshold=0.25, source='command line (--cfg-options)', calibrated=False)
    # a changed checkpoint no longer matches its calibration file
    torch.save({'state_dict': {k: v + 1 for k, v in toy['model'].state_dict().items()},
                'meta': {}}, ckpt)
    with pytest.raises(UserError, match='another checkpoint'):
        _run(ckpt, tmp_path / 'changed')


def test_missing_calibration_is_labelled_or_refused(toy, tmp_path):
    ckpt = tmp_path / 'model.pth'
    shutil.copy(toy['ckpt'], ckpt)
    metrics = _run(ckpt, tmp_path / 'plain')
    r = _saved(tmp_path / 'plain')['readout']
    assert r['calibrated'] is False and r['source'] == 'config (not calibrated)'
    assert metrics['mIoU'] == pytest.approx(_brute_miou(toy, 'test', 1 - np.exp(-0.5)), abs=1e-3)
    with pytest.raises(UserError, match='--calibrate first'):
        _run(ckpt, tmp_path / 'refused', '--require-calibration')
    with pytest.raises(UserError, match='not found'):
        _run(ckpt, tmp_path / 'missing', '--calibration', str(tmp_path / 'nope.json'))
    (tmp_path / 'bad.json').write_text('{"format": "other"}')
    with pytest.raises(UserError, match='not a calibration file'):
        _run(ckpt, tmp_path / 'bad', '--calibration', str(tmp_path / 'bad.json'))


def test_calibrate_refuses_the_test_split_and_dump_scores_needs_a_dump_dir(toy, tmp_path):
    with pytest.raises(UserError, match='never on test'):
        _run(toy['ckpt'], tmp_path / 'a', '--calibrate', '--calibration',
             str(tmp_path / 'c.json'), options=['val_dataloader.dataset.split=test'])
    assert not (tmp_path / 'c.json').exists()
    with pytest.raises(UserError, match='--dump-dir'):
        _run(toy['ckpt'], tmp_path / 'b', '--dump-scores')


def test_ap_of_test_tool_equals_eval_occ_on_its_dump(toy, tmp_path):
    from protocol_toy import ProtocolToyDataset
    dump = tmp_path / 'dump'
    metrics = _run(toy['ckpt'], tmp_path / 'w', '--eval', 'segm', 'ap', '--no-calibration',
                   '--dump-dir', str(dump), '--dump-scores')
    # the toy test split as Occ3D ground-truth files
    data = ProtocolToyDataset(split='test', seed=2, length=5)
    for i in range(len(data)):
        s = data[i]
        out = tmp_path / 'data' / 'gts' / s['meta']['scene_name'] / s['meta']['sample_token']
        out.mkdir(parents=True)
        np.savez(out / 'labels.npz', semantics=s['voxel_semantics'].numpy(),
                 mask_camera=s['mask_camera'].numpy(), mask_lidar=s['mask_camera'].numpy())
        with np.load(dump / s['meta']['scene_name'] / s['meta']['sample_token'] / 'pred.npz') as z:
            assert z['occupancy'].dtype == np.float16 and z['occupancy'].shape == (4, 4, 2)
            assert z['class_probs'].shape == (4, 4, 2, 17)
    cfg = tmp_path / 'dataset.py'
    cfg.write_text("class_names = [f'c{i}' for i in range(17)] + ['free']\nfree_label = 17\n"
                   'point_cloud_range = [0, 0, 0, 4, 4, 2]\nvoxel_size = [1, 1, 1]\n')
    doc = eval_tool.main(['--pred-dir', str(dump), '--data-root', str(tmp_path / 'data'),
                          '--metric', 'miou', 'ap', '--dataset-config', str(cfg)])
    assert doc['frames'] == 5 and doc['miou'] == pytest.approx(metrics['mIoU'], abs=1e-4)
    assert doc['occupancy_ap'] == pytest.approx(metrics['occupancy_AP'], abs=1e-4)
    assert doc['map'] == pytest.approx(metrics['mAP'], abs=1e-4)
    for name, v in doc['per_class_ap'].items():
        assert v == pytest.approx(metrics[f'AP_{name}'], abs=1e-4, nan_ok=True) or \
            (v is None and np.isnan(metrics[f'AP_{name}']))
    # dumps without scores: a clear message
    plain = tmp_path / 'plain'
    _run(toy['ckpt'], tmp_path / 'w2', '--no-calibration', '--dump-dir', str(plain))
    with pytest.raises(UserError, match='--dump-scores'):
        eval_tool.main(['--pred-dir', str(plain), '--data-root', str(tmp_path / 'data'),
                        '--metric', 'ap', '--dataset-config', str(cfg)])


def test_a_missing_test_split_says_how_to_make_it(tmp_path):
    config = str(HERE.parents[1] / 'configs' / 'splattingocc' / 'splattingocc-tiny-synthetic.py')
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(UserError, match='--version v1.0-test'):
        test_tool.main([config, str(ckpt), '--work-dir', str(tmp_path), '--cfg-options',
                        f'test_dataloader.dataset.data_root={tmp_path}/'])
