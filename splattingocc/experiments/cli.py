"""The command line of ``tools/ablate.py``: options -> arms, seeds, budget -> the runner.

An experiment-log entry is written only with ``--log-file PATH``.
"""
from __future__ import annotations

import os.path as osp
import shlex
import sys
from typing import Optional, Sequence

from splattingocc.errors import UserError

from .arms import parse_arms
from .budget import Budget
from .commands import CommandRunner
from .overrides import load_base_config, split_top_level
from .runner import FINAL_EVALS, HEADLINE_PAIRS, AblationRunner


def build_parser():
    """The argparse parser of tools/ablate.py."""
    import argparse
    p = argparse.ArgumentParser(
        description='Train every ablation arm under the same budget(s), calibrate its read-out '
        'on val, evaluate it on test, and report means with 95% intervals over seeds '
        '(results.md / results.json / plots in --out; an entry in --log-file if given).',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Named arms: splat (base as is), nerf (RenderOcc: the base config\'s renderocc '
        'variable), 3d (3D supervision only), 2d3d (2D + 3D), seed (fixed isotropic Gaussians), '
        'sparse (a budget of free-mean Gaussians), 3d+render (3d plus the base config\'s '
        'render_consistency, GaussRender). Other arms: '
        'name=key=value[,key=value...], e.g.\n'
        '  uniform=model.supervision.0.pixel_sampler.mode=uniform\n'
        '  aux1=train_dataloader.dataset.num_adjacent=1\n'
        '  l1=model.supervision.0.losses.0._delete_=True,'
        'model.supervision.0.losses.0.type=L1DepthLoss\n'
        '  iso=model.head.isotropic=True,model.head.max_scale=0.4')
    p.add_argument('--base', required=True, help='base config (iteration-based schedule)')
    p.add_argument('--arms', nargs='+', required=True,
                   help='comma-separated arms (or several arguments), e.g. splat,nerf,3d,2d3d')
    p.add_argument('--seeds', default='0,1,2',
                   help='comma-separated seeds (default 0,1,2: at least 3 for an interval that '
                   'supports a claim)')
    p.add_argument('--arm-seeds', nargs='+', default=[], metavar='ARM=S1,S2,...',
                   help='other seeds for some arms, e.g. splat=0,1,2,3,4 nerf=0,1,2,3,4 (pairs '
                   'use the seeds both arms ran)')
    p.add_argument('--iters', type=int, help='equal iterations: training iterations per run')
    p.add_argument('--budget-minutes', type=float,
                   help='equal wall-clock: minutes of training clock per run (iterations per arm '
                   'from a short timing run); with --iters too, both tables from one call')
    p.add_argument('--out', help='output folder (default work_dirs/ablate/<base name>)')
    p.add_argument('--evals', type=int, default=4,
                   help='evaluations on val during each training run: the learning curve '
                   '(0: none)')
    p.add_argument('--eval', nargs='+', default=list(FINAL_EVALS), choices=FINAL_EVALS,
                   help='final evaluations on test (tools/test.py --eval; default: all; render '
                   'only for arms that render)')
    p.add_argument('--pairs', default=None, metavar='A:B[,A:B...]',
                   help='arms compared by seed (A - B with a 95%% interval); default: '
                   + ', '.join(f'{a}:{b}' for a, b in HEADLINE_PAIRS)
                   + ' where both arms run, else the first arm against each other')
    p.add_argument('--val-samples', type=int, default=None,
                   help='evaluate during training on the first K val samples only')
    p.add_argument('--timing-iters', type=int, default=12,
                   help='iterations of the timing run of --budget-minutes (default 12)')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='overrides applied to every arm (the same for all)')
    p.add_argument('--log-file', default=None, metavar='PATH',
                   help='experiment log to append an entry to, under the next free ID E<n> '
                   '(e.g. log.txt; default: no entry is written)')
    p.add_argument('--no-plots', action='store_true', help='do not draw the PNG plots')
    return p


def main(argv: Optional[Sequence[str]] = None,
         command_runner: Optional[CommandRunner] = None) -> dict:
    """Run ``tools/ablate.py argv`` (``sys.argv[1:]`` by default); returns the summary.

    ``command_runner`` replaces the subprocess runner (tests).
    """
    args = build_parser().parse_args(argv)
    base = load_base_config(args.base)
    arms = parse_arms(args.arms, base)
    try:
        seeds = [int(s) for s in split_top_level(args.seeds) if s.strip()]
    except ValueError:
        raise UserError(f'--seeds: expected comma-separated integers, got {args.seeds!r}')
    arm_seeds = {}
    for item in args.arm_seeds:
        name, sep, text = item.partition('=')
        try:
            arm_seeds[name.strip()] = [int(x) for x in split_top_level(text) if x.strip()]
        except ValueError:
            sep = ''
        if not sep or not name.strip():
            raise UserError(f'--arm-seeds: expected ARM=S1,S2,..., got {item!r}')
    budgets = [Budget(iters=args.iters)] if args.iters is not None else []
    if args.budget_minutes is not None:
        budgets.append(Budget(minutes=args.budget_minutes))
    if not budgets:
        raise UserError('give a budget: --iters N (equal iterations), --budget-minutes M (equal '
                        'wall-clock), or both')
    pairs = None
    if args.pairs:
        pairs = []
        for item in split_top_level(args.pairs):
            names = [n.strip() for n in item.split(':')]
            if len(names) != 2 or not all(names):
                raise UserError(f'--pairs: expected A:B[,A:B...], got {item!r}')
            pairs.append(tuple(names))
    out = args.out or osp.join('work_dirs', 'ablate',
                               osp.splitext(osp.basename(args.base))[0])
    command = 'python tools/ablate.py ' + shlex.join(list(argv if argv is not None
                                                          else sys.argv[1:]))
    runner = AblationRunner(args.base, arms, seeds, budgets, out,
                            common_options=args.cfg_options, evals=args.evals,
                            final_eval=args.eval, pairs=pairs, arm_seeds=arm_seeds,
                            val_samples=args.val_samples, timing_iters=args.timing_iters,
                            command_runner=command_runner,
                            log_file=args.log_file,
                            plots=not args.no_plots,
                            command_line=command)
    return runner.run()
