"""Train a SplattingOcc model from a config (mmengine Runner).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
                          [--seed S] [--deterministic]

Multi-process: tools/dist_train.sh CONFIG NPROC [args] (torchrun, --launcher pytorch).
"""
from __future__ import annotations

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmengine.runner import Runner

import splattingocc.engine  # noqa: F401  (allow-list for torch.load, hooks, atomic checkpoints)
from splattingocc.engine.checkpoint import check_checkpoint_fits, resolve_resume_checkpoint
from splattingocc.errors import UserError
from splattingocc.engine.launch import (add_common_arguments, apply_randomness_args,
                                        build_runner_from_cfg, enable_amp, load_tool_config,
                                        normalize_evaluators)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Train a SplattingOcc model')
    parser.add_argument('config', help='config file, e.g. configs/splattingocc/'
                        'splattingocc-tiny-synthetic.py')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='CKPT',
        help='resume training: without a value from the latest checkpoint of the work dir '
        "(its 'last_checkpoint' file), or from the checkpoint file given")
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (float16 AmpOptimWrapper; needs CUDA)')
    parser.add_argument('--seed', type=int, default=None, help='random seed (default: config)')
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic algorithms (slower on GPU)')
    add_common_arguments(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_runner(args: argparse.Namespace) -> Runner:
    """The configured Runner (distributed environment initialised when launched so)."""
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir)

    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
        resolve_resume_checkpoint(cfg.work_dir)  # clear error for a dangling pointer
    elif args.resume is not None:
        if '://' not in args.resume and not osp.isfile(args.resume):
            raise UserError(f'--resume {args.resume}: no such checkpoint file')
        cfg.resume = True
        cfg.load_from = args.resume
    apply_randomness_args(cfg, args.seed, args.deterministic)
    normalize_evaluators(cfg)
    return build_runner_from_cfg(cfg, args.launcher)


def main(argv: Optional[Sequence[str]] = None) -> Runner:
    """Train; returns the runner (its message hub holds the losses)."""
    args = parse_args(argv)
    runner = build_runner(args)
    if args.resume is not None:
        # mmengine resumes non-strictly: a checkpoint of another model must not be trained on
        path = (resolve_resume_checkpoint(runner.work_dir) if args.resume == 'auto'
                else args.resume)
        if path is not None:
            check_checkpoint_fits(runner.model, path, what='--resume checkpoint')
    runner.train()
    return runner
