"""Ray grids of the sensors and culled ray casting against the analytic world.

A sensor's rays form a 2D grid (camera: image rows x columns; LiDAR: beams x azimuth steps). For
every primitive, a conservative rectangle of that grid is computed from the 8 corners of its
oriented bounding box (camera: pinhole projection; LiDAR: azimuth / elevation span), and only the
rays inside it are intersected exactly. The ground is the plane z = 0 of the global frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from .raycast import Primitives, ground_intersect, intersect_one

GROUND, NOTHING = -1, -2
NEAR = 0.05  # metres: corners closer than this to the camera plane make the rect the full image

# HDL-32E beam elevations: -30.67 .. +10.67 degrees in 32 even steps (Velodyne HDL-32E data sheet;
# the real nuScenes sweep in ../shared/realdata has ring 0 at -30.6 deg and ring 31 at +10.6 deg)
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)
LIDAR_AZIMUTH_STEPS = 1084  # points per ring in the real nuScenes sweep (34,688 / 32)
LIDAR_MAX_RANGE = 70.0


@dataclass
class CastResult:
    """Nearest hits of a ray grid.

    Attributes:
        t:    [R, C] distance along the unit ray (inf where nothing is hit).
        idx:  [R, C] primitive index, GROUND (-1) or NOTHING (-2).
        covered: instance id -> number of rays of the grid that hit any part of it, occluded or not.
    """

    t: np.ndarray
    idx: np.ndarray
    covered: Dict[int, int]


def pinhole_dirs(K: np.ndarray,  # [3, 3]
                 width: int, height: int) -> np.ndarray:  # [H, W, 3]
    """Unit ray directions [H, W, 3] in the camera frame (OpenCV axes), pixel centres at +0.5."""
    assert K.shape == (3, 3), K.shape
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)  # [H, W] each
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    d = np.stack([x, y, np.ones_like(x)], -1)  # [H, W, 3]
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


# the 12 edges of a box in the corner order of Primitives.corners (bit 2: x, bit 1: y, bit 0: z)
_BOX_EDGES = np.array([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit])


def camera_rects(corners_cam: np.ndarray,  # [P, 8, 3]
                 K: np.ndarray,  # [3, 3]
                 width: int, height: int) -> np.ndarray:  # [P, 4]
    """Pixel rectangles [P, 4] = (row0, row1, col0, col1); empty: row0 >= row1 or col0 >= col1.

    A box that crosses the plane z = NEAR is clipped by it first (its corners in front plus the
    points where its edges cross the plane), so nearby long boxes do not cover the whole image.

    Args:
        corners_cam: [P, 8, 3] bounding-box corners in the camera frame (Primitives.corners order).
        K: [3, 3] intrinsics.
    """
    assert corners_cam.ndim == 3 and corners_cam.shape[1:] == (8, 3), corners_cam.shape
    P = corners_cam.shape[0]
    z = corners_cam[..., 2]
    out = np.zeros((P, 4), np.int64)
    visible = np.any(z > NEAR, axis=1)
    if not visible.any():
        return out
    c = corners_cam[visible]  # [V, 8, 3]
    a, b = c[:, _BOX_EDGES[:, 0]], c[:, _BOX_EDGES[:, 1]]  # [V, 12, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        s = (NEAR - a[..., 2]) / (b[..., 2] - a[..., 2])
    crossing = (s > 0) & (s < 1)
    cross_pts = a + s[..., None] * (b - a)
    pts = np.concatenate([c, cross_pts], 1)  # [V, 20, 3]
    valid = np.concatenate([c[..., 2] > NEAR, crossing], 1)  # [V, 20]
    zz = np.where(valid, pts[..., 2], 1.0)
    zz = np.maximum(zz, NEAR)
    u = K[0, 0] * pts[..., 0] / zz + K[0, 2]
    v = K[1, 1] * pts[..., 1] / zz + K[1, 2]
    big = np.inf
    u_min = np.where(valid, u, big).min(1)
    u_max = np.where(valid, u, -big).max(1)
    v_min = np.where(valid, v, big).min(1)
    v_max = np.where(valid, v, -big).max(1)
    # pixel j has its centre at j + 0.5: it can be inside [u_min, u_max] for
    # j in [ceil(u_min - 0.5), floor(u_max - 0.5)]; one pixel of margin each side
    c0 = np.floor(np.clip(u_min, -1e6, 1e6) - 0.5).astype(np.int64)
    c1 = np.ceil(np.clip(u_max, -1e6, 1e6) - 0.5).astype(np.int64) + 1
    r0 = np.floor(np.clip(v_min, -1e6, 1e6) - 0.5).astype(np.int64)
    r1 = np.ceil(np.clip(v_max, -1e6, 1e6) - 0.5).astype(np.int64) + 1
    out[visible] = np.stack([np.clip(r0, 0, height), np.clip(r1, 0, height),
                             np.clip(c0, 0, width), np.clip(c1, 0, width)], 1)
    return out


def lidar_dirs(elevations_deg: np.ndarray = LIDAR_ELEVATIONS_DEG,
               n_azimuth: int = LIDAR_AZIMUTH_STEPS) -> np.ndarray:
    """Unit ray directions [B, A, 3] in the LiDAR frame; azimuth -pi + 2 pi (j + 0.5) / A."""
    el = np.radians(np.asarray(elevations_deg, float))[:, None]
    az = (-np.pi + 2 * np.pi * (np.arange(n_azimuth) + 0.5) / n_azimuth)[None, :]
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                     np.sin(el) + 0 * az], -1)


def lidar_rects(corners_lidar: np.ndarray,  # [P, 8, 3]
                elevations_deg: np.ndarray,  # [B]
                n_azimuth: int,
                max_range: float) -> list:
    """Ray rectangles of the primitives: a list of (p, row0, row1, col0, col1) (2 on a wrap).

    Args:
        corners_lidar: [P, 8, 3] bounding-box corners in the LiDAR frame.
    """
    assert corners_lidar.ndim == 3 and corners_lidar.shape[1:] == (8, 3), corners_lidar.shape
    el = np.radians(np.asarray(elevations_deg, float))
    B, A = len(el), n_azimuth
    step = 2 * np.pi / A
    xmin, xmax = corners_lidar[..., 0].min(1), corners_lidar[..., 0].max(1)
    ymin, ymax = corners_lidar[..., 1].min(1), corners_lidar[..., 1].max(1)
    zmin, zmax = corners_lidar[..., 2].min(1), corners_lidar[..., 2].max(1)
    dx = np.maximum.reduce([xmin, np.zeros_like(xmin), -xmax])
    dy = np.maximum.reduce([ymin, np.zeros_like(ymin), -ymax])
    r_min = np.hypot(dx, dy)
    cx = np.stack([xmin, xmax, xmax, xmin], 1)
    cy = np.stack([ymin, ymin, ymax, ymax], 1)
    r_max = np.hypot(cx, cy).max(1)
    dz = np.maximum.reduce([zmin, np.zeros_like(zmin), -zmax])
    out = []
    for p in range(len(corners_lidar)):
        if np.hypot(r_min[p], dz[p]) > max_range:
            continue
        e_hi = np.arctan2(zmax[p], r_min[p] if zmax[p] >= 0 else r_max[p])
        e_lo = np.arctan2(zmin[p], r_max[p] if zmin[p] >= 0 else r_min[p])
        r0 = int(np.searchsorted(el, e_lo - 1e-9, 'left'))
        r1 = int(np.searchsorted(el, e_hi + 1e-9, 'right'))
        if r0 >= r1:
            continue
        if r_min[p] <= 1e-9:  # origin above/below/inside the footprint: every azimuth
            out.append((p, r0, r1, 0, A))
            continue
        ref = np.arctan2(0.5 * (ymin[p] + ymax[p]), 0.5 * (xmin[p] + xmax[p]))
        delta = np.arctan2(np.sin(np.arctan2(cy[p], cx[p]) - ref),
                           np.cos(np.arctan2(cy[p], cx[p]) - ref))
        lo, hi = ref + delta.min(), ref + delta.max()
        j0 = int(np.ceil((lo + np.pi) / step - 0.5)) - 1
        j1 = int(np.floor((hi + np.pi) / step - 0.5)) + 1
        if j1 - j0 + 1 >= A:
            out.append((p, r0, r1, 0, A))
            continue
        j0m = j0 % A
        j1m = j0m + (j1 - j0)
        if j1m < A:
            out.append((p, r0, r1, j0m, j1m + 1))
        else:
            out.append((p, r0, r1, j0m, A))
            out.append((p, r0, r1, 0, j1m - A + 1))
    return out


def box_distance(prims: Primitives, point: np.ndarray) -> np.ndarray:  # point [3] -> [P]
    """[P] distance from ``point`` [3] to each primitive's oriented bounding box (0 inside)."""
    q = np.einsum('pji,pj->pi', prims.rot, point - prims.center)  # [P, 3] local
    return np.linalg.norm(np.maximum(np.abs(q) - prims.half, 0.0), axis=1)


