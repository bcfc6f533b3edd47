"""Memory growth of training: resident memory (RSS) from iteration --probe to the last one.

    python tools/benchmarks/benchmark_memory.py [CONFIG] [--iters 500] [--probe 100]
                                                [--samples 21] [--json OUT.json]
                                                [--cfg-options k=v ...]

Trains CONFIG (default: the tiny synthetic config) for --iters iterations in a temporary work dir
(checkpoints and validation off) and reads the RSS of the training process plus its data-loader
workers at --samples evenly spaced iterations from --probe to the last. A leak (tensors kept in a
list, a growing cache) shows as growth well above a few percent; the target is < 5 %. Two
readings alone swing by about +-10 % (the allocator takes and returns pages in steps), so the
growth is that of a robust line through all readings (Theil-Sen) with its 95 % interval
(``splattingocc.benchmarking.memory_growth``): OK when the whole interval lies below the target,
EXCEEDED when above, INCONCLUSIVE otherwise (train longer or read more samples).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

import numpy as np
from mmengine.config import DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner

import splattingocc.engine  # noqa: F401
from splattingocc.benchmarking import memory_growth, rss_bytes
from splattingocc.engine.launch import (apply_randomness_args, atomic_write_json, load_config,
                                        normalize_evaluators, run_main, setup_distributed)
from splattingocc.errors import UserError

DEFAULT_CONFIG = 'configs/splattingocc/splattingocc-tiny-synthetic.py'


def child_pids(pid: int) -> list:
    """Direct children of ``pid`` (data-loader workers), from /proc/<pid>/task/*/children."""
    out = []
    try:
        tasks = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f'/proc/{pid}/task/{task}/children') as f:
                out += [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def total_rss(pid: Optional[int] = None) -> tuple:
    """(RSS of the process, RSS of its children) in bytes."""
    pid = os.getpid() if pid is None else pid
    return rss_bytes(pid), sum(rss_bytes(c) for c in child_pids(pid))


class RSSProbeHook(Hook):
    """Record the RSS after chosen (1-based) iterations."""

    priority = 'LOWEST'

    def __init__(self, at: Sequence[int], log_every: int = 50):
        self.at = set(int(a) for a in at)
        self.log_every = log_every
        self.samples = {}
        self.start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        it = runner.iter + 1
        if it in self.at:
            self.samples[it] = total_rss()
        if it % self.log_every == 0:
            main, workers = total_rss()
            print(f'[memory] iteration {it}: RSS {main / 2**20:.1f} MiB (+ workers '
                  f'{workers / 2**20:.1f} MiB), {time.perf_counter() - self.start:.0f} s',
                  flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='RSS growth of a training run')
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    parser.add_argument('--iters', type=int, default=500, help='iterations to train')
    parser.add_argument('--probe', type=int, default=100, help='first RSS probe iteration')
    parser.add_argument('--samples', type=int, default=21,
                        help='RSS readings from --probe to the last iteration (>= 3)')
    parser.add_argument('--json', help='write the numbers to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not 0 < args.probe < args.iters:
        raise UserError(f'--probe {args.probe} must lie between 0 and --iters {args.iters}')
    if args.samples < 3:
        raise UserError(f'--samples {args.samples}: the growth needs at least 3 readings')
    cfg = load_config(args.config, args.cfg_options)
    work_dir = tempfile.mkdtemp(prefix='benchmark_memory_')
    cfg.work_dir = work_dir
    loop = cfg.train_cfg.get('type', 'EpochBasedTrainLoop' if cfg.train_cfg.get('by_epoch')
                             else 'IterBasedTrainLoop')
    if loop != 'IterBasedTrainLoop':  # an epoch schedule: run its model and data for N iterations
        cfg.param_scheduler = None  # (epoch-based learning-rate steps do not matter for memory)
    # val_begin beyond the end: mmengine validates after the last iteration otherwise
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=args.iters + 1, val_begin=args.iters + 1)
    for scheduler in cfg.get('param_scheduler') or []:  # keep the schedule's shape over --iters
        if not scheduler.get('by_epoch', True) and scheduler.get('end', 0) > args.iters:
            scheduler['end'] = args.iters
    cfg.default_hooks.checkpoint = dict(type='AtomicCheckpointHook', interval=-1, save_last=False,
                                        by_epoch=False)
    cfg.default_hooks.logger.interval = max(1, args.iters // 10)
    normalize_evaluators(cfg)
    apply_randomness_args(cfg)
    setup_distributed(cfg, 'none')
    runner = Runner.from_cfg(cfg)
    at = sorted({int(round(v)) for v in np.linspace(args.probe, args.iters, args.samples)})
    probe = RSSProbeHook(at=at)
    runner.register_hook(probe)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start

    (main_a, workers_a), (main_b, workers_b) = probe.samples[args.probe], probe.samples[args.iters]
    growth = (main_b - main_a) / main_a * 100.0  # the two end readings (noisy, for reference)
    growth_all = ((main_b + workers_b) - (main_a + workers_a)) / (main_a + workers_a) * 100.0
    fit = memory_growth(at, [probe.samples[i][0] for i in at])
    fit_all = memory_growth(at, [sum(probe.samples[i]) for i in at])
    result = dict(config=args.config, iterations=args.iters, seconds=round(seconds, 1),
                  probe_iteration=args.probe,
                  rss_mib={str(args.probe): round(main_a / 2**20, 1),
                           str(args.iters): round(main_b / 2**20, 1)},
                  workers_rss_mib={str(args.probe): round(workers_a / 2**20, 1),
                                   str(args.iters): round(workers_b / 2**20, 1)},
                  rss_samples_mib={str(i): round(probe.samples[i][0] / 2**20, 1) for i in at},
                  two_point_growth_percent=round(growth, 2),
                  two_point_growth_percent_with_workers=round(growth_all, 2),
                  growth=fit, growth_with_workers=fit_all,
                  target_percent=5.0, verdict=fit['verdict'], ok=fit['verdict'] == 'OK')
    print(f'\n{"":<28}{"iter " + str(args.probe):>14}{"iter " + str(args.iters):>14}{"growth":>10}')
    print(f'{"RSS main process (MiB)":<28}{main_a / 2**20:>14.1f}{main_b / 2**20:>14.1f}'
          f'{growth:>9.2f}%')
    print(f'{"RSS + workers (MiB)":<28}{(main_a + workers_a) / 2**20:>14.1f}'
          f'{(main_b + workers_b) / 2**20:>14.1f}{growth_all:>9.2f}%')
    for name, g in (('main process', fit), ('with workers', fit_all)):
        print(f'trend over {g["samples"]} readings ({name}): {g["growth_percent"]:.2f} % '
              f'(95 % interval {g["growth_low_percent"]:.2f} .. {g["growth_high_percent"]:.2f} %)')
    print(f'{args.iters} iterations in {seconds:.1f} s; target growth < 5 %: {fit["verdict"]}')
    if args.json:
        atomic_write_json(args.json, result)
        print(f'wrote {args.json}')
    return result


if __name__ == '__main__':
    sys.exit(run_main(main))
