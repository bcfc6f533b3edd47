"""What the measurement scripts in ``tools/benchmarks/`` share: the machine they ran on, its load,
wall-clock and CPU time of a block, the resident memory of a process, and the real-data fixture
files they time. (Their JSON files: :func:`splattingocc.engine.launch.atomic_write_json`.)
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from .errors import UserError
from .paths import realdata_root

__all__ = ['OCC3D_FRAME', 'KEYFRAME_INFO', 'cpu_description', 'load_average', 'rss_bytes',
           'Stopwatch', 'realdata_file', 'memory_growth', 'time_interleaved', 'timing_summary']

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


def time_interleaved(calls: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     on_call: Optional[Callable[[str, int, 'Stopwatch'], None]] = None
                     ) -> Dict[str, dict]:
    """Times several calls fairly against each other on a shared machine.

    First ``warmup`` untimed rounds of every call (the first call of a code path pays for lazy
    initialisation: thread pools, allocator growth, page faults of fresh buffers, caches), then
    ``repeats`` rounds in which the calls take turns (a, b, c, a, b, c, ...), so that a change of
    the machine's load during the run slows all of them alike instead of the one that happened to
    run in a block of its own.

    Args:
        calls: name -> function of no arguments (its result is kept for the last round only).
        repeats: timed rounds.
        warmup: untimed rounds before them.
        on_call: optional ``f(name, round, stopwatch)`` after each timed call (progress lines).
    Returns:
        name -> dict(wall_s=[repeats], cpu_s=[repeats], load=[repeats] (1-minute load average
        after each call), result=the last call's return value).
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    out = {name: dict(wall_s=[], cpu_s=[], load=[], result=None) for name in calls}
    for r in range(repeats):
        for name, fn in calls.items():
            with Stopwatch() as sw:
                result = fn()
            rec = out[name]
            rec['wall_s'].append(sw.wall_s)
            rec['cpu_s'].append(sw.cpu_s)
            rec['load'].append(load_average())
            rec['result'] = result
            if on_call is not None:
                on_call(name, r, sw)
    return out


def timing_summary(rec: dict) -> dict:
    """median_s, min_s, median_cpu_s and median_load of one ``time_interleaved`` entry."""
    import statistics
    return dict(median_s=statistics.median(rec['wall_s']), min_s=min(rec['wall_s']),
                median_cpu_s=statistics.median(rec['cpu_s']),
                median_load=statistics.median(rec['load']))


def realdata_file(relative: str, tool: str) -> Path:
    """``<realdata>/<relative>`` (:func:`splattingocc.paths.realdata_root`); a missing file is a
    :class:`UserError` naming it, from ``tool``."""
    path = realdata_root() / relative
    if not path.exists():
        raise UserError(f'{tool}: {path} not found: set SPLATTINGOCC_REALDATA to the real-data '
                        'fixture folder (holding occ3d/ and nuscenes-keyframe/; see '
                        '../shared/realdata/README.md)')
    return path


def memory_growth(iterations: Sequence[int], values: Sequence[float],
                  target_percent: float = 5.0) -> dict:
    """The growth of a memory series over its iterations, robust to allocator noise.

    Two readings (first and last) swing by about +-10 % on their own (the allocator returns and
    takes pages in steps), twice the usual 5 % target. Here the trend is the Theil-Sen line
    through all readings (the median of the slopes of every pair, unmoved by a few steps), the
    growth is its rise over the span in percent of its value at the first iteration, and the
    interval is Sen's 95 % confidence interval of that slope.

    Returns:
        dict: growth_percent, growth_low_percent, growth_high_percent, samples and verdict:
        'OK' (the whole interval below the target), 'EXCEEDED' (the whole interval above it)
        or 'INCONCLUSIVE' (the interval contains the target: more iterations or samples).
    """
    import numpy as np
    x = np.asarray(iterations, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.size < 3 or np.ptp(x) <= 0:
        raise ValueError(f'memory_growth needs >= 3 readings at distinct iterations, got '
                         f'{x.size}')
    i, j = np.triu_indices(x.size, k=1)
    keep = x[j] != x[i]
    slopes = (y[j] - y[i])[keep] / (x[j] - x[i])[keep]
    slope = float(np.median(slopes))
    # Sen's (1968) 95 % interval of the slope: ranks of the sorted pairwise slopes from the
    # variance of Kendall's statistic, n (n - 1) (2 n + 5) / 18
    n, ordered = x.size, np.sort(slopes)
    c = 1.96 * np.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    lower = int(np.clip(np.floor((ordered.size - c) / 2.0), 0, ordered.size - 1))
    upper = int(np.clip(np.ceil((ordered.size + c) / 2.0), 0, ordered.size - 1))
    lo, hi = float(ordered[lower]), float(ordered[upper])
    start, span = float(x.min()), float(np.ptp(x))
    base = float(np.median(y - slope * (x - start)))  # the line's value at the first iteration
    if base <= 0:
        raise ValueError('memory_growth: the readings must be positive')

    def pct(s: float) -> float:
        return 100.0 * s * span / base

    growth, low, high = pct(slope), pct(lo), pct(hi)
    verdict = ('OK' if high < target_percent else 'EXCEEDED' if low > target_percent
               else 'INCONCLUSIVE')
    return dict(growth_percent=round(growth, 2), growth_low_percent=round(low, 2),
                growth_high_percent=round(high, 2), samples=int(x.size),
                target_percent=float(target_percent), verdict=verdict)
