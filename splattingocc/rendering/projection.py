"""EWA projection of 3D Gaussians into pinhole cameras, with the rules of gsplat 1.5.3.

The numbers and rules below follow gsplat 1.5.3 (``gsplat/cuda/include/Utils.cuh`` ``persp_proj``
and ``add_blur``, ``gsplat/cuda/csrc/ProjectionEWA3DGSFused.cu``):

* covariance from a normalised quaternion q and scales s: ``R(q) diag(s^2) R(q)^T``;
* the perspective Jacobian is evaluated at the mean with x/z and y/z clamped to the image
  frustum widened by 0.3 * tan(fov/2) on each side;
* ``eps2d`` is added to the diagonal of the 2D covariance; a Gaussian whose blurred 2D covariance
  has det <= 0 is culled; the conic is the inverse of the blurred covariance (a, b, c) with
  ``power = 0.5 * (a dx^2 + c dy^2) + b dx dy``;
* depth culling keeps near_plane <= z <= far_plane (camera-space z);
* radius per axis ``ceil(extend * sqrt(cov2d_ii))`` with extend = 3.33, or, when opacities are
  given (as ``gsplat.rasterization`` does), extend = min(3.33, sqrt(2 ln(255 * opacity))) and a
  Gaussian with opacity < 1/255 is culled;
* culled when both radii <= radius_clip, or when the box mean +- radius misses the image.

Culled Gaussians get radii (0, 0); their other outputs are finite but meaningless.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..geometry import quat_to_rotmat
from ..precision import float32_math

# gsplat 1.5.3, gsplat/cuda/include/Common.h: ALPHA_THRESHOLD = 1/255
ALPHA_THRESHOLD = 1.0 / 255.0
# gsplat 1.5.3, ProjectionEWA3DGSFused.cu: default extent of the screen box in standard deviations
RADIUS_SIGMAS = 3.33
# gsplat 1.5.3, Utils.cuh persp_proj: the Jacobian clamp widens the frustum by 0.3 * tan(fov / 2)
FRUSTUM_MARGIN = 0.3
# radii are clamped to this many pixels so that int32 conversion never overflows
MAX_RADIUS = 2.0 ** 24


class Projection(NamedTuple):
    """Per camera and Gaussian screen-space parameters.

    radii:   [B, C, N, 2] int32 box half-sizes (x, y) in pixels; (0, 0) for culled Gaussians.
    means2d: [B, C, N, 2] projected centres (u, v) in pixels.
    depths:  [B, C, N] camera-space z.
    conics:  [B, C, N, 3] (a, b, c): inverse of the blurred 2D covariance [[a, b], [b, c]].
    """

    radii: Tensor
    means2d: Tensor
    depths: Tensor
    conics: Tensor


@float32_math
def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances R diag(s^2) R^T (float32 math under autocast: ``precision.py``).

    Args:
        quats: [..., 4] (w, x, y, z), any norm.
        scales: [..., 3] standard deviations along the rotated axes.

    Returns:
        [..., 3, 3] symmetric covariances.
    """
    assert quats.shape[-1] == 4 and scales.shape[-1] == 3, (quats.shape, scales.shape)
    assert quats.shape[:-1] == scales.shape[:-1], (quats.shape, scales.shape)
    M = quat_to_rotmat(quats) * scales[..., None, :]  # [..., 3, 3] = R diag(s)
    return M @ M.transpose(-1, -2)  # [..., 3, 3]


