"""Gaussians -> voxel grid (Occ3D): exact anisotropic density and class scores.

For every voxel centre ``p`` of an axis-aligned grid and Gaussians ``i`` (mean ``mu_i``, rotation
``R_i`` from the quaternion [w, x, y, z], normalised here, standard deviations ``s_i``, opacity
``o_i``, features ``f_i``)::

    Sigma_i      = R_i diag(s_i^2) R_i^T                     (full anisotropic covariance)
    m_i(p)^2     = (p - mu_i)^T Sigma_i^{-1} (p - mu_i)      (squared Mahalanobis distance)
    w_i(p)       = o_i * exp(-0.5 * m_i(p)^2)   if m_i(p) <= cutoff, else 0
    density(p)   = sum_i w_i(p)                              (dimensionless, not 1/m)
    scores_k(p)  = sum_i w_i(p) * g_ik

with ``g_i = softmax(f_i)`` (``score_mode='softmax'``, the default: features are logits and every
Gaussian votes with its class probabilities) or ``g_i = f_i`` (``score_mode='raw'``: features
used as given, e.g. raw logits or probabilities that are already normalised).

Truncation: a Gaussian contributes only inside its ``cutoff``-sigma ellipsoid, so at any voxel the
truncated density is below the exact one by at most ``sum_i o_i * exp(-cutoff^2 / 2)`` (summed over
the Gaussians whose ellipsoid misses the voxel); the same holds per class for the scores with
``o_i * g_ik``. ``cutoff=inf``-like values (e.g. 50) give the exact sums.

Scaling: Gaussian ``i`` is paired only with the voxels whose centres lie inside its ellipsoid. The
(x, y) columns of the ellipsoid's bounding box (tight per axis, half-extent ``cutoff *
sqrt(Sigma_aa)``) are enumerated first; in each column the z range inside the ellipsoid is the
solution of a quadratic, so only those voxels are paired. Both levels are enumerated vectorised
(sizes -> flat offsets with ``repeat_interleave``), the pairs evaluated and added into the grid
(on the CPU the class scores as a sparse [voxels, Gaussians] product, see ``_add_scores``), in
chunks of Gaussians whose bounding boxes hold at most ``max_pairs_per_chunk`` voxels
(a single Gaussian whose box is larger forms a chunk of its own). Time and memory scale with the
number of pairs, not with voxels x Gaussians. There is no Python loop over Gaussians or voxels; it
runs on any device and is differentiable w.r.t. means, quats, scales, opacities and features (the
selection of pairs is piecewise constant and carries no gradient). The backward pass is in closed
form (no autograd graph per pair): with the pairs as a sparse [Gaussians, voxels] matrix A of their
weights, dL/d g = A dL/d scores, and each pair's dL/dw = dL/d density + <dL/d scores, g> at its
voxel feeds per-column sums that give dL/d (mean, precision, opacity). By default the forward
keeps the pairs for it (``cache_pairs``, 20 bytes a pair and 20 a column in float32); with
``cache_pairs=False`` it recomputes them chunk by chunk, so training memory is O(Gaussians + one
chunk + the grid), not O(pairs). It is differentiable once (no double backward).

Semantics (``scores_to_semantics``): a voxel with ``density < density_threshold`` is free
(``free_label``). Otherwise:

* ``K == num_classes`` (the features include the free class at index ``free_label``): the label is
  the argmax over all K scores, so a voxel whose argmax is the free class is free too;
* ``K == num_classes - 1`` (features of the non-free classes only, in label order with
  ``free_label`` left out): the label is the argmax over the K non-free classes.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .geometry import quat_to_rotmat
from .precision import float32_math
from .registry import MODELS
from .structures import Gaussians

SCORE_MODES = ('softmax', 'raw')
# default pairs per chunk: on the CPU from interleaved one-thread timings of 2**18 .. 2**22 with
# the sorted sparse score product (fewer chunks: fewer passes over the grid's rows), large on CUDA
_CHUNK_CPU = 1 << 21
_CHUNK_CUDA = 1 << 22


@dataclass
class VoxelizerOutput:
    """What ``voxelize_gaussians`` (and ``GaussianVoxelizer(return_fields=True)``) return.

    Attributes:
        density:   [B, X, Y, Z] sum of opacity-weighted Gaussian kernels at the voxel centres.
        scores:    [B, X, Y, Z, K] class scores (see the module docstring).
        semantics: [B, X, Y, Z] labels (None from ``voxelize_gaussians``; set by the module).
        num_pairs: (Gaussian, voxel) pairs enumerated and evaluated.
        num_contributions: of those, the pairs inside the cutoff ellipsoid (the same up to
            floating-point rounding at the ellipsoid's surface).
    """

    density: Tensor  # [B, X, Y, Z]
    scores: Tensor  # [B, X, Y, Z, K]
    semantics: Optional[Tensor] = None  # [B, X, Y, Z]
    num_pairs: int = 0
    num_contributions: int = 0


def grid_spec(pc_range: Sequence[float], occ_size: Sequence[int],
               voxel_size: Optional[Sequence[float]] = None) -> Tuple[tuple, tuple, tuple]:
    """Validated (lower corner, voxel size, voxel counts), each a 3-tuple."""
    if len(pc_range) != 6:
        raise ValueError(f'voxelizer: pc_range must be (x_min, y_min, z_min, x_max, y_max, z_max), '
                         f'got {pc_range!r}; take point_cloud_range from '
                         'configs/_base_/datasets/occ3d_nuscenes.py')
    if len(occ_size) != 3 or any(int(n) != n or int(n) <= 0 for n in occ_size):
        raise ValueError(f'voxelizer: occ_size must be three positive integers (X, Y, Z), got '
                         f'{occ_size!r}; take occ_size from the dataset config')
    lo = tuple(float(v) for v in pc_range[:3])
    hi = tuple(float(v) for v in pc_range[3:])
    size = tuple(int(n) for n in occ_size)
    if any(h <= a for a, h in zip(lo, hi)):
        raise ValueError(f'voxelizer: pc_range {pc_range!r} has max <= min on some axis')
    vs = tuple((h - a) / n for a, h, n in zip(lo, hi, size))
    if voxel_size is not None:
        if len(voxel_size) != 3 or any(
                not math.isclose(float(a), b, rel_tol=1e-6) for a, b in zip(voxel_size, vs)):
            raise ValueError(f'voxelizer: voxel_size {voxel_size!r} does not match pc_range '
                             f'{pc_range!r} / occ_size {occ_size!r} (= {vs}); fix the dataset '
                             'config')
    return lo, vs, size


@float32_math
def voxelize_gaussians(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    features: Tensor,  # [B, N, K]
    pc_range: Sequence[float],
    occ_size: Sequence[int],
    voxel_size: Optional[Sequence[float]] = None,
    cutoff: float = 3.0,
    score_mode: str = 'softmax',
    max_pairs_per_chunk: Optional[int] = None,
    cache_pairs: bool = True,
) -> VoxelizerOutput:
    """Density and class scores of Gaussians at the voxel centres of a grid.

    Args:
        means:     [B, N, 3] centres in the grid's frame (metres).
        quats:     [B, N, 4] rotations [w, x, y, z], need not be normalised.
        scales:    [B, N, 3] standard deviations along the rotated axes (> 0).
        opacities: [B, N] weights (normally in [0, 1]).
        features:  [B, N, K] semantic logits ('softmax') or per-class weights ('raw').
        pc_range:  (x_min, y_min, z_min, x_max, y_max, z_max) of the grid box.
        occ_size:  (X, Y, Z) voxel counts; voxel (i, j, k) has its centre at
                   ``min + voxel_size * (index + 0.5)``.
        voxel_size: optional, only checked against pc_range / occ_size.
        cutoff:    a Gaussian contributes where its Mahalanobis distance is <= cutoff.
        score_mode: 'softmax' (weight softmax(features)) or 'raw' (weight the features as given).
        max_pairs_per_chunk: bound on the (Gaussian, voxel) pairs evaluated at once (memory);
                   None: 2**21 on the CPU, 2**22 on CUDA.
        cache_pairs: when a backward may follow, keep every chunk's pairs from the forward for
                   it (20 bytes a pair with int32 indices, plus 20 a column); False: the
                   backward recomputes them chunk by chunk (memory O(Gaussians + one chunk)).

    Returns:
        VoxelizerOutput with density [B, X, Y, Z], scores [B, X, Y, Z, K] (dtype of ``means``;
        float32 for half-precision inputs), semantics None and the pair counts. Its products run
        in float32 under autocast too (``precision.py``).
    """
    assert means.dim() == 3 and means.shape[-1] == 3, means.shape
    B, N = means.shape[:2]
    assert quats.shape == (B, N, 4), quats.shape
    assert scales.shape == (B, N, 3), scales.shape
    assert opacities.shape == (B, N), opacities.shape
    assert features.dim() == 3 and features.shape[:2] == (B, N), features.shape
    if score_mode not in SCORE_MODES:
        raise ValueError(f'voxelizer: score_mode must be one of {SCORE_MODES}, got {score_mode!r}')
    if not cutoff > 0:
        raise ValueError(f'voxelizer: cutoff must be > 0 (in standard deviations), got {cutoff!r}')
    if max_pairs_per_chunk is not None and max_pairs_per_chunk < 1:
        raise ValueError(f'voxelizer: max_pairs_per_chunk must be >= 1, got {max_pairs_per_chunk}')
    lo, vs, (X, Y, Z) = grid_spec(pc_range, occ_size, voxel_size)
    K = features.shape[-1]
    device, dtype = means.device, means.dtype
    num_vox = X * Y * Z
    grid = _Grid(torch.tensor(lo, device=device, dtype=dtype),
                 torch.tensor(vs, device=device, dtype=dtype), X, Y, Z, float(cutoff) ** 2)

    # per Gaussian, flattened over the batch: G = B * N
    mu = means.reshape(B * N, 3)  # [G, 3]
    R = quat_to_rotmat(quats.reshape(B * N, 4))  # [G, 3, 3]
    s2 = scales.reshape(B * N, 3).square()  # [G, 3]
    opac = opacities.reshape(B * N)  # [G]
    weights = features.softmax(-1) if score_mode == 'softmax' else features  # [B, N, K]
    weights = weights.reshape(B * N, K)  # [G, K]
    batch_of = torch.arange(B, device=device).repeat_interleave(N)  # [G]

    with torch.no_grad():
        # bounding box of the cutoff ellipsoid: half-extent cutoff * sqrt(Sigma_aa)
        var_diag = (R.square() * s2[:, None, :]).sum(-1)  # [G, 3]
        k_min, k_max = grid.index_range(mu - cutoff * var_diag.sqrt(),
                                        mu + cutoff * var_diag.sqrt())  # [G, 3] each
        extent = (k_max - k_min + 1).clamp_min(0)  # [G, 3]
        box_pairs = extent.prod(-1)  # [G]
        live = (box_pairs > 0).nonzero().squeeze(1)  # [G']
        box_pairs = box_pairs[live]  # [G'] upper bound of each Gaussian's pairs (for chunking)
        n_cols = extent[live, 0] * extent[live, 1]  # [G'] (x, y) columns of each box
        box_ends = box_pairs.cumsum(0)  # [G'] inclusive
        # per live Gaussian: batch offset, first column index, box x / y start, columns along y
        ipack = torch.stack([batch_of[live] * num_vox, n_cols.cumsum(0) - n_cols, k_min[live, 0],
                             k_min[live, 1], extent[live, 1]], -1)  # [G', 5]

    if live.numel() == 0:  # nothing reaches the grid: zeros (still usable in a loss)
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (means, quats, scales, opacities, features))
        return VoxelizerOutput(
            density=torch.zeros(B, X, Y, Z, device=device, dtype=dtype,
                                requires_grad=needs_grad),
            scores=torch.zeros(B, X, Y, Z, K, device=device, dtype=dtype,
                               requires_grad=needs_grad))

    # precision Sigma^-1 = R diag(1/s^2) R^T of the live Gaussians
    R_l = R[live]  # [G', 3, 3]
    prec = (R_l / s2[live][:, None, :]) @ R_l.transpose(-1, -2)  # [G', 3, 3]
    fpack = torch.cat([mu[live], prec[:, 0, 0, None], prec[:, 1, 1, None], prec[:, 2, 2, None],
                       prec[:, 0, 1, None], prec[:, 0, 2, None], prec[:, 1, 2, None],
                       opac[live][:, None]], -1)  # [G', 10] mu(3), Pxx Pyy Pzz Pxy Pxz Pyz, o
    chunk = max_pairs_per_chunk or (_CHUNK_CUDA if device.type == 'cuda' else _CHUNK_CPU)
    with torch.no_grad():
        # chunks of live Gaussians whose bounding boxes hold at most `chunk` voxels in all
        bounds, start, G_live = [], 0, live.numel()
        while start < G_live:
            done = int(box_ends[start - 1]) if start > 0 else 0
            stop = int(torch.searchsorted(box_ends, done + chunk, right=True))
            stop = max(stop, start + 1)  # an oversized Gaussian is a chunk of its own
            bounds.append((start, stop))
            start = stop
    # keep the pairs only where a backward can follow (needs_input_grad ignores no_grad mode)
    plan = _Plan(grid, ipack, n_cols, bounds, B * num_vox,
                 cache_pairs=cache_pairs and torch.is_grad_enabled())
    density, scores = _SplatToVoxels.apply(fpack, weights[live], plan)  # [B*V], [B*V, K]
    return VoxelizerOutput(
        density=density.reshape(B, X, Y, Z),  # [B, X, Y, Z]
        scores=scores.reshape(B, X, Y, Z, K),  # [B, X, Y, Z, K]
        num_pairs=plan.num_pairs, num_contributions=plan.num_contributions)


def grid_gaussian_density(points: Tensor,  # [B, P, 3]
                          means: Tensor,  # [B, N, 3]
                          quats: Tensor,  # [B, N, 4]
                          scales: Tensor,  # [B, N, 3]
                          opacities: Tensor,  # [B, N]
                          pc_range: Sequence[float],
                          grid_size: Sequence[int],
                          window: int = 2) -> Tensor:
    """[B, P] densities at arbitrary points: ``grid_gaussian_fields`` without class scores."""
    return grid_gaussian_fields(points, means, quats, scales, opacities, pc_range, grid_size,
                                window=window)[0]


@float32_math
def grid_gaussian_fields(points: Tensor,  # [B, P, 3]
                         means: Tensor,  # [B, N, 3]
                         quats: Tensor,  # [B, N, 4]
                         scales: Tensor,  # [B, N, 3]
                         opacities: Tensor,  # [B, N]
                         pc_range: Sequence[float],
                         grid_size: Sequence[int],
                         window: int = 2,
                         features: Optional[Tensor] = None,  # [B, N, K]
                         score_mode: str = 'softmax') -> Tuple[Tensor, Optional[Tensor]]:
    """Density ``sum_i o_i exp(-0.5 (p - mu_i)^T Sigma_i^-1 (p - mu_i))`` at arbitrary points, for
    Gaussians laid out one per voxel of a grid (the Gaussian head's order: N = X * Y * Z, index
    ``(ix * Y + iy) * Z + iz``).

    Only the Gaussians of a ``window``^3 block of voxels around each point are summed: with the
    point at continuous voxel coordinate x (per axis), the voxels ``floor(x - (window - 1) / 2)``
    onwards, i.e. the voxels whose centres are nearest the point (window 2: the 8 voxels whose
    centres surround it; 3: its own voxel and its 26 neighbours). A truncation: the head keeps
    each mean inside its voxel and its scales bounded, so the dropped terms are far tails. Voxels
    outside the grid are skipped. Differentiable in all Gaussian parameters.

    With ``features`` also the class scores the voxelizer would give a voxel centred there,
    ``sum_i w_i g_i`` with ``w_i`` the density terms and ``g_i = softmax(f_i)`` (``score_mode``
    'softmax') or ``f_i`` ('raw').

    Returns:
        ([B, P] densities, [B, P, K] class scores or None without ``features``).
    """
    assert points.dim() == 3 and points.shape[-1] == 3, points.shape
    if window < 1:
        raise ValueError(f'grid_gaussian_density: window must be >= 1, got {window}')
    if score_mode not in SCORE_MODES:
        raise ValueError(f'grid_gaussian_fields: score_mode must be one of {SCORE_MODES}, got '
                         f'{score_mode!r}')
    B, P = points.shape[:2]
    X, Y, Z = (int(g) for g in grid_size)
    N = X * Y * Z
    if means.shape[:2] != (B, N):
        raise ValueError(f'grid_gaussian_density: {tuple(means.shape[:2])} Gaussians, expected '
                         f'({B}, {N}): one per voxel of the grid {X, Y, Z}')
    device, dtype = means.device, means.dtype
    lo = torch.tensor([float(v) for v in pc_range[:3]], device=device, dtype=dtype)
    hi = torch.tensor([float(v) for v in pc_range[3:]], device=device, dtype=dtype)
    dims = torch.tensor([X, Y, Z], device=device)
    with torch.no_grad():
        x = (points.to(dtype) - lo) / (hi - lo) * dims  # [B, P, 3] continuous voxel coordinates
        start = (x - (window - 1) / 2).floor().long()
        r = torch.arange(window, device=device)
        offs = torch.stack(torch.meshgrid(r, r, r, indexing='ij'), -1).reshape(-1, 3)  # [M, 3]
        nb = start[:, :, None, :] + offs  # [B, P, M, 3]
        ok = ((nb >= 0) & (nb < dims)).all(-1)  # [B, P, M]
        nb = torch.minimum(nb.clamp_min(0), dims - 1)
        flat = (nb[..., 0] * Y + nb[..., 1]) * Z + nb[..., 2]  # [B, P, M]
        flat = (flat + torch.arange(B, device=device)[:, None, None] * N).reshape(-1)
    R = quat_to_rotmat(quats.reshape(B * N, 4))  # [BN, 3, 3]
    prec = (R / scales.reshape(B * N, 1, 3).square()) @ R.transpose(-1, -2)  # [BN, 3, 3]
    # one gather of the packed parameters: mean (3), Pxx Pyy Pzz Pxy Pxz Pyz, opacity
    pack = torch.cat([means.reshape(B * N, 3), prec[:, 0, 0, None], prec[:, 1, 1, None],
                      prec[:, 2, 2, None], prec[:, 0, 1, None], prec[:, 0, 2, None],
                      prec[:, 1, 2, None], opacities.reshape(B * N, 1)], -1)  # [BN, 10]
    # unbind (not indexing): its backward stacks the 10 gradients instead of summing 10
    # zero-padded copies of the whole gathered block
    mx, my, mz, pxx, pyy, pzz, pxy, pxz, pyz, o = pack[flat].reshape(B, P, -1, 10).unbind(-1)
    px, py, pz = points.to(dtype)[:, :, None, :].unbind(-1)  # [B, P, 1] each
    dx, dy, dz = px - mx, py - my, pz - mz  # [B, P, M]
    m2 = (pxx * dx * dx + pyy * dy * dy + pzz * dz * dz
          + 2 * (pxy * dx * dy + pxz * dx * dz + pyz * dy * dz))
    w = o * torch.exp(-0.5 * m2) * ok  # [B, P, M]
    if features is None:
        return w.sum(-1), None
    g = features.softmax(-1) if score_mode == 'softmax' else features
    g = g.reshape(B * N, -1)[flat].reshape(B, P, -1, g.shape[-1])  # [B, P, M, K]
    return w.sum(-1), (w[..., None] * g).sum(-2)


@dataclass
class _Grid:
    lo: Tensor  # [3]
    vs: Tensor  # [3]
    X: int
    Y: int
    Z: int
    cutoff2: float

    def index_range(self, low: Tensor, high: Tensor) -> Tuple[Tensor, Tensor]:
        """First and last voxel index whose centre lies in [low, high] per axis, clamped to the grid
        (last < first where none). low, high: [..., D] with D = 3 (x, y, z) or 1 (z only)."""
        D = low.shape[-1]
        lo, vs = self.lo[3 - D:], self.vs[3 - D:]
        n = torch.tensor((self.X, self.Y, self.Z)[3 - D:], device=low.device)
        big = float(max(self.X, self.Y, self.Z))
        # voxel index k has its centre at lo + vs * (k + 0.5); clamp in float before the int cast
        k_min = torch.ceil((low - lo) / vs - 0.5).nan_to_num(nan=big).clamp(0, big).long()
        k_max = torch.floor((high - lo) / vs - 0.5).nan_to_num(nan=-1.0).clamp(-1, big).long()
        return torch.minimum(k_min, n), torch.minimum(k_max, n - 1)


@dataclass
class _Plan:
    """Everything about the pairs that carries no gradient, shared by forward and backward."""
    grid: _Grid
    ipack: Tensor  # [G', 5] batch offset, first column, box x / y start, columns along y
    n_cols: Tensor  # [G'] (x, y) columns of each Gaussian's box
    bounds: list  # [(start, stop)] chunks of live Gaussians
    num_out: int  # B * X * Y * Z
    cache_pairs: bool = True  # keep the forward's pairs for the backward (else recompute them)
    num_pairs: int = 0
    num_contributions: int = 0


@dataclass
class _ChunkPairs:
    """The pairs of one chunk of live Gaussians (no gradient): columns, then pairs in column order
    (so also in Gaussian order). A pair is the voxel ``u`` steps above its column's first one."""
    gid: Tensor  # [C] Gaussian of each column (index within the chunk)
    dx: Tensor  # [C] column centre x minus the Gaussian's mean x
    dy: Tensor  # [C] column centre y minus the Gaussian's mean y
    ez0: Tensor  # [C] centre z of the column's first pair minus the Gaussian's mean z
    pcol: Tensor  # [P] column of each pair (int32 where the indices fit, else int64)
    flat: Tensor  # [P] flat voxel index (batch included; pcol's dtype)
    u: Tensor  # [P] steps above the column's first pair (float): ez = ez0 + voxel_z * u
    e: Tensor  # [P] exp(-m^2 / 2) inside the cutoff ellipsoid, 0 outside (rounding at the surface)
    w: Tensor  # [P] o * e, the pair's weight
    crow: Tensor  # [g + 1] Gaussian i's pairs are crow[i]:crow[i + 1] (pcol's dtype)
    num_inside: int  # pairs with m^2 <= cutoff^2


def _column_quadratic(fp: Sequence[Tensor], ex: Tensor, ey: Tensor) -> Tuple[Tensor, Tensor]:
    """In a column, m^2(z) = Pzz ez^2 + 2 b ez + r with ez = z - mu_z.

    Args:
        fp: the 10 packed fields (mu x y z, Pxx Pyy Pzz Pxy Pxz Pyz, opacity) of each column's
            Gaussian, [C] each.
        ex, ey: [C] column centre minus the mean, x and y.
    Returns:
        b, r: each [C].
    """
    b = fp[7] * ex + fp[8] * ey  # [C] Pxz ex + Pyz ey
    r = fp[3] * ex * ex + fp[4] * ey * ey + 2 * fp[6] * ex * ey  # [C]
    return b, r


def _gather(fields: Sequence[Tensor], index: Tensor) -> list:
    """``[f.index_select(0, index) for f in fields]``: fields [N] each (or the rows of a [F, N]
    tensor) -> [M] each for an index [M]."""
    return [f.index_select(0, index) for f in fields]


@torch.no_grad()
def _chunk_pairs(plan: _Plan, start: int, stop: int, fpack: Tensor) -> _ChunkPairs:
    """The (Gaussian, voxel) pairs of live Gaussians ``start:stop`` and their weights, in two
    levels: the (x, y) columns of each bounding box, then in each column exactly the voxels whose
    centres lie inside the cutoff ellipsoid (the solution of a quadratic in z).

    Per column, -m^2 / 2 is a quadratic in the step u above the column's first voxel (u < Z, so
    no cancellation), so a pair costs a gather of its column's coefficients and a few products.
    """
    grid, device = plan.grid, fpack.device
    ncol = plan.n_cols[start:stop]  # [g]
    n_c = int(ncol.sum())
    gid = torch.repeat_interleave(ncol, output_size=n_c)  # [C]
    # gathers field by field (1-D index_select is much faster than gathering rows of 5 or 10)
    boff, col0, bx, by, ny = _gather(plan.ipack[start:stop].t(), gid)  # [C] each
    first_col = int(plan.ipack[start, 1])
    local = torch.arange(first_col, first_col + n_c, device=device) - col0  # [C]
    cx = torch.div(local, ny, rounding_mode='floor')  # [C]
    ix = bx + cx  # [C]
    iy = by + local - cx * ny  # [C]
    fp = _gather(fpack[start:stop].t(), gid)  # 10 fields, [C] each
    lo, vs = grid.lo.tolist(), grid.vs.tolist()
    ex = (ix.to(fpack.dtype) + 0.5).mul_(vs[0]).add_(lo[0]) - fp[0]  # [C] column centre - mean
    ey = (iy.to(fpack.dtype) + 0.5).mul_(vs[1]).add_(lo[1]) - fp[1]  # [C]
    pzz = fp[5]  # [C]
    b, r = _column_quadratic(fp, ex, ey)  # [C] each
    disc = b * b - pzz * (r - grid.cutoff2)  # [C] < 0: the column misses the ellipsoid
    half = disc.clamp_min(0).sqrt() / pzz  # [C]
    zc = fp[2] - b / pzz  # [C] centre of the z interval
    kz_min, kz_max = grid.index_range((zc - half)[:, None], (zc + half)[:, None])  # [C, 1] each
    kz_min = kz_min.squeeze(1)  # [C]
    nz = (kz_max.squeeze(1) - kz_min + 1).clamp_min(0).masked_fill(disc < 0, 0)  # [C]
    n_p = int(nz.sum())
    # pair-level indices in int32 where they fit (half the memory traffic of int64)
    idt = torch.int32 if max(plan.num_out, n_p) < 2 ** 31 else torch.int64
    pcol = torch.repeat_interleave(nz.to(idt), output_size=n_p)  # [P] column of each pair
    # -m^2/2 = h2 u^2 + h1 u + h0 with ez = ez0 + vz u
    vz = vs[2]
    ez0 = (kz_min.to(fpack.dtype) + 0.5).mul_(vz).add_(lo[2]) - fp[2]  # [C]
    h2 = -0.5 * vz * vz * pzz  # [C]
    h1 = -vz * (pzz * ez0 + b)  # [C]
    h0 = -0.5 * ((pzz * ez0 + 2 * b) * ez0 + r)  # [C]
    # per pair p (position p in the chunk) of column c: u = p - first[c], flat = p + offset[c]
    first = nz.cumsum(0) - nz  # [C]
    col_flat = boff + (ix * grid.Y + iy) * grid.Z + kz_min  # [C] flat index of u = 0
    first_p, off_p = _gather([first.to(idt), (col_flat - first).to(idt)], pcol)  # [P] each
    c2, c1, c0, o = _gather([h2, h1, h0, fp[9]], pcol)  # [P] each
    pos = torch.arange(n_p, device=device, dtype=idt)  # [P]
    flat = off_p.add_(pos)  # [P]
    u = pos.sub_(first_p).to(fpack.dtype)  # [P]
    h = torch.addcmul(c0, torch.addcmul(c1, c2, u), u)  # [P] -m^2 / 2
    outside = h < -0.5 * grid.cutoff2  # [P] (only rounding at the surface can make it true)
    e = torch.exp(h).masked_fill_(outside, 0)  # [P]
    w = o.mul_(e)  # [P]
    # pairs per Gaussian of the chunk: its columns' counts summed (the CSR rows of its pairs)
    crow = torch.zeros(stop - start + 1, dtype=idt, device=device)
    crow[1:] = torch.zeros(stop - start, dtype=nz.dtype, device=device).index_add_(
        0, gid, nz).cumsum(0)
    return _ChunkPairs(gid, ex, ey, ez0, pcol, flat, u, e, w, crow,
                       n_p - int(outside.sum()))


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: Tuple[int, int]) -> Tensor:
    """A sparse CSR matrix (entries of row i: crow[i]:crow[i + 1], in ``col`` / ``values``)."""
    with warnings.catch_warnings():  # torch warns once that sparse CSR is a beta feature
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _pair_matrix(pairs: _ChunkPairs, num_out: int) -> Tensor:
    """[g, num_out] sparse CSR matrix of the pair weights (row: Gaussian of the chunk, column:
    flat voxel); the pairs are already in row order."""
    return _csr(pairs.crow, pairs.flat, pairs.w, (pairs.crow.numel() - 1, num_out))


