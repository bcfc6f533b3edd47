"""Fuzz-style: malformed files fed to tools/eval_occ.py and to the dataset each end in one line
naming the file and exit code 2 (issue 27): wrong shapes, dtypes, values and keys, truncated and
non-npz files, for predictions, ground truth, info pkls, label files and camera images."""
import pickle
import re
import zipfile

import numpy as np
import pytest
from mmengine.config import Config

from splattingocc.cli import eval_occ
from splattingocc.engine.launch import run_main
from splattingocc.evaluation.dump import dump_prediction
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import DATASETS

DCFG = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))
CAMS = list(DCFG.camera_names)
SHAPE = tuple(DCFG.occ_size)


def _npz(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        np.savez(f, **arrays)


def _truncated(path, **arrays):
    _npz(path, **arrays)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _not_a_zip(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'this is no npz file')


def _pickled_object_array(path, **arrays):
    """An npz whose first array needs pickle (object dtype); the others as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(arrays)
    with zipfile.ZipFile(path, 'w') as z:
        with z.open(f'{names[0]}.npy', 'w') as f:
            np.lib.format.write_array(f, np.array([None, {}], dtype=object), allow_pickle=True)
        for name in names[1:]:
            with z.open(f'{name}.npy', 'w') as f:
                np.lib.format.write_array(f, np.asarray(arrays[name]))


def _ok_sem():
    sem = np.full(SHAPE, 17, np.uint8)
    sem[:, :, 0] = 11
    return sem


# (name, writer of the prediction file); every case must fail on that file
PRED_CASES = {
    'wrong shape': lambda p: _npz(p, semantics=np.zeros((200, 200, 8), np.uint8)),
    'flat, wrong size': lambda p: _npz(p, semantics=np.zeros(1000, np.uint8)),
    'float dtype': lambda p: _npz(p, semantics=_ok_sem().astype(np.float32)),
    'class out of range': lambda p: _npz(p, semantics=np.full(SHAPE, 40, np.uint8)),
    'negative class': lambda p: _npz(p, semantics=np.full(SHAPE, -1, np.int16)),
    'wrong key': lambda p: _npz(p, labels=_ok_sem()),
    'truncated npz': lambda p: _truncated(p, semantics=_ok_sem()),
    'not a zip': lambda p: _not_a_zip(p),
    'object array': lambda p: _pickled_object_array(p, semantics=None),
    'empty file': lambda p: (p.parent.mkdir(parents=True, exist_ok=True), p.write_bytes(b'')),
}


@pytest.fixture()
def eval_root(tmp_path):
    """DATA/gts/scene-a/tok/labels.npz (a valid Occ3D file) and its info pkl."""
    root = tmp_path / 'data'
    ones = np.ones(SHAPE, np.uint8)
    _npz(root / 'gts' / 'scene-a' / 'tok' / 'labels.npz', semantics=_ok_sem(), mask_camera=ones,
         mask_lidar=ones)
    with open(root / 'infos.pkl', 'wb') as f:
        pickle.dump(dict(metadata={}, infos=[dict(token='tok', scene_name='scene-a',
                                                  lidar2ego=np.eye(4), ego2global=np.eye(4))]), f)
    return root


def _error_lines(stderr: str) -> list:
    """The lines of stderr without tqdm's progress bar ('eval: 0%| ... frame/s]')."""
    text = re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', stderr).replace('\r', '\n')
    return [line for line in text.splitlines()
            if line.strip() and not re.match(r'^eval:.*(frame/s|it/s)\]$', line.strip())]


def _eval_one_line(capsys, pred_dir, root, *extra):
    rc = run_main(eval_occ.main, ['--pred-dir', str(pred_dir), '--data-root', str(root),
                                  '--json', str(pred_dir.parent / 'out.json'), *extra])
    err = _error_lines(capsys.readouterr().err)
    assert rc == 2 and len(err) == 1 and err[0].startswith('error: '), (rc, err)
    assert not (pred_dir.parent / 'out.json').exists()
    return err[0]


