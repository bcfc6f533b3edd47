"""Evaluate a trained SplattingOcc checkpoint on the test split (Occ3D mIoU, optionally RayIoU,
average precision and rendering metrics), or calibrate its read-out threshold on the val split.

    python tools/test.py CONFIG CHECKPOINT --calibrate [--calibration FILE]
    python tools/test.py CONFIG CHECKPOINT --eval segm [ray] [ap] [render]
                         [--dump-dir DIR [--dump-scores]]
                         [--calibration FILE | --no-calibration] [--require-calibration]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
                         [--gpu-collect] [--work-dir DIR]

Protocol: train on train, choose every threshold and hyperparameter on val, report on test.
--calibrate runs the config's val_dataloader, sweeps the read-out's occupancy threshold (the
opacity of one voxel, the same scale for every representation) over a fine grid and writes the
mIoU / geometry IoU curve and the threshold of largest mIoU to FILE (default
CHECKPOINT.calibration.json; splattingocc/evaluation/calibration.py). --eval then reads the
config's test_dataloader (the test split where the data has one) with that threshold when the
file exists, and says so; without it the config's threshold is used and labelled 'not
calibrated' (--require-calibration: refuse instead). A threshold given with --cfg-options
model.readout.threshold=T wins over the file.

--eval segm: mIoU over mask_camera voxels (+ geometry IoU); ray: RayIoU; ap: occupancy average
precision inside mask_camera and per-class AP (score = occupancy x class probability); render:
depth AbsRel / RMSE / delta < 1.25 and rendered-semantics accuracy / mIoU at the labelled pixels
(adds LoadLabels2D to the test pipeline; needs a model with a ray supervision).
The metric prints the per-class table; this tool prints the summary and writes all metrics, the
split and the read-out threshold used (with its source) to <work-dir>/<timestamp>/metrics.json
(atomically). --dump-dir DIR writes every prediction to DIR/<scene_name>/<sample_token>/pred.npz
('semantics' uint8 [X, Y, Z]; with --dump-scores also 'occupancy' [X, Y, Z] and 'class_probs'
[X, Y, Z, C - 1] in float16, for AP), the input of tools/eval_occ.py.
Multi-process: tools/dist_test.sh CONFIG CHECKPOINT NPROC [args].
"""
from __future__ import annotations

import argparse
import copy
import os.path as osp
from typing import Optional, Sequence, Tuple

from mmengine.dist import is_main_process
from mmengine.runner import Runner

import splattingocc.engine  # noqa: F401  (allow-list for torch.load, hooks)
from splattingocc.engine.checkpoint import check_checkpoint_fits
from splattingocc.errors import UserError
from splattingocc.evaluation.calibration import (calibration_document, calibration_path,
                                                 checkpoint_sha256, load_calibration)
from splattingocc.evaluation.functional.threshold_sweep import threshold_grid
from splattingocc.engine.launch import (add_common_arguments, apply_randomness_args,
                                        atomic_write_json, build_runner_from_cfg,
                                        evaluator_metric_cfgs, load_tool_config,
                                        normalize_evaluators)

# --eval choice -> the metric's `metrics` entry (Occ3DMetric: 'miou' always, the others optional)
EVAL_TO_METRIC = {'segm': 'miou', 'ray': 'ray', 'ap': 'ap', 'render': 'render'}
METRIC_ORDER = ('miou', 'ray', 'ap', 'render', 'sweep')
# summary order: the metric's keys (a metric prefix such as 'occ/' is allowed)
SUMMARY_KEYS = ['mIoU', 'geometry_IoU', 'mIoU_no_mask', 'RayIoU', 'RayIoU@1', 'RayIoU@2',
                'RayIoU@4', 'occupancy_AP', 'mAP', 'depth_AbsRel', 'depth_RMSE', 'depth_delta1',
                'render_accuracy', 'render_mIoU', 'sweep_best_threshold', 'sweep_best_mIoU']
