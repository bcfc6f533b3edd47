"""Evaluate a trained SplattingOcc checkpoint on the test split (Occ3D mIoU, optionally RayIoU).

    python tools/test.py CONFIG CHECKPOINT --eval segm [ray] [--dump-dir DIR]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
                         [--gpu-collect] [--work-dir DIR]

--eval segm: mIoU over mask_camera voxels (+ geometry IoU); --eval segm ray: also RayIoU.
The metric prints the per-class IoU table; this tool prints the summary and writes all metrics to
<work-dir>/<timestamp>/metrics.json (atomically). --dump-dir DIR writes every prediction to
DIR/<scene_name>/<sample_token>/pred.npz (key 'semantics', uint8 [X, Y, Z]), the input of
tools/eval_occ.py. Multi-process: tools/dist_test.sh CONFIG CHECKPOINT NPROC [args].
"""
from __future__ import annotations

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmengine.dist import is_main_process
from mmengine.runner import Runner

import splattingocc.engine  # noqa: F401  (allow-list for torch.load, hooks)
from splattingocc.engine.checkpoint import check_checkpoint_fits
from splattingocc.errors import UserError
from splattingocc.engine.launch import (add_common_arguments, apply_randomness_args,
                                        atomic_write_json, build_runner_from_cfg,
                                        evaluator_metric_cfgs, load_tool_config,
                                        normalize_evaluators)

# --eval choice -> the metric's `metrics` entry (Occ3DMetric: 'miou' always, 'ray' optional)
EVAL_TO_METRIC = {'segm': 'miou', 'ray': 'ray'}
# summary order: the metric's keys (a metric prefix such as 'occ/' is allowed)
SUMMARY_KEYS = ['mIoU', 'geometry_IoU', 'mIoU_no_mask', 'RayIoU', 'RayIoU@1', 'RayIoU@2',
                'RayIoU@4']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Test (evaluate) a SplattingOcc checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (e.g. work_dirs/<cfg>/iter_N.pth)')
    parser.add_argument('--eval', nargs='+', choices=sorted(EVAL_TO_METRIC), default=['segm'],
                        help="'segm': Occ3D mIoU with mask_camera; add 'ray' for RayIoU")
    parser.add_argument('--dump-dir', help='write predictions to DIR/<scene>/<token>/pred.npz')
    parser.add_argument(
        '--gpu-collect', action='store_true',
        help='accepted for compatibility with mmdetection3d; results are always collected on the '
        'CPU (each sample contributes a small confusion matrix)')
    add_common_arguments(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def eval_metrics(choices: Sequence[str]) -> list:
    """``--eval`` choices -> the metric's ``metrics`` tuple (mIoU is always computed)."""
    wanted = {EVAL_TO_METRIC[c] for c in choices} | {'miou'}
    return [m for m in ('miou', 'ray') if m in wanted]


def configure_evaluator(cfg, metrics: list) -> None:
    """Put ``metrics`` into every Occ3D-style metric of ``cfg.test_evaluator``."""
    normalize_evaluators(cfg)
    targets = [m for m in evaluator_metric_cfgs(cfg.get('test_evaluator'))
               if m.get('type') == 'Occ3DMetric' or 'metrics' in m]
    if not targets:
        raise UserError(
            f'{cfg.filename}: test_evaluator has no Occ3DMetric to run --eval {metrics}; set '
            "test_evaluator = [dict(type='Occ3DMetric', ...)] in the config")
    for metric in targets:
        metric['metrics'] = list(metrics)


def check_test_config(cfg) -> None:
    missing = [k for k in ('test_dataloader', 'test_cfg', 'test_evaluator') if not cfg.get(k)]
    if missing:
        raise UserError(f'{cfg.filename}: {", ".join(missing)} missing; a test config needs '
                        'test_dataloader, test_cfg and test_evaluator')


def summary_lines(metrics: dict) -> list:
    """Short 'name: value' lines of the main metrics (all numeric ones if none is known)."""
    lines = []
    for wanted in SUMMARY_KEYS:
        for key, value in metrics.items():
            if key == wanted or key.endswith('/' + wanted):
                lines.append(f'{key}: {float(value):.2f}')
    if not lines:
        lines = [f'{k}: {float(v):.4f}' for k, v in metrics.items()
                 if isinstance(v, (int, float)) or hasattr(v, '__float__')]
    return lines


def build_runner(args: argparse.Namespace) -> Runner:
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint {args.checkpoint} not found')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    check_test_config(cfg)
    configure_evaluator(cfg, eval_metrics(args.eval))
    if args.dump_dir:
        hooks = list(cfg.get('custom_hooks') or [])
        hooks.append(dict(type='DumpPredictionHook', out_dir=osp.abspath(args.dump_dir)))
        cfg.custom_hooks = hooks
    apply_randomness_args(cfg)
    return build_runner_from_cfg(cfg, args.launcher)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Evaluate; returns the metrics dict (also written to <work_dir>/<timestamp>/metrics.json)."""
    args = parse_args(argv)
    runner = build_runner(args)
    if args.gpu_collect:
        runner.logger.info('--gpu-collect: results are collected on the CPU (no effect)')
    # mmengine's load_from is non-strict: a checkpoint of another model must not be scored
    check_checkpoint_fits(runner.model, args.checkpoint)
    metrics = runner.test()
    if is_main_process():
        path = osp.join(runner.log_dir, 'metrics.json')
        atomic_write_json(path, dict(config=osp.abspath(args.config),
                                     checkpoint=osp.abspath(args.checkpoint),
                                     eval=list(args.eval), metrics=dict(metrics)))
        lines = summary_lines(metrics)
        runner.logger.info('Test results: ' + ' | '.join(lines))
        runner.logger.info(f'Metrics written to {path}')
    return metrics
