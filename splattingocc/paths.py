"""Where SplattingOcc finds files that are not part of the repository.

``SPLATTINGOCC_REALDATA`` points at the folder of real nuScenes / Occ3D fixtures (default:
``../shared/realdata`` next to the repository). It is the only setting for it.
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def realdata_root() -> Path:
    """The real-data fixture folder (``$SPLATTINGOCC_REALDATA`` or ``<repo>/../shared/realdata``)."""
    env = os.environ.get('SPLATTINGOCC_REALDATA')
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / 'shared' / 'realdata').resolve()
