"""Scoring folders of prediction files offline, as ``tools/eval_occ.py`` does.

Predictions: ``DIR/<scene_name>/<sample_token>/pred.npz`` (``tools/test.py --dump-dir``), or
SparseOcc-style flat files ``DIR/<token>.npz``; ground truth: ``DATA/gts/<scene>/<token>/
labels.npz``. Each frame contributes its confusion matrices (and, with RayIoU, its ray counts)
through :func:`splattingocc.evaluation.metrics.occ_metric.occ_frame_result`, and with AP its
score histograms (``metrics.score_stats.ap_frame_result``, from the float16 'occupancy' and
'class_probs' of a ``--dump-scores`` dump); the dataset's scores are those of the summed counts
(Occ3D's protocol). Used by ``tools/eval_occ.py``,
``tools/analysis/compare_occ.py`` and ``tools/analysis/baselines.py``.

Errors a user can cause (a missing file, a wrong shape, a sample missing from the info pkl) are
``FileNotFoundError`` / ``ValueError`` / ``KeyError`` naming the file, or :class:`UserError`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from .dump import PRED_FILENAME, load_occ_gt, load_prediction, load_prediction_scores
from .functional.threshold_sweep import DEFAULT_THRESHOLDS
from .functional.ray_iou import lidar_ray_directions
from .metrics.occ_metric import format_occ_table, occ_frame_result, summarize_occ_results
from .metrics.score_stats import ap_frame_result, summarize_score_stats
from .ray_origins import info_scene_name, load_infos, ray_origins_by_token

__all__ = [
    'find_predictions', 'check_prediction_set', 'scoring_state', 'init_worker', 'score_frame',
    'score_frames',
    'evaluate_folder', 'scores_json', 'per_class_rayiou_json', 'percent', 'error_message'
]

#: one frame to score: (scene name, sample token, prediction file, ground-truth labels.npz)
Item = Tuple[str, str, Path, Path]


def find_predictions(pred_dir: Path, data_root: Path) -> List[Item]:
    """[(scene, token, pred_path, gt_path)], sorted, for every prediction file in ``pred_dir``.

    A sample token found twice (in two scene folders, or nested and flat) is a
    :class:`UserError`: one of the two would be scored twice or the other not at all.
    """
    pred_dir, data_root = Path(pred_dir), Path(data_root)
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
    paths: dict = {}
    for _, token, path, _ in found:
        paths.setdefault(token, []).append(path)
    twice = {t: ps for t, ps in paths.items() if len(ps) > 1}
    if twice:
        token, ps = sorted(twice.items())[0]
        several = 'sample tokens have' if len(twice) > 1 else 'sample token has'
        raise UserError(f'{pred_dir}: {len(twice)} {several} more than one prediction '
                        f'(e.g. {token}: {", ".join(map(str, ps))}); keep one file per sample')
    return found


def check_prediction_set(items: Sequence[Item], data_root: Path, infos: Optional[list] = None,
                         info: Optional[str] = None, allow_missing: bool = False) -> int:
    """The number of frames the predictions should cover, checked against them.

    Expected frames: those of ``infos`` (the split's info file, ``--info``), else those with
    ground truth in the scenes that have predictions (nuScenes splits are made of whole scenes,
    so a missing frame of a predicted scene is missing from the split too; whole missing scenes
    need ``--info`` to be seen).

    Raises:
        UserError: a prediction of a frame that is not expected (another split, or no ground
            truth), one in another scene's folder than its info says, or (unless
            ``allow_missing``) expected frames without a prediction; the message gives the
            counts and one example.
    """
    data_root = Path(data_root)
    if infos is not None:
        expected = {str(i['token']): info_scene_name(i) for i in infos if 'token' in i}
        source = f'the {len(expected)} frames of --info {info}'
    else:
        scenes = sorted({scene for scene, _, _, _ in items})
        expected = {g.parent.name: scene for scene in scenes
                    for g in (data_root / 'gts' / scene).glob('*/labels.npz')}
        source = (f'the {len(expected)} frames with ground truth in {data_root}/gts of the '
                  f'{len(scenes)} scenes predicted')
    extra = [(path, gt) for _, token, path, gt in items if token not in expected]
    if extra:
        path, gt = extra[0]
        why = '' if infos is not None else f' ({gt} does not exist)'
        raise UserError(f'{len(extra)} of {len(items)} predictions are not among {source} (e.g. '
                        f'{path}{why}): remove them, or check --data-root / pass the --info of '
                        'their split')
    moved = [(scene, token, path) for scene, token, path, _ in items if expected[token] != scene]
    if moved:
        scene, token, path = moved[0]
        raise UserError(f'{len(moved)} predictions lie in another scene folder than --info {info} '
                        f'says (e.g. {path}: sample {token} belongs to {expected[token]}); '
                        'dump them again (tools/test.py --dump-dir)')
    missing = sorted(set(expected) - {token for _, token, _, _ in items})
    if missing and not allow_missing:
        token = missing[0]
        raise UserError(f'{len(missing)} of {source} have no prediction (e.g. '
                        f'{expected[token]}/{token}), so the scores would be those of another '
                        f'set: dump every frame (tools/test.py --dump-dir), or pass '
                        f'--allow-missing to score the {len(items)} present only')
    return len(expected)


def scoring_state(dataset_cfg, mask: str, origins: Optional[dict] = None,
                  info: Optional[str] = None, ap: bool = False) -> dict:
    """Everything :func:`score_frame` needs, from a dataset config (``class_names``,
    ``free_label``, optional ``ignore_label`` (255) and, for RayIoU, ``point_cloud_range`` and
    ``voxel_size``).

    Args:
        mask: the voxels mIoU counts: 'camera', 'lidar' (the ground truth's ``mask_<mask>``) or
            'none'.
        origins: {sample token: [K, 3] ray origins} (``ray_origins_by_token``): RayIoU too;
            None: mIoU only.
        info: the info pkl the origins come from (named in errors).
        ap: also the average-precision histograms (needs dumps with scores).
    """
    ray = origins is not None
    return dict(mask=mask, ray=ray, origins=origins or {}, info=info, ap=bool(ap),
                num_classes=len(dataset_cfg.class_names), free_label=int(dataset_cfg.free_label),
                ignore_label=int(dataset_cfg.get('ignore_label', 255)),
                pc_range=list(dataset_cfg.point_cloud_range) if ray else None,
                voxel_size=list(dataset_cfg.voxel_size) if ray else None,
                dirs=lidar_ray_directions() if ray else None)


_WORKER = {}


def init_worker(state: dict) -> None:
    """Install a :func:`scoring_state` for :func:`score_frame` (also a pool initializer)."""
    _WORKER.clear()
    _WORKER.update(state)


def score_frame(item: Item) -> dict:
    """One frame's counts (``occ_frame_result``: 'hist' [C, C], 'hist_nomask' [C, C], with
    RayIoU 'ray') and its 'token', under the state of :func:`init_worker`."""
    scene, token, pred_path, gt_path = item
    w = _WORKER
    if not Path(gt_path).is_file():
        raise FileNotFoundError(f'ground truth missing for {pred_path}: {gt_path} does not exist '
                                '(check --data-root)')
    gt = load_occ_gt(gt_path)
    sem = gt['semantics']
    bad = (sem >= w['num_classes']) & (sem != w['ignore_label'])
    if sem.size and (sem.min() < 0 or bad.any()):
        value = int(sem.min()) if sem.min() < 0 else int(sem[bad].flat[0])
        raise ValueError(f'{gt_path}: semantics holds class {value}, expected 0..'
                         f"{w['num_classes'] - 1} or {w['ignore_label']} (ignored); download or "
                         'generate the ground truth again, or check --dataset-config')
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
    if w.get('ap'):
        scores = load_prediction_scores(pred_path)
        if scores['occupancy'] is None or scores['class_probs'] is None:
            raise ValueError(f"{pred_path}: no 'occupancy' / 'class_probs' arrays, which --metric "
                             'ap needs; dump the predictions with tools/test.py --dump-dir DIR '
                             '--dump-scores')
        result.update(ap_frame_result(scores, gt['semantics'], mask, w['free_label'],
                                      DEFAULT_THRESHOLDS, w['ignore_label'], str(pred_path)))
    result['token'] = token
    return result


def score_frames(items: Sequence[Item], state: dict, workers: int = 1,
                 desc: str = 'eval') -> List[dict]:
    """:func:`score_frame` of every item (in order), with a progress bar; ``workers`` > 1:
    that many processes (``splattingocc.parallel``: never a fork of this process)."""
    from tqdm import tqdm
    out = []
    # the bar is closed (its line ended) also when a frame raises, so an error message that
    # follows starts on a line of its own
    with tqdm(total=len(items), desc=desc, unit='frame') as bar:
        if workers > 1:
            from ..parallel import process_pool
            with process_pool(workers, init_worker, (state, )) as pool:
                for result in pool.imap(score_frame, items, chunksize=4):
                    out.append(result)
                    bar.update()
            return out
        init_worker(state)
        for item in items:
            out.append(score_frame(item))
            bar.update()
    return out


def evaluate_folder(pred_dir, data_root, dataset_cfg, mask: str = 'camera', ray: bool = False,
                    info: Optional[str] = None, workers: int = 1,
                    allow_missing: bool = False, ap: bool = False) -> dict:
    """Score every prediction of ``pred_dir`` (``tools/eval_occ.py``): checks the set of
    predictions (:func:`check_prediction_set`, against ``info`` when given), prints the scored
    and expected frame counts, the progress and the per-class table; with ``ap`` also the
    occupancy and per-class average precision (predictions with scores); returns
    :func:`scores_json` plus 'mask' and 'frames_expected'.

    Raises:
        UserError: ``ray`` without ``info``; predictions not in the expected set, duplicates,
            or expected frames without a prediction (unless ``allow_missing``).
        FileNotFoundError, ValueError, KeyError: a missing, malformed or mismatched file (the
            message names it; :func:`error_message` prints it).
    """
    pred_dir = Path(pred_dir)
    class_names, free_label = list(dataset_cfg.class_names), int(dataset_cfg.free_label)
    if ray and info is None:
        raise UserError('--metric ray needs --info PKL (the info file with the poses of '
                        'every keyframe of the evaluated scenes)')
    infos = load_infos(info) if info is not None else None
    items = find_predictions(pred_dir, Path(data_root))
    expected = check_prediction_set(items, Path(data_root), infos, info, allow_missing)
    origins = ray_origins_by_token(infos) if ray else None
    state = scoring_state(dataset_cfg, mask, origins, info, ap=ap)
    metrics = '+'.join(['miou'] + (['ray'] if ray else []) + (['ap'] if ap else []))
    print(f'[eval_occ] frames: {len(items)} scored of {expected} expected '
          f"({'--info ' + str(info) if info else 'ground truth of the predicted scenes'}) from "
          f'{pred_dir}; mask={mask}; metrics={metrics}')
    results = score_frames(items, state, workers)
    summary = summarize_occ_results(results, class_names, free_label)
    if ap:
        summary['ap'] = summarize_score_stats(results, free_label)['ap']
    print(format_occ_table(summary, class_names, free_label))
    doc = scores_json(summary, class_names, free_label)
    doc['frames_expected'] = expected
    doc['mask'] = mask
    return doc


def error_message(e: BaseException) -> str:
    """The message of an error, as written (``str(KeyError('x'))`` would quote it)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def percent(v) -> Optional[float]:
    """A fraction in percent, rounded to 4 places; None for None, NaN or infinity."""
    return None if v is None or not math.isfinite(v) else round(100.0 * float(v), 4)


