"""Trivial occupancy baselines, scored like any model (the floor every trained number must clear).

    python tools/analysis/baselines.py --data-root data/synthetic-nuscenes [--out outputs/baselines]
        [--baselines all-free,voxel-mode] [--ray] [--json FILE]

Baselines (predictions for every frame of the val info pkl):

* ``all-free``: every voxel free (17).
* ``voxel-mode``: at every voxel position (x, y, z) of the ego-centred grid, the label most often
  seen there over the train split (free included; ties go to the smaller label). The Occ3D grid
  moves with the ego car, so this is the "most frequent class per column" prior: road under the
  car, free space above it.

Each baseline's predictions are written as ``OUT/<baseline>/<scene>/<token>/pred.npz`` (the
``tools/test.py --dump-dir`` layout) and scored by ``tools/eval_occ.py`` (Occ3D mIoU with
mask_camera; RayIoU with ``--ray``). ``--json`` writes {baseline: scores} (percentages).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from splattingocc.engine.launch import atomic_write_json
from splattingocc.errors import UserError
from splattingocc.evaluation.dump import dump_prediction, load_occ_gt
from splattingocc.evaluation.ray_origins import info_scene_name, load_infos
from splattingocc.evaluation.standalone import error_message, evaluate_folder
from splattingocc.paths import DATASET_CONFIG

BASELINES = ('all-free', 'voxel-mode')


def voxel_mode(labels, num_labels: int = 256) -> np.ndarray:
    """Most frequent label at every voxel position over a sequence of [X, Y, Z] grids.

    Args:
        labels: iterable of [X, Y, Z] integer grids (values < num_labels), all the same shape.
    Returns:
        [X, Y, Z] uint8: the mode per position; ties go to the smallest label.
    """
    counts = None
    for grid in labels:
        grid = np.asarray(grid)
        if counts is None:
            counts = np.zeros(grid.shape + (num_labels,), dtype=np.int32)
            flat = counts.reshape(-1, num_labels)
            index = np.arange(grid.size)
        elif grid.shape != counts.shape[:-1]:
            raise ValueError(f'voxel_mode: grids of shape {grid.shape} and '
                             f'{counts.shape[:-1]} mixed')
        np.add.at(flat, (index, grid.reshape(-1).astype(np.int64)), 1)
    if counts is None:
        raise ValueError('voxel_mode: no grids given')
    return counts.argmax(-1).astype(np.uint8)  # argmax: first maximum = smallest label


def _gt_path(data_root: Path, info: dict) -> Path:
    rel = info.get('occ_path')
    if rel:
        return data_root / rel
    return data_root / 'gts' / info_scene_name(info) / str(info['token']) / 'labels.npz'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-root', required=True,
                   help='dataset root with gts/ and nuscenes_infos_{train,val}.pkl')
    p.add_argument('--train-info', default=None,
                   help='train info pkl (default DATA/nuscenes_infos_train.pkl)')
    p.add_argument('--val-info', default=None,
                   help='val info pkl (default DATA/nuscenes_infos_val.pkl)')
    p.add_argument('--out', default='outputs/baselines', help='output folder')
    p.add_argument('--baselines', default=','.join(BASELINES),
                   help=f'comma-separated, from {", ".join(BASELINES)}')
    p.add_argument('--ray', action='store_true', help='also RayIoU')
    p.add_argument('--json', default=None, help='write {baseline: scores} to this JSON file')
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _score(pred_dir: Path, data_root: Path, dataset_cfg, info: Path, ray: bool) -> dict:
    """What ``tools/eval_occ.py --pred-dir PRED_DIR --data-root DATA_ROOT --info INFO`` (with
    ``--metric miou ray`` when ``ray``) prints and returns."""
    try:
        return evaluate_folder(pred_dir, data_root, dataset_cfg, 'camera', ray=ray,
                               info=str(info))
    except UserError as e:
        raise SystemExit(str(e))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise SystemExit(f'eval_occ: {error_message(e)}')


def main(argv=None) -> dict:
    """Write and score the baselines; returns {baseline: scores} (also written with --json)."""
    args = parse_args(argv)
    from mmengine.config import Config

    data_root = Path(args.data_root)
    train_info = Path(args.train_info or data_root / 'nuscenes_infos_train.pkl')
    val_info = Path(args.val_info or data_root / 'nuscenes_infos_val.pkl')
    names = [b.strip() for b in args.baselines.split(',') if b.strip()]
    unknown = [b for b in names if b not in BASELINES]
    if unknown or not names:
        raise SystemExit(f'--baselines: unknown {unknown}; choose from {", ".join(BASELINES)}')
    try:
        val = load_infos(val_info)
        train = load_infos(train_info) if 'voxel-mode' in names else []
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f'baselines: {e}')
    if not val:
        raise SystemExit(f'baselines: {val_info} lists no samples')

    def gt_semantics(info):
        path = _gt_path(data_root, info)
        if not path.is_file():
            raise SystemExit(f'baselines: ground truth {path} not found (sample '
                             f"{info.get('token')}); is --data-root right?")
        return load_occ_gt(path)['semantics']

    shape = gt_semantics(val[0]).shape
    dataset_cfg = Config.fromfile(str(DATASET_CONFIG))
    results = {}
    for name in names:
        if name == 'all-free':
            free = int(dataset_cfg.free_label)
            pred = np.full(shape, free, dtype=np.uint8)
        else:
            print(f'[baselines] voxel-mode: label counts over {len(train)} train frames',
                  flush=True)
            pred = voxel_mode(gt_semantics(info) for info in train)
        out_dir = Path(args.out) / name
        for info in val:
            dump_prediction(out_dir, info_scene_name(info), str(info['token']), pred)
        print(f'[baselines] {name}: {len(val)} val predictions in {out_dir}', flush=True)
        results[name] = _score(out_dir, data_root, dataset_cfg, val_info, args.ray)

    print('\nbaseline     mIoU   geometry IoU' + ('   RayIoU' if args.ray else ''))
    for name, r in results.items():
        line = f'{name:<11s} {r["miou"]:5.2f}   {r["geometry_iou"]:12.2f}'
        if args.ray:
            line += f'   {r["rayiou"]:6.2f}'
        print(line)
    if args.json:
        path = Path(args.json)
        atomic_write_json(path, results, sort_keys=False)
        print(f'[baselines] scores written to {path}')
    return results
