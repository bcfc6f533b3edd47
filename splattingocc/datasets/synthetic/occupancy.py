"""Occ3D ground truth of the analytic world: voxel semantics and ray-traversal visibility masks.

Semantics: a voxel is occupied by a primitive when the primitive, inflated by half the sub-sample
spacing, contains any of ``sub**3`` regular sub-points of the voxel (so thin parts such as poles and
bicycle frames still occupy the voxels they pass through, as LiDAR points would in the real Occ3D
pipeline); the primitive covering the largest fraction of sub-points gives the class, ties going to
the primitive listed later (objects after scenery). The ground is one layer: the voxels whose
z-range contains the ground height take the ground class at their centre, with weight 0.5.

Masks: ``traverse_visibility`` walks rays voxel by voxel (Amanatides-Woo, vectorised over rays) from
a sensor origin and marks every voxel it passes up to and including the first occupied voxel or the
voxel holding the ray's own hit point, whichever comes first.

Grid geometry (range, voxel size, shape) and the class table are arguments, read by the caller from
configs/_base_/datasets/occ3d_nuscenes.py.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import binary_dilation

from .raycast import Primitives, inside_unit


def _grid(pc_range, voxel_size, occ_size):
    lo = np.asarray(pc_range[:3], float)
    hi = np.asarray(pc_range[3:], float)
    vs = np.asarray(voxel_size, float)
    n = np.asarray(occ_size, np.int64)
    assert lo.shape == vs.shape == n.shape == (3,), (pc_range, voxel_size, occ_size)
    if not np.allclose(lo + vs * n, hi, atol=1e-6):
        raise ValueError(f'point_cloud_range {list(pc_range)}, voxel_size {list(voxel_size)} and '
                         f'occ_size {list(occ_size)} disagree (configs/_base_/datasets)')
    return lo, vs, n


def voxelize(prims: Primitives,
             fine_to_occ: np.ndarray,  # [32]
             ground_fine: Callable[[np.ndarray], np.ndarray], ground_height: float,
             pc_range: Sequence[float], voxel_size: Sequence[float], occ_size: Sequence[int],
             free_label: int, sub: int = 3) -> np.ndarray:
    """Occ3D semantics of the primitives and the ground in the grid's (ego) frame.

    Args:
        prims: primitives in the ego frame of the grid.
        fine_to_occ: [32] Occ3D class of each lidarseg fine index.
        ground_fine: maps ego-frame xy [N, 2] to the fine class of the ground there [N].
        ground_height: z of the ground plane in the ego frame.
        pc_range, voxel_size, occ_size: grid geometry (from the dataset config).
        free_label: the label of empty voxels (17 for Occ3D-nuScenes).
        sub: sub-points per voxel axis.

    Returns:
        semantics: uint8 [X, Y, Z].
    """
    lo, vs, n = _grid(pc_range, voxel_size, occ_size)
    assert fine_to_occ.ndim == 1 and int(prims.fine.max(initial=0)) < len(fine_to_occ)
    X, Y, Z = (int(v) for v in n)
    score = np.zeros((X, Y, Z), np.float32)
    label = np.full((X, Y, Z), free_label, np.uint8)

    # ground layer
    kg = int(np.floor((ground_height - lo[2]) / vs[2]))
    if 0 <= kg < Z:
        cx = lo[0] + vs[0] * (np.arange(X) + 0.5)
        cy = lo[1] + vs[1] * (np.arange(Y) + 0.5)
        xy = np.stack(np.meshgrid(cx, cy, indexing='ij'), -1).reshape(-1, 2)  # [X * Y, 2]
        label[:, :, kg] = fine_to_occ[ground_fine(xy)].reshape(X, Y).astype(np.uint8)
        score[:, :, kg] = 0.5

    offs = (np.arange(sub) + 0.5) / sub - 0.5  # sub-point offsets in voxel units
    sub_pts = np.stack(np.meshgrid(offs, offs, offs, indexing='ij'), -1).reshape(-1, 3) * vs
    inflate = 0.5 * vs.min() / sub
    corners = prims.corners()  # [P, 8, 3]
    for p in range(len(prims)):
        c_min = corners[p].min(0) - inflate
        c_max = corners[p].max(0) + inflate
        i0 = np.maximum(np.floor((c_min - lo) / vs).astype(np.int64), 0)
        i1 = np.minimum(np.floor((c_max - lo) / vs).astype(np.int64) + 1, n)
        if np.any(i1 <= i0):
            continue
        kind = int(prims.kind[p])
        R, c = prims.rot[p], prims.center[p]
        half = prims.half[p] + inflate
        cls = np.uint8(fine_to_occ[prims.fine[p]])
        shape = tuple(int(v) for v in i1 - i0)
        # local coordinates of a world point x: R^T (x - c) = sum_a x_a R[a, :] - R^T c
        base = -(c @ R)

        def local(gx, gy, gz):
            q = (gx[:, None, None, None] * R[0] + gy[None, :, None, None] * R[1]
                 + gz[None, None, :, None] * R[2] + base)
            return q / half  # [nx, ny, nz, 3] in unit-shape coordinates

        if np.min(prims.half[p]) >= 1.5 * vs.max():
            # big primitive: classify voxels by their 8 corners, sub-sample only near the surface
            g = [lo[a] + vs[a] * np.arange(i0[a], i1[a] + 1) for a in range(3)]
            cin = inside_unit(kind, local(*g))  # [nx + 1, ny + 1, nz + 1]
            cnt = sum(cin[dx:dx + shape[0], dy:dy + shape[1], dz:dz + shape[2]].astype(np.int8)
                      for dx in (0, 1) for dy in (0, 1) for dz in (0, 1))
            full = cnt == 8
            cand = binary_dilation(cnt > 0, np.ones((3, 3, 3), bool)) & ~full
        else:
            full = np.zeros(shape, bool)
            cand = np.ones(shape, bool)
        frac = full.astype(np.float32)
        ci = np.nonzero(cand)
        if len(ci[0]):
            centres = lo + vs * (np.stack(ci, 1) + i0 + 0.5)  # [K, 3]
            pts = centres[:, None, :] + sub_pts[None]  # [K, S, 3]
            q = ((pts - c) @ R) / half
            frac[ci] = inside_unit(kind, q).mean(1)
        region = (slice(i0[0], i1[0]), slice(i0[1], i1[1]), slice(i0[2], i1[2]))
        sc = score[region]
        upd = (frac > 0) & (frac >= sc)
        sc[upd] = frac[upd]
        label[region][upd] = cls
    return label


def traverse_visibility(occupied: np.ndarray,  # [X, Y, Z] bool
                        origins: np.ndarray,  # [N, 3] or [3]
                        dirs: np.ndarray,  # [N, 3]
                        t_stop: np.ndarray,  # [N]
                        pc_range: Sequence[float],
                        voxel_size: Sequence[float]) -> np.ndarray:
    """Voxels seen along rays: from each origin up to the first occupied voxel or the ray's hit.

    Amanatides-Woo traversal, vectorised over rays. Each ray keeps the flat index of its voxel and
    the distances to its next x / y / z voxel boundaries; a ray ends after the voxel that is
    occupied, holds its hit (``t_stop``) or lies on the grid's exit.

    Args:
        occupied: bool [X, Y, Z].
        origins: [N, 3] or [3] ray origins in the grid frame.
        dirs: [N, 3] unit directions.
        t_stop: [N] distance of each ray's own hit (inf: none); the voxel holding it is the last.
        pc_range, voxel_size: grid geometry.

    Returns:
        visited: bool [X, Y, Z].
    """
    lo, vs, n = _grid(pc_range, voxel_size, occupied.shape)
    assert dirs.ndim == 2 and dirs.shape[1] == 3 and t_stop.shape == (len(dirs),), (dirs.shape,
                                                                                     t_stop.shape)
    hi = lo + vs * n
    o = np.array(np.broadcast_to(origins, dirs.shape), float)
    d = np.asarray(dirs, float)
    n_vox = int(np.prod(n))
    visited = np.zeros(n_vox + 1, bool)  # the extra last slot absorbs finished rays
    occ_flat = np.append(occupied.reshape(-1), True)
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = 1.0 / d
        t1, t2 = (lo - o) * inv, (hi - o) * inv
        t_in = np.fmax.reduce(np.fmin(t1, t2), axis=1)
        t_out = np.fmin.reduce(np.fmax(t1, t2), axis=1)
    t_in = np.maximum(t_in, 0.0)
    t_stop = np.asarray(t_stop, float)
    ok = (t_in < t_out) & (t_in <= t_stop)
    o, d, t_in = o[ok], d[ok], t_in[ok]
    # a ray ends in the voxel where it reaches its hit or leaves the grid
    t_end = np.minimum(t_stop[ok], t_out[ok] - 1e-7)
    if not len(o):
        return visited[:-1].reshape(occupied.shape)
    p = o + d * t_in[:, None]
    idx = np.clip(np.floor((p - lo) / vs).astype(np.int64), 0, n - 1)  # [M, 3]
    step = np.sign(d).astype(np.int64)
    strides = np.array([n[1] * n[2], n[2], 1], np.int64)
    with np.errstate(divide='ignore', invalid='ignore'):
        boundary = lo + vs * (idx + (step > 0))
        t_max = np.where(step != 0, (boundary - o) / d, np.inf)  # [M, 3]
        t_delta = np.where(step != 0, vs / np.abs(d), np.inf)
    d_flat = step * strides  # [M, 3] flat-index change of a step along each axis
    flat = idx @ strides
    rows = np.arange(len(flat))
    n_done = 0
    while len(flat):
        visited[flat] = True
        axis = np.argmin(t_max, axis=1)
        t_exit = t_max[rows, axis]
        done = occ_flat[flat] | (t_exit >= t_end)
        flat = np.where(done, n_vox, flat + d_flat[rows, axis])
        t_max[rows, axis] = t_exit + t_delta[rows, axis]
        t_end = np.where(done, -np.inf, t_end)  # finished rays stay done
        n_done = int(np.count_nonzero(flat == n_vox))
        if n_done > 0.3 * len(flat):  # compact
            keep = flat != n_vox
            flat, t_max, t_delta, d_flat, t_end = (flat[keep], t_max[keep], t_delta[keep],
                                                   d_flat[keep], t_end[keep])
            rows = np.arange(len(flat))
    return visited[:-1].reshape(occupied.shape)
