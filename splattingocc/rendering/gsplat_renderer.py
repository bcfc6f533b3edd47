"""gsplat (CUDA) backend and the backend-choosing ``SplatRenderer``.

This is the only module of SplattingOcc that imports gsplat, and only inside functions, so the
package imports and runs on machines without CUDA.

Channels: the renderer passes the K features plus the camera-space depth as K + 1 colour channels
with ``render_mode='RGB+ED'``; gsplat appends depth as the last channel and divides it by
``alpha.clamp(min=1e-10)`` after rasterising. ``gsplat.rasterization`` rasterises at most
``channel_chunk`` (32) channels per kernel call: for K + 1 <= 32 (18 semantic classes + depth = 19)
that is one call, which pads the 19 channels to a supported width of 32 internally; for more
channels gsplat rasterises several chunks with the same tile intersections and concatenates them,
depth staying the last channel, so any K works.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..registry import MODELS
from ..structures import Cameras, Gaussians, RenderOutput
from .base import BaseSplatRenderer
from .projection import ALPHA_THRESHOLD
from .torch_renderer import TorchSplatRenderer

_FALLBACK_HINT = ("use the pure-PyTorch backend instead: --cfg-options "
                  "renderer.type='TorchSplatRenderer'")
_SPLAT_FALLBACK_HINT = ("use the pure-PyTorch backend instead: --cfg-options "
                        "renderer.backend='torch' (or 'auto')")

_GSPLAT_STATE = {}


def gsplat_available() -> bool:
    """Whether CUDA is available and gsplat's CUDA extension loads (checked once, then cached)."""
    if 'ok' not in _GSPLAT_STATE:
        _GSPLAT_STATE['ok'], _GSPLAT_STATE['why'] = _probe_gsplat()
    return _GSPLAT_STATE['ok']


def _probe_gsplat():
    if not torch.cuda.is_available():
        return False, 'torch reports no CUDA device'
    try:
        import gsplat  # noqa: F401
        from gsplat.cuda._backend import _C
    except Exception as err:  # any import / build failure means: not usable
        return False, f'importing gsplat failed: {type(err).__name__}: {err}'
    if _C is None:
        return False, "gsplat's CUDA extension is not built and no CUDA toolkit was found"
    return True, ''


def _gather_pixels(image: Tensor, pixels: Tensor) -> Tensor:
    """Values of the pixels containing continuous points (u, v); points outside give 0.

    Args:
        image: [B, C, H, W, D].
        pixels: [B, C, P, 2] (u, v).

    Returns:
        [B, C, P, D].
    """
    B, C, H, W, D = image.shape
    P = pixels.shape[2]
    assert pixels.shape == (B, C, P, 2), pixels.shape
    u, v = pixels.detach().unbind(-1)  # [B, C, P]
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    col = torch.floor(u).clamp(0, W - 1).long()
    row = torch.floor(v).clamp(0, H - 1).long()
    flat = image.reshape(B, C, H * W, D)  # [B, C, HW, D]
    idx = (row * W + col)[..., None].expand(B, C, P, D)
    out = torch.gather(flat, 2, idx)  # [B, C, P, D]
    return out * inside[..., None].to(out.dtype)


@MODELS.register_module()
class GsplatRenderer(BaseSplatRenderer):
    """``gsplat.rasterization`` (gsplat 1.5.3, CUDA only) in 'RGB+ED' mode.

    Sampled pixels are read from the dense render at the pixel that contains (u, v): identical to
    the torch backend for pixel centres; no interpolation between pixels.

    Args:
        eps2d, near_plane, far_plane, tile_size, min_opacity, opacity_power: see
            ``BaseSplatRenderer``.
        packed: gsplat's packed mode (less memory; same result).
        channel_chunk: channels rasterised per gsplat kernel call.
    """

    def __init__(self, eps2d: float = 0.3, near_plane: float = 0.01, far_plane: float = 1e10,
                 tile_size: int = 16, packed: bool = True, channel_chunk: int = 32,
                 min_opacity: float = ALPHA_THRESHOLD, opacity_power: float = 1.0):
        super().__init__(eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
                         tile_size=tile_size, min_opacity=min_opacity,
                         opacity_power=opacity_power)
        self.packed = bool(packed)
        self.channel_chunk = int(channel_chunk)

    def forward(self, gaussians: Gaussians, cameras: Cameras,
                pixels: Optional[Tensor] = None) -> RenderOutput:
        """See ``BaseSplatRenderer.forward``; pixels: None or [B, C, P, 2]."""
        self.check_inputs(gaussians, cameras, pixels)
        if gaussians.means.device.type != 'cuda':
            raise RuntimeError(
                f'GsplatRenderer needs CUDA tensors but the Gaussians are on '
                f'{gaussians.means.device}; {_FALLBACK_HINT}')
        if not gsplat_available():
            raise RuntimeError(f"gsplat's CUDA rasterizer cannot be used "
                               f"({_GSPLAT_STATE['why']}); {_FALLBACK_HINT}")
        from gsplat import rasterization

        gaussians = self.prepare(gaussians)
        dtype = gaussians.means.dtype
        f32 = torch.float32  # gsplat's kernels are float32 only
        K = gaussians.num_features
        colors, alphas, _ = rasterization(
            means=gaussians.means.to(f32),  # [B, N, 3]
            quats=gaussians.quats.to(f32),  # [B, N, 4]
            scales=gaussians.scales.to(f32),  # [B, N, 3]
            opacities=gaussians.opacities.to(f32),  # [B, N]
            colors=gaussians.features.to(f32),  # [B, N, K]
            viewmats=cameras.viewmats.to(device=gaussians.means.device, dtype=f32),  # [B, C, 4, 4]
            Ks=cameras.Ks.to(device=gaussians.means.device, dtype=f32),  # [B, C, 3, 3]
            width=int(cameras.width), height=int(cameras.height),
            near_plane=self.near_plane, far_plane=self.far_plane, eps2d=self.eps2d,
            tile_size=self.tile_size, packed=self.packed, render_mode='RGB+ED',
            rasterize_mode='classic', channel_chunk=self.channel_chunk)
        # colors: [B, C, H, W, K + 1] (depth last, divided by alpha); alphas: [B, C, H, W, 1]
        image = torch.cat([colors, alphas], dim=-1).to(dtype)  # [B, C, H, W, K + 2]
        if pixels is not None:
            image = _gather_pixels(image, pixels)  # [B, C, P, K + 2]
        return RenderOutput(depth=image[..., K], features=image[..., :K],
                            alpha=image[..., K + 1], intersections=None)


