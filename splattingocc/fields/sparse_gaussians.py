"""Free-mean Gaussians that answer point queries: :class:`SparseGaussianField` and the exact point
query :func:`gaussian_fields_at`.

A ``VoxelGaussianField`` finds the Gaussians near a point from the grid they are laid out on. Free
means (``SparseGaussianHead``) have no such layout, so the Gaussians are binned into a coarse hash
grid instead:

1. the bounding box of each Gaussian's ``cutoff`` ellipsoid ``(p - mu)^T Sigma^-1 (p - mu) <=
   cutoff^2`` is ``mu +- cutoff * sqrt(diag Sigma)`` (tight per axis);
2. a grid of cells of edge ``cell`` (per axis: the median box edge of the Gaussians or a given
   edge, enlarged by 1.5x until the boxes overlap at most 27 cells each on average, which bounds
   the list's memory) covers the union of the boxes; every (Gaussian, cell) pair whose box
   overlaps the cell is listed and sorted by cell;
3. each point looks up its cell and sums exactly the listed Gaussians of that cell whose
   ellipsoid holds it.

A Gaussian whose ellipsoid holds a point has the point in its box, hence the point's cell in its
list, so the sum is the voxelizer's sum at that point (``voxelizer.py``: the same truncation at
``cutoff`` standard deviations, density ``sum_i o_i exp(-m_i^2 / 2)`` and class scores ``sum_i
w_i softmax(f_i)``), not an approximation of it; at voxel centres it equals
``voxelize_gaussians`` (up to floating-point rounding at the ellipsoid surfaces). Points outside
every box get 0.

Cost: the (point, Gaussian) pairs evaluated are the Gaussians listed in each point's cell; they are
evaluated in chunks of at most ``max_pairs_per_chunk`` pairs, and the backward pass recomputes
them chunk by chunk, so memory is O(Gaussians + points + one chunk), not O(pairs).
Differentiable (once) w.r.t. the points, means, quaternions, scales, opacities and features; the
binning and the choice of pairs carry no gradient (piecewise constant).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..geometry import quat_to_rotmat
from ..precision import float32_math
from ..structures import Gaussians
from .gaussians import GaussianField

SCORE_MODES = ('softmax', 'raw')
# default (point, Gaussian) pairs per chunk
_CHUNK_CPU = 1 << 17
_CHUNK_CUDA = 1 << 22
# the cell edge grows until the boxes overlap at most this many cells per Gaussian on average
_CELLS_PER_GAUSSIAN = 27.0


@dataclass
class _QueryPlan:
    """The pairs' bookkeeping (no gradient), shared by forward and backward."""
    start: Tensor  # [Q] first entry of each point's cell in the sorted (cell, Gaussian) list
    count: Tensor  # [Q] Gaussians listed in each point's cell
    gaussian: Tensor  # [L] Gaussian of each entry of the list, sorted by cell
    bounds: List[Tuple[int, int]]  # chunks of points
    cutoff2: float
    num_pairs: int = 0


def _pack(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor) -> Tensor:
    """[G, 10]: mean (3), precision Pxx Pyy Pzz Pxy Pxz Pyz (Sigma^-1 = R diag(1/s^2) R^T),
    opacity."""
    R = quat_to_rotmat(quats)  # [G, 3, 3]
    prec = (R / scales.square()[:, None, :]) @ R.transpose(-1, -2)  # [G, 3, 3]
    return torch.cat([means, prec[:, 0, 0, None], prec[:, 1, 1, None], prec[:, 2, 2, None],
                      prec[:, 0, 1, None], prec[:, 0, 2, None], prec[:, 1, 2, None],
                      opacities[:, None]], -1)


def _pair_weights(pts: Tensor, fp: Tensor, cutoff2: float) -> Tensor:
    """w = o exp(-m^2 / 2) of each pair, 0 where m^2 > cutoff^2.

    Args:
        pts: [M, 3] the pairs' points; fp: [M, 10] the pairs' packed Gaussians.
    Returns:
        [M]
    """
    dx, dy, dz = (pts - fp[:, :3]).unbind(-1)  # [M] each
    m2 = (fp[:, 3] * dx * dx + fp[:, 4] * dy * dy + fp[:, 5] * dz * dz
          + 2 * (fp[:, 6] * dx * dy + fp[:, 7] * dx * dz + fp[:, 8] * dy * dz))  # [M]
    return (fp[:, 9] * torch.exp(-0.5 * m2)).masked_fill(m2 > cutoff2, 0)