def _pair_grads(fp: Tensor, pairs: _ChunkPairs, g_w: Tensor, vz: float) -> Tensor:
    """dL/d fpack of the chunk's Gaussians from dL/dw of each pair, in closed form.

    With d = p - mu, m^2 = d^T P d and w = o e, e = exp(-m^2 / 2) (inside the ellipsoid)::

        dL/do   = sum_p g_p e_p
        dL/dmu  = o P sum_p q_p d_p                              (q_p = g_p e_p)
        dL/dP_aa = -o/2 sum_p q_p d_a^2,   dL/dP_ab = -o sum_p q_p d_a d_b   (a != b)

    In a column d_x, d_y are constant, so the sums over pairs reduce to the per-column sums of q,
    q ez and q ez^2 first.

    Args:
        fp:   [g, 10] packed Gaussians of the chunk (mu, Pxx Pyy Pzz Pxy Pxz Pyz, o).
        pairs: the chunk's pairs.
        g_w:  [P] dL/dw of each pair.
        vz:   voxel size along z.
    Returns:
        [g, 10] dL/d fp.
    """
    q = g_w * pairs.e  # [P]
    qu = q * pairs.u  # [P]
    C = pairs.gid.numel()
    q0 = q.new_zeros(C).index_add_(0, pairs.pcol, q)  # [C] sum q
    s1 = q.new_zeros(C).index_add_(0, pairs.pcol, qu)  # [C] sum q u
    s2 = q.new_zeros(C).index_add_(0, pairs.pcol, qu.mul_(pairs.u))  # [C] sum q u^2
    # ez = ez0 + vz u
    ez0 = pairs.ez0  # [C]
    q1 = ez0 * q0 + vz * s1  # [C] sum q ez
    q2 = ez0 * ez0 * q0 + (2 * vz) * ez0 * s1 + (vz * vz) * s2  # [C] sum q ez^2
    dx, dy = pairs.dx, pairs.dy  # [C] each
    mom = torch.stack([dx * q0, dy * q0, q1, dx * dx * q0, dy * dy * q0, q2, dx * dy * q0,
                       dx * q1, dy * q1, q0], -1)  # [C, 10] sum over the column's pairs
    # per Gaussian (its columns are consecutive): S = sum q d (3), sum q d_a d_b (xx yy zz xy xz
    # yz), sum q; as a [g, C] sparse matrix of ones times the columns' moments
    g = fp.shape[0]
    ccrow = torch.zeros(g + 1, dtype=torch.int64, device=fp.device)
    ccrow[1:] = torch.bincount(pairs.gid, minlength=g).cumsum(0)
    mom = _csr(ccrow, torch.arange(C, device=fp.device), q.new_ones(C), (g, C)) @ mom  # [g, 10]
    o = fp[:, 9:]  # [g, 1]
    pxx, pyy, pzz, pxy, pxz, pyz = fp[:, 3:9].unbind(-1)  # [g] each
    prec = torch.stack([torch.stack([pxx, pxy, pxz], -1), torch.stack([pxy, pyy, pyz], -1),
                        torch.stack([pxz, pyz, pzz], -1)], -2)  # [g, 3, 3]
    g_mu = o * (prec @ mom[:, :3, None]).squeeze(-1)  # [g, 3]
    g_pd = -0.5 * o * mom[:, 3:6]  # [g, 3] Pxx Pyy Pzz
    g_po = -o * mom[:, 6:9]  # [g, 3] Pxy Pxz Pyz
    return torch.cat([g_mu, g_pd, g_po, mom[:, 9:]], -1)  # [g, 10]