def test_valid_prediction_scores(eval_root, tmp_path, capsys):
    dump_prediction(tmp_path / 'pred', 'scene-a', 'tok', _ok_sem())
    assert run_main(eval_occ.main, ['--pred-dir', str(tmp_path / 'pred'), '--data-root',
                                    str(eval_root)]) == 0


@pytest.mark.parametrize('case', sorted(PRED_CASES))
def test_malformed_prediction(eval_root, tmp_path, capsys, case):
    path = tmp_path / 'pred' / 'scene-a' / 'tok' / 'pred.npz'
    PRED_CASES[case](path)
    line = _eval_one_line(capsys, tmp_path / 'pred', eval_root)
    assert str(path) in line, line


GT_CASES = {
    'mask of another shape': lambda p: _npz(p, semantics=_ok_sem(), mask_camera=np.ones((2, 2, 2),
                                                                                       np.uint8)),
    'no semantics': lambda p: _npz(p, mask_camera=np.ones(SHAPE, np.uint8)),
    'no mask_camera': lambda p: _npz(p, semantics=_ok_sem()),
    'class out of range': lambda p: _npz(p, semantics=np.full(SHAPE, 99, np.uint8),
                                         mask_camera=np.ones(SHAPE, np.uint8)),
    'float semantics': lambda p: _npz(p, semantics=_ok_sem().astype(np.float64),
                                      mask_camera=np.ones(SHAPE, np.uint8)),
    'truncated npz': lambda p: _truncated(p, semantics=_ok_sem()),
    'not a zip': lambda p: _not_a_zip(p),
    'object array': lambda p: _pickled_object_array(p, semantics=None, mask_camera=np.ones(
        SHAPE, np.uint8)),
}


@pytest.mark.parametrize('case', sorted(GT_CASES))
def test_malformed_ground_truth(eval_root, tmp_path, capsys, case):
    gt = eval_root / 'gts' / 'scene-a' / 'tok' / 'labels.npz'
    gt.unlink()
    GT_CASES[case](gt)
    dump_prediction(tmp_path / 'pred', 'scene-a', 'tok', _ok_sem())
    line = _eval_one_line(capsys, tmp_path / 'pred', eval_root)
    assert str(gt) in line, line


INFO_CASES = {
    'a list of strings': ['tok'],
    'an int': 3,
    'no infos key': dict(metadata={}, samples=[]),
    'info without token': dict(infos=[dict(scene_name='scene-a')]),
    'truncated': None,
}