def cast_grid(prims: Primitives,
              origin: np.ndarray,  # [3]
              dirs: np.ndarray,  # [R, C, 3]
              rects, track_instances: bool = False) -> CastResult:
    """Nearest hits of a grid of rays from one origin, testing each primitive only inside its rects.

    Primitives are visited nearest first; one whose bounding box is farther than every hit found so
    far inside its rect is skipped (it is hidden), unless ``track_instances`` needs its coverage.

    Args:
        prims: primitives in the frame of ``origin`` and ``dirs`` (global: ground at z = 0).
        origin: [3] the common ray origin.
        dirs: [R, C, 3] unit ray directions.
        rects: iterable of (p, row0, row1, col0, col1).
        track_instances: count, per instance, the rays that hit any of its parts (visibility).
    """
    assert origin.shape == (3,) and dirs.ndim == 3 and dirs.shape[-1] == 3, (origin.shape,
                                                                               dirs.shape)
    R, C = dirs.shape[:2]
    t_buf = ground_intersect(origin, dirs.reshape(-1, 3)).reshape(R, C)
    idx_buf = np.where(np.isfinite(t_buf), GROUND, NOTHING).astype(np.int64)
    hits_of = {}
    rects = list(rects)
    if rects:
        lower = box_distance(prims, origin)
        rects.sort(key=lambda r: (lower[r[0]], r))
    for p, r0, r1, c0, c1 in rects:
        if not (track_instances and prims.instance[p] >= 0):
            if t_buf[r0:r1, c0:c1].max() < lower[p]:
                continue  # hidden behind what is already there
        sub = dirs[r0:r1, c0:c1].reshape(-1, 3)  # [h * w, 3]
        t = intersect_one(prims, p, origin, sub).reshape(r1 - r0, c1 - c0)
        hit = t < np.inf
        if not hit.any():
            continue
        cur_t = t_buf[r0:r1, c0:c1]
        closer = t < cur_t
        cur_t[closer] = t[closer]
        idx_buf[r0:r1, c0:c1][closer] = p
        inst = int(prims.instance[p])
        if track_instances and inst >= 0:
            rr, cc = np.nonzero(hit)
            hits_of.setdefault(inst, []).append((rr + r0) * C + (cc + c0))
    covered = {k: int(len(np.unique(np.concatenate(v)))) for k, v in hits_of.items()}
    return CastResult(t_buf, idx_buf, covered)