def _add_scores(scores: Tensor, pairs: _ChunkPairs, weights: Tensor, buf: Tensor) -> Tensor:
    """``scores[flat_p] += w_p * weights[gaussian of p]`` for every pair p of a chunk, in place.

    On the CPU the pairs are sorted by voxel (a stable sort of their int keys) into a sparse CSR
    [R, g] matrix of weights (rows: the R voxels from the chunk's first to its last, columns: the
    chunk's Gaussians), and the rows of ``scores`` get its product with the dense [g, K] weights
    added in place: each voxel's row is summed from its pairs without forming their [P, K]
    rows. Elsewhere the [P, K] rows are formed in ``buf``
    (reused across chunks; a larger one is returned) and scattered with ``index_put_``.

    Args:
        scores:  [V, K] accumulated in place.
        pairs:   the chunk's pairs (in Gaussian order, ``crow`` delimiting each Gaussian's).
        weights: [g, K] the chunk's Gaussians' class weights.
        buf:     scratch for the [P, K] rows (unused on the CPU).
    Returns:
        the scratch buffer to pass to the next chunk.
    """
    n_p, K = pairs.w.numel(), weights.shape[1]
    if n_p == 0:
        return buf
    pair_gid = torch.repeat_interleave(pairs.crow.diff(), output_size=n_p)  # [P] its Gaussian
    if scores.device.type == 'cpu':
        flat, order = torch.sort(pairs.flat, stable=True)  # [P] each
        # rows: the voxels first:last that the chunk reaches (a product pass costs O(rows))
        first, last = int(flat[0]), int(flat[-1])
        vrow = torch.zeros(last - first + 2, dtype=flat.dtype)  # [R + 1] CSR rows
        vrow[1:] = torch.bincount(flat, minlength=last + 1)[first:].cumsum(0)
        A_t = _csr(vrow, pair_gid.index_select(0, order), pairs.w.index_select(0, order),
                   (last - first + 1, weights.shape[0]))  # [R, g]
        scores[first:last + 1].addmm_(A_t, weights)  # [R, K]
        return buf
    # row p: the weights of the pair's Gaussian (pairs are in Gaussian order) times w_p
    if buf.numel() < n_p * K:
        buf = weights.new_empty(n_p * K)
    contrib = torch.index_select(weights, 0, pair_gid,
                                 out=buf[:n_p * K].view(n_p, K)).mul_(pairs.w[:, None])
    scores.index_put_((pairs.flat,), contrib, accumulate=True)  # [P, K] into [V, K]
    return buf