@pytest.mark.parametrize('case', sorted(INFO_CASES))
def test_malformed_info(eval_root, tmp_path, capsys, case):
    dump_prediction(tmp_path / 'pred', 'scene-a', 'tok', _ok_sem())
    info = tmp_path / 'bad_infos.pkl'
    data = pickle.dumps(INFO_CASES[case] if case != 'truncated' else dict(infos=[dict(t=1)] * 9))
    info.write_bytes(data if case != 'truncated' else data[:len(data) // 2])
    line = _eval_one_line(capsys, tmp_path / 'pred', eval_root, '--info', str(info))
    assert str(info) in line, line


# ------------------------------------------------------------------------------------------
# the dataset: one malformed file per case behind an otherwise valid sample
# ------------------------------------------------------------------------------------------
def _dataset_case(tiny_dataset, tmp_path, kind, write):
    """A copy of the val info pkl whose first sample points at a malformed ``kind`` file."""
    with open(tiny_dataset / 'nuscenes_infos_val.pkl', 'rb') as f:
        data = pickle.load(f)
    info = data['infos'][0]
    bad = tmp_path / f'bad_{kind}'
    if kind == 'occ':
        with np.load(tiny_dataset / info['occ_path']) as z:
            arrays = dict(z)
        bad = bad.with_suffix('.npz')
        write(bad, arrays)
        info['occ_path'] = str(bad)
    elif kind == 'label2d':
        with np.load(tiny_dataset / info['label2d_path']) as z:
            arrays = dict(z)
        bad = bad.with_suffix('.npz')
        write(bad, arrays)
        info['label2d_path'] = str(bad)
    else:  # image
        bad = bad.with_suffix('.jpg')
        write(bad, (tiny_dataset / info['cams'][CAMS[0]]['data_path']).read_bytes())
        info['cams'][CAMS[0]]['data_path'] = str(bad)
    ann = tmp_path / 'infos.pkl'
    with open(ann, 'wb') as f:
        pickle.dump(data, f)
    return ann, bad


def _set(name, value):
    def change(arrays):
        arrays = dict(arrays)
        arrays[name] = value(arrays[name]) if callable(value) else value
        return arrays
    return change


def _drop(name):
    return lambda arrays: {k: v for k, v in arrays.items() if k != name}


def _save(change):
    return lambda path, arrays: _npz(path, **change(arrays))


C0 = CAMS[0]
DATASET_CASES = {
    # Occ3D ground truth
    'occ: wrong shape': ('occ', _save(_set('semantics', np.zeros((4, 4, 4), np.uint8)))),
    'occ: float dtype': ('occ', _save(_set('semantics', lambda a: a.astype(np.float32)))),
    'occ: class out of range': ('occ', _save(_set('semantics', lambda a: a + 30))),
    'occ: mask value 2': ('occ', _save(_set('mask_camera', lambda a: a * 2 + 2))),
    'occ: key missing': ('occ', _save(_drop('mask_lidar'))),
    'occ: truncated': ('occ', lambda p, a: _truncated(p, **a)),
    'occ: object array': ('occ', lambda p, a: _pickled_object_array(p, **a)),
    # 2D labels
    'label2d: unequal lengths': ('label2d', _save(_set(f'{C0}_u', lambda a: a[:-1]))),
    'label2d: 2-D array': ('label2d', _save(_set(f'{C0}_v', lambda a: a[:, None]))),
    'label2d: float u': ('label2d', _save(_set(f'{C0}_u', lambda a: a.astype(np.float32)))),
    'label2d: inf depth': ('label2d', _save(_set(f'{C0}_depth', lambda a: a * np.inf))),
    'label2d: camera missing': ('label2d', _save(_drop(f'{C0}_label'))),
    'label2d: truncated': ('label2d', lambda p, a: _truncated(p, **a)),
    'label2d: not a zip': ('label2d', lambda p, a: _not_a_zip(p)),
    # camera image
    'image: truncated': ('image', lambda p, b: p.write_bytes(b[:len(b) * 3 // 4])),
    'image: garbage': ('image', lambda p, b: p.write_bytes(b'\x00' * 64)),
    'image: wrong size': ('image', lambda p, b: p.write_bytes(
        __import__('cv2').imencode('.jpg', np.zeros((10, 10, 3), np.uint8))[1].tobytes())),
}


@pytest.mark.parametrize('case', sorted(DATASET_CASES))
def test_malformed_dataset_file(tiny_dataset, tmp_path, capsys, case):
    kind, write = DATASET_CASES[case]
    ann, bad = _dataset_case(tiny_dataset, tmp_path, kind, write)
    pipeline = [dict(type='LoadMultiViewImages', camera_names=CAMS),
                dict(type='LoadLabels2D', camera_names=CAMS),
                dict(type='LoadOcc3DLabels', occ_size=DCFG.occ_size, num_classes=DCFG.num_classes),
                dict(type='PackOccInputs', label_downsample=1, ignore_label=DCFG.ignore_label)]

    def main(argv):
        ds = DATASETS.build(dict(type='Occ3DNuScenesDataset', ann_file=str(ann),
                                 data_root=str(tiny_dataset), camera_names=CAMS,
                                 pipeline=pipeline, test_mode=True))
        ds[0]

    assert run_main(main, []) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith('error: ') and str(bad) in err[0], err
