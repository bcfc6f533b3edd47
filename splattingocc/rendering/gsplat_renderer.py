"""gsplat (CUDA) backend and the backend-choosing ``SplatRenderer``.

This module and ``gsplat_build.py`` (which builds gsplat's CUDA extension once, under a lock) are
the only modules of SplattingOcc that import gsplat, and only inside functions, so the package
imports and runs on machines without CUDA.

Channels: the renderer passes the K features plus the camera-space depth as K + 1 colour channels
with ``render_mode='RGB+ED'``; gsplat appends depth as the last channel and divides it by
``alpha.clamp(min=1e-10)`` after rasterising. ``gsplat.rasterization`` rasterises the channels in
chunks of ``channel_chunk`` with the same tile intersections and concatenates them (depth stays
last), and each kernel call pads its chunk with zero channels to a width its kernels are compiled
for (``GSPLAT_CHANNEL_WIDTHS``: 1-5, 8, 9, 16, 17, 32, 33, ...). With gsplat's default chunk of 32,
18 semantic classes + depth = 19 channels are padded to 32: 13 zero channels read, composited and
written back (and their gradients) for every Gaussian-pixel pair. ``channel_chunk=None`` (default)
picks the chunk by :func:`plan_channel_chunk`: 19 = 17 + 2, two calls with no padding.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..precision import float32_math
from ..registry import MODELS
from ..structures import Cameras, Gaussians, RenderOutput
from .base import BaseSplatRenderer
from .gsplat_build import GsplatUnavailable
from .projection import ALPHA_THRESHOLD
from .torch_renderer import TorchSplatRenderer

_FALLBACK_HINT = ("use the pure-PyTorch backend instead: renderer.type='TorchSplatRenderer' "
                  "(--cfg-options model.supervision.0.renderer.type=TorchSplatRenderer)")
_SPLAT_FALLBACK_HINT = ("use the pure-PyTorch backend instead: renderer.backend='torch' "
                        "(--cfg-options model.supervision.0.renderer.backend=torch)")

_GSPLAT_STATE = {}

#: channel counts gsplat 1.5.3's rasterization kernels are compiled for (``cuda/_wrapper.py``,
#: ``rasterize_to_pixels``); any other count is padded with zeros to the next power of two
GSPLAT_CHANNEL_WIDTHS = (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512,
                         513)
#: the largest chunk considered (gsplat's default: wider kernels keep more per-pixel registers)
MAX_CHANNEL_CHUNK = 33
#: cost of one more kernel call per Gaussian-pixel pair, in channels: the pair's alpha
#: (conic, exp) and its tile pass are recomputed for each chunk. An estimate, not a measurement
#: (tools/gpu_check.sh times the chosen chunks against gsplat's default 32).
CHUNK_OVERHEAD_CHANNELS = 6


def _padded_width(n: int) -> int:
    return n if n in GSPLAT_CHANNEL_WIDTHS else 1 << (n - 1).bit_length()


def plan_channel_chunk(channels: int) -> int:
    """The ``channel_chunk`` for ``gsplat.rasterization`` with ``channels`` colour channels (the
    depth included): the chunk c <= MAX_CHANNEL_CHUNK whose split of the channels (chunks of c,
    then the rest) costs least, a chunk costing its padded width plus CHUNK_OVERHEAD_CHANNELS;
    ties go to the larger c. 19 -> 17 (17 + 2, nothing padded; 32 pads 13), 23 -> 16 (16 + 8)."""
    assert channels >= 1, channels
    best = None
    for c in range(1, min(channels, MAX_CHANNEL_CHUNK) + 1):
        full, rest = divmod(channels, c)
        cost = full * (_padded_width(c) + CHUNK_OVERHEAD_CHANNELS)
        if rest:
            cost += _padded_width(rest) + CHUNK_OVERHEAD_CHANNELS
        if best is None or cost <= best[0]:
            best = (cost, c)
    return best[1]


def gsplat_available() -> bool:
    """Whether CUDA is available and gsplat's CUDA extension loads (checked once, then cached).

    The first call loads the extension under the build lock of ``gsplat_build.py``; where
    nothing was built yet it builds it there (minutes; one process of the machine at a time) and
    logs that it should have been built beforehand. The reason for a False is in
    ``_GSPLAT_STATE['why']`` (one line with the fix)."""
    if 'ok' not in _GSPLAT_STATE:
        _GSPLAT_STATE['ok'], _GSPLAT_STATE['why'] = _probe_gsplat()
    return _GSPLAT_STATE['ok']


def _probe_gsplat():
    if not torch.cuda.is_available():
        return False, 'torch reports no CUDA device'
    from .gsplat_build import ensure_gsplat, gsplat_is_built
    if not gsplat_is_built():
        _warn_every_rank("gsplat's CUDA extension is not built on this machine: building it now "
                         '(minutes, once per machine, under a lock; build it before training '
                         'with `python -m splattingocc.rendering.gsplat_build`)')
    try:
        ensure_gsplat(log=lambda msg: _warn_every_rank(f'gsplat build: {msg}'))
    except GsplatUnavailable as err:
        return False, str(err)
    return True, ''


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _warn_every_rank(msg: str) -> None:
    """A warning in the run's log (rank 0) and on the standard error of every other rank (their
    loggers print errors only)."""
    import logging
    import sys
    from mmengine.logging import print_log
    rank = _rank()
    if rank == 0:
        print_log(msg, logger='current', level=logging.WARNING)
    else:
        print(f'[rank {rank}] WARNING: {msg}', file=sys.stderr, flush=True)


def _record_backend(backend: str, why: str = '') -> None:
    """The backend in the run's metadata: the message hub's runtime info ``splat_backend`` (saved
    with every checkpoint, ``checkpoint['message_hub']``)."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    hub.update_info('splat_backend', backend)
    if why:
        hub.update_info('splat_backend_reason', why)


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
        channel_chunk: channels rasterised per gsplat kernel call; None (default): chosen per
            channel count so that no zero channels are padded (:func:`plan_channel_chunk`).
    """

    def __init__(self, eps2d: float = 0.3, near_plane: float = 0.01, far_plane: float = 1e10,
                 tile_size: int = 16, packed: bool = True, channel_chunk: Optional[int] = None,
                 min_opacity: float = ALPHA_THRESHOLD, opacity_power: float = 1.0):
        super().__init__(eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
                         tile_size=tile_size, min_opacity=min_opacity,
                         opacity_power=opacity_power)
        self.packed = bool(packed)
        if channel_chunk is not None and int(channel_chunk) < 1:
            raise ValueError(f'renderer.channel_chunk must be None or a positive integer, got '
                             f'{channel_chunk}')
        self.channel_chunk = None if channel_chunk is None else int(channel_chunk)

    def chunk_for(self, num_features: int) -> int:
        """The ``channel_chunk`` of a render of ``num_features`` features (+ depth)."""
        if self.channel_chunk is not None:
            return self.channel_chunk
        return plan_channel_chunk(num_features + 1)

    def forward(self, gaussians: Gaussians, cameras: Cameras,
                pixels: Optional[Tensor] = None) -> RenderOutput:
        """See ``BaseSplatRenderer.forward``; pixels: None or [B, C, P, 2]."""
        self.check_inputs(gaussians, cameras, pixels)
        if gaussians.means.device.type != 'cuda':
            raise GsplatUnavailable(
                f'GsplatRenderer needs CUDA tensors but the Gaussians are on '
                f'{gaussians.means.device}; {_FALLBACK_HINT}')
        if not gsplat_available():
            raise GsplatUnavailable(f"GsplatRenderer: gsplat's CUDA rasterizer cannot be used "
                                    f"({_GSPLAT_STATE['why']})")
        return self._render(gaussians, cameras, pixels)

    @float32_math  # gsplat's kernels are float32 only: no autocast around its torch ops either
    def _render(self, gaussians: Gaussians, cameras: Cameras,
                pixels: Optional[Tensor]) -> RenderOutput:
        from gsplat import rasterization

        gaussians = self.prepare(gaussians)
        dtype = gaussians.means.dtype
        if dtype in (torch.float16, torch.bfloat16):
            dtype = torch.float32  # outputs in float32, as the torch renderer's
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
            rasterize_mode='classic', channel_chunk=self.chunk_for(K))
        # colors: [B, C, H, W, K + 1] (depth last, divided by alpha); alphas: [B, C, H, W, 1]
        image = torch.cat([colors, alphas], dim=-1).to(dtype)  # [B, C, H, W, K + 2]
        if pixels is not None:
            image = _gather_pixels(image, pixels)  # [B, C, P, K + 2]
        return RenderOutput(depth=image[..., K], features=image[..., :K],
                            alpha=image[..., K + 1], intersections=None,
                            primitives=gaussians.num_gaussians)


@MODELS.register_module()
class SplatRenderer(BaseSplatRenderer):
    """Gaussian splatting with a backend chosen per call.

    Args:
        backend: 'gsplat' (CUDA only: a clear error where it cannot run), 'torch', or 'auto'
            (gsplat when the Gaussians are on CUDA and gsplat's CUDA extension loads, else torch;
            a fallback to torch on a CUDA device is a warning on every rank). The backend used is
            recorded in the message hub's runtime info ``splat_backend`` (saved in checkpoints).
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
                 packed: bool = True, channel_chunk: Optional[int] = None,
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

    def _announce(self, backend: str, device: torch.device) -> None:
        """Log the backend once (a fallback on CUDA as a warning on every rank) and record it in
        the message hub (``splat_backend``)."""
        from mmengine.logging import print_log
        why = ''
        if self.backend == 'auto' and backend == 'torch':
            why = (f'Gaussians on {device.type}' if device.type != 'cuda' else
                   _GSPLAT_STATE.get('why', 'gsplat unavailable'))
        if self.backend == 'auto' and backend == 'torch' and device.type == 'cuda':
            # the silent slow path of a GPU job: loud on every rank
            _warn_every_rank(f"SplatRenderer(backend='auto') falls back to the torch renderer on "
                             f'{device} (several times slower than gsplat): {why}')
        else:
            print_log(f'SplatRenderer: using the {backend} backend' + (f' ({why})' if why else ''),
                      logger='current')
        _record_backend(backend, why)
        self._logged = backend

    def forward(self, gaussians: Gaussians, cameras: Cameras,
                pixels: Optional[Tensor] = None) -> RenderOutput:
        """See ``BaseSplatRenderer.forward``; pixels: None or [B, C, P, 2]."""
        device = gaussians.means.device
        backend = self.resolve_backend(device)
        if backend == 'gsplat' and device.type != 'cuda':
            raise GsplatUnavailable(f"renderer.backend='gsplat' needs CUDA tensors but the "
                                    f'Gaussians are on {device}; {_SPLAT_FALLBACK_HINT}')
        if backend == 'gsplat' and not gsplat_available():
            raise GsplatUnavailable(f"renderer.backend='gsplat': gsplat's CUDA rasterizer cannot "
                                    f"be used ({_GSPLAT_STATE['why']})")
        if self._logged != backend:
            self._announce(backend, device)
        renderer = self.gsplat_renderer if backend == 'gsplat' else self.torch_renderer
        return renderer(gaussians, cameras, pixels)


__all__ = ['GsplatRenderer', 'SplatRenderer', 'gsplat_available', 'plan_channel_chunk',
           'GSPLAT_CHANNEL_WIDTHS']