class _SplatToVoxels(torch.autograd.Function):
    """(fpack [G', 10], weights [G', K]) -> (density [V], scores [V, K]).

    Forward scatters each chunk's pair weights; the backward is in closed form (``_pair_grads``)
    with the chunk's pairs as a sparse [g, V] matrix A of weights: dL/d weights = A dL/d scores,
    and dL/dw of a pair is dL/d density + <dL/d scores, weights> at its voxel (a sampled product).
    With ``plan.cache_pairs`` the forward keeps the pairs for the backward (20 bytes a pair,
    20 a column); otherwise the backward recomputes them chunk by chunk, so that memory stays
    O(Gaussians + one chunk + the grid).
    """

    @staticmethod
    def forward(ctx, fpack: Tensor, weights: Tensor, plan: _Plan):
        K = weights.shape[-1]
        density = fpack.new_zeros(plan.num_out)  # [V]
        scores = fpack.new_zeros(plan.num_out, K)  # [V, K]
        plan.num_pairs = plan.num_contributions = 0
        keep = plan.cache_pairs and any(ctx.needs_input_grad[:2])  # a backward may follow
        cached = []
        buf = fpack.new_empty(0)  # one [P, K] block reused by every chunk (no page faults)
        for start, stop in plan.bounds:
            pairs = _chunk_pairs(plan, start, stop, fpack)
            density.index_add_(0, pairs.flat, pairs.w)
            buf = _add_scores(scores, pairs, weights[start:stop], buf)
            plan.num_pairs += int(pairs.w.numel())
            plan.num_contributions += pairs.num_inside
            if keep:
                cached.append(pairs)
        ctx.save_for_backward(fpack, weights)
        ctx.plan = plan
        ctx.cached = cached if keep else None
        return density, scores

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_density: Tensor, grad_scores: Tensor):
        fpack, weights = ctx.saved_tensors
        plan, cached = ctx.plan, ctx.cached
        ctx.cached = None  # differentiable once: free the pairs
        grad_fpack = torch.zeros_like(fpack) if ctx.needs_input_grad[0] else None
        grad_weights = torch.zeros_like(weights) if ctx.needs_input_grad[1] else None
        grad_scores_t = grad_scores.t()  # [K, V]
        for i, (start, stop) in enumerate(plan.bounds):
            pairs = cached[i] if cached else _chunk_pairs(plan, start, stop, fpack)
            if cached:
                cached[i] = None
            A = _pair_matrix(pairs, plan.num_out)  # [g, V]
            if grad_weights is not None and grad_scores.device.type == 'cpu':
                # A @ dL/d scores as bags of rows (Gaussian i's bag: its pairs' voxels)
                grad_weights[start:stop] = torch.nn.functional.embedding_bag(
                    pairs.flat, grad_scores, pairs.crow[:-1], mode='sum',
                    per_sample_weights=pairs.w)  # [g, K]
            elif grad_weights is not None:
                grad_weights[start:stop] = A @ grad_scores  # [g, K]
            if grad_fpack is not None:
                # dL/dw = dL/d density + <dL/d scores, weights> at the pair's voxel
                dots = torch.sparse.sampled_addmm(A, weights[start:stop], grad_scores_t,
                                                  beta=0.0).values()  # [P]
                g_w = grad_density.index_select(0, pairs.flat) + dots  # [P]
                grad_fpack[start:stop] = _pair_grads(fpack[start:stop], pairs, g_w,
                                                     float(plan.grid.vs[2]))
        return grad_fpack, grad_weights, None


