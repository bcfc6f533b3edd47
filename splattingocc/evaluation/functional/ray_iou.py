"""RayIoU, the ray-based occupancy metric of SparseOcc (Liu et al., "Fully Sparse 3D Occupancy
Prediction", ECCV 2024), computed on the CPU.

The definition, as in SparseOcc's ``loaders/ray_metrics.py`` and ``loaders/ego_pose_dataset.py``
(read for the facts; this is an independent implementation):

* Ray origins: the LiDAR origins of the keyframes of the frame's scene, expressed in the current
  ego frame, kept where |x| < 39 m and |y| < 39 m, at most 8 of them, chosen with
  ``round(linspace(0, n - 1, 8))`` over the kept ones in time order (see
  ``splattingocc.evaluation.ray_origins``).
* Ray directions: 39 pitch angles x 360 azimuths (1 degree steps from 0). The pitches are
  ``-(pi/2 - atan(k))`` for k = 1..10 (-45 deg to -5.71 deg), then continued with the last step
  (0.63 deg) while below 0.21 rad: up to +12.55 deg. 14,040 rays per origin.
* Every ray is cast through the ground-truth grid and through the predicted grid (free = empty,
  every other label = occupied) to the first occupied voxel; the depth is the distance at which the
  ray leaves that voxel (SparseOcc's caster records the exit distance). Rays whose ground-truth cast
  hits nothing are discarded; a predicted cast that hits nothing counts as free.
* Per class c and threshold t in (1, 2, 4) m over all rays of all frames: TP = rays with gt class
  c, predicted class c and |depth_gt - depth_pred| < t; IoU = TP / (N_gt(c) + N_pred(c) - TP), with
  N_gt(c) / N_pred(c) the numbers of kept rays whose gt / predicted first hit is class c.
* RayIoU@t = NaN-ignoring mean over the 17 non-free classes (``others`` included); RayIoU = mean of
  all three thresholds' class IoUs (equal to the mean of the three RayIoU@t).

Choice for ground-truth voxels labelled ``ignore_label`` (Occ3D has none; synthetic data may):
they stop the ray like an occupied voxel and such rays are discarded.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .occ_miou import check_prediction_labels
from .ray_casting import first_hits_multi

__all__ = [
    'RAY_IOU_THRESHOLDS', 'lidar_ray_directions', 'ray_first_hits', 'rayiou_frame_stats',
    'rayiou_from_stats'
]

RAY_IOU_THRESHOLDS = (1.0, 2.0, 4.0)  # metres (SparseOcc)


def lidar_ray_directions() -> np.ndarray:
    """SparseOcc's LiDAR-like unit ray directions ``[14040, 3]`` float64 (pitch-major order)."""
    pitches = [-(math.pi / 2 - math.atan(k)) for k in range(1, 11)]
    # nuScenes LIDAR_TOP vertical field of view reaches about +0.21 rad (SparseOcc's comment)
    while pitches[-1] < 0.21:
        pitches.append(2 * pitches[-1] - pitches[-2])
    pitch = np.asarray(pitches)[:, None]  # [P, 1]
    azimuth = np.deg2rad(np.arange(0, 360, 1, dtype=np.float64))[None, :]  # [1, 360]
    dirs = np.stack([
        np.cos(pitch) * np.cos(azimuth),
        np.cos(pitch) * np.sin(azimuth),
        np.broadcast_to(np.sin(pitch), (pitch.shape[0], azimuth.shape[1])),
    ], axis=-1)  # [P, 360, 3]
    return dirs.reshape(-1, 3)  # [P * 360, 3]


