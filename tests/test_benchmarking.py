"""splattingocc/benchmarking.py: the helpers of the benchmark scripts, on this process."""
import os
import subprocess
import sys

import pytest

from splattingocc.benchmarking import (Stopwatch, cpu_description, load_average, realdata_file,
                                       rss_bytes)
from splattingocc.errors import UserError


def test_stopwatch_counts_wall_and_cpu_time():
    with Stopwatch() as sw:
        total = sum(i * i for i in range(200_000))  # CPU work
    assert total > 0
    assert sw.wall_s > 0 and sw.cpu_s > 0
    assert sw.cpu_s <= sw.wall_s * os.cpu_count() + 0.05


def test_rss_of_this_process_and_of_a_finished_one():
    assert rss_bytes() > 2 ** 20  # a Python interpreter: more than a MiB
    assert abs(rss_bytes(os.getpid()) - rss_bytes()) < 64 * 2 ** 20  # the same process
    finished = subprocess.Popen([sys.executable, '-c', 'pass'])
    finished.wait()
    assert rss_bytes(finished.pid) == 0  # gone (reaped): no /proc entry


def test_machine_description_and_load():
    assert f'{os.cpu_count()} cores' in cpu_description()
    assert load_average() >= 0.0 or load_average() != load_average()  # a number or NaN


def test_missing_fixture_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv('SPLATTINGOCC_REALDATA', str(tmp_path))
    (tmp_path / 'occ3d').mkdir()
    (tmp_path / 'occ3d' / 'x.npz').write_bytes(b'')
    assert realdata_file('occ3d/x.npz', 'bench') == tmp_path / 'occ3d' / 'x.npz'
    with pytest.raises(UserError, match=r'bench: .*occ3d/y\.npz not found: set SPLATTINGOCC_'):
        realdata_file('occ3d/y.npz', 'bench')


def test_memory_growth_is_robust_where_two_readings_are_not():
    """Issue 27 item 10: benchmark_memory.py's two-point verdict swings with allocator steps."""
    import numpy as np

    from splattingocc.benchmarking import memory_growth
    iters = np.arange(100, 501, 20)  # 21 readings
    flat = np.full(iters.shape, 1000.0)
    flat[1::3] += 60.0  # allocator steps up and down, no trend
    flat[-1] = 1090.0  # an unlucky last reading: +9 % against the first one
    assert (flat[-1] - flat[0]) / flat[0] > 0.05  # the two-point verdict: EXCEEDED
    ok = memory_growth(iters, flat)
    assert ok['verdict'] == 'OK' and abs(ok['growth_percent']) < 1.0, ok
    leak = 1000.0 * (1 + 0.2 * (iters - 100) / 400) + np.where(np.arange(21) % 2, 15.0, -15.0)
    exceeded = memory_growth(iters, leak)
    assert exceeded['verdict'] == 'EXCEEDED' and 15 < exceeded['growth_percent'] < 25, exceeded
    assert exceeded['growth_low_percent'] > 5.0
    rng = np.random.default_rng(0)
    noisy = 1000.0 * (1 + 0.05 * (iters - 100) / 400) * (1 + 0.1 * rng.uniform(-1, 1, 21))
    assert memory_growth(iters, noisy)['verdict'] == 'INCONCLUSIVE'
    with pytest.raises(ValueError, match='>= 3 readings'):
        memory_growth([1, 2], [1.0, 1.0])


def test_time_interleaved_warms_up_then_alternates():
    from splattingocc.benchmarking import time_interleaved, timing_summary
    order = []
    calls = {'a': lambda: order.append('a') or 1, 'b': lambda: order.append('b') or 2}
    rec = time_interleaved(calls, repeats=3, warmup=2)
    assert order == ['a', 'b'] * 5  # 2 warm-up rounds, then 3 timed rounds taking turns
    assert [len(rec[k]['wall_s']) for k in 'ab'] == [3, 3]
    assert rec['a']['result'] == 1 and rec['b']['result'] == 2
    s = timing_summary(rec['a'])
    assert s['min_s'] <= s['median_s'] and s['median_cpu_s'] >= 0
