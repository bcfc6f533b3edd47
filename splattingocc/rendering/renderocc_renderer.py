"""RenderOcc's volume renderer (pmj110119/RenderOcc, ``mmdet3d/models/nerf/nerf_head.py``), in
plain PyTorch, as a SplattingOcc renderer.

It renders a :class:`RawDensityGrid`: the head's density *before* RenderOcc's activation (``raw``,
>= 0 with RenderOcc's final softplus) and K class logits per voxel. Every number below is
upstream's; ``docs/renderocc-fidelity.md`` gives the file and line of each and the test that
checks our formula.

**Frame.** With the grid box ``pc_range`` (x0, y0, z0, x1, y1, z1), its centre ``c`` and
``radius`` r (39 m), positions are normalised ``q = (p - c) / r`` and rays use the unit
direction, so the ray parameter ``t`` is the distance from the camera in units of r.
``bg = (floor((x1 - x0) / 2) - r) / r`` is the thickness of the background shell (1/39).

**Samples.** Every ray has the same candidate parameters: ``N_in = int(2 / (2 + 2 bg) * L /
step_size) + 1`` intervals uniform on [0, 2] (L = the grid's X size, 200; step_size 0.5 voxel:
391 intervals of 0.1995 m), then ``N_in // 15`` intervals with edges ``2 / linspace(1, 1/64)``
(t from 2 to 128, i.e. 78 m to 5 km); each is sampled at its midpoint. A point outside the unit
sphere is contracted to ``q / |q| * ((1 + bg) - bg / |q|)`` (the shell 1 < |q| < 1 + bg, metres
39 to 40). A sample is kept if it is inside the sphere, or if the contracted path length since
the last kept sample exceeds ``0.95 * (2 + 2 bg) / L * step_size`` (0.19 m): the background is
thinned to about one sample per 0.2 m of contracted space.

**Grid lookup.** ``grid_sample`` (trilinear, ``align_corners=True``, zeros outside) over the
normalised box ``[-1 - bg, 1 + bg]`` in x and y and ``[-z_, z_]`` in z with
``z_ = (z1 - z0) / (x1 - x0)`` (upstream's formula: 0.08, i.e. +-3.12 m about the centre for the
6.4 m tall box). Voxel (0, 0, 0) is read at the box corner, not at its centre.

**Compositing.** With ``shift = log(1 / (1 - alpha_init) - 1)`` (alpha_init 1e-6: -13.8155) and
``interval`` 0.5 (the step in voxels)::

    alpha_i = 1 - (1 + exp(raw_i + shift)) ** -interval
            = 1 - exp(-interval * softplus(raw_i + shift))
    T_i = prod_{j<i} (1 - alpha_j),   w_i = T_i * alpha_i

Samples with ``alpha_i <= fast_color_thres`` (1e-7) are left out before the product; a ray stops
after the sample where its transmittance falls below ``stop_transmittance`` (1e-3); the
transmittance after its last sample is ``last_transmittance``; samples with
``w_i <= fast_color_thres`` are then left out of everything composited. Per ray::

    features = sum_i w_i * logits_i            (logits, not probabilities; not normalised)
    depth    = r * sum_i w_i * s_i,  s_i = t_i / (1 + t_i)   (upstream's rendered depth: not
               normalised by alpha, and in the squashed distance s, as upstream renders it)
    alpha    = sum_i w_i

``RenderOutput.extras``: ``last_transmittance`` (per ray), ``weights`` and ``s`` (per ray and
sample, the composited samples in ray order, zero-padded to the longest ray: what the distortion
loss reads), ``samples`` (per ray, the number of composited samples) and ``expected_z`` (per ray,
``sum_i w_i z_i`` with z_i the sample's camera depth: a depth in the label convention, also not
normalised).

Implementation: per chunk of rays the candidate samples and the keep mask are built without
gradient, the kept samples are packed ray by ray, the raw density is interpolated at all of them
(one channel) and the weights computed; only the composited samples (``w > fast_color_thres``)
read the K logits, in one flat ``grid_sample`` whose results are summed into their rays. The
gradient is exact for every sample that upstream differentiates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..geometry import pixel_centres, pixel_rays
from ..registry import MODELS
from ..structures import Cameras, RenderOutput

__all__ = ['RawDensityGrid', 'RenderOccRenderer', 'renderocc_shift', 'renderocc_alpha',
           'background_length', 'sample_parameters', 'contract', 'cumulative_distance_mask',
           'keep_samples', 'upstream_grid_box', 'composite_weights', 'squash']


@dataclass
class RawDensityGrid:
    """What :class:`RenderOccRenderer` renders.

    Attributes:
        raw: [B, X, Y, Z] density before RenderOcc's activation (alpha from
            ``softplus(raw + shift)``).
        logits: [B, X, Y, Z, K] class logits.
        pc_range: (x0, y0, z0, x1, y1, z1) of the grid box, metres.
    """

    raw: Tensor  # [B, X, Y, Z]
    logits: Tensor  # [B, X, Y, Z, K]
    pc_range: tuple

    def __post_init__(self):
        assert self.raw.dim() == 4, self.raw.shape
        assert self.logits.dim() == 5 and self.logits.shape[:4] == self.raw.shape, (
            self.logits.shape, self.raw.shape)
        assert len(self.pc_range) == 6, self.pc_range


# ------------------------------------------------------------------------------------------------
# the formulas, as pure functions (each checked against a hand case in
# tests/rendering/test_renderocc_renderer.py)
# ------------------------------------------------------------------------------------------------

def renderocc_shift(alpha_init: float) -> float:
    """The density shift ``log(1 / (1 - alpha_init) - 1)``: ``softplus(0 + shift)`` is about
    ``alpha_init``, so a ray through raw density 0 starts transparent."""
    return math.log(1.0 / (1.0 - alpha_init) - 1.0)


def renderocc_alpha(raw: Tensor, shift: float, interval: float) -> Tensor:
    """``1 - (1 + exp(raw + shift)) ** -interval``, written ``1 - exp(-interval * softplus(raw +
    shift))`` (the same number, stable for large raw)."""
    return -torch.expm1(-interval * F.softplus(raw + shift))


def background_length(pc_range: Sequence[float], radius: float) -> float:
    """``bg = (floor((x1 - x0) / 2) - radius) / radius`` (upstream floors the half width)."""
    return (math.floor((float(pc_range[3]) - float(pc_range[0])) / 2) - radius) / radius


def sample_parameters(bg: float, world_len: int, step_size: float, outer_divisor: int = 15,
                      outer_far: float = 64.0) -> Tuple[Tensor, int]:
    """Candidate ray parameters t (units of radius) shared by every ray, and the number of
    inner ones: midpoints of ``N_in = int(2 / (2 + 2 bg) * world_len / step_size) + 1``
    intervals uniform on [0, 2], then of ``N_in // outer_divisor`` intervals with edges
    ``2 / linspace(1, 1 / outer_far)``. Computed in float32, as upstream (N_in = 391 for
    bg = 1/39, 200 voxels, step 0.5: float64 would give 390)."""
    bg32 = torch.tensor(bg, dtype=torch.float32)
    n_in = int(2 / (2 + 2 * bg32) * world_len / step_size) + 1
    n_out = n_in // int(outer_divisor)
    b_in = torch.linspace(0, 2, n_in + 1)
    b_out = 2 / torch.linspace(1, 1 / outer_far, n_out + 1)
    t = torch.cat([(b_in[1:] + b_in[:-1]) * 0.5, (b_out[1:] + b_out[:-1]) * 0.5])
    return t, n_in


def contract(q: Tensor,  # [..., 3]
             bg: float) -> Tuple[Tensor, Tensor]:
    """Normalised points -> (contracted points [..., 3], inside the unit sphere [...]): points
    with ``|q| > 1`` go to ``q / |q| * ((1 + bg) - bg / |q|)``."""
    norm = q.norm(dim=-1, keepdim=True)  # [..., 1]
    inner = norm <= 1
    out = torch.where(inner, q, q / norm * ((1 + bg) - bg / norm))
    return out, inner[..., 0]


def cumulative_distance_mask(dist: Tensor,  # [R, N]
                             threshold: float) -> Tensor:
    """Upstream's ``cumdist_thres``: along each row, accumulate the distances; where the sum
    exceeds ``threshold`` mark the entry and restart the sum from 0. Returns [R, N] bool."""
    out = torch.zeros_like(dist, dtype=torch.bool)
    acc = torch.zeros_like(dist[:, 0])
    for k in range(dist.shape[1]):
        acc = acc + dist[:, k]
        over = acc > threshold
        out[:, k] = over
        acc = torch.where(over, torch.zeros_like(acc), acc)
    return out


def keep_samples(q: Tensor,  # [R, N, 3]
                 bg: float, threshold: float) -> Tuple[Tensor, Tensor]:
    """Contracted sample points [R, N, 3] of normalised points ``q`` and the kept ones [R, N]:
    inside the unit sphere, or the contracted path since the last kept one exceeds
    ``threshold``."""
    pts, inner = contract(q, bg)  # [R, N, 3], [R, N]
    keep = inner.clone()
    if q.shape[1] > 1:
        dist = (pts[:, 1:] - pts[:, :-1]).norm(dim=-1)  # [R, N-1]
        keep[:, 1:] |= cumulative_distance_mask(dist, threshold)
    return pts, keep


def upstream_grid_box(pc_range: Sequence[float], radius: float) -> Tuple[Tensor, Tensor]:
    """The grid box in normalised coordinates as upstream builds it: x, y in ``+-(1 + bg)``,
    z in ``+-(z1 - z0) / (x1 - x0)``. Returns (box_min [3], box_max [3]) float32."""
    bg = background_length(pc_range, radius)
    rx = float(pc_range[3]) - float(pc_range[0])
    rz = float(pc_range[5]) - float(pc_range[2])
    z_ = rz / rx
    return (torch.tensor([-1 - bg, -1 - bg, -z_], dtype=torch.float32),
            torch.tensor([1 + bg, 1 + bg, z_], dtype=torch.float32))


def composite_weights(tau: Tensor,  # [R, S]
                      valid: Tensor,  # [R, S]
                      alpha_threshold: float = 1e-7,
                      stop_transmittance: float = 1e-3,
                      weight_threshold: float = 1e-7,
                      ) -> Tuple[Tensor, Tensor, Tensor]:
    """Weights of samples in ray order from their optical depths ``tau = interval *
    softplus(raw + shift)`` (``alpha = 1 - exp(-tau)``).

    Samples with ``alpha <= alpha_threshold`` (or not ``valid``) are left out; a ray ends after
    the sample where its transmittance falls below ``stop_transmittance``.

    Returns:
        weights [R, S]: ``T_i alpha_i`` of the composited samples (``> weight_threshold``),
            0 elsewhere;
        last_transmittance [R]: the transmittance after the ray's last processed sample;
        composited [R, S] bool.
    """
    assert tau.shape == valid.shape and tau.dim() == 2, (tau.shape, valid.shape)
    alpha = -torch.expm1(-tau)  # [R, S]
    with torch.no_grad():
        active = valid & (alpha > alpha_threshold)
    tau = torch.where(active, tau, torch.zeros_like(tau))
    cum = torch.cumsum(tau, dim=-1)  # [R, S] optical depth up to and including each sample
    trans = torch.exp(-(cum - tau))  # [R, S] transmittance before each sample
    with torch.no_grad():
        live = active & (trans >= stop_transmittance)  # processed samples (a prefix of active)
    last = torch.exp(-torch.where(live, tau, torch.zeros_like(tau)).sum(-1))  # [R]
    w = trans * torch.where(live, alpha, torch.zeros_like(alpha))  # [R, S]
    with torch.no_grad():
        composited = live & (w > weight_threshold)
    w = torch.where(composited, w, torch.zeros_like(w))
    return w, last, composited


def squash(t: Tensor) -> Tensor:
    """``s = 1 - 1 / (1 + t)``: ray parameter [0, inf) -> [0, 1) (upstream's ``s``)."""
    return 1 - 1 / (1 + t)


# ------------------------------------------------------------------------------------------------
def _lookup(vol: Tensor,  # [1, Ch, X, Y, Z]
            coords: Tensor,  # [R, S, 3] grid_sample coordinates, (z, y, x) order
            ) -> Tensor:
    """Trilinear ``grid_sample`` (align_corners=True, zeros outside) of one volume at the
    samples of R rays -> [T, Ch, r, S] (rays padded to T * r, ray t * r + i at [t, :, i]). On the
    CPU the rays are split over T threads (grid_sample parallelises over its batch dimension
    only; the volume is expanded without a copy)."""
    R, S = coords.shape[:2]
    T = 1
    if coords.device.type == 'cpu':
        T = max(1, min(torch.get_num_threads(), R, (R * S) // 4096))
    r = -(-R // T) if R else 0
    if r * T != R:
        coords = torch.cat([coords, coords.new_zeros(r * T - R, S, 3)], dim=0)
    g = coords.reshape(T, r * S, 1, 1, 3)
    v = vol.expand(T, -1, -1, -1, -1) if T > 1 else vol
    out = F.grid_sample(v, g, mode='bilinear', padding_mode='zeros',
                        align_corners=True)  # [T, Ch, r * S, 1, 1]
    return out.view(T, vol.shape[1], r, S)


def _pack(mask: Tensor,  # [R, N] bool
          ) -> Tuple[Tensor, Tensor]:
    """Indices [R, S] of each row's True entries, in order, padded (S = the most per row), and
    the valid slots [R, S]."""
    R, N = mask.shape
    n = mask.sum(dim=1)  # [R]
    S = max(int(n.max()) if R else 0, 1)
    pos = torch.cumsum(mask, dim=1) - 1  # [R, N] slot of each True entry
    idx = torch.zeros(R, S + 1, dtype=torch.long, device=mask.device)
    src = torch.arange(N, device=mask.device).expand(R, N)
    idx.scatter_(1, torch.where(mask, pos, torch.full_like(pos, S)), src)
    valid = torch.arange(S, device=mask.device) < n[:, None]
    return torch.where(valid, idx[:, :S], torch.zeros_like(idx[:, :S])), valid


@MODELS.register_module()
class RenderOccRenderer(nn.Module):
    """RenderOcc's volume rendering of a :class:`RawDensityGrid` (module docstring); the same
    call signature as the other renderers.

    Args:
        radius: r, metres (upstream 39).
        step_size: the inner sample spacing in voxels of the grid's X axis (upstream 0.5).
        interval: the optical-depth multiplier of every sample (upstream 0.5, hard-coded in
            ``render_one_scene``).
        alpha_init: sets the density shift (upstream 1e-6).
        fast_color_thres: samples with alpha or weight at most this are left out (upstream 1e-7).
        stop_transmittance: a ray ends once its transmittance is below this (upstream's CUDA
            ``alpha2weight``: 1e-3).
        outer_divisor, outer_far: the background samples: ``N_in // outer_divisor`` intervals up
            to ``2 * outer_far`` radii (upstream 15 and 64).
        background: False leaves out every sample outside the unit sphere (no background).
        world_len: L, voxels of the grid's X axis used in the sample count (None: the grid's;
            upstream hard-codes 200).
        ray_chunk: rays processed at once (bounds memory).
    """

    def __init__(self, radius: float = 39.0, step_size: float = 0.5, interval: float = 0.5,
                 alpha_init: float = 1e-6, fast_color_thres: float = 1e-7,
                 stop_transmittance: float = 1e-3, outer_divisor: int = 15,
                 outer_far: float = 64.0, background: bool = True,
                 world_len: Optional[int] = None, ray_chunk: int = 8192):
        super().__init__()
        if not radius > 0 or not step_size > 0 or not interval > 0:
            raise ValueError(f'RenderOccRenderer: radius, step_size and interval must be > 0, got '
                             f'{radius}, {step_size}, {interval}')
        if not 0 < alpha_init < 1:
            raise ValueError(f'RenderOccRenderer: alpha_init must be in (0, 1), got {alpha_init}')
        if int(outer_divisor) < 1 or not outer_far > 1 or int(ray_chunk) < 1:
            raise ValueError(f'RenderOccRenderer: needs outer_divisor >= 1, outer_far > 1 and '
                             f'ray_chunk >= 1, got {outer_divisor}, {outer_far}, {ray_chunk}')
        self.radius = float(radius)
        self.step_size = float(step_size)
        self.interval = float(interval)
        self.alpha_init = float(alpha_init)
        self.shift = renderocc_shift(self.alpha_init)
        self.fast_color_thres = float(fast_color_thres)
        self.stop_transmittance = float(stop_transmittance)
        self.outer_divisor = int(outer_divisor)
        self.outer_far = float(outer_far)
        self.background = bool(background)
        self.world_len = None if world_len is None else int(world_len)
        self.ray_chunk = int(ray_chunk)
        #: statistics of the last call: candidate, kept and composited samples
        self.last_stats: dict = {}

    def extra_repr(self) -> str:
        return (f'radius={self.radius}, step_size={self.step_size}, interval={self.interval}, '
                f'shift={self.shift:.4f}, fast_color_thres={self.fast_color_thres}, '
                f'stop_transmittance={self.stop_transmittance}, background={self.background}')

    # --------------------------------------------------------------------------------------------
    def geometry(self, pc_range: Sequence[float], world_len: int, device=None):
        """(centre [3], bg, candidate t [N], inner count, keep threshold, box_min [3],
        box_max [3]) of a grid box, in normalised units."""
        bg = background_length(pc_range, self.radius)
        if not bg > -1:
            raise ValueError(f'RenderOccRenderer: radius {self.radius} m is larger than the '
                             f'half width of the box {tuple(pc_range)}')
        t, n_in = sample_parameters(bg, world_len, self.step_size, self.outer_divisor,
                                    self.outer_far)
        thres = float(torch.tensor((2 + 2 * bg) / world_len * self.step_size * 0.95,
                                   dtype=torch.float32))
        box_min, box_max = upstream_grid_box(pc_range, self.radius)
        centre = torch.tensor([(float(pc_range[a]) + float(pc_range[a + 3])) / 2
                               for a in range(3)], dtype=torch.float32)
        return (centre.to(device), bg, t.to(device), n_in, thres, box_min.to(device),
                box_max.to(device))

    def forward(self, scene: RawDensityGrid, cameras: Cameras,
                pixels: Optional[Tensor] = None,  # [B, C, P, 2]
                ) -> RenderOutput:
        """Render depth, logits and alpha (module docstring).

        Args:
            scene: RawDensityGrid with raw [B, X, Y, Z] and logits [B, X, Y, Z, K].
            cameras: Cameras with viewmats [B, C, 4, 4], Ks [B, C, 3, 3], width, height.
            pixels: [B, C, P, 2] continuous (u, v) pixel coordinates, or None for every pixel.

        Returns:
            RenderOutput with depth [B, C, P] / [B, C, H, W], features (composited logits)
            [B, C, P, K] / [B, C, H, W, K], alpha like depth, ``intersections`` = composited
            samples, and ``extras`` (module docstring): last_transmittance like depth; weights, s
            [B, C, P, S] / [B, C, H, W, S]; samples and expected_z like depth.
        """
        if not isinstance(scene, RawDensityGrid):
            raise TypeError(f'RenderOccRenderer renders a RawDensityGrid (RenderOccField), got '
                            f'{type(scene).__name__}')
        raw, logits = scene.raw, scene.logits
        B, X, Y, Z = raw.shape
        K = logits.shape[-1]
        C = cameras.num_cameras
        assert cameras.viewmats.shape == (B, C, 4, 4), (cameras.viewmats.shape, raw.shape)
        device, dtype = raw.device, raw.dtype
        dense = pixels is None
        if dense:
            H, W = int(cameras.height), int(cameras.width)
            pixels = pixel_centres(H, W, device=device, dtype=dtype).expand(B, C, H * W, 2)
        assert pixels.dim() == 4 and pixels.shape[:2] == (B, C) and pixels.shape[-1] == 2, (
            pixels.shape, (B, C))
        P = pixels.shape[2]
        L = self.world_len if self.world_len is not None else X
        centre, bg, t, n_in, thres, box_min, box_max = self.geometry(scene.pc_range, L, device)
        t = t.to(dtype)
        origins, dirs = pixel_rays(cameras.viewmats.to(device, dtype),
                                   cameras.Ks.to(device, dtype), pixels.to(device, dtype))
        vol_raw = raw[:, None]  # [B, 1, X, Y, Z]
        vol_sem = logits.permute(0, 4, 1, 2, 3)  # [B, K, X, Y, Z]
        stats = dict(samples_candidate=0, samples_kept=0, samples_composited=0)
        parts: Dict[str, List[Tensor]] = {k: [] for k in (
            'depth', 'features', 'alpha', 'last', 'weights', 's', 'samples', 'z')}
        for b in range(B):
            o = origins[b][:, None, :].expand(C, P, 3).reshape(C * P, 3)  # [R, 3]
            d = dirs[b].reshape(C * P, 3)  # [R, 3]
            for s0 in range(0, C * P, self.ray_chunk):
                out = self._render_rays(o[s0:s0 + self.ray_chunk], d[s0:s0 + self.ray_chunk],
                                        vol_raw[b:b + 1], vol_sem[b:b + 1], centre, bg, t, n_in,
                                        thres, box_min, box_max, stats)
                for k, v in out.items():
                    parts[k].append(v)
        S = max([w.shape[1] for w in parts['weights']] + [1])
        pad = [F.pad(w, (0, S - w.shape[1])) for w in parts['weights']]
        pad_s = [F.pad(s, (0, S - s.shape[1])) for s in parts['s']]
        shape = (B, C, H, W) if dense else (B, C, P)
        depth = torch.cat(parts['depth']).reshape(shape)
        features = torch.cat(parts['features']).reshape(shape + (K, ))
        alpha = torch.cat(parts['alpha']).reshape(shape)
        extras = dict(last_transmittance=torch.cat(parts['last']).reshape(shape),
                      weights=torch.cat(pad).reshape(shape + (S, )),
                      s=torch.cat(pad_s).reshape(shape + (S, )),
                      samples=torch.cat(parts['samples']).reshape(shape),
                      expected_z=torch.cat(parts['z']).reshape(shape))
        self.last_stats = stats
        return RenderOutput(depth=depth, features=features, alpha=alpha,
                            intersections=int(stats['samples_composited']), extras=extras)

    def _render_rays(self, o: Tensor, d: Tensor, vol_raw: Tensor, vol_sem: Tensor,
                     centre: Tensor, bg: float, t: Tensor, n_in: int, thres: float,
                     box_min: Tensor, box_max: Tensor, stats: dict) -> Dict[str, Tensor]:
        """R rays (origins o [R, 3], world directions d [R, 3] with camera z 1) of one sample.
        Returns per ray depth, features [R, K], alpha, last, samples, z and per composited
        sample weights, s [R, Sc]."""
        R, N = o.shape[0], t.shape[0]
        K = vol_sem.shape[1]
        with torch.no_grad():
            dnorm = d.norm(dim=-1)  # [R] metres per unit of camera depth
            u = d / dnorm[:, None]  # [R, 3] unit directions
            o_n = (o - centre) / self.radius  # [R, 3]
            # the candidate points q = o_n + u t and their contraction q f, from scalars:
            # |q|^2 = |o_n|^2 + 2 t (o_n . u) + t^2 (same numbers as contract(), no [R, N, 3])
            ou = (o_n * u).sum(-1, keepdim=True)  # [R, 1]
            oo = o_n.square().sum(-1, keepdim=True)  # [R, 1]
            nq = (oo + 2 * ou * t + t * t).clamp_min(0).sqrt()  # [R, N]
            inner = nq <= 1
            f = torch.where(inner, torch.ones_like(nq), ((1 + bg) - bg / nq) / nq)  # [R, N]
            keep = inner.clone()
            if self.background and N > 1:
                # |q_{k+1} f_{k+1} - q_k f_k|^2 with a = delta f, c = delta (f t)
                ft = f * t
                a = f[:, 1:] - f[:, :-1]
                c = ft[:, 1:] - ft[:, :-1]
                dist = (a * a * oo + 2 * a * c * ou + c * c).clamp_min(0).sqrt()  # [R, N-1]
                keep[:, 1:] |= cumulative_distance_mask(dist, thres)
            idx, valid = _pack(keep)  # [R, S]
            t_s = t[idx]  # [R, S]
            f_s = torch.gather(f, 1, idx)  # [R, S]
            pts = f_s[..., None] * (o_n[:, None, :] + u[:, None, :] * t_s[..., None])
            # grid_sample coordinates of the (contracted) points, (z, y, x) order
            coords = ((pts - box_min) / (box_max - box_min) * 2 - 1).flip(-1)  # [R, S, 3]
        stats['samples_candidate'] += R * N
        stats['samples_kept'] += int(valid.sum())
        S = idx.shape[1]
        raw = _lookup(vol_raw, coords).reshape(-1, S)[:R]  # [R, S]
        tau = self.interval * F.softplus(raw + self.shift)  # [R, S]
        w, last, comp = composite_weights(tau, valid, self.fast_color_thres,
                                          self.stop_transmittance, self.fast_color_thres)
        s = squash(t_s)  # [R, S]
        z = t_s * self.radius / dnorm[:, None]  # [R, S] camera depth of the samples
        # the composited samples packed in ray order; only they read the K logits
        with torch.no_grad():
            cidx, cvalid = _pack(comp)  # [R, Sc]
            ccoords = torch.gather(coords, 1, cidx[..., None].expand(-1, -1, 3))
        stats['samples_composited'] += int(cvalid.sum())
        Sc = cidx.shape[1]
        w_c = torch.gather(w, 1, cidx) * cvalid  # [R, Sc]
        vals = _lookup(vol_sem, ccoords)  # [T, K, r, Sc]
        T, r = vals.shape[0], vals.shape[2]
        w_pad = F.pad(w_c, (0, 0, 0, T * r - R)).view(T, r, Sc)
        # a broadcast product and a sum over the last (contiguous) axis: no permuted copy
        feats = (vals * w_pad[:, None]).sum(-1)  # [T, K, r]
        feats = feats.transpose(1, 2).reshape(T * r, K)[:R]  # [R, K]
        return dict(depth=self.radius * (w * s).sum(-1), features=feats, alpha=w.sum(-1),
                    last=last, weights=w_c, s=torch.gather(s, 1, cidx) * cvalid,
                    samples=cvalid.sum(-1).to(w.dtype), z=(w * z).sum(-1))