@float32_math
def project_gaussians(
    means: Tensor,  # [B, N, 3]
    covars: Tensor,  # [B, N, 3, 3]
    viewmats: Tensor,  # [B, C, 4, 4]
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    opacities: Optional[Tensor] = None,  # [B, N]
    radius_clip: float = 0.0,
) -> Projection:
    """EWA-project world-space Gaussians into C pinhole cameras (gsplat 1.5.3 rules).

    Runs in float32 (or float64) under autocast too: its products are not autocast to float16
    (``precision.py``). Differentiable w.r.t. means, covars, viewmats and Ks (radii are not
    differentiable). Gradients are finite for culled Gaussians (behind the camera, degenerate
    covariances).

    Args:
        means: [B, N, 3] world-space centres.
        covars: [B, N, 3, 3] world-space covariances.
        viewmats: [B, C, 4, 4] world-to-camera transforms (OpenCV axes).
        Ks: [B, C, 3, 3] intrinsics.
        width, height: image size in pixels.
        eps2d: blur added to the 2D covariance diagonal.
        near_plane, far_plane: depth culling range.
        opacities: optional [B, N]; when given, the opacity-aware radius and opacity culling of
            gsplat's CUDA projection (what ``gsplat.rasterization`` uses) are applied; without
            them the rule of gsplat's pure-torch ``_fully_fused_projection`` (3.33 sigmas).
        radius_clip: Gaussians with both radii <= radius_clip are culled.

    Returns:
        Projection(radii [B, C, N, 2] int32, means2d [B, C, N, 2], depths [B, C, N],
        conics [B, C, N, 3]).
    """
    B, N = means.shape[:2]
    C = viewmats.shape[1]
    assert means.shape == (B, N, 3), means.shape
    assert covars.shape == (B, N, 3, 3), covars.shape
    assert viewmats.shape == (B, C, 4, 4), viewmats.shape
    assert Ks.shape == (B, C, 3, 3), Ks.shape
    if opacities is not None:
        assert opacities.shape == (B, N), opacities.shape

    R = viewmats[:, :, None, :3, :3]  # [B, C, 1, 3, 3]
    t = viewmats[:, :, None, :3, 3]  # [B, C, 1, 3]
    means_c = (R @ means[:, None, :, :, None]).squeeze(-1) + t  # [B, C, N, 3]
    covars_c = R @ covars[:, None] @ R.transpose(-1, -2)  # [B, C, N, 3, 3]

    x, y, z = means_c.unbind(-1)  # [B, C, N] each
    with torch.no_grad():
        # gsplat culls z < near or z > far (ProjectionEWA3DGSFused.cu)
        in_depth = (z >= near_plane) & (z <= far_plane)  # [B, C, N]
    # a safe depth for culled Gaussians keeps every division finite (also in backward)
    z = torch.where(in_depth, z, torch.ones_like(z))

    fx = Ks[:, :, None, 0, 0]  # [B, C, 1]
    fy = Ks[:, :, None, 1, 1]
    cx = Ks[:, :, None, 0, 2]
    cy = Ks[:, :, None, 1, 2]
    lim_x_pos = (width - cx) / fx + FRUSTUM_MARGIN * (0.5 * width / fx)  # [B, C, 1]
    lim_x_neg = cx / fx + FRUSTUM_MARGIN * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + FRUSTUM_MARGIN * (0.5 * height / fy)
    lim_y_neg = cy / fy + FRUSTUM_MARGIN * (0.5 * height / fy)
    rz = 1.0 / z
    tx = z * torch.minimum(torch.maximum(x * rz, -lim_x_neg), lim_x_pos)  # [B, C, N]
    ty = z * torch.minimum(torch.maximum(y * rz, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz,
                     zero, fy * rz, -fy * ty * rz * rz], dim=-1)
    J = J.unflatten(-1, (2, 3))  # [B, C, N, 2, 3]
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [B, C, N, 2, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [B, C, N, 2]

    c00 = cov2d[..., 0, 0] + eps2d  # [B, C, N]
    c11 = cov2d[..., 1, 1] + eps2d
    c01 = cov2d[..., 0, 1]
    det = c00 * c11 - c01 * c01  # [B, C, N]
    with torch.no_grad():
        ok_det = det > 0
    det = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c11 / det, -c01 / det, c00 / det], dim=-1)  # [B, C, N, 3]

    with torch.no_grad():
        valid = in_depth & ok_det & torch.isfinite(det)
        if opacities is None:
            extend = torch.full_like(z, RADIUS_SIGMAS)
        else:
            opac = opacities[:, None, :].expand_as(z).detach()  # [B, C, N]
            valid &= opac >= ALPHA_THRESHOLD
            extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
            extend = extend.clamp_max(RADIUS_SIGMAS)
        radii = torch.stack([torch.ceil(extend * c00.clamp_min(0).sqrt()),
                             torch.ceil(extend * c11.clamp_min(0).sqrt())], dim=-1)  # [B, C, N, 2]
        radii = torch.nan_to_num(radii, nan=0.0, posinf=MAX_RADIUS).clamp(0, MAX_RADIUS)
        valid &= (radii > radius_clip).any(dim=-1)
        mx, my = means2d.unbind(-1)
        valid &= ((mx + radii[..., 0] > 0) & (mx - radii[..., 0] < width)
                  & (my + radii[..., 1] > 0) & (my - radii[..., 1] < height))
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(radii=radii, means2d=means2d, depths=means_c[..., 2], conics=conics)


__all__ = ['Projection', 'quat_scale_to_covar', 'project_gaussians',
           'ALPHA_THRESHOLD', 'RADIUS_SIGMAS']
