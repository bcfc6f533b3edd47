"""Projection of LiDAR points into camera images: the 2D depth and semantic labels.

Pure numpy functions, no I/O.

Pixel convention (the same as gsplat and ``splattingocc.structures``): a point whose projection
has continuous image coordinates (x, y) falls into the pixel of column ``floor(x)`` and row
``floor(y)``; pixel (row i, column j) therefore has its centre at (j + 0.5, i + 0.5). Resizing an
image by a factor s maps continuous coordinates x -> s * x (pixel edges stay on the grid), which is
why intrinsics scale as ``diag(s, s, 1) @ K``.

Depth is camera-space z in metres (not ray length), as in gsplat's 'ED' render mode.

Frames (nuScenes): a LiDAR point goes lidar -> ego (at the LiDAR timestamp) -> global -> ego (at the
camera timestamp) -> camera. The two ego poses differ because the sensors fire at slightly
different times while the car moves.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..geometry import rigid_inverse_np


def lidar_to_camera(lidar2ego: np.ndarray,  # [4, 4]
                    ego2global_lidar: np.ndarray,  # [4, 4]
                    ego2global_cam: np.ndarray,  # [4, 4]
                    cam2ego: np.ndarray,  # [4, 4]
                    ) -> np.ndarray:
    """The rigid transform LiDAR -> camera, through the global frame as nuScenes does it.

    Args:
        lidar2ego:        [4, 4] LiDAR sensor -> ego (calibrated_sensor of the LiDAR).
        ego2global_lidar: [4, 4] ego -> global at the LiDAR timestamp.
        ego2global_cam:   [4, 4] ego -> global at the camera timestamp.
        cam2ego:          [4, 4] camera sensor -> ego (calibrated_sensor of the camera).

    Returns:
        lidar2cam: [4, 4] float64,
        ``cam2ego^-1 @ ego2global_cam^-1 @ ego2global_lidar @ lidar2ego``.
    """
    mats = [np.asarray(m, dtype=np.float64) for m in (lidar2ego, ego2global_lidar, ego2global_cam,
                                                      cam2ego)]
    for m in mats:
        assert m.shape == (4, 4), m.shape
    lidar2ego, ego2global_lidar, ego2global_cam, cam2ego = mats
    return (rigid_inverse_np(cam2ego) @ rigid_inverse_np(ego2global_cam) @ ego2global_lidar
            @ lidar2ego)


def project_points_to_image(points: np.ndarray,  # [N, 3]
                            lidar2cam: np.ndarray,  # [4, 4]
                            K: np.ndarray,  # [3, 3]
                            width: int,
                            height: int,
                            min_depth: float = 1.0,
                            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Project points into one camera, keeping the nearest point of every pixel (a z-buffer).

    Points with camera z <= ``min_depth`` (behind the camera or too close; nuScenes' own
    ``map_pointcloud_to_image`` uses 1 m) and points whose pixel lies outside the image are
    dropped. Of several points in one pixel the one with the smallest depth wins (ties: the lower
    point index).

    Args:
        points:    [N, 3] points in the source frame (e.g. the LiDAR frame), metres.
        lidar2cam: [4, 4] rigid transform source frame -> camera (OpenCV axes).
        K:         [3, 3] pinhole intrinsics in pixels of a ``width`` x ``height`` image.
        width, height: image size in pixels.
        min_depth: keep only points with camera z > min_depth.

    Returns:
        u:           [M] int64 pixel column, 0 <= u < width.
        v:           [M] int64 pixel row, 0 <= v < height.
        depth:       [M] float64 camera z of the point, metres.
        point_index: [M] int64 index into ``points`` of the winning point.
        Sorted by pixel (row-major: v * width + u); one entry per labelled pixel.
    """
    points = np.asarray(points)
    assert points.ndim == 2 and points.shape[1] >= 3, points.shape
    lidar2cam = np.asarray(lidar2cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    assert lidar2cam.shape == (4, 4), lidar2cam.shape
    assert K.shape == (3, 3), K.shape
    width, height = int(width), int(height)
    assert width > 0 and height > 0, (width, height)

    xyz = points[:, :3].astype(np.float64)  # [N, 3]
    cam = xyz @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]  # [N, 3] camera frame
    z = cam[:, 2]
    in_front = np.nonzero(z > min_depth)[0]  # [N1]
    cam = cam[in_front]
    uvw = cam @ K.T  # [N1, 3] homogeneous pixel coordinates
    x = uvw[:, 0] / uvw[:, 2]
    y = uvw[:, 1] / uvw[:, 2]
    col = np.floor(x)
    row = np.floor(y)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    idx = in_front[inside]  # [N2] indices into points
    col = col[inside].astype(np.int64)
    row = row[inside].astype(np.int64)
    depth = cam[inside, 2]
    return zbuffer(col, row, depth, idx, width)


