"""Score a folder of occupancy predictions against the Occ3D-nuScenes ground truth.

    python tools/eval_occ.py --pred-dir DIR --data-root DATA [--metric miou ray ap] [--info PKL]
        [--no-camera-mask | --mask camera|lidar|none] [--json FILE] [--workers N]
        [--allow-missing]

Predictions: DIR/<scene_name>/<sample_token>/pred.npz with 'semantics' uint8 [200, 200, 16]
(``tools/test.py --dump-dir``), or SparseOcc-style files with key 'pred' (also DIR/<token>.npz).
Ground truth: DATA/gts/<scene_name>/<sample_token>/labels.npz. The set of predictions is checked
first: with --info (the split's info pkl) it must be the split's frames, without it every frame
with ground truth in the predicted scenes; a missing frame (unless --allow-missing), an extra one
or a token predicted twice stops with one line. mIoU is Occ3D's (one confusion matrix over the
dataset, mask_camera by default); RayIoU is SparseOcc's and needs --info (an info pkl with the
poses of every keyframe of the scenes). Classes, range and voxel size come from --dataset-config
(configs/_base_/datasets/occ3d_nuscenes.py).
AP (--metric ap) is occupancy average precision inside the mask and per-class AP (score =
occupancy x class probability), from the 'occupancy' and 'class_probs' of dumps written with
``tools/test.py --dump-dir DIR --dump-scores`` (binned: splattingocc/evaluation/functional/
average_precision.py; the same numbers as tools/test.py --eval ap on those frames).
The JSON (written atomically) holds percentages: frames, miou, per_class_iou, geometry_iou,
miou_no_mask, rayiou, rayiou_1m, rayiou_2m, rayiou_4m (null without RayIoU), with AP
occupancy_ap, map, per_class_ap, and the counts frames (scored) and frames_expected.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from splattingocc.engine.launch import atomic_write_json
from splattingocc.errors import DataError, UserError
from splattingocc.evaluation.standalone import error_message, evaluate_folder
from splattingocc.paths import DATASET_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pred-dir', required=True, help='folder of predictions')
    parser.add_argument('--data-root', required=True, help='folder holding gts/<scene>/<token>/')
    parser.add_argument('--metric', nargs='+', default=['miou'], choices=['miou', 'ray', 'ap'],
                        help="'miou' (always computed), 'ray' (RayIoU, needs --info), 'ap' "
                        '(occupancy AP and per-class AP, needs dumps with scores)')
    parser.add_argument('--info', default=None, help='info pkl with poses (needed for ray)')
    parser.add_argument('--mask', default='camera', choices=['camera', 'lidar', 'none'],
                        help='voxels evaluated by mIoU (Occ3D protocol: camera)')
    parser.add_argument('--no-camera-mask', action='store_true', help='same as --mask none')
    parser.add_argument('--allow-missing', action='store_true',
                        help='score the predictions present even if frames of the split (of '
                        '--info, else of the predicted scenes) have none')
    parser.add_argument('--json', default=None, help='write the scores to this JSON file')
    parser.add_argument('--dataset-config', default=str(DATASET_CONFIG),
                        help='config with class_names, free_label, point_cloud_range, voxel_size')
    parser.add_argument('--workers', type=int, default=1,
                        help='processes (RayIoU is the slow part)')
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> dict:
    """Score the folder; returns the JSON document (also written with --json).

    Every error a user can cause (a missing or malformed file, an incomplete or padded
    prediction folder) is a :class:`UserError`: one line and exit code 2 through run_main.
    """
    args = parse_args(argv)
    from mmengine.config import Config

    cfg_path = Path(args.dataset_config)
    if not cfg_path.is_file():
        raise UserError(f'--dataset-config {cfg_path} does not exist')
    cfg = Config.fromfile(str(cfg_path))
    for key in ('class_names', 'free_label', 'point_cloud_range', 'voxel_size'):
        if key not in cfg:
            raise UserError(f'--dataset-config {cfg_path} has no key {key!r}')
    mask = 'none' if args.no_camera_mask else args.mask
    try:
        doc = evaluate_folder(Path(args.pred_dir), Path(args.data_root), cfg, mask,
                              ray='ray' in args.metric, info=args.info, workers=args.workers,
                              allow_missing=args.allow_missing, ap='ap' in args.metric)
    except UserError:
        raise
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise DataError(f'eval_occ: {error_message(e)}') from e
    if args.json:
        atomic_write_json(args.json, doc, sort_keys=False)
        print(f'[eval_occ] scores written to {args.json}')
    return doc