SUMMARY_FORMATS = {'sweep_best_threshold': '.4g', 'depth_AbsRel': '.4f', 'depth_RMSE': '.3f'}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Test (evaluate) a SplattingOcc checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (e.g. work_dirs/<cfg>/iter_N.pth)')
    parser.add_argument('--eval', nargs='+', choices=sorted(EVAL_TO_METRIC), default=['segm'],
                        help="'segm': Occ3D mIoU with mask_camera; add 'ray' for RayIoU, 'ap' "
                        "for occupancy AP and per-class AP, 'render' for the rendering metrics "
                        'at the labelled pixels')
    parser.add_argument('--dump-scores', action='store_true',
                        help="with --dump-dir: also store 'occupancy' and 'class_probs' (float16, "
                        'about 19 MB a frame), which tools/eval_occ.py --metric ap needs')
    parser.add_argument('--calibrate', action='store_true',
                        help='sweep the read-out threshold on the val split (the config\'s '
                        'val_dataloader) and write the curve and the chosen threshold to the '
                        'calibration file instead of evaluating')
    parser.add_argument('--calibration', default=None, metavar='FILE',
                        help='calibration file (default: CHECKPOINT.calibration.json)')
    parser.add_argument('--no-calibration', action='store_true',
                        help="evaluate with the config's threshold even if a calibration file "
                        'exists (labelled not calibrated)')
    parser.add_argument('--require-calibration', action='store_true',
                        help='refuse to evaluate without a calibration file')
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
    return [m for m in METRIC_ORDER if m in wanted]


def configure_evaluator(cfg, metrics: list, thresholds: Optional[list] = None) -> None:
    """Put ``metrics`` (and the sweep's ``thresholds``) into every Occ3D-style metric of
    ``cfg.test_evaluator``."""
    normalize_evaluators(cfg)
    targets = [m for m in evaluator_metric_cfgs(cfg.get('test_evaluator'))
               if m.get('type') == 'Occ3DMetric' or 'metrics' in m]
    if not targets:
        raise UserError(
            f'{cfg.filename}: test_evaluator has no Occ3DMetric to run --eval {metrics}; set '
            "test_evaluator = [dict(type='Occ3DMetric', ...)] in the config")
    for metric in targets:
        metric['metrics'] = list(metrics)
        if thresholds is not None:
            metric['thresholds'] = list(thresholds)


def configured_threshold(cfg) -> Optional[float]:
    """``model.readout.threshold`` of the config, or None if the read-out has none."""
    readout = (cfg.get('model') or {}).get('readout') or {}
    t = readout.get('threshold')
    return None if t is None else float(t)


def add_labels_2d(cfg) -> None:
    """Insert LoadLabels2D after LoadMultiViewImages in the test pipeline (--eval render), with
    the same camera names, unless it is there already."""
    pipeline = cfg.test_dataloader.dataset.pipeline
    types = [t.get('type') for t in pipeline]
    if 'LoadLabels2D' in types:
        return
    if 'LoadMultiViewImages' not in types:
        raise UserError(f'{cfg.filename}: --eval render needs the 2D labels, but the test pipeline '
                        'has no LoadMultiViewImages to put LoadLabels2D after; add '
                        "dict(type='LoadLabels2D', camera_names=...) to test_dataloader's "
                        'pipeline')
    i = types.index('LoadMultiViewImages')
    pipeline = copy.deepcopy(list(pipeline))
    pipeline.insert(i + 1, dict(type='LoadLabels2D', camera_names=pipeline[i]['camera_names']))
    cfg.test_dataloader.dataset.pipeline = pipeline


def check_split_file(cfg) -> None:
    """A missing test info pkl of a dataset made before the test split: say how to make it."""
    ds = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    ann = ds.get('ann_file')
    if not isinstance(ann, str) or not ann.endswith('_test.pkl'):
        return
    path = ann if osp.isabs(ann) else osp.join(ds.get('data_root') or '', ann)
    if not osp.isfile(path):
        root = ds.get('data_root') or osp.dirname(path)
        raise UserError(
            f'test split info file {path} not found: run `python tools/create_data.py nuscenes '
            f'--root {root} --version v1.0-test` (a synthetic dataset made before the test split '
            'has no v1.0-test: regenerate it with tools/create_data.py synthetic, its train/val '
            'files come out identical), or evaluate on val with --cfg-options '
            'test_dataloader.dataset.ann_file=nuscenes_infos_val.pkl and label the numbers val')


