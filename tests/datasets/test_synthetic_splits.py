"""The synthetic test split: v1.0-test scenes named after devkit's test split, loaded through the
devkit and converted to nuscenes_infos_test.pkl; the train/val files do not change with it."""
import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from splattingocc.cli import create_data
from splattingocc.datasets.nuscenes_converter import NuScenesDataError, create_nuscenes_infos
from splattingocc.datasets.synthetic import (DEFAULT_TEST_SCENES, TEST_VERSION,
                                             devkit_test_scene_names, load_grid_config,
                                             make_tiny_dataset)

# a coarser grid keeps this fast; the split logic does not depend on the grid
GRID = dict(load_grid_config(), voxel_size=[0.8, 0.8, 0.8], occ_size=[100, 100, 8])
KW = dict(scenes=2, samples_per_scene=1, image_size=(96, 54), occ_config=GRID)


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    """The same dataset without and with 2 test scenes."""
    root = tmp_path_factory.mktemp('splits')
    plain = make_tiny_dataset(root / 'plain', **KW)
    split = make_tiny_dataset(root / 'split', test_scenes=2, **KW)
    return root / 'plain', root / 'split', plain, split


def test_train_val_bytes_do_not_depend_on_the_test_scenes(pair):
    plain, split, _, summary = pair
    a, b = _hashes(plain), _hashes(split)
    # every file of the dataset without test scenes is there with the same bytes: the v1.0-mini
    # tables, samples, lidarseg, maps and gts (synthetic.json records the test scenes too)
    assert {k: v for k, v in a.items() if k != 'synthetic.json'} == \
        {k: b[k] for k in a if k != 'synthetic.json'}
    new = set(b) - set(a)
    assert any(k.startswith(f'{TEST_VERSION}/') for k in new)
    assert all(k.split('/')[0] in (TEST_VERSION, 'samples', 'lidarseg', 'maps', 'gts')
               for k in new)
    names = devkit_test_scene_names()[:2]
    assert summary['test']['scene_names'] == names and summary['test']['frames'] == 2
    assert summary['files'] == len(b)


def test_devkit_and_converter_read_the_test_split(pair, tmp_path):
    from nuscenes import NuScenes
    _, split, _, _ = pair
    nusc = NuScenes(version=TEST_VERSION, dataroot=str(split), verbose=False)
    assert sorted(s['name'] for s in nusc.scene) == sorted(devkit_test_scene_names()[:2])
    assert len(nusc.lidarseg) == 2
    out = tmp_path / 'out'
    summary = create_nuscenes_infos(split, TEST_VERSION, out_dir=out, progress=False,
                                    dataset='synthetic')
    assert set(summary['splits']) == {'test'} and summary['splits']['test']['samples'] == 2
    with open(out / 'nuscenes_infos_test.pkl', 'rb') as f:
        data = pickle.load(f)
    assert data['metadata']['split'] == 'test' and data['metadata']['devkit_split'] == 'test'
    for info in data['infos']:
        assert info['scene_name'] in devkit_test_scene_names()
        assert (split / info['occ_path']).is_file() and (split / info['lidar_path']).is_file()
        with np.load(out / 'labels2d' / f"{info['token']}.npz") as z:
            assert z['CAM_FRONT_depth'].size > 0
    # the train/val infos of the same folder hold no test scene
    create_nuscenes_infos(split, 'v1.0-mini', out_dir=out, progress=False, dataset='synthetic')
    for name in ('train', 'val'):
        with open(out / f'nuscenes_infos_{name}.pkl', 'rb') as f:
            assert not {i['scene_name'] for i in pickle.load(f)['infos']} & \
                set(devkit_test_scene_names())


def test_real_test_split_without_labels_is_a_clear_error(pair, tmp_path):
    _, split, _, _ = pair
    real = tmp_path / 'real'
    shutil.copytree(split / TEST_VERSION, real / TEST_VERSION)
    (real / TEST_VERSION / 'lidarseg.json').unlink()  # as the real v1.0-test: no labels
    with pytest.raises(NuScenesDataError, match='real nuScenes v1.0-test has neither'):
        create_nuscenes_infos(real, TEST_VERSION, out_dir=tmp_path, progress=False)


def test_cli_names_the_test_size_option(capsys):
    with pytest.raises(SystemExit):
        create_data.main(['synthetic', '--help'])
    text = capsys.readouterr().out
    assert '--test-scenes' in text and '--test-seed' in text
    assert create_data.DEFAULT_TEST_SCENES == DEFAULT_TEST_SCENES == 4
    args = create_data.parse_args(['nuscenes', '--root', 'x', '--version', 'v1.0-test'])
    assert args.version == TEST_VERSION


def test_refuses_a_bad_test_size(tmp_path):
    n = len(devkit_test_scene_names())
    with pytest.raises(ValueError, match='test_scenes'):
        make_tiny_dataset(tmp_path / 'x', test_scenes=n + 1)
    with pytest.raises(ValueError, match='test_scenes'):
        make_tiny_dataset(tmp_path / 'y', test_scenes=-1)
