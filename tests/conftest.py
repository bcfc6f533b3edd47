"""Shared fixtures: the real-data folder (skips with a reason where it is absent), a tiny
synthetic dataset."""
import pytest

from splattingocc.paths import realdata_root


def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs CUDA (skipped without it)')
    config.addinivalue_line('markers', 'slow: takes more than a few seconds')


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (gsplat rasterizer); none is available')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope='session')
def realdata():
    """Path to the real nuScenes/Occ3D fixtures; skips the test (with the reason) if missing."""
    root = realdata_root()
    if not (root / 'README.md').exists():
        pytest.skip(f'real-data fixtures not found at {root}: set SPLATTINGOCC_REALDATA to the '
                    'folder holding nuscenes-keyframe/ and occ3d/ (CI has ../shared/realdata)')
    return root


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
    """A tiny synthetic dataset (2 scenes x 2 keyframes, 96 x 54 images) with its info pkls and
    2D label files, made once per session; tests only read it."""
    from splattingocc.datasets.nuscenes_converter import create_nuscenes_infos
    from splattingocc.datasets.synthetic import make_tiny_dataset
    root = tmp_path_factory.mktemp('tiny') / 'data'
    make_tiny_dataset(root, scenes=2, samples_per_scene=2, image_size=(96, 54))
    create_nuscenes_infos(root, 'v1.0-mini', out_dir=root, sweeps=1, progress=False,
                          prefix='nuscenes', dataset='synthetic')
    return root
