"""Worker processes for CPU-bound loops (synthetic frames, per-frame scores).

The pools start their workers with ``forkserver`` where the platform has it, else ``spawn``, never
with a plain ``fork`` of the caller: the caller is often a process with threads (torch's and
OpenBLAS's pools, tqdm's monitor, a test runner), and a child forked from such a process can
inherit a lock that another thread held at that instant and wait on it forever. A forkserver
child is forked from a clean single-threaded server instead; workers import what the task
needs (functions and arguments must be picklable, which they are here: module-level functions
and plain data).
"""
from __future__ import annotations

import multiprocessing as mp
from multiprocessing.pool import Pool
from typing import Callable, Optional, Sequence

__all__ = ['START_METHOD', 'process_pool']

#: how worker processes start here: 'forkserver' (POSIX) or 'spawn'
START_METHOD = 'forkserver' if 'forkserver' in mp.get_all_start_methods() else 'spawn'


def process_pool(workers: int, initializer: Optional[Callable] = None,
                 initargs: Sequence = ()) -> Pool:
    """A ``multiprocessing`` pool of ``workers`` processes started with :data:`START_METHOD`."""
    return mp.get_context(START_METHOD).Pool(int(workers), initializer, tuple(initargs))