def scores_to_semantics(
    density: Tensor,  # [B, X, Y, Z]
    scores: Tensor,  # [B, X, Y, Z, K]
    density_threshold: float,
    free_label: int,
    num_classes: int,
    dtype: torch.dtype = torch.int64,
) -> Tensor:
    """Voxel labels from density and class scores (rules in the module docstring).

    Args:
        density: [B, X, Y, Z]
        scores:  [B, X, Y, Z, K], K == num_classes (free included at ``free_label``) or
                 K == num_classes - 1 (non-free classes in label order, free left out).
        density_threshold: voxels with density below it are free.
        free_label: label of the free class.
        num_classes: number of labels including free.
        dtype: of the result (int64 or uint8).
    Returns:
        [B, X, Y, Z] labels in [0, num_classes).
    """
    assert density.dim() == 4, density.shape
    assert scores.dim() == 5 and scores.shape[:4] == density.shape, (scores.shape, density.shape)
    K = scores.shape[-1]
    if not 0 <= free_label < num_classes:
        raise ValueError(f'voxelizer: free_label {free_label} is not in '
                         f'[0, num_classes={num_classes})')
    if K not in (num_classes, num_classes - 1):
        raise ValueError(
            f'voxelizer: the Gaussians have K={K} features but num_classes={num_classes}; '
            'K must be num_classes (free included) or num_classes - 1 (free left out): fix '
            'num_classes in the voxelizer config or the head\'s number of outputs')
    with torch.no_grad():
        # the argmax only where the density does not make the voxel free (often few voxels)
        keep = (~(density < density_threshold)).reshape(-1).nonzero().squeeze(1)  # [M]
        arg = scores.reshape(-1, K).index_select(0, keep).argmax(-1)  # [M]
        if K == num_classes - 1:
            arg = arg + (arg >= free_label).long()  # skip over the free label
        labels = torch.full(density.shape, free_label, dtype=dtype, device=density.device)
        labels.view(-1)[keep] = arg.to(dtype)  # [B, X, Y, Z]
    return labels


