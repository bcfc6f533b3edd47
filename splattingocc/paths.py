"""Where SplattingOcc finds files: the repository, its Occ3D-nuScenes dataset config, and the
real-data fixtures, which are not part of the repository.

``SPLATTINGOCC_REALDATA`` points at the folder of real nuScenes / Occ3D fixtures (default:
``../shared/realdata`` next to the repository). It is the only setting for it.
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: classes, grid, range and cameras of Occ3D-nuScenes (the tools' ``--dataset-config`` default)
DATASET_CONFIG = REPO_ROOT / 'configs' / '_base_' / 'datasets' / 'occ3d_nuscenes.py'


def realdata_root() -> Path:
    """The real-data fixture folder: ``$SPLATTINGOCC_REALDATA``, else
    ``<repo>/../shared/realdata``."""
    env = os.environ.get('SPLATTINGOCC_REALDATA')
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / 'shared' / 'realdata').resolve()