def ray_first_hits(pred: np.ndarray,  # [X, Y, Z] int
                   gt: np.ndarray,  # [X, Y, Z] int
                   origins: np.ndarray,  # [K, 3]
                   pc_range: Sequence[float],
                   voxel_size,
                   free_label: int = 17,
                   ignore_label: int = 255,
                   dirs: Optional[np.ndarray] = None):  # [D, 3]
    """Cast every (origin, direction) ray through both grids; keep the rays whose gt cast hits.

    Args:
        pred: [X, Y, Z] predicted classes (``free_label`` = empty).
        gt:   [X, Y, Z] ground-truth classes (``free_label`` = empty).
        origins: [K, 3] ray origins in metres (current ego frame); NaN rows are skipped.
        pc_range, voxel_size: the grid geometry.
        dirs: [D, 3] unit directions; default ``lidar_ray_directions()``.

    Returns:
        dict of 1-D arrays over the M kept rays: 'gt_label' int64, 'pred_label' int64 (free where
        the prediction hits nothing), 'gt_depth' float64, 'pred_depth' float64 (inf where none).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    origins = np.asarray(origins, dtype=np.float64)
    assert pred.shape == gt.shape and pred.ndim == 3, (pred.shape, gt.shape)
    assert origins.ndim == 2 and origins.shape[1] == 3, origins.shape
    if dirs is None:
        dirs = lidar_ray_directions()
    origins = origins[np.isfinite(origins).all(axis=1)]  # [K', 3]
    K, D = origins.shape[0], dirs.shape[0]
    all_o = np.repeat(origins, D, axis=0)  # [K' * D, 3]
    all_d = np.tile(dirs, (K, 1))  # [K' * D, 3]
    codes = (gt != free_label).view(np.uint8) | ((pred != free_label).view(np.uint8) << 1)
    idx, _, t_exit = first_hits_multi(codes, all_o, all_d, pc_range, voxel_size, num_bits=2)
    gt_ok = idx[0, :, 0] >= 0  # [R]
    gi = idx[0, gt_ok]  # [M, 3]
    gt_label = gt[gi[:, 0], gi[:, 1], gi[:, 2]].astype(np.int64)  # [M]
    keep = gt_label != ignore_label
    gi_rows = np.nonzero(gt_ok)[0][keep]
    gt_label = gt_label[keep]
    pi = idx[1, gi_rows]  # [M, 3]
    p_ok = pi[:, 0] >= 0
    pred_label = np.full(gi_rows.shape, free_label, dtype=np.int64)
    pred_label[p_ok] = pred[pi[p_ok, 0], pi[p_ok, 1], pi[p_ok, 2]]
    return {
        'gt_label': gt_label,
        'pred_label': pred_label,
        'gt_depth': t_exit[0, gi_rows],
        'pred_depth': t_exit[1, gi_rows],
    }


def rayiou_frame_stats(pred: np.ndarray,  # [X, Y, Z] int
                       gt: np.ndarray,  # [X, Y, Z] int
                       origins: np.ndarray,  # [K, 3]
                       pc_range: Sequence[float],
                       voxel_size,
                       num_classes: int = 18,
                       free_label: int = 17,
                       ignore_label: int = 255,
                       thresholds: Sequence[float] = RAY_IOU_THRESHOLDS,
                       dirs: Optional[np.ndarray] = None,  # [D, 3]
                       name: str = 'prediction') -> dict:
    """Per-frame RayIoU counts; sum them over frames, then call :func:`rayiou_from_stats`.

    Args:
        pred: [X, Y, Z] predicted classes in [0, num_classes).
        gt:   [X, Y, Z] ground-truth classes.
        origins: [K, 3] ray origins in metres (current ego frame), NaN rows skipped.
        thresholds: depth tolerances in metres.
        dirs: [D, 3] ray directions (default SparseOcc's 14,040).

    Returns:
        dict with 'tp' int64 [T, C], 'gt_count' int64 [C], 'pred_count' int64 [C], 'rays' int.
    """
    pred = np.asarray(pred)
    check_prediction_labels(pred, num_classes, name)
    h = ray_first_hits(pred, gt, origins, pc_range, voxel_size, free_label, ignore_label, dirs)
    C = int(num_classes)
    g, p = h['gt_label'], h['pred_label']
    if g.size and int(g.max()) >= C:
        raise ValueError(f'ground truth for {name}: class index {int(g.max())} out of range '
                         f'0..{C - 1}')
    err = np.abs(h['gt_depth'] - h['pred_depth'])  # [M] (inf where the prediction hits nothing)
    same = g == p
    tp = np.stack([np.bincount(g[same & (err < t)], minlength=C) for t in thresholds])  # [T, C]
    return {
        'tp': tp.astype(np.int64),
        'gt_count': np.bincount(g, minlength=C).astype(np.int64),
        'pred_count': np.bincount(p, minlength=C).astype(np.int64),
        'rays': int(g.size),
    }


def rayiou_from_stats(tp: np.ndarray,  # [T, C]
                      gt_count: np.ndarray,  # [C]
                      pred_count: np.ndarray,  # [C]
                      free_label: int = 17) -> dict:
    """RayIoU from counts summed over the dataset (fractions, NaN-ignoring class means).

    Returns:
        dict with 'per_class' float64 [T, C-1] (free removed), 'rayiou_at' float64 [T] (RayIoU@t)
        and 'rayiou' (float, mean over thresholds and classes).
    """
    tp = np.asarray(tp, dtype=np.float64)
    gt_count = np.asarray(gt_count, dtype=np.float64)
    pred_count = np.asarray(pred_count, dtype=np.float64)
    assert tp.ndim == 2 and gt_count.shape == pred_count.shape == tp.shape[1:], (
        tp.shape, gt_count.shape, pred_count.shape)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = tp / ((gt_count + pred_count)[None] - tp)  # [T, C]
    keep = np.ones(tp.shape[1], dtype=bool)
    keep[free_label] = False
    iou = iou[:, keep]  # [T, C-1]

    def _nanmean(x):
        return float(np.nanmean(x)) if np.isfinite(x).any() else float('nan')

    return {
        'per_class': iou,
        'rayiou_at': np.array([_nanmean(row) for row in iou]),
        'rayiou': _nanmean(iou),
    }
