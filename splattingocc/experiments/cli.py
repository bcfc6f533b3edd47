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
from .runner import AblationRunner


def build_parser():
    """The argparse parser of tools/ablate.py."""
    import argparse
    p = argparse.ArgumentParser(
        description='Train every ablation arm under the same budget, evaluate it, and report '
        '(results.md / results.json / plots in --out; an entry in --log-file if given).',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Named arms: splat (base as is), nerf (RenderOcc: the base config\'s renderocc '
        'variable), 3d (3D supervision only), 2d3d (2D + 3D), seed (fixed isotropic Gaussians), '
        '3d+render (3d plus the base config\'s render_consistency, GaussRender). Other arms: '
        'name=key=value[,key=value...], e.g.\n'
        '  uniform=model.supervision.0.pixel_sampler.mode=uniform\n'
        '  aux1=train_dataloader.dataset.num_adjacent=1\n'
        '  l1=model.supervision.0.losses.0._delete_=True,'
        'model.supervision.0.losses.0.type=L1DepthLoss\n'
        '  iso=model.head.isotropic=True,model.head.max_scale=0.4')
    p.add_argument('--base', required=True, help='base config (iteration-based schedule)')
    p.add_argument('--arms', nargs='+', required=True,
                   help='comma-separated arms (or several arguments), e.g. splat,nerf,3d,2d3d')
    p.add_argument('--seeds', default='0', help='comma-separated seeds (default 0)')
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--iters', type=int, help='training iterations per run')
    g.add_argument('--budget-minutes', type=float,
                   help='minutes of training clock per run (iterations from a calibration)')
    p.add_argument('--out', help='output folder (default work_dirs/ablate/<base name>)')
    p.add_argument('--evals', type=int, default=4,
                   help='evaluations during each training run, for mIoU against time (0: none)')
    p.add_argument('--val-samples', type=int, default=None,
                   help='evaluate during training on the first K val samples only')
    p.add_argument('--ray', action='store_true', help='also RayIoU in the final evaluation')
    p.add_argument('--calib-iters', type=int, default=12,
                   help='iterations of the calibration run of --budget-minutes (default 12)')
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
    budget = Budget(iters=args.iters, minutes=args.budget_minutes)
    out = args.out or osp.join('work_dirs', 'ablate',
                               osp.splitext(osp.basename(args.base))[0])
    command = 'python tools/ablate.py ' + shlex.join(list(argv if argv is not None
                                                          else sys.argv[1:]))
    runner = AblationRunner(args.base, arms, seeds, budget, out,
                            common_options=args.cfg_options, evals=args.evals, ray=args.ray,
                            val_samples=args.val_samples, calib_iters=args.calib_iters,
                            command_runner=command_runner,
                            log_file=args.log_file,
                            plots=not args.no_plots,
                            command_line=command)
    return runner.run()