@MODELS.register_module()
class GaussianVoxelizer(nn.Module):
    """Turns Gaussians into Occ3D-style voxel labels (no parameters).

    Args:
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the grid (dataset config
            ``point_cloud_range``).
        occ_size: (X, Y, Z) voxel counts (dataset config ``occ_size``).
        num_classes: labels including free (dataset config ``num_classes``).
        free_label: label of free voxels (dataset config ``free_label``).
        voxel_size: optional, checked against pc_range / occ_size.
        density_threshold: voxels with density below it are free.
        cutoff: Gaussians contribute within this many standard deviations (Mahalanobis).
        score_mode: 'softmax' (features are logits; vote with probabilities) or 'raw'.
        max_pairs_per_chunk: memory bound, see ``voxelize_gaussians``.
        cache_pairs: keep the pairs from the forward for the backward (faster; 20 bytes a pair,
            20 a column); False recomputes them (memory-bounded), see ``voxelize_gaussians``.
        label_dtype: 'int64' or 'uint8' (Occ3D ground truth is uint8).
    """

    def __init__(self, pc_range: Sequence[float], occ_size: Sequence[int], num_classes: int,
                 free_label: int, voxel_size: Optional[Sequence[float]] = None,
                 density_threshold: float = 0.5, cutoff: float = 3.0, score_mode: str = 'softmax',
                 max_pairs_per_chunk: Optional[int] = None, label_dtype: str = 'int64',
                 cache_pairs: bool = True):
        super().__init__()
        grid_spec(pc_range, occ_size, voxel_size)  # fail early on a bad config
        if score_mode not in SCORE_MODES:
            raise ValueError(f'GaussianVoxelizer: score_mode must be one of {SCORE_MODES}, got '
                             f'{score_mode!r}')
        if label_dtype not in ('int64', 'uint8'):
            raise ValueError(f"GaussianVoxelizer: label_dtype must be 'int64' or 'uint8', got "
                             f'{label_dtype!r}')
        if label_dtype == 'uint8' and num_classes > 256:
            raise ValueError(f'GaussianVoxelizer: {num_classes} classes do not fit '
                             "label_dtype 'uint8'; use 'int64'")
        if not 0 <= free_label < num_classes:
            raise ValueError(f'GaussianVoxelizer: free_label {free_label} is not in '
                             f'[0, num_classes={num_classes})')
        self.pc_range = tuple(float(v) for v in pc_range)
        self.occ_size = tuple(int(n) for n in occ_size)
        self.voxel_size = None if voxel_size is None else tuple(float(v) for v in voxel_size)
        self.num_classes = int(num_classes)
        self.free_label = int(free_label)
        self.density_threshold = float(density_threshold)
        self.cutoff = float(cutoff)
        self.score_mode = score_mode
        self.max_pairs_per_chunk = max_pairs_per_chunk
        self.cache_pairs = bool(cache_pairs)
        self.label_dtype = torch.uint8 if label_dtype == 'uint8' else torch.int64

    def forward(self, gaussians: Gaussians,
                return_fields: bool = False) -> Union[Tensor, VoxelizerOutput]:
        """Labels [B, X, Y, Z]; with ``return_fields`` a VoxelizerOutput (semantics, density
        [B, X, Y, Z], scores [B, X, Y, Z, K], pair counts)."""
        K = gaussians.num_features
        if K not in (self.num_classes, self.num_classes - 1):
            raise ValueError(
                f'GaussianVoxelizer: the Gaussians have K={K} features but num_classes='
                f'{self.num_classes}; K must be num_classes (free included) or num_classes - 1')
        out = voxelize_gaussians(
            gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
            gaussians.features, self.pc_range, self.occ_size, self.voxel_size, cutoff=self.cutoff,
            score_mode=self.score_mode, max_pairs_per_chunk=self.max_pairs_per_chunk,
            cache_pairs=self.cache_pairs)
        out.semantics = scores_to_semantics(out.density, out.scores, self.density_threshold,
                                            self.free_label, self.num_classes, self.label_dtype)
        return out if return_fields else out.semantics

    def extra_repr(self) -> str:
        return (f'pc_range={self.pc_range}, occ_size={self.occ_size}, '
                f'density_threshold={self.density_threshold}, cutoff={self.cutoff}, '
                f'score_mode={self.score_mode!r}')


