"""Paired comparison of two folders of occupancy predictions on the same frames, with a bootstrap
interval for the difference of their Occ3D scores.

    python tools/analysis/compare_occ.py --pred-dir A --ref-dir B --data-root DATA \
        [--mask camera|lidar|none] [--bootstrap 2000] [--unit frame|scene] [--seed 0] \
        [--info PKL] [--json FILE]

Both folders are read as ``tools/eval_occ.py`` reads one (DIR/<scene>/<token>/pred.npz, e.g. from
``tools/test.py --dump-dir`` or ``tools/analysis/baselines.py``). The frames must be the same in
both (a frame missing from one is an error naming it).

* Point estimates: mIoU, geometry IoU and per-class IoU of A and of B over all the frames, as
  ``tools/eval_occ.py`` computes them (one confusion matrix over the split, Occ3D's protocol),
  and A - B.
* Bootstrap (paired): R resamples, with replacement, of the units (frames, or whole scenes with
  ``--unit scene``: the frames of one scene are correlated, so a frame bootstrap on few scenes
  gives too narrow an interval). Each resample sums the chosen units' confusion matrices, for A
  and for B alike, and takes the difference of the scores; a class absent from a resample's
  ground truth and predictions is left out of its mIoU (NaN-mean, as in Occ3D). Reported: the
  2.5 and 97.5 percentiles of the differences (a 95% percentile interval) and the share of
  resamples in which A scores higher.
* With ``--info PKL`` (the info pkl with the poses of the split's keyframes, as for
  ``tools/eval_occ.py --metric ray``), RayIoU too (SparseOcc's metric: it casts LiDAR-like rays
  and needs no camera mask): its per-frame ray counts are summed over the same resamples.

The interval says how much the score of these predictions depends on which frames were drawn; it
says nothing about training noise (rerun with other seeds for that).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from splattingocc.engine.launch import atomic_write_json
from splattingocc.evaluation.functional.bootstrap import (paired_bootstrap, percentile_interval,
                                                          rayiou_of_stats, scores_of_hists)
from splattingocc.evaluation.functional.ray_iou import rayiou_from_stats
from splattingocc.evaluation.ray_origins import load_infos, ray_origins_by_token
from splattingocc.evaluation.standalone import (error_message, find_predictions,
                                                per_class_rayiou_json, score_frames,
                                                scoring_state)
from splattingocc.paths import DATASET_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pred-dir', required=True, help='predictions A')
    parser.add_argument('--ref-dir', required=True, help='predictions B (the reference)')
    parser.add_argument('--data-root', required=True, help='folder holding gts/<scene>/<token>/')
    parser.add_argument('--mask', default='camera', choices=['camera', 'lidar', 'none'],
                        help='voxels evaluated (Occ3D protocol: camera)')
    parser.add_argument('--bootstrap', type=int, default=2000, help='resamples R (0: none)')
    parser.add_argument('--unit', default='frame', choices=['frame', 'scene'],
                        help='what is resampled')
    parser.add_argument('--seed', type=int, default=0, help='seed of the resampling')
    parser.add_argument('--info', default=None,
                        help='info pkl with the poses of every keyframe of the split: adds RayIoU')
    parser.add_argument('--json', default=None, help='write the comparison to this JSON file')
    parser.add_argument('--dataset-config', default=str(DATASET_CONFIG),
                        help='config with class_names and free_label')
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _frame_results(items, state, what: str):
    """{(scene, token): the frame's counts (``score_frame``: 'hist' and, with RayIoU, 'ray')}."""
    results = score_frames(items, state, desc=what)
    return {(scene, token): r for (scene, token, _, _), r in zip(items, results)}


def _stack_units(results: dict, groups, field):
    """Per unit (a group of frame keys), the sum of ``field`` of its frames' results: the
    confusion matrices ('hist', [U, C, C]) or the ray counts ('ray', a dict of [U, ...])."""
    if field == 'hist':
        return np.stack([sum(results[k]['hist'] for k in g) for g in groups])
    return {name: np.stack([sum(results[k]['ray'][name] for k in g) for g in groups])
            for name in ('tp', 'gt_count', 'pred_count')}


def main(argv=None) -> dict:
    """Compare; returns the JSON document (also written with --json)."""
    args = parse_args(argv)
    from mmengine.config import Config

    if args.bootstrap < 0:
        raise SystemExit(f'compare_occ: --bootstrap must be >= 0, got {args.bootstrap}')
    cfg_path = Path(args.dataset_config)
    if not cfg_path.is_file():
        raise SystemExit(f'--dataset-config {cfg_path} does not exist')
    cfg = Config.fromfile(str(cfg_path))
    class_names, free_label = list(cfg.class_names), int(cfg.free_label)
    want_ray = args.info is not None
    if want_ray:
        for key in ('point_cloud_range', 'voxel_size'):
            if key not in cfg:
                raise SystemExit(f'{cfg_path} has no key {key!r} (needed for RayIoU, --info)')
    data_root = Path(args.data_root)
    try:
        items_a = find_predictions(Path(args.pred_dir), data_root)
        items_b = find_predictions(Path(args.ref_dir), data_root)
        origins = None
        if want_ray:
            origins = ray_origins_by_token(load_infos(args.info))
            missing = [t for _, t, _, _ in items_a if t not in origins]
            if missing:
                raise ValueError(f'{len(missing)} predicted samples are not in --info '
                                 f'{args.info} (e.g. {missing[0]}); pass the info file of '
                                 'this split')
        keys_a = {(s, t) for s, t, _, _ in items_a}
        keys_b = {(s, t) for s, t, _, _ in items_b}
        for keys, name, other in ((keys_a - keys_b, args.pred_dir, args.ref_dir),
                                  (keys_b - keys_a, args.ref_dir, args.pred_dir)):
            if keys:
                s, t = sorted(keys)[0]
                raise ValueError(f'{len(keys)} frames of {name} are not in {other} (e.g. '
                                 f'{s}/{t}): compare predictions of the same frames')
        print(f'[compare_occ] {len(items_a)} frames; A = {args.pred_dir}, B = {args.ref_dir}; '
              f"mask={args.mask}{'; RayIoU' if want_ray else ''}")
        state = scoring_state(cfg, args.mask, origins, args.info)
        ra = _frame_results(items_a, state, 'A')
        rb = _frame_results(items_b, state, 'B')
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise SystemExit(f'compare_occ: {error_message(e)}')
    keys = sorted(ra)
    if args.unit == 'scene':
        groups = [[k for k in keys if k[0] == s] for s in sorted({s for s, _ in keys})]
    else:
        groups = [[k] for k in keys]
    units_a = _stack_units(ra, groups, 'hist')
    units_b = _stack_units(rb, groups, 'hist')
    point_a = scores_of_hists(units_a.sum(0, keepdims=True), free_label)
    point_b = scores_of_hists(units_b.sum(0, keepdims=True), free_label)
    ray_a = ray_b = None
    if want_ray:
        ray_a = _stack_units(ra, groups, 'ray')
        ray_b = _stack_units(rb, groups, 'ray')
        point_a['rayiou'], point_b['rayiou'] = (
            rayiou_of_stats(r['tp'].sum(0)[None], r['gt_count'].sum(0)[None],
                            r['pred_count'].sum(0)[None], free_label) for r in (ray_a, ray_b))

    def pct(v):
        v = float(v)
        return round(100 * v, 4) if np.isfinite(v) else None

    doc = {'frames': len(keys), 'units': int(units_a.shape[0]), 'unit': args.unit,
           'mask': args.mask, 'bootstrap': int(args.bootstrap), 'seed': int(args.seed),
           'a': str(args.pred_dir), 'b': str(args.ref_dir)}
    score_keys = ('miou', 'geometry_iou') + (('rayiou', ) if want_ray else ())
    for key in score_keys:
        a, b = pct(point_a[key][0]), pct(point_b[key][0])
        doc[key] = {'a': a, 'b': b,
                    'difference': None if a is None or b is None else round(a - b, 4)}
    doc['per_class_iou'] = {
        n: {'a': pct(point_a['iou'][0, i]), 'b': pct(point_b['iou'][0, i])}
        for i, n in enumerate(class_names) if i != free_label}
    if want_ray:
        per_a, per_b = (per_class_rayiou_json(
            rayiou_from_stats(r['tp'].sum(0), r['gt_count'].sum(0), r['pred_count'].sum(0),
                              free_label)['per_class'], class_names, free_label)
            for r in (ray_a, ray_b))
        doc['per_class_rayiou'] = {n: {'a': per_a[n], 'b': per_b[n]} for n in per_a}
    if args.bootstrap:
        diffs = paired_bootstrap(units_a, units_b, free_label, args.bootstrap, args.seed,
                                 ray_a, ray_b)
        for key in score_keys:
            doc[key].update(percentile_interval(diffs[key]))

    print(f"{'score':<14}{'A':>9}{'B':>9}{'A - B':>9}   95% interval of A - B   A higher in")
    labels = {'miou': 'mIoU', 'geometry_iou': 'geometry IoU', 'rayiou': 'RayIoU'}
    for key in score_keys:
        label, r = labels[key], doc[key]

        def f(v):
            return '-' if v is None else f'{v:.2f}'
        line = f"{label:<14}{f(r['a']):>9}{f(r['b']):>9}{f(r['difference']):>9}"
        if args.bootstrap and r.get('low') is not None:
            line += (f"   [{r['low']:6.2f}, {r['high']:6.2f}]"
                     f"        {100 * r['share_a_higher']:5.1f}%")
        print(line)
    if args.bootstrap:
        print(f'({args.bootstrap} paired resamples of {units_a.shape[0]} {args.unit}s, seed '
              f'{args.seed})')
        if units_a.shape[0] < 10:
            print(f'note: only {units_a.shape[0]} {args.unit}s: an interval from so few units '
                  'is rough')
        if args.unit == 'frame':
            n_scenes = len({s for s, _ in keys})
            if n_scenes < len(keys):
                print(f'note: {len(keys)} frames from {n_scenes} scenes; frames of one scene are '
                      'correlated, so this interval is narrower than a new set of scenes would '
                      'give (try --unit scene when there are enough scenes)')
    if args.json:
        atomic_write_json(args.json, doc, sort_keys=False)
        print(f'[compare_occ] written to {args.json}')
    return doc