def use_val_split(cfg) -> None:
    """Point the test loop at the calibration split: the config's val loader and evaluator."""
    missing = [k for k in ('val_dataloader', 'val_evaluator') if not cfg.get(k)]
    if missing:
        raise UserError(f'{cfg.filename}: --calibrate runs on the val split but the config has no '
                        f'{", ".join(missing)}')
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)


def resolve_threshold(args: argparse.Namespace, cfg) -> Tuple[dict, Optional[dict]]:
    """The read-out threshold to evaluate with: (description for metrics.json, calibration
    document or None). Sets ``cfg.model.readout.threshold`` from the calibration file."""
    t_cfg = configured_threshold(cfg)
    if t_cfg is None:
        if args.calibration or args.require_calibration:
            raise UserError(f'{cfg.filename}: model.readout has no threshold to calibrate')
        return dict(threshold=None, source='the read-out has no threshold', calibrated=False), \
            None
    if 'model.readout.threshold' in (args.cfg_options or {}):
        return dict(threshold=t_cfg, source='command line (--cfg-options)', calibrated=False), \
            None
    path = args.calibration
    if path is None and '://' not in args.checkpoint:
        path = calibration_path(args.checkpoint)
    if args.no_calibration or path is None or (args.calibration is None
                                               and not osp.isfile(path)):
        if args.require_calibration:
            raise UserError(f'no calibration file {path}: run tools/test.py {args.config} '
                            f'{args.checkpoint} --calibrate first (--require-calibration)')
        return dict(threshold=t_cfg, source='config (not calibrated)', calibrated=False), None
    doc = load_calibration(path, args.checkpoint if '://' not in args.checkpoint else None)
    cfg.model.readout.threshold = float(doc['threshold'])
    return dict(threshold=float(doc['threshold']), source='calibration',
                calibration_file=osp.abspath(path), chosen_on=doc.get('split'),
                rule=doc.get('rule'), calibrated=True), doc


def dataset_split(runner) -> Tuple[Optional[str], Optional[str]]:
    """(metadata split, ann_file) of the runner's test dataset, None where unknown."""
    try:
        dataset = runner.test_dataloader.dataset
    except Exception:  # noqa: BLE001 - only for labelling the results
        return None, None
    meta = getattr(dataset, 'info_metadata', None) or {}
    return meta.get('split'), getattr(dataset, 'ann_file', None)


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
                spec = SUMMARY_FORMATS.get(wanted, '.2f')
                lines.append(f'{key}: {float(value):{spec}}')
    if not lines:
        lines = [f'{k}: {float(v):.4f}' for k, v in metrics.items()
                 if isinstance(v, (int, float)) or hasattr(v, '__float__')]
    return lines


def build_runner(args: argparse.Namespace) -> Runner:
    runner, _ = _build(args)
    return runner


def _build(args: argparse.Namespace) -> Tuple[Runner, dict]:
    """The runner and the read-out description (the threshold and where it comes from)."""
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint {args.checkpoint} not found')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    check_test_config(cfg)
    if args.calibrate:
        t_cfg = configured_threshold(cfg)
        if t_cfg is None:
            raise UserError(f'{cfg.filename}: model.readout has no threshold to calibrate')
        if args.dump_dir:
            raise UserError('--calibrate writes no predictions; drop --dump-dir')
        use_val_split(cfg)
        configure_evaluator(cfg, ['miou', 'sweep'], threshold_grid([t_cfg]).tolist())
        readout = dict(threshold=t_cfg, source='config (swept)', calibrated=False)
    else:
        check_split_file(cfg)
        readout, _ = resolve_threshold(args, cfg)
        configure_evaluator(cfg, eval_metrics(args.eval))
        if 'render' in args.eval:
            add_labels_2d(cfg)
    if args.dump_scores and not args.dump_dir:
        raise UserError('--dump-scores needs --dump-dir DIR')
    if args.dump_dir:
        hooks = list(cfg.get('custom_hooks') or [])
        hooks.append(dict(type='DumpPredictionHook', out_dir=osp.abspath(args.dump_dir),
                          scores=bool(args.dump_scores)))
        cfg.custom_hooks = hooks
    apply_randomness_args(cfg)
    return build_runner_from_cfg(cfg, args.launcher), readout


