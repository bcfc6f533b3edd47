"""Geometry shared by the whole package: rigid transforms, quaternions, pixels, rays, voxels.

Conventions (the same as gsplat, see ``structures.py``): the world frame of a sample is the ego
frame of its current keyframe; cameras use OpenCV axes (x right, y down, z forward) with
world-to-camera ``viewmats`` [..., 4, 4] and pinhole ``Ks`` [..., 3, 3]; pixel (row i, column j)
has its centre at (u, v) = (j + 0.5, i + 0.5); depth is camera-space z; quaternions are
[w, x, y, z]. Voxel (ix, iy, iz) of a grid over ``pc_range`` = (x0, y0, z0, x1, y1, z1) with
``grid_size`` (X, Y, Z) covers ``lower + voxel_size * (index + [0, 1))`` and is stored at the flat
index ``(ix * Y + iy) * Z + iz``.

Rigid transforms are inverted as [R^T, -R^T t], never with ``torch.inverse``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from torch import Tensor


# ------------------------------------------------------------------ transforms, rotations
def rigid_inverse(T: Tensor) -> Tensor:
    """Inverse of rigid transforms [..., 4, 4] as [R^T, -R^T t] (never ``torch.inverse``)."""
    assert T.shape[-2:] == (4, 4), T.shape
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1
    return out


def rigid_inverse_np(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4] as [R^T, -R^T t] (numpy twin of
    ``rigid_inverse``)."""
    T = np.asarray(T, dtype=np.float64)
    assert T.shape[-2:] == (4, 4), T.shape
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices of quaternions (w, x, y, z), normalised first (zero -> identity).

    Args:
        quats: [..., 4].

    Returns:
        [..., 3, 3].
    """
    assert quats.shape[-1] == 4, quats.shape
    # a zero quaternion has no direction: normalising it like F.normalize gives zeros -> identity,
    # and the clamp keeps the gradient finite (0, not 0/0)
    norm = quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = (quats / norm).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))  # [..., 3, 3]


# ------------------------------------------------------------------ pixels and camera rays
def pixel_centres(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Continuous (u, v) = (column + 0.5, row + 0.5) of every pixel of a ``height`` x ``width``
    image, row-major: [height * width, 2]."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing='ij')
    return torch.stack([u, v], -1).reshape(height * width, 2)


def backproject(pixels: Tensor,  # [B, C, P, 2]
                depth: Tensor,  # [B, C, P]
                viewmats: Tensor,  # [B, C, 4, 4]
                Ks: Tensor,  # [B, C, 3, 3]
                ) -> Tensor:
    """World points ``viewmat^-1 @ [d K^-1 (u, v, 1), 1]`` of pixels (u, v) at camera depth d,
    [B, C, P, 3] in the dtype of ``depth``."""
    dt = depth.dtype
    uv1 = torch.cat([pixels.to(dt), torch.ones_like(pixels[..., :1], dtype=dt)], -1)
    rays = uv1 @ torch.linalg.inv(Ks.to(dt)).transpose(-1, -2)  # [B, C, P, 3], z = 1
    cam2world = rigid_inverse(viewmats.to(dt))  # [B, C, 4, 4]
    pts = (rays * depth[..., None]) @ cam2world[..., :3, :3].transpose(-1, -2)
    return pts + cam2world[..., None, :3, 3]


def in_box(points: Tensor, box: Sequence[float]) -> Tensor:
    """[..., 3] -> [...] bool: x0 <= x < x1, y0 <= y < y1, z0 <= z < z1."""
    lo = points.new_tensor([float(x) for x in box[:3]])
    hi = points.new_tensor([float(x) for x in box[3:]])
    return ((points >= lo) & (points < hi)).all(-1)


def labels_in_range(depth: Tensor,  # [B, C, h, w]
                    viewmats: Tensor,  # [B, C, 4, 4]
                    Ks: Tensor,  # [B, C, 3, 3]
                    box: Sequence[float]) -> Tensor:
    """Which label pixels' 3D points lie inside ``box`` (x0, y0, z0, x1, y1, z1, world frame).

    A pixel (row i, column j) with depth d (camera z) back-projects to
    ``viewmat^-1 @ [d K^-1 (j + 0.5, i + 0.5, 1), 1]``; pixels without depth (d <= 0) give False.
    Returns [B, C, h, w] bool.
    """
    B, C, h, w = depth.shape
    pix = pixel_centres(h, w, depth.device).expand(B, C, h * w, 2)
    d = depth.to(torch.float64).reshape(B, C, h * w)
    inside = in_box(backproject(pix, d, viewmats, Ks), box).reshape(B, C, h, w)
    return inside & (depth > 0)


def pixel_rays(viewmats: Tensor,  # [B, C, 4, 4]
               Ks: Tensor,  # [B, C, 3, 3]
               pixels: Tensor,  # [B, C, P, 2]
               ) -> Tuple[Tensor, Tensor]:
    """World-frame rays through pixel coordinates.

    Args:
        viewmats: [B, C, 4, 4] world-to-camera rigid transforms (OpenCV axes).
        Ks:       [B, C, 3, 3] pinhole intrinsics (skew allowed).
        pixels:   [B, C, P, 2] continuous (u, v) image coordinates.

    Returns:
        origins:    [B, C, 3] camera centres in the world frame (-R^T t).
        directions: [B, C, P, 3] world directions ``R^T K^-1 [u, v, 1]``, not normalised: a point
            ``origin + t * direction`` has camera-space depth ``t``.
    """
    B, C = viewmats.shape[:2]
    assert viewmats.shape == (B, C, 4, 4), viewmats.shape
    assert Ks.shape == (B, C, 3, 3), Ks.shape
    assert pixels.dim() == 4 and pixels.shape[:2] == (B, C) and pixels.shape[-1] == 2, pixels.shape
    cam2world = rigid_inverse(viewmats)  # [B, C, 4, 4]
    R_c2w = cam2world[..., :3, :3]  # [B, C, 3, 3]
    origins = cam2world[..., :3, 3]  # [B, C, 3]
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # [B, C, 1]
    cx, cy, skew = Ks[..., 0, 2, None], Ks[..., 1, 2, None], Ks[..., 0, 1, None]
    y = (pixels[..., 1] - cy) / fy  # [B, C, P]
    x = (pixels[..., 0] - cx - skew * y) / fx  # [B, C, P]
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [B, C, P, 3]
    directions = torch.einsum('bcij,bcpj->bcpi', R_c2w, d_cam)  # [B, C, P, 3]
    return origins, directions


# ------------------------------------------------------------------ image feature cells
def camera_rays(cam2img: Tensor,  # [B, N, 3, 3]
                cam2ego: Tensor,  # [B, N, 4, 4]
                feat_size: Tuple[int, int],
                img_size: Tuple[int, int],
                ) -> Tensor:
    """Ego-frame direction ``R K^-1 [u, v, 1]`` (camera z = 1, not normalised) of the ray through
    the centre of every feature cell: [B, N, Hf, Wf, 3]. Its ego z component is the ray's drop
    per metre of camera depth, so for a camera h metres above a flat ground the ground is at
    camera depth ``-h / z`` wherever z < 0."""
    assert cam2img.dim() == 4 and cam2img.shape[-2:] == (3, 3), cam2img.shape
    assert cam2ego.shape == cam2img.shape[:2] + (4, 4), (cam2ego.shape, cam2img.shape)
    Hf, Wf = feat_size
    H, W = img_size
    dev, dt = cam2img.device, cam2img.dtype
    u = (torch.arange(Wf, device=dev, dtype=dt) + 0.5) * (W / Wf)  # [Wf]
    v = (torch.arange(Hf, device=dev, dtype=dt) + 0.5) * (H / Hf)  # [Hf]
    vv, uu = torch.meshgrid(v, u, indexing='ij')  # [Hf, Wf]
    pix = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)  # [Hf, Wf, 3]
    # K is an intrinsic (not a rigid) matrix, so its general inverse is the right tool here
    rays = torch.einsum('bnij,hwj->bnhwi', torch.linalg.inv(cam2img), pix)  # [B, N, Hf, Wf, 3]
    return torch.einsum('bnij,bnhwj->bnhwi', cam2ego[..., :3, :3], rays)


def frustum_points(cam2img: Tensor,  # [B, N, 3, 3]
                   cam2ego: Tensor,  # [B, N, 4, 4]
                   feat_size: Tuple[int, int],
                   img_size: Tuple[int, int],
                   depths: Tensor,  # [D]
                   ) -> Tensor:
    """Ego-frame positions of the frustum points of every camera.

    Args:
        cam2img: [B, N, 3, 3] intrinsics of the input image.
        cam2ego: [B, N, 4, 4] camera -> ego rigid transforms.
        feat_size: (Hf, Wf) of the feature map.
        img_size: (H, W) of the input image.
        depths: [D] camera-z of the depth bins.
    Returns:
        [B, N, D, Hf, Wf, 3] points in the ego frame.
    """
    assert depths.dim() == 1, depths.shape
    rays = camera_rays(cam2img, cam2ego, feat_size, img_size)  # [B, N, Hf, Wf, 3]
    d = depths.to(rays.device, rays.dtype)[None, None, :, None, None, None]
    t = cam2ego[..., :3, 3]  # [B, N, 3]
    return rays[:, :, None] * d + t[:, :, None, None, None, :]


def label_cell_index(label_size: Tuple[int, int], feat_size: Tuple[int, int],
                     device=None) -> Tensor:
    """[h*w] flat feature cell of each pixel of an h x w label map (row-major), by the rule in
    ``depth_labels_min_pool``."""
    (h, w), (Hf, Wf) = label_size, feat_size
    rows = torch.floor((torch.arange(h, device=device) + 0.5) * Hf / h).long()  # [h]
    cols = torch.floor((torch.arange(w, device=device) + 0.5) * Wf / w).long()  # [w]
    return (rows[:, None] * Wf + cols[None, :]).reshape(-1)


def depth_labels_min_pool(gt_depth: Tensor,  # [B, N, h, w]
                          feat_size: Tuple[int, int],
                          ) -> Tensor:
    """Nearest LiDAR depth per feature cell (BEVDepth's depth target), 0 where a cell has none.

    Label pixel (r, c) of an h x w map has its centre at the fraction ((c + 0.5) / w, (r + 0.5) / h)
    of the image, so it belongs to feature cell (floor((r + 0.5) Hf / h), floor((c + 0.5) Wf / w)).

    Args:
        gt_depth: [B, N, h, w] depth labels (0 = no label).
        feat_size: (Hf, Wf).
    Returns:
        [B, N, Hf, Wf] minimum positive depth of the cell's labels, 0 if none.
    """
    assert gt_depth.dim() == 4, gt_depth.shape
    B, N, h, w = gt_depth.shape
    Hf, Wf = feat_size
    dev = gt_depth.device
    cell = label_cell_index((h, w), (Hf, Wf), dev)  # [h*w]
    d = gt_depth.reshape(B * N, h * w)
    d = torch.where(d > 0, d, torch.full_like(d, float('inf')))
    out = torch.full((B * N, Hf * Wf), float('inf'), device=dev, dtype=d.dtype)
    out = out.scatter_reduce(1, cell.expand(B * N, -1), d, reduce='amin', include_self=True)
    out = torch.where(torch.isinf(out), torch.zeros_like(out), out)
    return out.reshape(B, N, Hf, Wf)


def depth_bin_index(depth: Tensor,  # [...]
                    depth_bins: Sequence[float]) -> Tensor:
    """Index [...] (long) of the depth bin ``[d_min + k step, d_min + (k + 1) step)`` holding each
    camera depth, of the D = round((d_max - d_min) / step) bins of ``depth_bins`` = (d_min,
    d_max, step); -1 for depth 0 (no label) and outside the bins."""
    d_min, d_max, step = (float(v) for v in depth_bins)
    num_bins = int(round((d_max - d_min) / step))
    k = torch.floor((depth - d_min) / step).long()
    ok = (depth > 0) & (k >= 0) & (k < num_bins)
    return torch.where(ok, k, torch.full_like(k, -1))


# ------------------------------------------------------------------ voxel grids
def voxel_centres(pc_range: Sequence[float], grid_size: Sequence[int],
                  device=None, dtype=torch.float32) -> Tensor:
    """[X, Y, Z, 3] voxel centres pc_min + voxel_size * (index + 0.5)."""
    X, Y, Z = (int(g) for g in grid_size)
    axes = []
    for a, n in enumerate((X, Y, Z)):
        lo, hi = float(pc_range[a]), float(pc_range[a + 3])
        axes.append(lo + (hi - lo) / n * (torch.arange(n, device=device, dtype=dtype) + 0.5))
    return torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1)


def voxel_flat_index(points: Tensor,  # [..., 3]
                     pc_range: Sequence[float],
                     grid_size: Sequence[int],
                     ) -> Tensor:
    """Index ``(ix * Y + iy) * Z + iz`` of the voxel holding each point, -1 outside the box.

    Args:
        points: [..., 3] positions in metres.
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max).
        grid_size: (X, Y, Z).
    Returns:
        [...] long.
    """
    assert points.shape[-1] == 3, points.shape
    X, Y, Z = (int(g) for g in grid_size)
    lo = points.new_tensor([float(v) for v in pc_range[:3]])
    hi = points.new_tensor([float(v) for v in pc_range[3:]])
    size = torch.tensor([X, Y, Z], device=points.device)
    idx = torch.floor((points - lo) / ((hi - lo) / size.to(points.dtype))).long()  # [..., 3]
    valid = ((idx >= 0) & (idx < size)).all(-1)  # [...]
    flat = (idx[..., 0] * Y + idx[..., 1]) * Z + idx[..., 2]
    return torch.where(valid, flat, torch.full_like(flat, -1))


__all__ = [
    'rigid_inverse', 'rigid_inverse_np', 'quat_to_rotmat', 'pixel_centres', 'backproject',
    'in_box', 'labels_in_range', 'pixel_rays', 'camera_rays', 'frustum_points', 'label_cell_index',
    'depth_labels_min_pool', 'depth_bin_index', 'voxel_centres', 'voxel_flat_index'
]
