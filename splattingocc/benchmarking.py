"""What the measurement scripts in ``tools/benchmarks/`` share: the machine they ran on, its load,
wall-clock and CPU time of a block, the resident memory of a process, and the real-data fixture
files they time. (Their JSON files: :func:`splattingocc.engine.launch.atomic_write_json`.)
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Optional

from .errors import UserError
from .paths import realdata_root

__all__ = ['OCC3D_FRAME', 'KEYFRAME_INFO', 'cpu_description', 'load_average', 'rss_bytes',
           'Stopwatch', 'realdata_file']

#: a real Occ3D-nuScenes frame (200 x 200 x 16) in the real-data fixtures
OCC3D_FRAME = 'occ3d/29796060110c4163b07f06eff4af0753.labels.npz'
#: a real nuScenes keyframe's info (the six cameras' intrinsics and poses) in the fixtures
KEYFRAME_INFO = 'nuscenes-keyframe/n015-2018-07-24-11-22-45+0800.pkl'


def cpu_description() -> str:
    """'<architecture> [<processor>] <n> cores', e.g. 'x86_64 16 cores'."""
    parts = [platform.machine(), platform.processor(), f'{os.cpu_count()} cores']
    return ' '.join(p for p in parts if p)


def load_average() -> float:
    """The 1-minute load average (NaN where the system has none): wall-clock rates drop when
    other processes share the cores, CPU-time rates do not."""
    return os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')


def rss_bytes(pid: Optional[int] = None) -> int:
    """Resident set size in bytes of a process (default: this one) from ``/proc/<pid>/statm``;
    0 if it is gone."""
    try:
        with open(f'/proc/{"self" if pid is None else pid}/statm') as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf('SC_PAGE_SIZE')


class Stopwatch:
    """Wall-clock and CPU seconds (this process, all its threads) of a ``with`` block::

        with Stopwatch() as sw:
            work()
        sw.wall_s, sw.cpu_s
    """

    wall_s: float = float('nan')
    cpu_s: float = float('nan')

    def __enter__(self) -> 'Stopwatch':
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> bool:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu
        return False


def realdata_file(relative: str, tool: str) -> Path:
    """``<realdata>/<relative>`` (:func:`splattingocc.paths.realdata_root`); a missing file is a
    :class:`UserError` naming it, from ``tool``."""
    path = realdata_root() / relative
    if not path.exists():
        raise UserError(f'{tool}: {path} not found: set SPLATTINGOCC_REALDATA to the real-data '
                        'fixture folder (holding occ3d/ and nuscenes-keyframe/; see '
                        '../shared/realdata/README.md)')
    return path