def cull_far(prims: Primitives, origin: np.ndarray,  # [3]
             max_dist: float) -> np.ndarray:
    """Indices of primitives whose bounding sphere comes within ``max_dist`` of ``origin``."""
    radius = np.linalg.norm(prims.half, axis=1)
    dist = np.linalg.norm(prims.center - origin, axis=1) - radius
    return np.nonzero(dist <= max_dist)[0]


def cast_camera(prims: Primitives,
                cam2global: np.ndarray,  # [4, 4]
                K: np.ndarray,  # [3, 3]
                width: int, height: int,
                max_dist: float = 400.0, track_instances: bool = True):
    """Ray cast one pinhole camera.

    Args:
        prims: primitives in the global frame.
        cam2global: [4, 4] camera -> global (OpenCV camera axes).
        K: [3, 3] intrinsics at (width, height).

    Returns:
        (CastResult with [H, W] buffers, dirs [H, W, 3] global unit directions, origin [3]).
    """
    assert cam2global.shape == (4, 4) and K.shape == (3, 3)
    origin = cam2global[:3, 3].copy()
    dirs = pinhole_dirs(K, width, height) @ cam2global[:3, :3].T  # [H, W, 3]
    keep = cull_far(prims, origin, max_dist)
    R_inv = cam2global[:3, :3].T
    corners = prims.subset(keep).corners()  # [P, 8, 3] global
    corners_cam = (corners - origin) @ R_inv.T
    rects = camera_rects(corners_cam, K, width, height)
    ok = (rects[:, 0] < rects[:, 1]) & (rects[:, 2] < rects[:, 3])
    rect_list = [(int(keep[i]), *map(int, rects[i])) for i in np.nonzero(ok)[0]]
    return cast_grid(prims, origin, dirs, rect_list, track_instances), dirs, origin


def cast_lidar(prims: Primitives,
               lidar2global: np.ndarray,  # [4, 4]
               elevations_deg: np.ndarray = LIDAR_ELEVATIONS_DEG,
               n_azimuth: int = LIDAR_AZIMUTH_STEPS, max_range: float = LIDAR_MAX_RANGE):
    """Ray cast the spinning LiDAR.

    Returns:
        (CastResult with [B, A] buffers (hits beyond max_range are set to NOTHING),
         dirs_lidar [B, A, 3] in the LiDAR frame, dirs [B, A, 3] global, origin [3] global).
    """
    assert lidar2global.shape == (4, 4)
    origin = lidar2global[:3, 3].copy()
    dirs_l = lidar_dirs(elevations_deg, n_azimuth)
    dirs = dirs_l @ lidar2global[:3, :3].T
    keep = cull_far(prims, origin, max_range)
    corners = prims.subset(keep).corners()
    corners_l = (corners - origin) @ lidar2global[:3, :3]  # global -> lidar: R^T (x - t)
    rects = [(int(keep[p]), r0, r1, c0, c1)
             for p, r0, r1, c0, c1 in lidar_rects(corners_l, elevations_deg, n_azimuth, max_range)]
    res = cast_grid(prims, origin, dirs, rects, track_instances=False)
    far = res.t > max_range
    res.t[far] = np.inf
    res.idx[far] = NOTHING
    return res, dirs_l, dirs, origin


__all__ = ['CastResult', 'pinhole_dirs', 'camera_rects', 'lidar_dirs', 'lidar_rects', 'cast_grid',
           'cast_camera', 'cast_lidar', 'GROUND', 'NOTHING', 'LIDAR_ELEVATIONS_DEG',
           'LIDAR_AZIMUTH_STEPS', 'LIDAR_MAX_RANGE', 'box_distance']