def per_class_rayiou_json(per_class: np.ndarray,  # [T, C - 1]
                          class_names: Sequence[str], free_label: int) -> dict:
    """{class name: RayIoU in percent over the thresholds, null where never seen} from the
    [T, C - 1] 'per_class' array of ``rayiou_from_stats`` (free left out)."""
    names = [n for i, n in enumerate(class_names) if i != free_label]
    return {n: percent(float(np.nanmean(per_class[:, k])))
            if np.isfinite(per_class[:, k]).any() else None for k, n in enumerate(names)}


def scores_json(summary: dict, class_names: Sequence[str], free_label: int) -> dict:
    """The JSON document of ``tools/eval_occ.py`` from ``summarize_occ_results`` (percent; null
    where undefined): frames, miou, per_class_iou, geometry_iou, miou_no_mask, rayiou,
    rayiou_1m, rayiou_2m, rayiou_4m and, with RayIoU, per_class_rayiou; with AP (a summary
    'ap'), occupancy_ap, map and per_class_ap."""
    ray = summary.get('ray')
    out = {
        'frames': int(summary['frames']),
        'miou': percent(summary['miou']),
        'per_class_iou': {n: percent(summary['iou'][i]) for i, n in enumerate(class_names)
                          if i != free_label},
        'geometry_iou': percent(summary['geometry_iou']),
        'miou_no_mask': percent(summary.get('miou_nomask')),
        'rayiou': percent(ray['rayiou']) if ray else None,
    }
    for j, t in enumerate(ray['thresholds'] if ray else (1, 2, 4)):
        out[f'rayiou_{t:g}m'] = percent(ray['rayiou_at'][j]) if ray else None
    if ray:
        out['per_class_rayiou'] = per_class_rayiou_json(ray['per_class'], class_names, free_label)
    ap = summary.get('ap')
    if ap is not None:  # average precision (percent), from dumps with scores
        out['occupancy_ap'] = percent(ap['occupancy_ap'])
        out['map'] = percent(ap['map'])
        names = [n for i, n in enumerate(class_names) if i != free_label]
        out['per_class_ap'] = {n: percent(v) for n, v in zip(names, ap['class_ap'])}
    return out

