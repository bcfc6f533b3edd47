"""Score a folder of occupancy predictions against the Occ3D-nuScenes ground truth.

    python tools/eval_occ.py --pred-dir DIR --data-root DATA [--metric miou ray] [--info PKL]
        [--no-camera-mask | --mask camera|lidar|none] [--json FILE] [--workers N]

Predictions: DIR/<scene_name>/<sample_token>/pred.npz with 'semantics' uint8 [200, 200, 16]
(``tools/test.py --dump-dir``), or SparseOcc-style files with key 'pred' (also DIR/<token>.npz).
Ground truth: DATA/gts/<scene_name>/<sample_token>/labels.npz. Every prediction found is scored;
mIoU is Occ3D's (one confusion matrix over the dataset, mask_camera by default); RayIoU is
SparseOcc's and needs --info (an info pkl with the poses of every keyframe of the scenes).
Classes, range and voxel size come from --dataset-config
(configs/_base_/datasets/occ3d_nuscenes.py).
The JSON (written atomically) holds percentages: frames, miou, per_class_iou, geometry_iou,
miou_no_mask, rayiou, rayiou_1m, rayiou_2m, rayiou_4m (null without RayIoU).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from splattingocc.evaluation.dump import PRED_FILENAME, load_occ_gt, load_prediction  # noqa: E402
from splattingocc.evaluation.functional.ray_iou import lidar_ray_directions  # noqa: E402
from splattingocc.evaluation.metrics.occ_metric import (format_occ_table,  # noqa: E402
                                                        occ_frame_result, summarize_occ_results)
from splattingocc.evaluation.ray_origins import load_infos, ray_origins_by_token  # noqa: E402

DEFAULT_DATASET_CONFIG = REPO_ROOT / 'configs' / '_base_' / 'datasets' / 'occ3d_nuscenes.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pred-dir', required=True, help='folder of predictions')
    parser.add_argument('--data-root', required=True, help='folder holding gts/<scene>/<token>/')
    parser.add_argument('--metric', nargs='+', default=['miou'], choices=['miou', 'ray'],
                        help="'miou' (always computed) and/or 'ray' (RayIoU, needs --info)")
    parser.add_argument('--info', default=None, help='info pkl with poses (needed for ray)')
    parser.add_argument('--mask', default='camera', choices=['camera', 'lidar', 'none'],
                        help='voxels evaluated by mIoU (Occ3D protocol: camera)')
    parser.add_argument('--no-camera-mask', action='store_true', help='same as --mask none')
    parser.add_argument('--json', default=None, help='write the scores to this JSON file')
    parser.add_argument('--dataset-config', default=str(DEFAULT_DATASET_CONFIG),
                        help='config with class_names, free_label, point_cloud_range, voxel_size')
    parser.add_argument('--workers', type=int, default=1,
                        help='processes (RayIoU is the slow part)')
    return parser.parse_args(argv)


def find_predictions(pred_dir: Path, data_root: Path):
    """[(scene, token, pred_path, gt_path)], sorted, for every prediction file in ``pred_dir``."""
    if not pred_dir.is_dir():
        raise FileNotFoundError(f'--pred-dir {pred_dir} is not a folder')
    found = []
    for p in sorted(pred_dir.glob(f'*/*/{PRED_FILENAME}')):
        scene, token = p.parent.parent.name, p.parent.name
        found.append((scene, token, p, data_root / 'gts' / scene / token / 'labels.npz'))
    flat = sorted(pred_dir.glob('*.npz'))
    if flat:
        token2scene = {g.parent.name: g.parent.parent.name
                       for g in (data_root / 'gts').glob('*/*/labels.npz')}
        for p in flat:
            token = p.stem
            if token not in token2scene:
                raise FileNotFoundError(f'{p}: no ground truth {data_root}/gts/*/{token}/'
                                        'labels.npz for this token')
            scene = token2scene[token]
            found.append((scene, token, p, data_root / 'gts' / scene / token / 'labels.npz'))
    if not found:
        raise FileNotFoundError(f'no predictions in {pred_dir}: expected '
                                f'{pred_dir}/<scene>/<token>/{PRED_FILENAME} (or <token>.npz)')
    return found


_WORKER = {}


def _init_worker(state):
    _WORKER.clear()
    _WORKER.update(state)


def _evaluate_one(item):
    scene, token, pred_path, gt_path = item
    w = _WORKER
    if not Path(gt_path).is_file():
        raise FileNotFoundError(f'ground truth missing for {pred_path}: {gt_path} does not exist '
                                '(check --data-root)')
    gt = load_occ_gt(gt_path)
    pred = load_prediction(pred_path)
    if pred.size == gt['semantics'].size and pred.ndim == 1:
        pred = pred.reshape(gt['semantics'].shape)  # SparseOcc files may be flat
    if pred.shape != gt['semantics'].shape:
        raise ValueError(f'{pred_path}: prediction shape {pred.shape} differs from the ground '
                         f"truth {gt['semantics'].shape} of {gt_path}")
    mask = None
    if w['mask'] != 'none':
        mask = gt[f"mask_{w['mask']}"]
        if mask is None:
            raise KeyError(f"{gt_path}: no 'mask_{w['mask']}' array; use --mask none")
    origins = None
    if w['ray']:
        if token not in w['origins']:
            raise KeyError(f'{pred_path}: sample {token} is not in --info {w["info"]}')
        origins = w['origins'][token]
    result = occ_frame_result(pred, gt['semantics'], mask, w['num_classes'], w['free_label'],
                              w['ignore_label'], origins, w['pc_range'], w['voxel_size'],
                              w['dirs'], name=str(pred_path))
    result['token'] = token
    return result


def _write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _message(e: BaseException) -> str:
    # str(KeyError('x')) quotes its message; show it as written
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def _pct(v):
    return None if v is None or not math.isfinite(v) else round(100.0 * float(v), 4)


def per_class_rayiou_json(per_class: np.ndarray, class_names, free_label: int) -> dict:
    """{class name: RayIoU in percent over the thresholds, null where never seen} from the
    [T, C - 1] 'per_class' array of ``rayiou_from_stats`` (free left out)."""
    names = [n for i, n in enumerate(class_names) if i != free_label]
    return {n: _pct(float(np.nanmean(per_class[:, k])))
            if np.isfinite(per_class[:, k]).any() else None for k, n in enumerate(names)}


def scores_json(summary: dict, class_names, free_label: int) -> dict:
    """The JSON document of ``tools/eval_occ.py`` (percent; null where undefined)."""
    ray = summary.get('ray')
    out = {
        'frames': int(summary['frames']),
        'miou': _pct(summary['miou']),
        'per_class_iou': {n: _pct(summary['iou'][i]) for i, n in enumerate(class_names)
                          if i != free_label},
        'geometry_iou': _pct(summary['geometry_iou']),
        'miou_no_mask': _pct(summary.get('miou_nomask')),
        'rayiou': _pct(ray['rayiou']) if ray else None,
    }
    for j, t in enumerate(ray['thresholds'] if ray else (1, 2, 4)):
        out[f'rayiou_{t:g}m'] = _pct(ray['rayiou_at'][j]) if ray else None
    if ray:
        out['per_class_rayiou'] = per_class_rayiou_json(ray['per_class'], class_names, free_label)
    return out


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from tqdm import tqdm

    cfg_path = Path(args.dataset_config)
    if not cfg_path.is_file():
        raise SystemExit(f'--dataset-config {cfg_path} does not exist')
    cfg = Config.fromfile(str(cfg_path))
    for key in ('class_names', 'free_label', 'point_cloud_range', 'voxel_size'):
        if key not in cfg:
            raise SystemExit(f'{cfg_path} has no key {key!r}')
    class_names = list(cfg.class_names)
    free_label = int(cfg.free_label)
    mask = 'none' if args.no_camera_mask else args.mask
    want_ray = 'ray' in args.metric
    pred_dir, data_root = Path(args.pred_dir), Path(args.data_root)
    try:
        items = find_predictions(pred_dir, data_root)
        origins = {}
        if want_ray:
            if args.info is None:
                raise SystemExit('--metric ray needs --info PKL (the info file with the poses of '
                                 'every keyframe of the evaluated scenes)')
            origins = ray_origins_by_token(load_infos(args.info))
            missing = [t for _, t, _, _ in items if t not in origins]
            if missing:
                raise SystemExit(f'{len(missing)} predicted samples are not in --info {args.info}'
                                 f' (e.g. {missing[0]}); pass the info file of this split')
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise SystemExit(f'eval_occ: {_message(e)}')
    state = dict(mask=mask, ray=want_ray, origins=origins, info=args.info,
                 num_classes=len(class_names), free_label=free_label,
                 ignore_label=int(cfg.get('ignore_label', 255)),
                 pc_range=list(cfg.point_cloud_range), voxel_size=list(cfg.voxel_size),
                 dirs=lidar_ray_directions() if want_ray else None)
    print(f'[eval_occ] {len(items)} frames from {pred_dir}; mask={mask}; '
          f"metrics={'miou+ray' if want_ray else 'miou'}")
    try:
        if args.workers > 1:
            import multiprocessing as mp
            # fork where available: the workers only run numpy, and skip re-importing torch
            method = 'fork' if 'fork' in mp.get_all_start_methods() else 'spawn'
            with mp.get_context(method).Pool(args.workers, _init_worker, (state, )) as pool:
                results = list(tqdm(pool.imap(_evaluate_one, items, chunksize=4),
                                    total=len(items), desc='eval', unit='frame'))
        else:
            _init_worker(state)
            results = [_evaluate_one(it) for it in tqdm(items, desc='eval', unit='frame')]
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise SystemExit(f'eval_occ: {_message(e)}')
    summary = summarize_occ_results(results, class_names, free_label)
    print(format_occ_table(summary, class_names, free_label))
    doc = scores_json(summary, class_names, free_label)
    doc['mask'] = mask
    if args.json:
        _write_json_atomic(Path(args.json), doc)
        print(f'[eval_occ] scores written to {args.json}')
    return doc


if __name__ == '__main__':
    main()
