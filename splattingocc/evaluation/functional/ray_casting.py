"""Exact first-hit ray casting through a voxel grid, vectorised over rays (numpy, CPU).

The traversal is the voxel walk of Amanatides & Woo ("A fast voxel traversal algorithm for ray
tracing", Eurographics 1987): a ray visits, in order, every voxel it passes through; at each step
it moves into the neighbour across the nearest voxel face. All rays advance together, one voxel per
iteration; rays that have hit (or left the grid) stop, and are dropped from the arrays in batches
(when a quarter of them have stopped), so the cost is about the total number of voxels visited.

Conventions: the grid covers ``pc_range = (x_min, y_min, z_min, x_max, y_max, z_max)`` with voxel
``(i, j, k)`` spanning ``[min + size * index, min + size * (index + 1))`` on each axis (the Occ3D
convention, centre at ``min + size * (index + 0.5)``); distances are metres along the ray
(directions are unit vectors). A ray that starts inside an occupied voxel hits it at distance 0.
The voxel a ray starts in is the one that contains its origin under that half-open convention,
``floor((origin - min) / size)``, whatever the direction: an origin on the face between two voxels
starts in the upper one even when the ray moves down, and leaves it at distance 0 (SparseOcc's
rule, ``int(origin)`` in ``lib/dvr/dvr.cu``; nuScenes' LiDAR at ego y = 0.0 lies on the face
between rows 99 and 100 of Occ3D's grid, so this decides whether the rays moving in -y see row 100).
A ray from outside the grid starts in the voxel it enters. On an exact tie between two face
crossings the walk steps in the order y before x and z before x and y (the order of SparseOcc's
ray caster, ``lib/dvr/dvr.cu``), so the visited voxels match.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ['first_hit', 'first_hits_multi']

_BIG = 1e30  # "never" for axes the ray does not move along (finite: BIG * 0 == 0)


def _check_grid(shape: Sequence[int], pc_range: Sequence[float],
                voxel_size) -> Tuple[np.ndarray, np.ndarray]:
    if len(pc_range) != 6:
        raise ValueError('pc_range must have 6 numbers (x_min, y_min, z_min, x_max, y_max, '
                         f'z_max), got {pc_range}')
    lo = np.asarray(pc_range[:3], dtype=np.float64)
    hi = np.asarray(pc_range[3:], dtype=np.float64)
    vs = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
    if np.any(vs <= 0):
        raise ValueError(f'voxel_size must be positive, got {voxel_size}')
    n = (hi - lo) / vs
    if not np.allclose(n, np.asarray(shape, dtype=np.float64), atol=1e-4):
        raise ValueError(f'grid shape {tuple(shape)} does not match pc_range {list(pc_range)} / '
                         f'voxel_size {vs.tolist()} (= {n.tolist()} voxels)')
    return lo, vs


def first_hits_multi(codes: np.ndarray,  # [X, Y, Z] uint8 bit mask
                     origins: np.ndarray,  # [R, 3]
                     dirs: np.ndarray,  # [R, 3]
                     pc_range: Sequence[float],
                     voxel_size,
                     num_bits: int = 1,
                     max_dist: Optional[float] = None):
    """First voxel along each ray whose code has bit b set, for every bit b < num_bits at once.

    Casting several occupancy grids with one walk (bit b of ``codes`` = grid b occupied) costs
    little more than casting one, since the rays and hence the visited voxels are the same.

    Args:
        codes: [X, Y, Z] uint8, bit b set where grid b is occupied.
        origins: [R, 3] ray origins in metres (inside or outside the grid).
        dirs: [R, 3] unit ray directions.
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the grid in metres.
        voxel_size: voxel edge in metres, a number or 3 numbers.
        num_bits: how many grids are encoded in ``codes`` (1..7; bit 7 is reserved).
        max_dist: hits whose entry distance exceeds this are ignored (None: no limit).

    Returns:
        index: [num_bits, R, 3] int64 voxel index of the first hit, -1 where none.
        entry: [num_bits, R] float64 distance at which the ray enters that voxel (0 if it starts
            inside it), inf where none.
        exit:  [num_bits, R] float64 distance at which the ray leaves that voxel, inf where none.
    """
    codes = np.asarray(codes)
    origins = np.asarray(origins, dtype=np.float64)
    dirs = np.asarray(dirs, dtype=np.float64)
    assert codes.ndim == 3, codes.shape
    assert origins.ndim == 2 and origins.shape[1] == 3, origins.shape
    assert dirs.shape == origins.shape, (dirs.shape, origins.shape)
    assert 1 <= num_bits <= 7, num_bits
    if codes.dtype != np.uint8:
        codes = codes.astype(np.uint8)
    lo, vs = _check_grid(codes.shape, pc_range, voxel_size)
    R = origins.shape[0]
    NX, NY, NZ = codes.shape
    shape = np.array([NX, NY, NZ], dtype=np.float64)
    out_idx = np.full((num_bits, R, 3), -1, dtype=np.int64)
    out_in = np.full((num_bits, R), np.inf)
    out_out = np.full((num_bits, R), np.inf)
    if R == 0:
        return out_idx, out_in, out_out
    # Component-major [3, R] arrays from here on: every per-axis operation and every reduction
    # over the axes runs on contiguous rows.
    dirs_t = np.ascontiguousarray(dirs.T)  # [3, R]
    norms = np.sqrt(dirs_t[0] * dirs_t[0] + dirs_t[1] * dirs_t[1] + dirs_t[2] * dirs_t[2])
    if not np.all(np.abs(norms - 1.0) < 1e-4):
        raise ValueError('dirs must be unit vectors (normalise them first); norms range '
                         f'{norms.min():.6f}..{norms.max():.6f}')
    limit = np.inf if max_dist is None else float(max_dist)

    # Voxel coordinates: p(t) = o + t * d, t in metres along the ray, one unit = one voxel.
    lo3, vs3, shape3 = lo[:, None], vs[:, None], shape[:, None]  # [3, 1]
    o = (origins.T - lo3) / vs3  # [3, R]
    d = dirs_t / vs3  # [3, R] voxels per metre
    moving = d != 0  # [3, R]
    safe_d = np.where(moving, d, 1.0)
    # Slab test against the box [0, n) on every axis.
    t1 = np.where(moving, (0.0 - o) / safe_d, -np.inf)  # [3, R]
    t2 = np.where(moving, (shape3 - o) / safe_d, np.inf)  # [3, R]
    inside_axis = (o >= 0) & (o < shape3)  # [3, R]
    t_lo = np.where(moving, np.minimum(t1, t2), np.where(inside_axis, -np.inf, np.inf))
    t_hi = np.where(moving, np.maximum(t1, t2), np.where(inside_axis, np.inf, -np.inf))
    t_in = np.maximum(np.maximum(np.maximum(t_lo[0], t_lo[1]), t_lo[2]), 0.0)  # [R]
    t_out = np.minimum(np.minimum(t_hi[0], t_hi[1]), t_hi[2])  # [R]
    # an origin inside the grid (half-open voxels) starts there, even on the grid's lower faces
    # where the slab test sees an empty interval for rays leaving through them
    starts_inside = inside_axis[0] & inside_axis[1] & inside_axis[2]  # [R]
    t_in = np.where(starts_inside, 0.0, t_in)
    live = (starts_inside | (t_in < t_out)) & (t_in <= limit)  # [R]

    if live.all():
        rid = np.arange(R)  # [A]
        inside0 = starts_inside
    else:
        rid = np.nonzero(live)[0]  # [A]
        o, d, t_in, inside0 = o[:, rid], d[:, rid], t_in[rid], starts_inside[rid]
    p = o + t_in * d  # [3, A] entry point
    # The starting voxel: an origin inside the grid starts in the voxel that contains it,
    # floor(o), whatever the direction (module docstring: SparseOcc's rule; a ray that starts on
    # a face and moves down leaves that voxel at distance 0). A ray from outside starts in the
    # voxel it moves into from the entry point p (ceil - 1 when moving backwards).
    v = np.where(inside0 | (d >= 0), np.floor(p), np.ceil(p) - 1)  # [3, A]
    v = np.clip(v, 0, shape3 - 1).astype(np.int64)  # [3, A]
    step = np.where(d >= 0, 1, -1).astype(np.int64)  # [3, A]
    moving = d != 0
    safe_d = np.where(moving, d, 1.0)
    t_max = np.where(moving, (v + (step > 0) - o) / safe_d, _BIG)  # [3, A] next face crossing
    t_max += 0.0  # -0.0 (an origin on a face, moving down) -> 0.0
    t_delta = np.where(moving, np.abs(1.0 / safe_d), _BIG)  # [3, A]

    # The walk runs on the grid padded by one voxel of a "border" code (bit 7): a ray stops when
    # it steps onto the border, so no per-step bounds test is needed. The current voxel is kept
    # as a flat index into the padded grid; a step adds that axis' signed stride.
    PX, PY, PZ = NX + 2, NY + 2, NZ + 2
    border = np.uint8(0x80)
    padded = np.full((PX, PY, PZ), border, dtype=np.uint8)
    padded[1:-1, 1:-1, 1:-1] = codes & np.uint8((1 << num_bits) - 1)
    flat_codes = padded.reshape(-1)
    stride = np.array([PY * PZ, PZ, 1], dtype=np.int64)
    flat = (v[0] + 1) * stride[0] + (v[1] + 1) * stride[1] + (v[2] + 1)  # [A]
    # Per-ray state, one row per quantity, so that a compaction is a few ``take``s:
    # M [3, A] distance of the next x / y / z face crossing, Dt [3, A] distance between two
    # crossings on each axis, FS [A, 3] signed flat-index stride of a step along x / y / z (ray
    # major: the stride of the axis taken is gathered at 3 * ray + axis).
    A = rid.size
    M = t_max  # [3, A]
    Dt = t_delta  # [3, A]
    FS = np.ascontiguousarray((step * stride[:, None]).T)  # [A, 3]
    t_enter = t_in.copy()  # [A] distance at which the current voxel was entered
    full = np.uint8((1 << num_bits) - 1)
    # [A] bits still looking for a hit, plus the border bit while the ray is alive: a ray with
    # an event (a first hit, or stepping onto the border) has a non-zero ``code & pending``
    pending = np.full(A, full | border, dtype=np.uint8)
    finite_limit = np.isfinite(limit)
    alive, dead = A, 0
    hits = []  # per step with hits: (ray, bits hit, flat voxel, entry, exit) arrays
    bufs = None

    while alive:
        if bufs is None or bufs[0].size != A:  # scratch arrays of the current length
            bufs = (np.empty(A, np.uint8), np.empty(A, bool), np.empty(A), np.empty(A, bool),
                    np.empty((3, A), bool), np.empty((3, A)), np.empty(A, np.int64),
                    np.arange(0, 3 * A, 3, dtype=np.int64), np.empty(A, np.uint8))
        c, has_ev, myz, ay, S, ftmp, pos, lane3, axis = bufs
        code = flat_codes.take(flat)  # [A]
        if finite_limit:
            code = np.where(t_enter <= limit, code, border)  # beyond max_dist: stop, no hit
        np.bitwise_and(code, pending, out=c)  # [A] first hits (bits < num_bits) or the border
        np.not_equal(c, 0, out=has_ev)
        ev = np.flatnonzero(has_ev)  # [E] rays with an event (a few per step; bool: fast)
        if ev.size:
            e_c = c[ev]  # [E]
            hit = np.flatnonzero(e_c & full)  # [H] positions in ev with a first hit
            if hit.size:
                h = ev[hit]  # [H]
                h_exit = np.minimum(np.minimum(M[0].take(h), M[1].take(h)), M[2].take(h))
                hits.append((rid.take(h), e_c.take(hit), flat.take(h), t_enter.take(h), h_exit))
            e_p = pending[ev] & ~e_c  # [E]
            # finished: every bit found, or on the border (its bit just cleared)
            done = (e_p & full == 0) | (e_p & border == 0)  # [E]
            e_p[done] = 0
            pending[ev] = e_p
            d_rows = ev[done]
            if d_rows.size:
                FS[d_rows] = 0  # a finished ray stays where it is, without further events
                alive -= d_rows.size
                dead += d_rows.size
                if not alive:
                    break
                if dead * 4 > A:  # compact once a quarter of the rays are finished
                    k = np.flatnonzero(pending)  # [alive]
                    M, Dt, FS = M.take(k, axis=1), Dt.take(k, axis=1), FS.take(k, axis=0)
                    rid, pending, t_enter, flat = rid[k], pending[k], t_enter[k], flat[k]
                    A, dead = k.size, 0
                    continue  # a fresh look at the same voxels: no new events, then the step
        # Step into the next voxel across the nearest face (ties: z, then y, before x).
        # S [3, A]: the axis taken (one True per ray); M[a] += Dt[a] and flat += FS[:, a] there.
        mx, my, mz = M
        np.minimum(my, mz, out=myz)
        np.less(mx, myz, out=S[0])  # x: strictly first
        np.less(my, mz, out=ay)
        np.logical_or(S[0], ay, out=S[2])
        # y: not x, and strictly before z ((x or y) xor x, on the bytes of the bools)
        np.bitwise_xor(S[2].view(np.uint8), S[0].view(np.uint8), out=S[1].view(np.uint8))
        np.logical_not(S[2], out=S[2])  # z: neither
        np.minimum(mx, myz, out=t_enter)  # the crossing taken: where the next voxel starts
        np.multiply(Dt, S, out=ftmp)
        M += ftmp
        np.add(S[1].view(np.uint8), S[2].view(np.uint8), out=axis)
        axis += S[2].view(np.uint8)  # 0 (x), 1 (y) or 2 (z)
        np.add(lane3, axis, out=pos)
        flat += FS.reshape(-1).take(pos)

    if hits:
        h_rid, h_c, h_flat, h_in, h_out = (np.concatenate(a) for a in zip(*hits))
        h_idx = np.stack([h_flat // stride[0], (h_flat // stride[1]) % PY, h_flat % PZ],
                         axis=1) - 1  # [H, 3] unpadded (i, j, k)
        for b in range(num_bits):
            sel = (h_c >> b) & 1 == 1
            rb = h_rid[sel]
            out_idx[b][rb] = h_idx[sel]
            out_in[b][rb] = h_in[sel]
            out_out[b][rb] = h_out[sel]
    return out_idx, out_in, out_out


def first_hit(occupied: np.ndarray,  # [X, Y, Z] bool
              origins: np.ndarray,  # [R, 3]
              dirs: np.ndarray,  # [R, 3]
              pc_range: Sequence[float],
              voxel_size,
              max_dist: Optional[float] = None,
              distance: str = 'entry') -> Tuple[np.ndarray, np.ndarray]:
    """The first occupied voxel along each ray and the distance to it.

    Args:
        occupied: [X, Y, Z] bool occupancy (numpy, or a CPU torch tensor).
        origins: [R, 3] ray origins in metres, in the grid's frame (may lie outside the grid).
        dirs: [R, 3] unit directions.
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the grid in metres.
        voxel_size: voxel edge in metres (a number or 3 numbers).
        max_dist: ignore hits whose entry distance is beyond this (None: no limit).
        distance: 'entry' (where the ray enters the voxel; 0 when the origin is inside it) or
            'exit' (where it leaves the voxel, the convention of SparseOcc's RayIoU).

    Returns:
        index: [R, 3] int64 (i, j, k) of the first occupied voxel, -1 where the ray hits nothing.
        dist:  [R] float64 distance in metres along the ray, inf where it hits nothing.
    """
    if distance not in ('entry', 'exit'):
        raise ValueError(f"distance must be 'entry' or 'exit', got {distance!r}")
    occupied = np.asarray(occupied)
    assert occupied.ndim == 3, occupied.shape
    idx, t_in, t_out = first_hits_multi(occupied.astype(bool).view(np.uint8), origins, dirs,
                                        pc_range, voxel_size, num_bits=1, max_dist=max_dist)
    return idx[0], (t_in[0] if distance == 'entry' else t_out[0])