@MODELS.register_module()
class SplatRenderer(BaseSplatRenderer):
    """Gaussian splatting with a backend chosen per call.

    Args:
        backend: 'auto' (gsplat when the Gaussians are on CUDA and gsplat's CUDA extension loads,
            else torch), 'torch' or 'gsplat'.
        eps2d, near_plane, far_plane, min_opacity, opacity_power: shared by both backends
            (``BaseSplatRenderer``; the backend renderer applies the last two).
        tile_size: gsplat's tile size. torch_tile_size: the torch backend's binning tile (does
            not change its result; None: automatic). chunk: torch backend chunk size.
        packed, channel_chunk: gsplat backend options.
    """

    BACKENDS = ('auto', 'torch', 'gsplat')

    def __init__(self, backend: str = 'auto', eps2d: float = 0.3, near_plane: float = 0.01,
                 far_plane: float = 1e10, tile_size: int = 16,
                 torch_tile_size: Optional[int] = None, chunk: int = 1 << 20,
                 packed: bool = True, channel_chunk: int = 32,
                 min_opacity: float = ALPHA_THRESHOLD, opacity_power: float = 1.0):
        super().__init__(eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
                         tile_size=tile_size, min_opacity=min_opacity,
                         opacity_power=opacity_power)
        if backend not in self.BACKENDS:
            raise ValueError(f"renderer.backend must be one of {self.BACKENDS}, got {backend!r}")
        self.backend = backend
        common = dict(eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
                      min_opacity=min_opacity, opacity_power=opacity_power)
        self.torch_renderer = TorchSplatRenderer(tile_size=torch_tile_size, chunk=chunk, **common)
        self.gsplat_renderer = GsplatRenderer(tile_size=tile_size, packed=packed,
                                              channel_chunk=channel_chunk, **common)
        self._logged = None

    def resolve_backend(self, device: torch.device) -> str:
        """The backend used for tensors on ``device`` ('torch' or 'gsplat')."""
        if self.backend != 'auto':
            return self.backend
        if torch.device(device).type == 'cuda' and gsplat_available():
            return 'gsplat'
        return 'torch'

    def forward(self, gaussians: Gaussians, cameras: Cameras,
                pixels: Optional[Tensor] = None) -> RenderOutput:
        """See ``BaseSplatRenderer.forward``; pixels: None or [B, C, P, 2]."""
        backend = self.resolve_backend(gaussians.means.device)
        if backend == 'gsplat' and gaussians.means.device.type != 'cuda':
            raise RuntimeError(f"SplatRenderer(backend='gsplat') needs CUDA tensors but the "
                               f"Gaussians are on {gaussians.means.device}; {_SPLAT_FALLBACK_HINT}")
        if backend == 'gsplat' and not gsplat_available():
            raise RuntimeError(f"SplatRenderer(backend='gsplat'): gsplat's CUDA rasterizer cannot "
                               f"be used ({_GSPLAT_STATE['why']}); {_SPLAT_FALLBACK_HINT}")
        if self._logged != backend:
            from mmengine.logging import print_log
            why = ''
            if self.backend == 'auto' and backend == 'torch':
                why = (f' (Gaussians on {gaussians.means.device.type})'
                       if gaussians.means.device.type != 'cuda' else
                       f" ({_GSPLAT_STATE.get('why', 'gsplat unavailable')})")
            print_log(f'SplatRenderer: using the {backend} backend{why}', logger='current')
            self._logged = backend
        renderer = self.gsplat_renderer if backend == 'gsplat' else self.torch_renderer
        return renderer(gaussians, cameras, pixels)


__all__ = ['GsplatRenderer', 'SplatRenderer', 'gsplat_available']
