"""Shared fixtures: the real-data folder (skips with a reason where it is absent)."""
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