def zbuffer(col: np.ndarray,  # [N] int
            row: np.ndarray,  # [N] int
            depth: np.ndarray,  # [N]
            index: np.ndarray,  # [N] int
            width: int,
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep, for every pixel, the entry with the smallest depth (ties: the smallest ``index``).

    Args:
        col, row: [N] integer pixel coordinates (already inside the image).
        depth:    [N] depth of each entry.
        index:    [N] integer id of each entry (returned for the winners).
        width:    image width (to linearise pixels row-major).

    Returns:
        (col, row, depth, index) of the winners, each [M], sorted by pixel (row * width + col).
    """
    col = np.asarray(col, dtype=np.int64)
    row = np.asarray(row, dtype=np.int64)
    depth = np.asarray(depth)
    index = np.asarray(index, dtype=np.int64)
    n = col.shape[0]
    assert col.shape == row.shape == depth.shape == index.shape == (n,), (
        col.shape, row.shape, depth.shape, index.shape)
    if n == 0:
        return col, row, depth, index
    pixel = row * int(width) + col  # [N]
    order = np.lexsort((index, depth, pixel))  # primary key: pixel, then depth, then index
    pixel_sorted = pixel[order]
    first = np.ones(n, dtype=bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    keep = order[first]  # [M]
    return col[keep], row[keep], depth[keep], index[keep]


def rasterize_point_labels(x: np.ndarray,  # [N]
                           y: np.ndarray,  # [N]
                           depth: np.ndarray,  # [N]
                           label: np.ndarray,  # [N]
                           width: int,
                           height: int,
                           ignore_label: int = 255,
                           ) -> Tuple[np.ndarray, np.ndarray]:
    """Dense label maps from sparse labelled points given in continuous pixel coordinates.

    A point at (x, y) falls into column floor(x), row floor(y); points outside the image or with
    depth <= 0 are dropped; the nearest point of a pixel wins (ties: the first point).

    Args:
        x, y:   [N] continuous image coordinates (pixel centres at +0.5).
        depth:  [N] camera z, metres.
        label:  [N] integer class of each point.
        width, height: size of the label maps.
        ignore_label: value of unlabelled pixels in the semantic map.

    Returns:
        depth_map: [height, width] float32, 0 where no point.
        sem_map:   [height, width] int64, ``ignore_label`` where no point.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    depth = np.asarray(depth)
    label = np.asarray(label)
    n = x.shape[0]
    assert x.shape == y.shape == depth.shape == label.shape == (n,), (
        x.shape, y.shape, depth.shape, label.shape)
    width, height = int(width), int(height)
    depth_map = np.zeros((height, width), dtype=np.float32)
    sem_map = np.full((height, width), ignore_label, dtype=np.int64)
    col = np.floor(x)
    row = np.floor(y)
    ok = (col >= 0) & (col < width) & (row >= 0) & (row < height) & (depth > 0)
    sel = np.nonzero(ok)[0]
    col, row, d, keep = zbuffer(col[sel], row[sel], depth[sel], sel, width)
    depth_map[row, col] = d
    sem_map[row, col] = label[keep]
    return depth_map, sem_map


__all__ = ['rigid_inverse_np', 'lidar_to_camera', 'project_points_to_image', 'zbuffer',
           'rasterize_point_labels']
