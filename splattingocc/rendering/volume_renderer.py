"""NeRF-style volume rendering of a density/feature voxel grid (the RenderOcc / DVGO baseline).

One ray per pixel leaves the camera centre through the pixel centre. It is clipped to the grid's box
(slab test) and to ``[near, far]`` in camera depth, and marched with a fixed step of
``step_ratio * min(voxel_size)`` metres: the step intervals start at the box entry, the last one is
cut at the box exit, and each interval is sampled once at its midpoint. Density and features are
interpolated trilinearly between voxel centres (``min + size * (i + 0.5)``; values are held constant
in the outer half voxel, i.e. ``padding_mode='border'``). With ``tau_i = density_i * step_i``
(step in metres):

    alpha_i = 1 - exp(-tau_i),   T_i = prod_{j<i} (1 - alpha_j),   w_i = T_i * alpha_i
    alpha   = sum_i w_i,         features = sum_i w_i f_i,        depth = sum_i w_i z_i / alpha

where ``z_i`` is the camera-space depth of sample i (gsplat's 'ED' convention; depth is 0 where
alpha is 0).

The density must already be activated (non-negative, 1/m). RenderOcc feeds raw network outputs
through ``softplus(raw + shift)`` inside its ray marcher; here that activation belongs to the head
that produces the ``DensityGrid``.

Implementation (CPU and CUDA, plain PyTorch, differentiable w.r.t. density and features, not
w.r.t. the cameras or pixel coordinates):

1. All rays of a sample are built at once; ray parameter ``t`` is camera depth because the camera
   space direction is ``K^-1 [u, v, 1]`` (its z is 1).
2. Early ray termination (optional, ``transmittance_threshold``, default 1e-4 like gsplat's
   rasterizer): a gradient-free pass interpolates only the density at every sample and finds, per
   ray, the samples whose transmittance before them is still above the threshold. Samples behind
   that point have weight < threshold and are not composited.
3. The compositing pass interpolates density and the K features together (one ``grid_sample`` on a
   channels-last volume) for the live samples only. Rays are sorted by their number of samples and
   processed in chunks of at most ``chunk_samples`` samples, each padded to its own longest ray, so
   padding is small and memory is bounded. ``checkpoint=True`` recomputes each chunk in the
   backward pass instead of keeping its activations (less memory, about one more forward).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from ..geometry import pixel_centres, pixel_rays
from ..registry import MODELS
from ..structures import Cameras, DensityGrid, RenderOutput

__all__ = ['VolumeRenderer', 'ray_box_intersect']


def ray_box_intersect(origins: Tensor,  # [R, 3]
                      directions: Tensor,  # [R, 3]
                      box_min: Tensor,  # [3]
                      box_max: Tensor,  # [3]
                      ) -> Tuple[Tensor, Tensor]:
    """Slab test: ray parameters where each ray enters and leaves an axis-aligned box.

    Returns:
        t_enter: [R], t_exit: [R]; the ray misses the box (or only touches it) where
        ``t_exit <= t_enter``. Parameters may be negative (box behind the origin).
    """
    assert origins.dim() == 2 and origins.shape[-1] == 3, origins.shape
    assert directions.shape == origins.shape, (directions.shape, origins.shape)
    tiny = torch.finfo(directions.dtype).tiny ** 0.5
    d = torch.where(directions.abs() < tiny, torch.full_like(directions, tiny) *
                    torch.where(directions < 0, -1.0, 1.0).to(directions), directions)
    t0 = (box_min - origins) / d  # [R, 3]
    t1 = (box_max - origins) / d  # [R, 3]
    t_enter = torch.minimum(t0, t1).amax(dim=-1)  # [R]
    t_exit = torch.maximum(t0, t1).amin(dim=-1)  # [R]
    return t_enter, t_exit


def _chunks(counts_ordered: Tensor, budget: int) -> List[Tuple[int, int, int]]:
    """Split rays ordered by (roughly) ascending sample count into (start, end, padded_count)
    chunks of at most ``budget`` padded samples (a single ray longer than the budget forms its own
    chunk); padded_count is the running maximum of the counts, >= every count in the chunk."""
    counts = torch.cummax(counts_ordered, dim=0).values.tolist() if counts_ordered.numel() else []
    out, s, R = [], 0, len(counts)
    while s < R:
        c = max(1, budget // max(counts[s], 1))
        S = counts[min(s + c, R) - 1]
        c = max(1, min(c, budget // max(S, 1)))
        e = min(s + c, R)
        out.append((s, e, counts[e - 1]))
        s = e
    return out


def _ray_order(n: Tensor, locality: Tensor, bucket: int = 8) -> Tensor:
    """Ray order for chunking: by sample count rounded up to a multiple of ``bucket`` (so chunks
    pad little), then by ``locality`` (image order, so neighbouring rays read nearby voxels)."""
    key = torch.div(n + bucket - 1, bucket, rounding_mode='floor') * (int(locality.max()) + 1
                                                                       if locality.numel() else 1)
    key = key + locality
    if key.device.type == 'cpu':  # numpy's sort is much faster than torch's on the CPU
        return torch.from_numpy(np.argsort(key.numpy(), kind='stable'))
    return torch.argsort(key)


def _split(rays: Tensor, n: Tensor, T: int, S: int) -> Tuple[Tensor, Tensor]:
    """Pad r rays [r, F] / counts [r] to a multiple of T (padding rays have 0 samples) and view them
    as [T, m, F] / [T, m]; T is lowered so that every part has at least 4096 samples."""
    r = rays.shape[0]
    T = max(1, min(T, (r * S) // 4096))
    m = -(-r // T)
    pad = m * T - r
    if pad:
        rays = torch.cat([rays, rays[:1].expand(pad, -1)], dim=0)
        n = torch.cat([n, n.new_zeros(pad)], dim=0)
    return rays.reshape(T, m, -1), n.reshape(T, m)


@MODELS.register_module()
class VolumeRenderer(nn.Module):
    """Volume renderer for a :class:`DensityGrid`; same call signature as the splatting renderers.

    Args:
        step_ratio: step length along the ray as a fraction of the smallest voxel edge (0.5: 0.2 m
            for 0.4 m voxels).
        near: smallest camera depth marched (m); samples start at ``max(box entry, near)``.
        far: largest camera depth marched (m), or None for the box exit.
        transmittance_threshold: early ray termination: a sample is composited only while the
            transmittance before it is above this value (gsplat stops at 1e-4). 0 disables it (every
            sample inside the box is composited; exact gradients everywhere).
        chunk_samples: most padded samples interpolated at once (bounds memory).
        checkpoint: recompute each chunk during backward (activation checkpointing).
    """

    def __init__(self,
                 step_ratio: float = 0.5,
                 near: float = 0.0,
                 far: Optional[float] = None,
                 transmittance_threshold: float = 1e-4,
                 chunk_samples: int = 1 << 22,
                 checkpoint: bool = False):
        super().__init__()
        if not step_ratio > 0:
            raise ValueError(f'VolumeRenderer: step_ratio must be > 0, got {step_ratio}')
        if far is not None and not far > near:
            raise ValueError(f'VolumeRenderer: far ({far}) must be larger than near ({near})')
        if not 0 <= transmittance_threshold < 1:
            raise ValueError('VolumeRenderer: transmittance_threshold must be in [0, 1), got '
                             f'{transmittance_threshold}')
        if int(chunk_samples) < 1:
            raise ValueError(f'VolumeRenderer: chunk_samples must be >= 1, got {chunk_samples}')
        self.step_ratio = float(step_ratio)
        self.near = float(near)
        self.far = None if far is None else float(far)
        self.transmittance_threshold = float(transmittance_threshold)
        self.chunk_samples = int(chunk_samples)
        self.checkpoint = bool(checkpoint)
        #: statistics of the last call: samples marched (pass 1), composited, padded
        self.last_stats: dict = {}

    def extra_repr(self) -> str:
        return (f'step_ratio={self.step_ratio}, near={self.near}, far={self.far}, '
                f'transmittance_threshold={self.transmittance_threshold}, '
                f'chunk_samples={self.chunk_samples}, checkpoint={self.checkpoint}')

    # ------------------------------------------------------------------------------------------
    def forward(self,
                scene: DensityGrid,
                cameras: Cameras,
                pixels: Optional[Tensor] = None,  # [B, C, P, 2]
                ) -> RenderOutput:
        """Render depth, features and alpha.

        Args:
            scene:   DensityGrid with density [B, X, Y, Z] (activated, >= 0) and features
                     [B, X, Y, Z, K].
            cameras: Cameras with viewmats [B, C, 4, 4], Ks [B, C, 3, 3], width, height.
            pixels:  [B, C, P, 2] continuous (u, v) pixel coordinates (centres at +0.5), or None
                     for every pixel of the ``width`` x ``height`` image.

        Returns:
            RenderOutput with depth [B, C, H, W] / [B, C, P], features [B, C, H, W, K] /
            [B, C, P, K], alpha like depth; ``intersections`` = number of composited samples.
        """
        if not isinstance(scene, DensityGrid):
            raise TypeError(f'VolumeRenderer renders a DensityGrid, got {type(scene).__name__}; '
                            'the splatting renderers take Gaussians')
        density, feats = scene.density, scene.features
        B, X, Y, Z = density.shape
        K = feats.shape[-1]
        assert feats.shape == (B, X, Y, Z, K), feats.shape
        C = cameras.num_cameras
        assert cameras.viewmats.shape == (B, C, 4, 4), (cameras.viewmats.shape, density.shape)
        device, dtype = density.device, density.dtype
        dense = pixels is None
        if dense:
            H, W = int(cameras.height), int(cameras.width)
            pixels = pixel_centres(H, W, device=device, dtype=dtype)  # [H * W, 2]
            pixels = pixels.expand(B, C, H * W, 2)  # [B, C, P, 2]
        assert pixels.dim() == 4 and pixels.shape[:2] == (B, C) and pixels.shape[-1] == 2, (
            pixels.shape, (B, C))
        P = pixels.shape[2]

        r = [float(v) for v in scene.pc_range]
        box_min = torch.tensor(r[:3], device=device, dtype=dtype)
        box_max = torch.tensor(r[3:], device=device, dtype=dtype)
        step = self.step_ratio * min(scene.voxel_size)  # metres

        origins, dirs = pixel_rays(cameras.viewmats.to(device, dtype), cameras.Ks.to(device, dtype),
                                   pixels.to(device, dtype))  # [B, C, 3], [B, C, P, 3]
        # one channels-last volume for density and features: grid_sample input [B, 1+K, X, Y, Z]
        vol_all = torch.cat([density[..., None], feats], dim=-1)  # [B, X, Y, Z, 1+K]
        vol_all = vol_all.permute(0, 4, 1, 2, 3)  # [B, 1+K, X, Y, Z] (channels-last strides)
        vol_density = density[:, None]  # [B, 1, X, Y, Z]

        # image order of the rays (camera, row, column): rays are processed grouped by sample count
        # and in image order within a group, so that neighbouring rays read neighbouring voxels
        Hc, Wc = int(cameras.height), int(cameras.width)
        with torch.no_grad():
            col = pixels[..., 0].floor().clamp(0, Wc - 1).long()  # [B, C, P]
            row = pixels[..., 1].floor().clamp(0, Hc - 1).long()  # [B, C, P]
            cam = torch.arange(C, device=device).view(1, C, 1)
            locality = (cam * Hc + row) * Wc + col  # [B, C, P]
        depth_out, feat_out, alpha_out = [], [], []
        stats = dict(samples_marched=0, samples_composited=0, samples_padded=0)
        for b in range(B):
            o = origins[b][:, None, :].expand(C, P, 3).reshape(C * P, 3)  # [R, 3]
            d = dirs[b].reshape(C * P, 3)  # [R, 3]
            depth_b, feat_b, alpha_b = self._render_rays(
                o, d, locality[b].reshape(C * P), vol_all[b:b + 1], vol_density[b:b + 1], box_min,
                box_max, step, K, stats)
            depth_out.append(depth_b)
            feat_out.append(feat_b)
            alpha_out.append(alpha_b)
        depth = torch.stack(depth_out).reshape(B, C, P)  # [B, C, P]
        features = torch.stack(feat_out).reshape(B, C, P, K)  # [B, C, P, K]
        alpha = torch.stack(alpha_out).reshape(B, C, P)  # [B, C, P]
        if dense:
            depth = depth.reshape(B, C, H, W)
            features = features.reshape(B, C, H, W, K)
            alpha = alpha.reshape(B, C, H, W)
        self.last_stats = stats
        return RenderOutput(depth=depth, features=features, alpha=alpha,
                            intersections=int(stats['samples_composited']))

    # ------------------------------------------------------------------------------------------
    def _render_rays(self, o: Tensor, d: Tensor, locality: Tensor, vol_all: Tensor,
                     vol_density: Tensor, box_min: Tensor, box_max: Tensor, step: float, K: int,
                     stats: dict):
        """Render R rays of one sample. o, d: [R, 3]; locality: [R] image-order key;
        vol_all: [1, 1+K, X, Y, Z]; vol_density: [1, 1, X, Y, Z].
        Returns depth [R], features [R, K], alpha [R]."""
        R = o.shape[0]
        device, dtype = o.device, o.dtype
        with torch.no_grad():
            t_in, t_out = ray_box_intersect(o, d, box_min, box_max)  # [R], [R]
            t_in = t_in.clamp(min=self.near)
            if self.far is not None:
                t_out = t_out.clamp(max=self.far)
            dnorm = d.norm(dim=-1)  # [R]
            dt = step / dnorm  # [R] step in ray-parameter (depth) units
            span = (t_out - t_in).clamp(min=0)
            # 1e-6 relative slack: a span that is a whole number of steps gets no extra tiny step
            n = torch.ceil(span / dt - 1e-6).clamp(min=0).long()  # [R]
            n = torch.where(t_out > t_in, n, torch.zeros_like(n))
            # normalised grid coordinates of the rays: the box faces map to -1 / +1 and voxel
            # centres to (2i+1)/N - 1, which is grid_sample's align_corners=False convention
            extent = box_max - box_min  # [3]
            o_n = (o - box_min) / extent * 2 - 1  # [R, 3]
            d_n = d / extent * 2  # [R, 3]
        stats['samples_marched'] += int(n.sum())
        # per-ray marching parameters, one row per ray: o_n, d_n in (z, y, x) order as grid_sample
        # reads them (W=z, H=y, D=x), then t_in, t_out, dt, dnorm
        rays = torch.cat([o_n.flip(-1), d_n.flip(-1),
                          torch.stack([t_in, t_out, dt, dnorm], dim=-1)], dim=-1)  # [R, 10]
        # CPU 3D grid_sample parallelises over its batch dimension only: one entry per thread
        T = torch.get_num_threads() if device.type == 'cpu' else 1

        # ---- pass 1: early ray termination from density alone (no gradient) ----
        thr = self.transmittance_threshold
        if thr > 0 and R > 0:
            n_live = torch.zeros_like(n)
            with torch.no_grad():
                order = _ray_order(n, locality)
                for s, e, S in _chunks(n[order].cpu(), self.chunk_samples):
                    if S == 0:
                        continue
                    idx = order[s:e]
                    r_split, n_split = _split(rays[idx], n[idx], T, S)  # [T, m, 10], [T, m]
                    pos, delta, _, valid = self._samples(r_split, n_split, S)  # [T, m, S, ...]
                    sigma = self._interpolate(vol_density, pos)[..., 0]  # [T, m, S]
                    tau = sigma * delta  # [T, m, S] (delta is 0 on padding)
                    trans = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))  # T before each sample
                    live = (trans > thr) & valid  # a prefix of each ray (T is non-increasing)
                    n_live[idx] = live.sum(dim=-1).reshape(-1)[:e - s]
        else:
            n_live = n

        # ---- pass 2: composite the live samples (differentiable) ----
        order = _ray_order(n_live, locality)
        chunks = _chunks(n_live[order].cpu(), self.chunk_samples)
        stats['samples_composited'] += int(n_live.sum())
        parts_depth, parts_feat, parts_alpha = [], [], []
        for s, e, S in chunks:
            r = e - s
            if S == 0:
                parts_depth.append(torch.zeros(r, device=device, dtype=dtype))
                parts_feat.append(torch.zeros(r, K, device=device, dtype=dtype))
                parts_alpha.append(torch.zeros(r, device=device, dtype=dtype))
                continue
            stats['samples_padded'] += r * S
            idx = order[s:e]
            r_split, n_split = _split(rays[idx], n_live[idx], T, S)  # [T, m, 10], [T, m]
            if self.checkpoint and torch.is_grad_enabled() and vol_all.requires_grad:
                dep, fea, alp = torch_checkpoint(self._composite, vol_all, r_split, n_split, S,
                                                 use_reentrant=False)
            else:
                dep, fea, alp = self._composite(vol_all, r_split, n_split, S)
            parts_depth.append(dep.reshape(-1)[:r])
            parts_feat.append(fea.reshape(-1, K)[:r])
            parts_alpha.append(alp.reshape(-1)[:r])
        if R == 0:
            return (torch.zeros(0, device=device, dtype=dtype),
                    torch.zeros(0, K, device=device, dtype=dtype),
                    torch.zeros(0, device=device, dtype=dtype))
        inv = torch.empty_like(order)
        inv[order] = torch.arange(R, device=device)
        depth = torch.cat(parts_depth)[inv]  # [R]
        feat = torch.cat(parts_feat)[inv]  # [R, K]
        alpha = torch.cat(parts_alpha)[inv]  # [R]
        return depth, feat, alpha

    @staticmethod
    def _samples(rays: Tensor, n: Tensor, S: int):
        """Samples of rays padded to S samples each.

        Args:
            rays: [..., 10] per ray: origin and direction in normalised grid coordinates, (z, y, x)
                order (3 + 3),
                t_in, t_out, dt (step in depth units), |direction| in metres per depth unit.
            n: [...] number of valid samples of each ray.

        Returns:
            pos [..., S, 3] normalised grid coordinates (z, y, x), delta [..., S] step length in
            metres (0 on padding), t_mid [..., S] camera depth, valid [..., S].
        """
        o, d = rays[..., 0:3], rays[..., 3:6]  # [..., 3]
        t_in, t_out, dt, dnorm = rays[..., 6:7], rays[..., 7:8], rays[..., 8:9], rays[..., 9:10]
        i = torch.arange(S, device=rays.device, dtype=rays.dtype)  # [S]
        t_lo = t_in + i * dt  # [..., S]
        t_hi = torch.minimum(t_lo + dt, t_out)  # [..., S]
        valid = i < n[..., None].to(rays.dtype)  # [..., S]
        t_mid = 0.5 * (t_lo + t_hi)  # [..., S]
        delta = torch.where(valid, (t_hi - t_lo).clamp(min=0) * dnorm,
                            torch.zeros_like(t_lo))  # [..., S] metres
        pos = o[..., None, :] + t_mid[..., None] * d[..., None, :]  # [..., S, 3]
        return pos, delta, t_mid, valid

    @staticmethod
    def _interpolate(vol: Tensor, pos: Tensor) -> Tensor:
        """Trilinear interpolation of vol [1, Ch, X, Y, Z] at pos [T, m, S, 3] (normalised (z, y, x)
        grid coordinates, align_corners=False); batch entry t of the call is pos[t] on the
        stride-0 expanded volume (parallel on the CPU). Returns [T, m, S, Ch] (a strided view)."""
        T, m, S = pos.shape[:3]
        g = pos.reshape(T, m * S, 1, 1, 3)  # (z, y, x): grid_sample's (W, H, D) order
        v = vol.expand(T, -1, -1, -1, -1) if T > 1 else vol
        out = F.grid_sample(v, g, mode='bilinear', padding_mode='border',
                            align_corners=False)  # [T, Ch, m * S, 1, 1]
        return out.reshape(T, vol.shape[1], m, S).permute(0, 2, 3, 1)  # [T, m, S, Ch]

    def _composite(self, vol_all: Tensor, rays: Tensor, n: Tensor, S: int):
        """Alpha-composite rays [T, m, 10] with n [T, m] samples (padded to S).
        Returns depth [T, m], features [T, m, K], alpha [T, m]."""
        pos, delta, t_mid, _ = self._samples(rays, n, S)  # [T, m, S, 3], [T, m, S] ...
        vals = self._interpolate(vol_all, pos)  # [T, m, S, 1+K]
        sigma, f = vals[..., 0], vals[..., 1:]  # [T, m, S], [T, m, S, K]
        tau = sigma * delta  # [T, m, S] (delta is 0 on padding)
        alpha_i = -torch.expm1(-tau)  # [T, m, S]
        trans = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))  # [T, m, S] exclusive transmittance
        w = trans * alpha_i  # [T, m, S]
        acc = w.sum(dim=-1)  # [T, m]
        depth_num = (w * t_mid).sum(dim=-1)  # [T, m]
        feat = torch.einsum('tms,tmsk->tmk', w, f)  # [T, m, K]
        hit = acc > 0
        depth = torch.where(hit, depth_num / torch.where(hit, acc, torch.ones_like(acc)),
                            torch.zeros_like(acc))  # [T, m]
        return depth, feat, acc