def _sweep_of(runner) -> Optional[dict]:
    for metric in getattr(runner.test_evaluator, 'metrics', []):
        if getattr(metric, 'sweep', None) is not None:
            return metric.sweep
    return None


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Evaluate (or calibrate); returns the metrics dict (also written to
    <work_dir>/<timestamp>/metrics.json)."""
    args = parse_args(argv)
    runner, readout = _build(args)
    if args.gpu_collect:
        runner.logger.info('--gpu-collect: results are collected on the CPU (no effect)')
    # mmengine's load_from is non-strict: a checkpoint of another model must not be scored
    check_checkpoint_fits(runner.model, args.checkpoint)
    split, ann_file = dataset_split(runner)
    if args.calibrate:
        if split == 'test':
            raise UserError(f'--calibrate: the val_dataloader of {args.config} reads the test '
                            f'split ({ann_file}); thresholds are chosen on val, never on test')
    elif readout.get('calibrated'):
        runner.logger.info(
            f"Read-out threshold {readout['threshold']:.6g} (occupancy: the opacity of one "
            f"voxel) from {readout['calibration_file']}, chosen on the {readout['chosen_on']} "
            f"split ({readout['rule']}); evaluating on the {split} split")
        if split is not None and split == readout['chosen_on']:
            runner.logger.warning(f'the threshold was chosen on the {split} split it is evaluated '
                                  'on: an optimistic number')
    elif readout.get('threshold') is not None:
        runner.logger.warning(
            f"Read-out threshold {readout['threshold']:.6g}: {readout['source']}; evaluating on "
            f'the {split} split. Calibrate it on val with: tools/test.py {args.config} '
            f'{args.checkpoint} --calibrate')
    metrics = runner.test()
    if is_main_process():
        path = osp.join(runner.log_dir, 'metrics.json')
        doc = dict(config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint),
                   eval=['calibrate'] if args.calibrate else list(args.eval), split=split,
                   ann_file=ann_file, readout=readout, metrics=dict(metrics))
        if args.calibrate:
            sweep = _sweep_of(runner)
            if sweep is None:
                raise UserError('--calibrate: the evaluator returned no threshold sweep (is '
                                'test_evaluator an Occ3DMetric?)')
            calib_file = args.calibration or calibration_path(args.checkpoint)
            sha = checkpoint_sha256(args.checkpoint) if osp.isfile(args.checkpoint) else None
            calib = calibration_document(sweep, readout['threshold'], split, ann_file,
                                         metrics.get('frames', 0), args.checkpoint, args.config,
                                         sha)
            atomic_write_json(calib_file, calib, sort_keys=False)
            doc['calibration_file'] = osp.abspath(calib_file)
            runner.logger.info(
                f"Calibration on the {split} split: threshold {calib['threshold']:.6g} "
                f"(mIoU {calib['miou']}, geometry IoU {calib['geometry_iou']}); the config's "
                f"{calib['configured_threshold']:.6g}: mIoU {calib['configured_miou']}. "
                f'Written to {calib_file}')
        atomic_write_json(path, doc)
        lines = summary_lines(metrics)
        runner.logger.info('Test results: ' + ' | '.join(lines) + f'  ({split} split)')
        runner.logger.info(f'Metrics written to {path}')
    return metrics
