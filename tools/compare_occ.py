"""Paired comparison of two folders of occupancy predictions on the same frames, with a bootstrap
interval for the difference of their Occ3D scores.

    python tools/compare_occ.py --pred-dir A --ref-dir B --data-root DATA \
        [--mask camera|lidar|none] [--bootstrap 2000] [--unit frame|scene] [--seed 0] \
        [--info PKL] [--json FILE]

Both folders are read as ``tools/eval_occ.py`` reads one (DIR/<scene>/<token>/pred.npz, e.g. from
``tools/test.py --dump-dir`` or ``tools/baselines.py``). The frames must be the same in both (a
frame missing from one is an error naming it).

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
import sys
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
for p in (TOOLS, TOOLS.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import eval_occ  # noqa: E402  (tools/eval_occ.py)
from splattingocc.evaluation.functional.ray_iou import (lidar_ray_directions,  # noqa: E402
                                                        rayiou_from_stats)
from splattingocc.evaluation.ray_origins import load_infos, ray_origins_by_token  # noqa: E402


def scores_of_hists(hists: np.ndarray,  # [R, C, C] (rows ground truth)
                    free_label: int) -> dict:
    """mIoU and geometry IoU (fractions) of each of R confusion matrices at once, with the
    definitions of ``occ_miou.miou_from_confusion`` / ``geometry_iou_from_confusion``."""
    hists = np.asarray(hists, dtype=np.float64)
    assert hists.ndim == 3 and hists.shape[1] == hists.shape[2], hists.shape
    C = hists.shape[1]
    tp = np.einsum('rcc->rc', hists)
    union = hists.sum(2) + hists.sum(1) - tp  # [R, C]
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = tp / union  # NaN for 0 / 0
    keep = np.arange(C) != free_label
    sel = iou[:, keep]
    present = np.isfinite(sel)
    n = present.sum(1)
    with np.errstate(divide='ignore', invalid='ignore'):
        miou = np.where(n > 0, np.where(present, sel, 0.0).sum(1) / n, np.nan)
        occ_tp = hists[:, keep][:, :, keep].sum((1, 2))
        gt_occ, pred_occ = hists[:, keep].sum((1, 2)), hists[:, :, keep].sum((1, 2))
        geo_union = gt_occ + pred_occ - occ_tp
        geo = np.where(geo_union > 0, occ_tp / geo_union, np.nan)
    return {'miou': miou, 'geometry_iou': geo, 'iou': iou}


def rayiou_of_stats(tp: np.ndarray,  # [R, T, C]
                    gt_count: np.ndarray,  # [R, C]
                    pred_count: np.ndarray,  # [R, C]
                    free_label: int) -> np.ndarray:
    """RayIoU (fraction) of each of R sets of summed ray counts at once, with the definition of
    ``ray_iou.rayiou_from_stats``: the NaN-ignoring mean over thresholds and non-free classes."""
    tp = np.asarray(tp, dtype=np.float64)
    both = (np.asarray(gt_count, dtype=np.float64) + np.asarray(pred_count, dtype=np.float64))
    assert tp.ndim == 3 and both.shape == (tp.shape[0], tp.shape[2]), (tp.shape, both.shape)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = tp / (both[:, None, :] - tp)  # [R, T, C], NaN for 0 / 0
    iou = np.delete(iou, free_label, axis=2).reshape(tp.shape[0], -1)
    present = np.isfinite(iou)
    n = present.sum(1)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(n > 0, np.where(present, iou, 0.0).sum(1) / n, np.nan)


def bootstrap_weights(units: int, resamples: int, seed: int = 0) -> np.ndarray:
    """[R, U] how often each of U units is drawn in each of R resamples with replacement."""
    draws = np.random.default_rng(seed).integers(0, units, size=(int(resamples), units))
    weights = np.zeros((int(resamples), units))
    np.add.at(weights, (np.arange(int(resamples))[:, None], draws), 1.0)
    return weights


def paired_bootstrap(hists_a: np.ndarray,  # [U, C, C]
                     hists_b: np.ndarray,  # [U, C, C]
                     free_label: int, resamples: int, seed: int = 0,
                     ray_a: dict | None = None, ray_b: dict | None = None) -> dict:
    """Differences A - B of mIoU and geometry IoU over ``resamples`` paired resamples of the U
    units (module docstring): {'miou': [R], 'geometry_iou': [R]} (fractions). With ``ray_a``
    and ``ray_b`` ({'tp' [U, T, C], 'gt_count' [U, C], 'pred_count' [U, C]}: each unit's ray
    counts), also 'rayiou' [R] over the same resamples."""
    hists_a, hists_b = np.asarray(hists_a), np.asarray(hists_b)
    assert hists_a.shape == hists_b.shape and hists_a.ndim == 3, (hists_a.shape, hists_b.shape)
    weights = bootstrap_weights(hists_a.shape[0], resamples, seed)
    sa = scores_of_hists(np.einsum('ru,ucd->rcd', weights, hists_a), free_label)
    sb = scores_of_hists(np.einsum('ru,ucd->rcd', weights, hists_b), free_label)
    out = {k: sa[k] - sb[k] for k in ('miou', 'geometry_iou')}
    if ray_a is not None and ray_b is not None:
        ra, rb = (rayiou_of_stats(np.einsum('ru,utc->rtc', weights, r['tp']),
                                  weights @ r['gt_count'], weights @ r['pred_count'], free_label)
                  for r in (ray_a, ray_b))
        out['rayiou'] = ra - rb
    return out


def _interval(d: np.ndarray) -> dict:
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {'low': None, 'high': None, 'share_a_higher': None}
    return {'low': round(100 * float(np.percentile(d, 2.5)), 4),
            'high': round(100 * float(np.percentile(d, 97.5)), 4),
            'share_a_higher': round(float((d > 0).mean()), 4)}


def parse_args(argv=None):
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
    parser.add_argument('--dataset-config', default=str(eval_occ.DEFAULT_DATASET_CONFIG),
                        help='config with class_names and free_label')
    return parser.parse_args(argv)


def _frame_results(items, state, what: str):
    """{(scene, token): eval_occ's per-frame result ('hist' and, with RayIoU, 'ray')}."""
    from tqdm import tqdm
    eval_occ._init_worker(state)
    return {(scene, token): eval_occ._evaluate_one((scene, token, p, g))
            for scene, token, p, g in tqdm(items, desc=what, unit='frame')}


def _stack_units(results: dict, groups, field):
    """Per unit (a group of frame keys), the sum of ``field`` of its frames' results: the
    confusion matrices ('hist', [U, C, C]) or the ray counts ('ray', a dict of [U, ...])."""
    if field == 'hist':
        return np.stack([sum(results[k]['hist'] for k in g) for g in groups])
    return {name: np.stack([sum(results[k]['ray'][name] for k in g) for g in groups])
            for name in ('tp', 'gt_count', 'pred_count')}


def main(argv=None):
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
    state = dict(mask=args.mask, ray=want_ray, origins={}, info=args.info,
                 num_classes=len(class_names), free_label=free_label,
                 ignore_label=int(cfg.get('ignore_label', 255)),
                 pc_range=list(cfg.point_cloud_range) if want_ray else None,
                 voxel_size=list(cfg.voxel_size) if want_ray else None,
                 dirs=lidar_ray_directions() if want_ray else None)
    try:
        items_a = eval_occ.find_predictions(Path(args.pred_dir), data_root)
        items_b = eval_occ.find_predictions(Path(args.ref_dir), data_root)
        if want_ray:
            state['origins'] = ray_origins_by_token(load_infos(args.info))
            missing = [t for _, t, _, _ in items_a if t not in state['origins']]
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
        ra = _frame_results(items_a, state, 'A')
        rb = _frame_results(items_b, state, 'B')
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise SystemExit(f'compare_occ: {eval_occ._message(e)}')
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
        per_a, per_b = (eval_occ.per_class_rayiou_json(
            rayiou_from_stats(r['tp'].sum(0), r['gt_count'].sum(0), r['pred_count'].sum(0),
                              free_label)['per_class'], class_names, free_label)
            for r in (ray_a, ray_b))
        doc['per_class_rayiou'] = {n: {'a': per_a[n], 'b': per_b[n]} for n in per_a}
    if args.bootstrap:
        diffs = paired_bootstrap(units_a, units_b, free_label, args.bootstrap, args.seed,
                                 ray_a, ray_b)
        for key in score_keys:
            doc[key].update(_interval(diffs[key]))

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
        eval_occ._write_json_atomic(Path(args.json), doc)
        print(f'[compare_occ] written to {args.json}')
    return doc


if __name__ == '__main__':
    main()