@torch.no_grad()
def _plan(points: Tensor, fpack: Tensor, var_diag: Tensor, batch_points: Tensor,
          batch_gaussians: Tensor, cutoff: float, cell_size: Optional[Sequence[float]],
          chunk: int) -> _QueryPlan:
    """Bins the Gaussians into the hash grid and finds each point's list (module docstring).

    Args:
        points: [Q, 3]; fpack: [G, 10]; var_diag: [G, 3] diag(Sigma);
        batch_points: [Q], batch_gaussians: [G] sample of each.
    """
    device, dtype = points.device, points.dtype
    Q, G = points.shape[0], fpack.shape[0]
    mu = fpack[:, :3]
    # half-extents of the cutoff ellipsoids' boxes, widened by a hair so that rounding can never
    # leave a point with m^2 <= cutoff^2 outside its Gaussian's box
    half = cutoff * var_diag.clamp_min(0).sqrt()  # [G, 3]
    half = half * (1 + 1e-5) + 1e-6
    lo, hi = mu - half, mu + half  # [G, 3]
    finite = torch.isfinite(lo).all(-1) & torch.isfinite(hi).all(-1)  # [G]
    empty = _QueryPlan(torch.zeros(Q, dtype=torch.long, device=device),
                       torch.zeros(Q, dtype=torch.long, device=device),
                       torch.zeros(0, dtype=torch.long, device=device), [], cutoff ** 2)
    if G == 0 or not bool(finite.any()):
        return empty
    keep = finite.nonzero().squeeze(1)  # [G'] (a Gaussian with a NaN box reaches nothing)
    lo, hi = lo[keep], hi[keep]
    origin = lo.min(0).values  # [3]
    extent = (hi.max(0).values - origin).clamp_min(1e-6)  # [3]
    if cell_size is not None:
        cell = torch.tensor([float(c) for c in cell_size], device=device, dtype=dtype)
    else:
        cell = (hi - lo).median(0).values.clamp_min(1e-6)  # [3]
    cell = torch.maximum(cell, extent / 2 ** 20)  # at most 2^20 cells per axis (int64 keys)
    while True:
        dims = (extent / cell).floor().long() + 1  # [3]
        i0 = ((lo - origin) / cell).floor().long()  # [G', 3]
        i1 = torch.minimum(((hi - origin) / cell).floor().long(), dims - 1)  # [G', 3]
        span = (i1 - i0 + 1).clamp_min(1)  # [G', 3]
        n_cells = span.prod(-1)  # [G']
        if float(n_cells.sum()) <= _CELLS_PER_GAUSSIAN * len(keep):
            break
        cell = cell * 1.5
    total = int(n_cells.sum())
    # every (Gaussian, cell) pair: Gaussian j's cells are its box's span, enumerated x, y, z
    owner = torch.repeat_interleave(torch.arange(len(keep), device=device), n_cells,
                                    output_size=total)  # [L]
    local = torch.arange(total, device=device) - (n_cells.cumsum(0) - n_cells)[owner]  # [L]
    sy, sz = span[owner, 1], span[owner, 2]
    cx = torch.div(local, sy * sz, rounding_mode='floor')
    rest = local - cx * sy * sz
    cy = torch.div(rest, sz, rounding_mode='floor')
    cz = rest - cy * sz
    ijk = i0[owner] + torch.stack([cx, cy, cz], -1)  # [L, 3]
    n_grid = int(dims.prod())
    key = batch_gaussians[keep][owner] * n_grid + (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] \
        + ijk[:, 2]  # [L]
    key, order = key.sort()
    gaussian = keep[owner[order]]  # [L] sorted by cell

    # each point's cell and its run in the sorted list
    pk = ((points - origin) / cell).floor()  # [Q, 3] (float: far points do not overflow)
    inside = ((pk >= 0) & (pk < dims.to(dtype))).all(-1) & torch.isfinite(points).all(-1)  # [Q]
    pk = torch.where(inside[:, None], pk, torch.zeros_like(pk)).long()
    pkey = batch_points * n_grid + (pk[:, 0] * dims[1] + pk[:, 1]) * dims[2] + pk[:, 2]  # [Q]
    start = torch.searchsorted(key, pkey)  # [Q]
    count = (torch.searchsorted(key, pkey, right=True) - start) * inside  # [Q]
    # chunks of points with at most `chunk` pairs (a point with more is a chunk of its own)
    ends = count.cumsum(0)  # [Q]
    bounds, s = [], 0
    while s < Q:
        done = int(ends[s - 1]) if s > 0 else 0
        e = max(int(torch.searchsorted(ends, done + chunk, right=True)), s + 1)
        bounds.append((s, min(e, Q)))
        s = e
    return _QueryPlan(start, count, gaussian, bounds, cutoff ** 2)


