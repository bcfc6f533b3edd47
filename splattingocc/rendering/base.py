"""The call signature shared by every SplattingOcc renderer.

A renderer is an ``nn.Module`` without parameters, built from a config through ``MODELS``::

    renderer = MODELS.build(dict(type='TorchSplatRenderer', eps2d=0.3, near_plane=0.01,
                                 far_plane=1e10, tile_size=16))
    out = renderer(gaussians, cameras)  # dense: depth [B, C, H, W], features [B, C, H, W, K]
    out = renderer(gaussians, cameras, pixels)  # sampled: depth [B, C, P], features [B, C, P, K]

``pixels`` are continuous image coordinates (u, v) = (column, row) in pixels of the rendered
image, with the centre of pixel (row i, column j) at (j + 0.5, i + 0.5) (see ``structures.py``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..structures import Cameras, Gaussians, RenderOutput, replace
from .projection import ALPHA_THRESHOLD


class BaseSplatRenderer(nn.Module):
    """Base class of the Gaussian splatting renderers (same math as gsplat 1.5.3 'RGB+ED').

    Args:
        eps2d: added to the diagonal of every projected 2D covariance (pixels^2), gsplat's blur.
        near_plane, far_plane: Gaussians whose camera-space depth is outside
            [near_plane, far_plane] are culled.
        tile_size: side of the square screen tiles Gaussians are binned into (pixels); None lets
            a renderer choose (only where the result does not depend on it).
        min_opacity: Gaussians with a lower opacity are dropped before rendering (``prepare``).
            Any value up to 1/255 (the default) is exact: splatting skips every Gaussian-pixel
            pair with alpha = opacity * exp(-power) < 1/255, so such Gaussians neither contribute
            nor receive gradients. 0 disables the pruning.
        opacity_power: the render uses opacity ** this (default 1: the opacity itself); above 1
            faint Gaussians fade more than opaque ones, so a stack of faint Gaussians along a ray
            costs more than one opaque one. Pruning looks at the opacity itself.
    """

    def __init__(self, eps2d: float = 0.3, near_plane: float = 0.01, far_plane: float = 1e10,
                 tile_size: Optional[int] = 16, min_opacity: float = ALPHA_THRESHOLD,
                 opacity_power: float = 1.0):
        super().__init__()
        if tile_size is not None and int(tile_size) < 1:
            raise ValueError(f'renderer.tile_size must be a positive integer, got {tile_size}')
        if not 0 < near_plane < far_plane:
            raise ValueError(f'renderer.near_plane ({near_plane}) must be > 0 and < '
                             f'renderer.far_plane ({far_plane})')
        if not 0 <= float(min_opacity) < 1:
            raise ValueError(f'renderer.min_opacity must be in [0, 1), got {min_opacity}')
        if not float(opacity_power) > 0:
            raise ValueError(f'renderer.opacity_power must be > 0, got {opacity_power}')
        self.eps2d = float(eps2d)
        self.near_plane = float(near_plane)
        self.far_plane = float(far_plane)
        self.tile_size = None if tile_size is None else int(tile_size)
        self.min_opacity = float(min_opacity)
        self.opacity_power = float(opacity_power)

    def extra_repr(self) -> str:
        return (f'eps2d={self.eps2d}, near_plane={self.near_plane}, far_plane={self.far_plane}, '
                f'tile_size={self.tile_size}, min_opacity={self.min_opacity:.6g}, '
                f'opacity_power={self.opacity_power}')

    def prepare(self, gaussians: Gaussians) -> Gaussians:
        """The Gaussians a render uses: those with opacity below ``min_opacity`` left out (per
        sample the most opaque n are kept, n = the largest count at or above the threshold in
        the batch, so the batch stays rectangular), then the opacities raised to
        ``opacity_power``."""
        N = gaussians.num_gaussians
        if self.min_opacity > 0 and N > 0:
            with torch.no_grad():
                n = int((gaussians.opacities >= self.min_opacity).sum(1).max())
            if n < N:
                idx = gaussians.opacities.topk(max(n, 1), dim=1).indices  # [B, n]

                def pick(t: Tensor) -> Tensor:  # [B, N, D] -> [B, n, D]
                    return t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))

                gaussians = Gaussians(means=pick(gaussians.means), quats=pick(gaussians.quats),
                                      scales=pick(gaussians.scales),
                                      opacities=gaussians.opacities.gather(1, idx),
                                      features=pick(gaussians.features))
        if self.opacity_power != 1.0:
            gaussians = replace(gaussians, opacities=gaussians.opacities.pow(self.opacity_power))
        return gaussians

    @staticmethod
    def check_inputs(gaussians: Gaussians, cameras: Cameras, pixels: Optional[Tensor]) -> None:
        """Assert the shapes of the public inputs.

        Args:
            gaussians: B samples of N Gaussians (``means`` [B, N, 3] ...).
            cameras: C cameras per sample (``viewmats`` [B, C, 4, 4], ``Ks`` [B, C, 3, 3]).
            pixels: None or [B, C, P, 2] continuous (u, v) pixel coordinates.
        """
        B = gaussians.batch_size
        assert cameras.batch_size == B, (cameras.viewmats.shape, gaussians.means.shape)
        C = cameras.num_cameras
        if pixels is not None:
            assert pixels.dim() == 4 and pixels.shape[:2] == (B, C) and pixels.shape[-1] == 2, (
                pixels.shape, (B, C))
            assert pixels.is_floating_point(), pixels.dtype

    def forward(self, gaussians: Gaussians, cameras: Cameras,
                pixels: Optional[Tensor] = None) -> RenderOutput:
        """Render depth, features and alpha.

        Args:
            gaussians: means [B, N, 3], quats [B, N, 4], scales [B, N, 3], opacities [B, N],
                features [B, N, K], in the world (current ego) frame.
            cameras: viewmats [B, C, 4, 4] world-to-camera (OpenCV axes), Ks [B, C, 3, 3],
                width W, height H.
            pixels: None for a dense render of every pixel, or [B, C, P, 2] continuous (u, v).

        Returns:
            RenderOutput with depth [B, C, H, W] / [B, C, P] (alpha-normalised expected depth,
            0 where nothing was hit), features [B, C, H, W, K] / [B, C, P, K] (not normalised),
            alpha [B, C, H, W] / [B, C, P], and ``intersections`` (composited pairs).
        """
        raise NotImplementedError