def gaussians_from_voxels(
    semantics: Tensor,  # [B, X, Y, Z]
    pc_range: Sequence[float],
    free_label: int,
    num_classes: int,
    scale: float,
    opacity: float = 1.0,
    logit: float = 20.0,
) -> Gaussians:
    """One isotropic Gaussian per occupied voxel, at its centre, with one-hot class logits.

    For tests, benchmarks and renderer checks on a ground-truth grid. Batches with different
    occupied counts are padded with zero-opacity Gaussians.

    Args:
        semantics: [B, X, Y, Z] integer labels; voxels equal to ``free_label`` get no Gaussian.
        pc_range: the grid box; the voxel size is its extent over the grid shape.
        free_label, num_classes: the label convention (features have K = num_classes).
        scale: standard deviation (metres) of every Gaussian.
        opacity: of every Gaussian.
        logit: value of the true class's logit (others 0).
    Returns:
        Gaussians with N = the largest occupied count of the batch, K = num_classes.
    """
    assert semantics.dim() == 4, semantics.shape
    B = semantics.shape[0]
    lo, vs, _ = grid_spec(pc_range, semantics.shape[1:])
    device = semantics.device
    if semantics.numel() and not 0 <= int(semantics.min()) <= int(semantics.max()) < num_classes:
        raise ValueError(f'gaussians_from_voxels: labels must be in [0, {num_classes}), got '
                         f'[{int(semantics.min())}, {int(semantics.max())}]; pass the right '
                         'num_classes or map ignore labels (e.g. 255) to free first')
    occ = semantics.long() != free_label  # [B, X, Y, Z]
    n_per = occ.flatten(1).sum(1)  # [B]
    N = int(n_per.max()) if B > 0 else 0
    means = torch.zeros(B, N, 3, device=device)
    features = torch.zeros(B, N, num_classes, device=device)
    opac = torch.zeros(B, N, device=device)
    b, i, j, k = occ.nonzero(as_tuple=True)  # each [M]
    slot = torch.arange(b.numel(), device=device) - (n_per.cumsum(0) - n_per)[b]  # [M]
    idx = torch.stack([i, j, k], -1).float()  # [M, 3]
    means[b, slot] = torch.tensor(lo, device=device) + torch.tensor(vs, device=device) * (idx + 0.5)
    features[b, slot, semantics[b, i, j, k].long()] = logit
    opac[b, slot] = opacity
    quats = torch.zeros(B, N, 4, device=device)
    quats[..., 0] = 1
    scales = torch.full((B, N, 3), float(scale), device=device)
    return Gaussians(means, quats, scales, opac, features)


__all__ = ['GaussianVoxelizer', 'VoxelizerOutput', 'voxelize_gaussians', 'scores_to_semantics',
           'gaussians_from_voxels', 'grid_gaussian_density']
