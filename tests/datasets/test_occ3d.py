"""Occ3D ground truth loader on the real labels.npz files, and its errors on bad files."""
import numpy as np
import pytest
from mmengine.config import Config

from splattingocc.datasets.occ3d import Occ3DFormatError, load_occ3d_labels
from splattingocc.paths import REPO_ROOT

CFG = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))
OCC_SIZE = tuple(CFG.occ_size)
NUM_CLASSES = CFG.num_classes
FREE = CFG.free_label


def test_real_file_counts(realdata):
    gt = load_occ3d_labels(realdata / 'occ3d/29796060110c4163b07f06eff4af0753.labels.npz',
                           OCC_SIZE, NUM_CLASSES)
    assert set(gt) == {'semantics', 'mask_lidar', 'mask_camera'}
    for a in gt.values():
        assert a.shape == OCC_SIZE and a.dtype == np.uint8
    sem = gt['semantics']
    assert int((sem != FREE).sum()) == 39092  # numbers from ../shared/realdata/README.md
    assert int((sem == FREE).sum()) == 600908
    assert int(gt['mask_camera'].sum()) == 43355
    assert set(np.unique(gt['mask_camera']).tolist()) <= {0, 1}
    assert np.all(gt['mask_lidar'][gt['mask_camera'] == 1] == 1)  # camera mask within lidar mask


def test_real_second_file(realdata):
    gt = load_occ3d_labels(realdata / 'occ3d/occupancy-vis-demo.labels.npz', OCC_SIZE, NUM_CLASSES)
    assert int((gt['semantics'] != FREE).sum()) == 31107
    assert gt['semantics'].max() == FREE


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good(shape=(4, 5, 2)):
    sem = np.full(shape, 17, np.uint8)
    sem[0, 0, 0] = 4
    ones = np.ones(shape, np.uint8)
    return dict(semantics=sem, mask_lidar=ones, mask_camera=ones)


def test_folder_path_and_small_grid(tmp_path):
    (tmp_path / 'tok').mkdir()
    _write(tmp_path / 'tok' / 'labels.npz', **_good())
    gt = load_occ3d_labels(tmp_path / 'tok', occ_size=(4, 5, 2), num_classes=18)
    assert gt['semantics'][0, 0, 0] == 4 and gt['semantics'].shape == (4, 5, 2)


@pytest.mark.parametrize('case, match', [
    ('missing', 'not found'),
    ('nokey', "missing array\\(s\\) \\['mask_camera'\\]"),
    ('shape', 'occ_size is \\(200, 200, 16\\)'),
    ('mismatch', 'all three must agree'),
    ('class', 'holds class 18'),
    ('float', 'dtype float32, expected uint8'),
    ('mask', 'mask_lidar holds the value 2'),
    ('corrupt', 'corrupt or truncated'),
])
def test_bad_files_give_clear_errors(tmp_path, case, match):
    path = tmp_path / 'labels.npz'
    g = _good()
    if case == 'nokey':
        del g['mask_camera']
    elif case == 'mismatch':
        g['mask_lidar'] = np.ones((4, 5, 3), np.uint8)
    elif case == 'class':
        g['semantics'][1, 1, 1] = 18
    elif case == 'float':
        g['semantics'] = g['semantics'].astype(np.float32)
    elif case == 'mask':
        g['mask_lidar'][0, 0, 0] = 2
    if case == 'corrupt':
        path.write_bytes(b'PK\x03\x04 this is not a zip file')
    elif case != 'missing':
        _write(path, **g)
    occ_size = OCC_SIZE if case == 'shape' else None
    with pytest.raises(Occ3DFormatError, match=match) as err:
        load_occ3d_labels(path, occ_size=occ_size, num_classes=NUM_CLASSES)
    assert str(path) in str(err.value)