def _chunk_pairs(plan: _QueryPlan, s: int, e: int) -> Tuple[Tensor, Tensor]:
    """(point [M], Gaussian [M]) of the pairs of points ``s:e``."""
    cnt = plan.count[s:e]  # [q]
    M = int(cnt.sum())
    device = cnt.device
    local = torch.repeat_interleave(torch.arange(e - s, device=device), cnt, output_size=M)
    pos = plan.start[s:e][local] + torch.arange(M, device=device) - (cnt.cumsum(0) - cnt)[local]
    return local + s, plan.gaussian[pos]


class _PointSum(torch.autograd.Function):
    """(points [Q, 3], fpack [G, 10], weights [G, K]) -> (density [Q], scores [Q, K]).

    Backward recomputes each chunk's pairs, so memory stays O(Q + G + one chunk).
    """

    @staticmethod
    def forward(ctx, points: Tensor, fpack: Tensor, weights: Tensor, plan: _QueryPlan):
        Q, K = points.shape[0], weights.shape[-1]
        density = points.new_zeros(Q)  # [Q]
        scores = points.new_zeros(Q, K)  # [Q, K]
        plan.num_pairs = 0
        for s, e in plan.bounds:
            pid, gid = _chunk_pairs(plan, s, e)  # [M] each
            w = _pair_weights(points[pid], fpack[gid], plan.cutoff2)  # [M]
            density.index_add_(0, pid, w)
            if K:
                scores.index_add_(0, pid, weights[gid] * w[:, None])  # [M, K]
            plan.num_pairs += int(pid.numel())
        ctx.save_for_backward(points, fpack, weights)
        ctx.plan = plan
        return density, scores

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_density: Tensor, grad_scores: Tensor):
        points, fpack, weights = ctx.saved_tensors
        plan = ctx.plan
        K = weights.shape[-1]
        need_p, need_f, need_w = ctx.needs_input_grad[:3]
        grad_p = torch.zeros_like(points) if need_p else None
        grad_f = torch.zeros_like(fpack) if need_f else None
        grad_w = torch.zeros_like(weights) if need_w else None
        for s, e in plan.bounds:
            pid, gid = _chunk_pairs(plan, s, e)  # [M] each
            g_s = grad_scores[pid] if K else None  # [M, K]
            with torch.enable_grad():
                p = points[pid].detach().requires_grad_(need_p)  # [M, 3]
                f = fpack[gid].detach().requires_grad_(need_f)  # [M, 10]
                w = _pair_weights(p, f, plan.cutoff2)  # [M]
            if need_p or need_f:
                # dL/dw = dL/d density + <dL/d scores, weights> at the pair's point
                g_w = grad_density[pid]  # [M]
                if K:
                    g_w = g_w + (g_s * weights[gid]).sum(-1)
                grads = iter(torch.autograd.grad(w, [t for t, n in ((p, need_p), (f, need_f))
                                                     if n], g_w))
                if need_p:
                    grad_p.index_add_(0, pid, next(grads))
                if need_f:
                    grad_f.index_add_(0, gid, next(grads))
            if need_w and K:
                grad_w.index_add_(0, gid, g_s * w.detach()[:, None])
        return grad_p, grad_f, grad_w, None


@float32_math
def gaussian_fields_at(points: Tensor,  # [B, P, 3]
                       means: Tensor,  # [B, N, 3]
                       quats: Tensor,  # [B, N, 4]
                       scales: Tensor,  # [B, N, 3]
                       opacities: Tensor,  # [B, N]
                       features: Optional[Tensor] = None,  # [B, N, K]
                       cutoff: float = 3.0,
                       score_mode: str = 'softmax',
                       cell_size: Optional[Sequence[float]] = None,
                       max_pairs_per_chunk: Optional[int] = None,
                       ) -> Tuple[Tensor, Optional[Tensor]]:
    """Density and class scores of any Gaussians at any points, exact up to the voxelizer's
    truncation at ``cutoff`` standard deviations (module docstring).

    Args:
        points: [B, P, 3] query points (world frame).
        means, quats, scales, opacities: [B, N, 3], [B, N, 4] ([w, x, y, z], need not be
            normalised), [B, N, 3] (standard deviations, > 0), [B, N].
        features: optional [B, N, K] class logits ('softmax': vote with softmax(f)) or weights
            ('raw': as given).
        cutoff: a Gaussian reaches the points within this Mahalanobis distance.
        cell_size: (3,) edge of the hash grid's cells (metres; enlarged where the Gaussians'
            boxes would overlap more than 27 cells each on average); None: the median box edge.
        max_pairs_per_chunk: (point, Gaussian) pairs evaluated at once; None: 2^17 on the CPU,
            2^22 on CUDA.

    Returns:
        (density [B, P], class scores [B, P, K] or None without ``features``), the dtype of
        ``means`` (float32 for half-precision inputs).
    """
    assert points.dim() == 3 and points.shape[-1] == 3, points.shape
    assert means.dim() == 3 and means.shape[-1] == 3, means.shape
    B, N = means.shape[:2]
    P = points.shape[1]
    assert points.shape[0] == B, (points.shape, means.shape)
    assert quats.shape == (B, N, 4) and scales.shape == (B, N, 3), (quats.shape, scales.shape)
    assert opacities.shape == (B, N), opacities.shape
    if features is not None:
        assert features.dim() == 3 and features.shape[:2] == (B, N), features.shape
    if score_mode not in SCORE_MODES:
        raise ValueError(f'gaussian_fields_at: score_mode must be one of {SCORE_MODES}, got '
                         f'{score_mode!r}')
    if not cutoff > 0:
        raise ValueError(f'gaussian_fields_at: cutoff must be > 0, got {cutoff!r}')
    if cell_size is not None and (len(cell_size) != 3 or not all(c > 0 for c in cell_size)):
        raise ValueError(f'gaussian_fields_at: cell_size must be 3 positive numbers, got '
                         f'{cell_size!r}')
    if max_pairs_per_chunk is not None and max_pairs_per_chunk < 1:
        raise ValueError(f'gaussian_fields_at: max_pairs_per_chunk must be >= 1, got '
                         f'{max_pairs_per_chunk}')
    device, dtype = means.device, means.dtype
    G = B * N
    R = quat_to_rotmat(quats.reshape(G, 4))  # [G, 3, 3]
    s2 = scales.reshape(G, 3).square()  # [G, 3]
    fpack = _pack(means.reshape(G, 3), quats.reshape(G, 4), scales.reshape(G, 3),
                  opacities.reshape(G))  # [G, 10]
    if features is None:
        weights = fpack.new_zeros(G, 0)
    else:
        weights = features.softmax(-1) if score_mode == 'softmax' else features
        weights = weights.reshape(G, features.shape[-1])  # [G, K]
    pts = points.to(dtype).reshape(B * P, 3)  # [Q, 3]
    chunk = max_pairs_per_chunk or (_CHUNK_CUDA if device.type == 'cuda' else _CHUNK_CPU)
    with torch.no_grad():
        var_diag = (R.square() * s2[:, None, :]).sum(-1)  # [G, 3] diag(Sigma)
        plan = _plan(pts.detach(), fpack.detach(), var_diag,
                     torch.arange(B, device=device).repeat_interleave(P),
                     torch.arange(B, device=device).repeat_interleave(N), float(cutoff),
                     cell_size, chunk)
    density, scores = _PointSum.apply(pts, fpack, weights, plan)  # [Q], [Q, K]
    density = density.reshape(B, P)
    if features is None:
        return density, None
    return density, scores.reshape(B, P, features.shape[-1])


class SparseGaussianField(GaussianField):
    """Gaussians with free means (``SparseGaussianHead``) that answer point queries exactly (up to
    the ``cutoff`` truncation the voxelizer uses), by :func:`gaussian_fields_at`.

    Args:
        gaussians, box, cutoff: see :class:`GaussianField`.
        query_cell: edge (metres, 3 numbers) of the point queries' hash cells; None: chosen per
            call from the Gaussians' sizes.
    """

    def __init__(self, gaussians: Gaussians, box: Sequence[float], cutoff: float = 3.0,
                 query_cell: Optional[Sequence[float]] = None):
        super().__init__(gaussians, box, cutoff)
        self.query_cell = None if query_cell is None else tuple(float(c) for c in query_cell)

    def density_at(self, points: Tensor,  # [B, P, 3]
                   ) -> Tensor:
        g = self.gaussians
        return gaussian_fields_at(points, g.means, g.quats, g.scales, g.opacities,
                                  cutoff=self.cutoff, cell_size=self.query_cell)[0]  # [B, P]

    def fields_at(self, points: Tensor,  # [B, P, 3]
                  ) -> Tuple[Tensor, Tensor]:
        g = self.gaussians
        return gaussian_fields_at(points, g.means, g.quats, g.scales, g.opacities, g.features,
                                  cutoff=self.cutoff, score_mode='softmax',
                                  cell_size=self.query_cell)  # [B, P], [B, P, K]


__all__ = ['SparseGaussianField', 'gaussian_fields_at']
