"""Pure-PyTorch tile-based Gaussian splatting with the conventions of gsplat 1.5.3 (any device).

Pipeline (every step vectorised; Python loops only run over chunks):

1. ``project_gaussians``: EWA projection into every camera (opacity-aware radii, as
   ``gsplat.rasterization``); the visible (camera, Gaussian) pairs are packed into a list of M.
2. ``_bin_tiles`` (no grad): each visible Gaussian covers the screen tiles of its box
   ``mean +- radius`` (gsplat's ``isect_tiles`` rule); the (image, tile, Gaussian) intersections
   are sorted by (image, tile, depth) with one stable sort.
3. ``_select_pairs`` (no grad): tiles, longest first, are processed in padded blocks
   [tiles, queries, Gaussians]; every query point (a pixel centre, or a sampled (u, v)) meets the
   Gaussians of its tile in depth order. Pairs with power < 0 or alpha < 1/255 are skipped, and the
   running transmittance drops every pair from the first one that would take it to <= 1e-4
   (gsplat's exclusive stop). Out come the composited pairs, grouped by query, front to back:
   the number of pairs per query, and per pair its Gaussian, alpha and weight alpha * T.
4. ``_CompositePairs`` (autograd Function): features and depth are accumulated with a sparse CSR
   matrix product; the backward is the analytic gradient of the same sums (the one gsplat's CUDA
   backward computes), in chunks of whole queries, so memory is proportional to the number of
   composited pairs, never to pixels x Gaussians. Only 8 bytes per pair (Gaussian index, alpha)
   are kept for the backward; the query of a pair and its transmittance are recomputed per chunk.

Every query whose tile a Gaussian covers sees it, as in gsplat. For opacities <= 1 a Gaussian's box
contains every point where its alpha is >= 1/255, so the result does not depend on ``tile_size``,
which only trades the size of the intersection sort against padded candidates (8 is fastest on CPU
for nuScenes-sized images).
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..precision import HALF_DTYPES, float32_math
from ..registry import MODELS
from ..structures import Cameras, Gaussians, RenderOutput
from .base import BaseSplatRenderer
from .projection import ALPHA_THRESHOLD, project_gaussians, quat_scale_to_covar

LOG_INV_ALPHA_THRESHOLD = -math.log(ALPHA_THRESHOLD)  # alpha >= 1/255 <=> power <= ln o + this

# gsplat 1.5.3, RasterizeToPixels3DGSFwd.cu: alpha is clamped to 0.999 and a pixel stops before the
# Gaussian that would take its transmittance to <= 1e-4
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
LOG_MIN_TRANSMITTANCE = math.log(MIN_TRANSMITTANCE)
# largest |scale| (metres) passed on to the covariance; see rasterize_torch
MAX_SCALE = 1e12


def _sparse_rows(crow: Tensor, cols: Tensor, values: Tensor, num_cols: int) -> Tensor:
    """A [len(crow) - 1, num_cols] CSR matrix (invariant checks off: the inputs are built here)."""
    with warnings.catch_warnings():
        # torch's "sparse CSR support is in beta" notice: these are plain sum operators
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, size=(crow.numel() - 1, num_cols),
                                       check_invariants=False)


class _CompositePairs(torch.autograd.Function):
    """Front-to-back alpha compositing of a fixed list of (query, Gaussian) pairs.

    Forward inputs: means2d [M, 2], conics [M, 3], opacities [M], colors [M, D] (differentiable);
    alpha [n] and w [n] of every pair (alpha, and alpha times the transmittance in front of it,
    computed from the differentiable inputs by ``_select_pairs``), qxy [Q, 2] query points,
    pair_g [n] (int32, grouped by query, front to back), crow [Q + 1] (int32 pair offsets per
    query), chunk (pairs per chunk in the backward).
    Outputs: colors [Q, D] = sum_i w_i c_i and alpha [Q] = sum_i w_i = 1 - prod_i (1 - alpha_i),
    with w_i = alpha_i T_i and T_i = prod_{j < i} (1 - alpha_j) over the pairs of the same query.
    Only alpha and pair_g are saved per pair: the backward recomputes T (a float64 running sum of
    ln(1 - alpha) within each query) and the query of each pair (from crow), chunk by chunk.

    The backward is the analytic gradient of these sums (what gsplat's CUDA backward computes):
    d out / d alpha_i = T_i c_i - (sum_{k > i} w_k c_k) / (1 - alpha_i); alpha_i =
    min(0.999, o exp(-power)) passes no gradient where the clamp is active.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, alpha, w, qxy, pair_g, crow, chunk):
        n, Q, M, D = pair_g.numel(), qxy.shape[0], means2d.shape[0], colors.shape[1]
        if n:
            # one more column of ones: its sum of weights is the accumulated alpha
            out = _sparse_rows(crow, pair_g, w, M) @ torch.cat(
                [colors, colors.new_ones(M, 1)], 1)  # [Q, D + 1]
            out_colors, out_alpha = out[:, :D].contiguous(), out[:, D].clamp(0.0, 1.0)
        else:
            out_colors, out_alpha = colors.new_zeros(Q, D), colors.new_zeros(Q)
        t_final = 1.0 - out_alpha  # [Q] transmittance behind the last composited pair
        ctx.save_for_backward(means2d, conics, opacities, colors, alpha, qxy, pair_g, crow,
                              t_final)
        ctx.chunk = chunk
        return out_colors, out_alpha

    @staticmethod
    def backward(ctx, v_out_colors, v_out_alpha):
        (means2d, conics, opacities, colors, alpha, qxy, pair_g, crow,
         t_final) = ctx.saved_tensors
        n, Q, M, D = pair_g.numel(), qxy.shape[0], means2d.shape[0], colors.shape[1]
        sums = means2d.new_zeros(6, M)  # per Gaussian: sums over its pairs, see below
        v_colors = torch.zeros_like(colors)  # [M, D]
        if n and (v_out_colors is not None or v_out_alpha is not None):
            if v_out_colors is None:
                v_out_colors = colors.new_zeros(Q, D)
            if v_out_alpha is None:
                v_out_alpha = t_final.new_zeros(Q)
            v_out_colors = v_out_colors.contiguous()
            g_alpha = v_out_alpha * t_final  # [Q] d(1 - T_final)/d alpha_i = T_final / (1 - a_i)
            colors_t = colors.t().contiguous()  # [D, M]
            mx, my = means2d[:, 0].contiguous(), means2d[:, 1].contiguous()
            qx, qy = qxy[:, 0].contiguous(), qxy[:, 1].contiguous()
            # chunks of whole queries (~ctx.chunk pairs each): everything below is chunk-local
            crow_l = crow.long()
            cuts = torch.searchsorted(crow_l, torch.arange(
                ctx.chunk, max(n, ctx.chunk), ctx.chunk, device=crow.device))
            bounds = [0] + sorted(set(cuts.tolist()) - {0, Q}) + [Q]
            for q0, q1 in zip(bounds[:-1], bounds[1:]):
                p0, p1 = int(crow_l[q0]), int(crow_l[q1])
                if p1 == p0:
                    continue
                g = pair_g[p0:p1]
                crow_c = crow[q0:q1 + 1] - p0
                per_q = crow_c[1:].long() - crow_c[:-1].long()  # [q] pairs per query
                ql = torch.repeat_interleave(torch.arange(q1 - q0, device=crow.device),
                                             per_q)  # [m] chunk-local query of each pair
                a_ = alpha[p0:p1]
                # T_i = exp(sum of ln(1 - alpha_j) over the earlier pairs of its query)
                # (the running sum over the chunk in float64; what is left after subtracting the
                # sum before the query is >= ln 1e-4 and exact enough in float32)
                lg = torch.log1p(-a_)  # [m]
                cs = torch.cumsum(lg, 0, dtype=torch.float64)  # inclusive, over the chunk
                first = crow_c[:-1].long()  # [q] first pair of each query
                before = torch.where(first > 0, cs.index_select(0, (first - 1).clamp_min(0)),
                                     torch.zeros_like(cs[:1]))  # [q] sum before the query
                T_ = cs.sub_(before.index_select(0, ql)).to(a_.dtype).sub_(lg).exp_()
                del lg, cs, before
                w = a_ * T_  # [m]
                G = v_out_colors[q0:q1]  # [q, D]
                # dL/dc_g += sum over the pairs of g of w dL/dout[q]: the transposed matrix
                order = torch.argsort(g)
                crow_t = torch.zeros(M + 1, dtype=crow.dtype, device=crow.device)
                crow_t[1:] = torch.cumsum(torch.bincount(g, minlength=M), 0)
                v_colors += _sparse_rows(crow_t, ql.index_select(0, order),
                                         w.index_select(0, order), q1 - q0) @ G  # [M, D]
                del order
                # s_i = <dL/dout[q_i], c_{g_i}> (a sampled dense-dense product)
                pattern = _sparse_rows(crow_c, g, torch.ones_like(w), M)
                s = torch.sparse.sampled_addmm(pattern, G, colors_t, beta=0.0).values()  # [m]
                # sum_{k > i} w_k s_k within each query, from a float64 running sum
                ws = torch.cumsum((w * s).double(), 0)  # [m] inclusive
                last = (crow_c[1:].long() - 1).clamp_min(0)  # [q] last pair of each query
                after = (ws.index_select(0, last).index_select(0, ql) - ws).to(a_.dtype)
                del ws
                ra = torch.reciprocal(1.0 - a_)  # alpha <= 0.999
                v_alpha = T_ * s
                v_alpha -= after.mul_(ra)
                v_alpha += g_alpha[q0:q1].index_select(0, ql).mul_(ra)
                # alpha = min(0.999, o vis): where the clamp is active there is no gradient
                v_alpha *= a_ < MAX_ALPHA
                vs = -a_ * v_alpha  # dL/dpower, as d alpha / d power = -o vis = -alpha
                q = ql + q0
                dx = mx.index_select(0, g) - qx.index_select(0, q)  # mean - query
                dy = my.index_select(0, g) - qy.index_select(0, q)
                t1, t2 = vs * dx, vs * dy
                sums[0].index_add_(0, g, t1)  # sum v_sigma dx
                sums[1].index_add_(0, g, t2)  # sum v_sigma dy
                sums[2].index_add_(0, g, t1.mul_(dx))  # sum v_sigma dx^2
                sums[3].index_add_(0, g, dx.mul_(t2))  # sum v_sigma dx dy
                sums[4].index_add_(0, g, t2.mul_(dy))  # sum v_sigma dy^2
                # d alpha / d o = vis = alpha / o (o >= 1/255 for every visible Gaussian)
                sums[5].index_add_(0, g, v_alpha.mul_(a_).div_(opacities.index_select(0, g)))
        # power = 0.5 (a dx^2 + c dy^2) + b dx dy with dx = mean_u - u, dy = mean_v - v
        a_, b_, c_ = conics.unbind(1)
        v_means2d = torch.stack([a_ * sums[0] + b_ * sums[1], b_ * sums[0] + c_ * sums[1]], 1)
        v_conics = torch.stack([0.5 * sums[2], sums[3], 0.5 * sums[4]], 1)
        return (v_means2d, v_conics, sums[5], v_colors) + (None,) * 6


def _min_power_on_segment(mx, my, ha, b, hc, xa, ya, xb, yb):
    """Smallest power 0.5 a dx^2 + b dx dy + 0.5 c dy^2 over the segment (xa, ya)-(xb, yb)."""
    ex, ey = xb - xa, yb - ya
    dx0, dy0 = mx - xa, my - ya
    # power(d0 - t e) = A t^2 - 2 Bt t + power(d0), minimum at t = Bt / A clamped to [0, 1]
    A = ha * ex * ex + b * ex * ey + hc * ey * ey
    Bt = ha * dx0 * ex + 0.5 * b * (dx0 * ey + dy0 * ex) + hc * dy0 * ey
    t = torch.where(A > 0, Bt / A.clamp_min(1e-30), torch.zeros_like(A)).clamp(0, 1)
    dx, dy = dx0 - t * ex, dy0 - t * ey
    return dx * (ha * dx + b * dy) + hc * dy * dy


@torch.no_grad()
def _bin_tiles(table: Tensor, radii: Tensor, depths: Tensor, image_ids: Tensor, num_images: int,
               tile_size: int, width: int, height: int, inset: float
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """Intersections of visible Gaussians with screen tiles, sorted by (image, tile, depth).

    A Gaussian meets the tiles of its box (gsplat's ``isect_tiles``); the tiles where it cannot
    reach alpha >= 1/255 at any query point (its power exceeds ln(255 o) on the whole query
    rectangle of the tile: the box corners of an ellipse) are dropped, which changes no pixel.

    Args:
        table: [M + 1, 7] (mean_u, mean_v, a / 2, b, c / 2, ln o, ln(255 o)), see _select_pairs.
        radii: [M, 2] int; depths: [M]; image_ids: [M] long.
        inset: query points of a tile lie in [x0 + inset, x0 + ts - inset] (0.5: pixel centres).

    Returns:
        isect_gauss [T] (visible index, sorted), tile_start [I * tiles] and tile_count
        [I * tiles] (the Gaussians of tile k are isect_gauss[start[k]:start[k] + count[k]]).
    """
    M = radii.shape[0]
    device = table.device
    ts = tile_size
    tiles_x, tiles_y = (width + ts - 1) // ts, (height + ts - 1) // ts
    n_tiles = tiles_x * tiles_y
    order = torch.argsort(depths, stable=True)  # [M] ties keep the packed (image, Gaussian) order
    # gsplat's isect_tiles: tiles [floor((m - r) / ts), ceil((m + r) / ts)) clamped to the image
    m = table[:M].index_select(0, order)[:, :2] / ts  # [M, 2] in tiles
    r = radii.index_select(0, order).to(m.dtype) / ts
    lo = torch.floor(m - r).long()  # [M, 2] inclusive
    hi = torch.ceil(m + r).long()  # [M, 2] exclusive
    lo[:, 0].clamp_(0, tiles_x)
    hi[:, 0].clamp_(0, tiles_x)
    lo[:, 1].clamp_(0, tiles_y)
    hi[:, 1].clamp_(0, tiles_y)
    span = hi - lo  # [M, 2]
    count = span[:, 0] * span[:, 1]  # [M]
    rep = torch.repeat_interleave(torch.arange(M, device=device), count)  # [T]
    local = torch.arange(rep.numel(), device=device) - (torch.cumsum(count, 0) - count)[rep]
    wx = span[rep, 0]
    tx = lo[rep, 0] + local % wx
    ty = lo[rep, 1] + local // wx
    # drop the tiles whose query rectangle the Gaussian's alpha >= 1/255 ellipse misses
    mx, my, ha, b, hc, _, thr = table.index_select(0, order[rep]).unbind(1)  # [T] each
    x0 = tx.to(mx.dtype) * ts + inset
    y0 = ty.to(mx.dtype) * ts + inset
    x1 = torch.clamp_max(x0 + (ts - 2 * inset), width - inset)
    y1 = torch.clamp_max(y0 + (ts - 2 * inset), height - inset)
    low = torch.minimum(
        torch.minimum(_min_power_on_segment(mx, my, ha, b, hc, x0, y0, x1, y0),
                      _min_power_on_segment(mx, my, ha, b, hc, x0, y1, x1, y1)),
        torch.minimum(_min_power_on_segment(mx, my, ha, b, hc, x0, y0, x0, y1),
                      _min_power_on_segment(mx, my, ha, b, hc, x1, y0, x1, y1)))
    inside = (mx >= x0) & (mx <= x1) & (my >= y0) & (my <= y1)
    # a margin of 1e-3 in power keeps rounding from dropping a needed tile; NaN keeps the tile
    hit = (inside | ~(low > thr + 1e-3)).nonzero().squeeze(1)
    rep, tx, ty = rep[hit], tx[hit], ty[hit]
    key = image_ids.index_select(0, order)[rep] * n_tiles + ty * tiles_x + tx  # [T]
    perm = torch.argsort(key, stable=True)
    isect_gauss = order[rep[perm]]
    tile_count = torch.bincount(key, minlength=num_images * n_tiles)
    tile_start = torch.cumsum(tile_count, 0) - tile_count
    return isect_gauss, tile_start, tile_count


@torch.no_grad()
def _select_pairs(table: Tensor, isect_gauss: Tensor, tile_start: Tensor, tile_count: Tensor,
                  tiles: Tensor, chunk: int, dense: Optional[dict] = None,
                  qxy: Optional[Tensor] = None, q_start: Optional[Tensor] = None,
                  q_count: Optional[Tensor] = None, num_queries: int = 0
                  ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The (query, Gaussian) pairs gsplat composites, grouped by query, front to back.

    Tiles are processed in blocks [tiles, queries, Gaussians] padded to the longest tile of the
    block (tiles come sorted by their number of Gaussians, so the padding stays small): power,
    alpha and the running log-transmittance along the Gaussian axis are dense tensor ops without
    per-pair gathers (for dense queries the pixel grid of a tile is separable, [ts, 1] x [1, ts]),
    and ``nonzero`` of the kept mask lists the pairs in (tile, query, depth) order. A pair is kept
    when power >= 0, alpha >= 1/255 (gsplat skips the others) and the transmittance after it is
    > 1e-4 (gsplat stops before the Gaussian that would take it lower).

    Args:
        table: [M + 1, 7] per visible Gaussian (mean_u, mean_v, a / 2, b, c / 2, ln o, ln(255 o));
            the last row is a sentinel that never passes (padding).
        isect_gauss, tile_start, tile_count: from ``_bin_tiles`` ([T], [I * tiles], [I * tiles]).
        tiles: [A] the (image, tile) keys to render, in processing order.
        chunk: elements per padded block (bounds temporary memory).
        dense: dict(tile_size, tiles_x, n_tiles, width, height) for every pixel of each tile;
            query row = position of the tile in ``tiles`` * tile_size^2 + row * tile_size + col.
        qxy, q_start, q_count: otherwise, query points [Q, 2] grouped by tile in ``tiles`` order;
            the queries of tile k are rows q_start[k]:q_start[k] + q_count[k] of qxy.

        num_queries: Q, the number of query rows.

    Returns:
        pairs_per_query [Q] long, and per pair, grouped by query row in increasing order, front
        to back: pair_g [n] int32 (visible Gaussian), alpha [n] and w [n] (alpha times the
        transmittance in front of the pair).
    """
    device, dtype = table.device, table.dtype
    sentinel = table.shape[0] - 1
    A = tiles.numel()
    n_g = tile_count[tiles].cpu()
    if dense is not None:
        ts = dense['tile_size']
        n_q = torch.full((A,), ts * ts, dtype=torch.long)
    else:
        n_q = q_count[tiles].cpu()
    nan = torch.tensor(float('nan'), dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    pairs_per_query = torch.zeros(num_queries, dtype=torch.long, device=device)
    outs: List[Tuple[Tensor, ...]] = []
    i = 0
    while i < A:
        L = int(n_g[i])
        if L == 0:
            break  # tiles are sorted by decreasing length: the rest are empty
        q_max = torch.cummax(n_q[i:], 0).values  # queries padded to the block's maximum
        fits = int((torch.arange(1, A - i + 1) * q_max * L <= chunk).sum())
        j = i + max(1, fits)
        blk = tiles[i:j]
        nb = j - i
        gl = torch.arange(L, device=device)
        gpos = (tile_start[blk][:, None] + gl).clamp_max(max(isect_gauss.numel() - 1, 0))
        gid = torch.where(gl < tile_count[blk][:, None], isect_gauss[gpos],
                          torch.full_like(gpos, sentinel))  # [nb, L]
        p = table.index_select(0, gid.reshape(-1)).reshape(nb, L, 7)  # [nb, L, 7]
        if dense is not None:
            Qp = ts * ts
            key = blk % dense['n_tiles']
            cols = torch.arange(ts, device=device)
            x = (key % dense['tiles_x'])[:, None] * ts + cols  # [nb, ts]
            y = (key // dense['tiles_x'])[:, None] * ts + cols
            qx = torch.where(x < dense['width'], x.to(dtype) + 0.5, nan)[:, None, :, None]
            qy = torch.where(y < dense['height'], y.to(dtype) + 0.5, nan)[:, :, None, None]
            mx, my, ha, b, hc, ln_o, thr = (p[:, None, None, :, k] for k in range(7))
        else:
            Qp = int(q_max[nb - 1])
            ql = torch.arange(Qp, device=device)
            q_ok = ql < q_count[blk][:, None]  # [nb, Qp]
            qpos = (q_start[blk][:, None] + ql).clamp_max(max(qxy.shape[0] - 1, 0))
            qx = torch.where(q_ok, qxy[:, 0][qpos], nan)[:, :, None]  # [nb, Qp, 1]
            qy = torch.where(q_ok, qxy[:, 1][qpos], nan)[:, :, None]
            mx, my, ha, b, hc, ln_o, thr = (p[:, None, :, k] for k in range(7))  # [nb, 1, L]
        dx = mx - qx  # mean - query; padded queries are NaN and never pass
        dy = my - qy
        sigma = ha * dx + b * dy  # [nb, ts, ts, L] (dense) or [nb, Qp, L]
        sigma.mul_(dx).add_(hc * (dy * dy))  # power = 0.5 (a dx^2 + c dy^2) + b dx dy
        ok = sigma >= 0
        ok &= sigma <= thr  # alpha >= 1/255 <=> power <= ln(255 o)
        alpha = torch.sub(ln_o, sigma, out=sigma).exp_().clamp_max_(MAX_ALPHA)  # o exp(-power)
        # ln(1 - alpha); 0 for skipped pairs (also where power is NaN: padded queries)
        log1m = torch.where(ok, torch.neg(alpha).log1p_(), zero)
        cs = torch.cumsum(log1m, dim=-1)  # ln T after each Gaussian
        keep = cs > LOG_MIN_TRANSMITTANCE
        keep &= ok
        f = keep.reshape(-1).nonzero().squeeze(1)  # [m] flat (tile, query, Gaussian) index
        del keep, ok
        pair_alpha = alpha.reshape(-1).index_select(0, f)
        cs_f = cs.reshape(-1).index_select(0, f)
        # weight alpha * T with T the transmittance in front of the pair (exclusive)
        pair_w = torch.exp(cs_f - log1m.reshape(-1).index_select(0, f)).mul_(pair_alpha)
        del alpha, log1m, cs, cs_f
        tq = f // L  # [m] block-local query slot = tile * Qp + query
        lg = f - tq * L
        pair_g = gid.reshape(-1).index_select(0, (tq // Qp) * L + lg)
        if dense is not None:
            pair_q = tq + i * Qp
        else:
            pair_q = qpos.reshape(-1).index_select(0, tq)
        pairs_per_query.index_add_(0, pair_q, torch.ones_like(pair_q))
        del pair_q, tq, lg, f
        outs.append((pair_g.int(), pair_alpha, pair_w))
        i = j
    if not outs:
        e = torch.zeros(0, dtype=torch.int32, device=device)
        z = torch.zeros(0, dtype=dtype, device=device)
        return pairs_per_query, e, z, z
    # concatenate one field at a time, dropping its blocks: the peak is the blocks plus one field
    # (concatenating all fields at once would hold every pair twice)
    fields = []
    for k in range(3):
        fields.append(torch.cat([o[k] for o in outs]))
        outs = [o[:k] + (None,) + o[k + 1:] for o in outs]
    return (pairs_per_query, *fields)


def auto_tile_size(width: int, height: int, num_pixels: Optional[int] = None) -> int:
    """The binning tile the torch backend is fastest with on CPU (measured at 400x225, 704x256).

    8 for dense renders; for sampled pixels the smallest of 8, 16, 32, 64 that holds >= 4 samples
    per tile on average (smaller tiles waste less work, but a tile must hold enough queries).
    """
    if num_pixels is None:
        return 8
    for ts in (8, 16, 32):
        if num_pixels * ts * ts >= 4 * width * height:
            return ts
    return 64


@float32_math
def rasterize_torch(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    features: Tensor,  # [B, N, K]
    viewmats: Tensor,  # [B, C, 4, 4]
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    pixels: Optional[Tensor] = None,  # [B, C, P, 2]
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    tile_size: Optional[int] = None,
    chunk: int = 1 << 20,
) -> RenderOutput:
    """Render depth (gsplat 'ED'), features and alpha of 3D Gaussians with pure PyTorch.

    Args:
        means: [B, N, 3]; quats: [B, N, 4] (w, x, y, z), any norm; scales: [B, N, 3];
        opacities: [B, N]; features: [B, N, K].
        viewmats: [B, C, 4, 4] world-to-camera; Ks: [B, C, 3, 3]; width, height: image size.
        pixels: None (dense) or [B, C, P, 2] continuous (u, v); points outside the image render
            as empty (alpha 0, depth 0).
        eps2d, near_plane, far_plane: projection settings (gsplat's).
        tile_size: screen tile side in pixels used for binning (does not change the result);
            None: ``auto_tile_size``.
        chunk: elements of a padded selection block / pairs per backward chunk (bounds memory).

    Returns:
        RenderOutput: depth [B, C, H, W] or [B, C, P], features [B, C, H, W, K] or [B, C, P, K],
        alpha [B, C, H, W] or [B, C, P], intersections = number of composited pairs. Float32 for
        half-precision inputs and under autocast (``precision.py``).
    """
    B, N = means.shape[:2]
    C = viewmats.shape[1]
    K = features.shape[-1]
    assert means.shape == (B, N, 3), means.shape
    assert quats.shape == (B, N, 4), quats.shape
    assert scales.shape == (B, N, 3), scales.shape
    assert opacities.shape == (B, N), opacities.shape
    assert features.shape == (B, N, K), features.shape
    assert viewmats.shape == (B, C, 4, 4), viewmats.shape
    assert Ks.shape == (B, C, 3, 3), Ks.shape
    if pixels is not None:
        assert pixels.dim() == 4 and pixels.shape[:2] == (B, C) and pixels.shape[3] == 2, (
            pixels.shape)
    device, dtype = means.device, means.dtype
    I = B * C
    ts = int(tile_size) if tile_size is not None else auto_tile_size(
        width, height, None if pixels is None else pixels.shape[2])
    tiles_x = (width + ts - 1) // ts
    tiles_y = (height + ts - 1) // ts
    n_tiles = tiles_x * tiles_y

    # scales beyond MAX_SCALE would overflow float32 covariances (inf, then NaN gradients); such
    # Gaussians are culled anyway (their 2D covariance determinant overflows), clamped or not
    covars = quat_scale_to_covar(quats, scales.clamp(-MAX_SCALE, MAX_SCALE))  # [B, N, 3, 3]
    proj = project_gaussians(means, covars, viewmats, Ks, width, height, eps2d=eps2d,
                             near_plane=near_plane, far_plane=far_plane, opacities=opacities)

    # pack the visible (image, Gaussian) pairs
    with torch.no_grad():
        flat_vis = (proj.radii > 0).all(dim=-1).reshape(-1).nonzero().squeeze(1)  # [M]
        image_v = flat_vis // N  # [M] image = b * C + c
        batch_gauss_v = (image_v // C) * N + flat_vis % N  # [M] index into [B * N]
    means2d_v = proj.means2d.reshape(I * N, 2).index_select(0, flat_vis)  # [M, 2]
    conics_v = proj.conics.reshape(I * N, 3).index_select(0, flat_vis)  # [M, 3]
    depths_v = proj.depths.reshape(I * N).index_select(0, flat_vis)  # [M]
    opac_v = opacities.reshape(B * N).index_select(0, batch_gauss_v)  # [M]
    colors_v = torch.cat([features.reshape(B * N, K).index_select(0, batch_gauss_v),
                          depths_v[:, None]], dim=1)  # [M, K + 1]

    with torch.no_grad():
        ln_o = torch.log(opac_v.detach())
        table = torch.cat([
            torch.stack([means2d_v[:, 0], means2d_v[:, 1], 0.5 * conics_v[:, 0], conics_v[:, 1],
                         0.5 * conics_v[:, 2], ln_o, ln_o + LOG_INV_ALPHA_THRESHOLD], 1).detach(),
            torch.tensor([[0, 0, 0, 0, 0, -math.inf, -math.inf]], dtype=dtype, device=device)])
        isect_gauss, tile_start, tile_count = _bin_tiles(
            table, proj.radii.reshape(I * N, 2).index_select(0, flat_vis), depths_v.detach(),
            image_v, I, ts, width, height, inset=0.5 if pixels is None else 0.0)
        # render the tiles that hold Gaussians, longest first (similar lengths share a block)
        tiles = torch.argsort(tile_count, descending=True, stable=True)
        tiles = tiles[tile_count[tiles] > 0]  # [A]
        A = tiles.numel()
        pos_of_key = torch.full((I * n_tiles,), -1, dtype=torch.long, device=device)
        pos_of_key[tiles] = torch.arange(A, device=device)
        if pixels is None:
            P = height * width
            T2 = ts * ts
            rows = torch.arange(A * T2, device=device)  # query row -> (tile, row, col) in tile
            key = tiles[rows // T2] % n_tiles
            qxy = torch.stack([(key % tiles_x) * ts + rows % ts,
                               (key // tiles_x) * ts + (rows // ts) % ts], 1).to(dtype) + 0.5
            per_query, pair_g, alpha, w = _select_pairs(
                table, isect_gauss, tile_start, tile_count, tiles, chunk, num_queries=A * T2,
                dense=dict(tile_size=ts, tiles_x=tiles_x, n_tiles=n_tiles, width=width,
                           height=height))
            # output pixel (image, v, u) -> its query row, or the zero row A * T2
            v, u = torch.meshgrid(torch.arange(height, device=device),
                                  torch.arange(width, device=device), indexing='ij')
            pix_key = (v // ts) * tiles_x + u // ts  # [H, W]
            pos = pos_of_key[torch.arange(I, device=device)[:, None, None] * n_tiles + pix_key]
            row_of_output = torch.where(pos >= 0, pos * T2 + (v % ts) * ts + u % ts,
                                        torch.full_like(pos, A * T2)).reshape(-1)  # [I * P]
        else:
            P = pixels.shape[2]
            uv = pixels.detach().reshape(I * P, 2).to(dtype)  # [I * P, 2]
            u, v = uv.unbind(-1)
            inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
            q_key = (torch.arange(I, device=device).repeat_interleave(P) * n_tiles
                     + torch.floor(v.clamp(0, height - 1) / ts).long() * tiles_x
                     + torch.floor(u.clamp(0, width - 1) / ts).long())  # [I * P]
            pos = torch.where(inside, pos_of_key[q_key], torch.full_like(q_key, -1))
            has = (pos >= 0).nonzero().squeeze(1)
            q_order = has[torch.argsort(pos[has], stable=True)]  # [Q] queries grouped by tile
            qxy = uv.index_select(0, q_order).contiguous()  # [Q, 2]
            q_count = torch.bincount(q_key[q_order], minlength=I * n_tiles)
            counts_in_order = q_count[tiles]
            q_start = torch.zeros_like(q_count)
            q_start[tiles] = torch.cumsum(counts_in_order, 0) - counts_in_order
            per_query, pair_g, alpha, w = _select_pairs(
                table, isect_gauss, tile_start, tile_count, tiles, chunk, qxy=qxy,
                q_start=q_start, q_count=q_count, num_queries=q_order.numel())
            row_of_output = torch.full((I * P,), q_order.numel(), dtype=torch.long, device=device)
            row_of_output[q_order] = torch.arange(q_order.numel(), device=device)
        Q = qxy.shape[0]
        num_pairs = pair_g.numel()
        assert num_pairs < 2 ** 31, 'more than 2^31 Gaussian-pixel pairs: render in parts'
        crow = torch.zeros(Q + 1, dtype=torch.int32, device=device)
        crow[1:] = torch.cumsum(per_query, 0)

    out_colors, out_alpha = _CompositePairs.apply(
        means2d_v, conics_v, opac_v, colors_v, alpha, w, qxy, pair_g, crow, chunk)
    del w  # only alpha and pair_g stay for the backward
    # one zero row for the outputs no Gaussian reaches
    out_colors = torch.cat([out_colors, out_colors.new_zeros(1, K + 1)])
    out_alpha = torch.cat([out_alpha, out_alpha.new_zeros(1)])
    out_colors = out_colors.index_select(0, row_of_output).reshape(B, C, P, K + 1)
    alpha_img = out_alpha.index_select(0, row_of_output).reshape(B, C, P)
    # gsplat 'ED': depth normalised by alpha (rendering.py clamps alpha at 1e-10)
    depth = out_colors[..., K] / alpha_img.clamp_min(1e-10)
    feats = out_colors[..., :K]
    if pixels is None:
        depth = depth.reshape(B, C, height, width)
        feats = feats.reshape(B, C, height, width, K)
        alpha_img = alpha_img.reshape(B, C, height, width)
    return RenderOutput(depth=depth, features=feats, alpha=alpha_img,
                        intersections=num_pairs)


@MODELS.register_module()
class TorchSplatRenderer(BaseSplatRenderer):
    """Gaussian splatting in pure PyTorch (CPU or any device), numerically gsplat 1.5.3 'RGB+ED'.

    Args:
        eps2d, near_plane, far_plane, min_opacity, opacity_power: see ``BaseSplatRenderer``.
        tile_size: binning tile side; the result does not depend on it, the speed does. None
            (default): ``auto_tile_size`` (8 for dense renders, larger for sparse samples).
        chunk: elements of a padded selection block and pairs per backward chunk (bounds the
            temporary memory, ~100 bytes per element).
        packed, channel_chunk: ``GsplatRenderer`` options, accepted and ignored so that a
            GsplatRenderer config switches to this renderer by its type alone.
    """

    def __init__(self, eps2d: float = 0.3, near_plane: float = 0.01, far_plane: float = 1e10,
                 tile_size: Optional[int] = None, chunk: int = 1 << 20,
                 packed: Optional[bool] = None, channel_chunk: Optional[int] = None,
                 min_opacity: float = ALPHA_THRESHOLD, opacity_power: float = 1.0):
        super().__init__(eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
                         tile_size=tile_size, min_opacity=min_opacity,
                         opacity_power=opacity_power)
        if int(chunk) < 1:
            raise ValueError(f'renderer.chunk must be a positive integer, got {chunk}')
        self.chunk = int(chunk)

    def forward(self, gaussians: Gaussians, cameras: Cameras,
                pixels: Optional[Tensor] = None) -> RenderOutput:
        """See ``BaseSplatRenderer.forward``; pixels: None or [B, C, P, 2]."""
        self.check_inputs(gaussians, cameras, pixels)
        gaussians = self.prepare(gaussians)
        means = gaussians.means
        # the cameras in the precision of the render (float32 for half-precision Gaussians)
        dtype = torch.float32 if means.dtype in HALF_DTYPES else means.dtype
        out = rasterize_torch(
            means, gaussians.quats, gaussians.scales, gaussians.opacities,
            gaussians.features, cameras.viewmats.to(device=means.device, dtype=dtype),
            cameras.Ks.to(device=means.device, dtype=dtype), int(cameras.width),
            int(cameras.height), pixels,
            eps2d=self.eps2d, near_plane=self.near_plane, far_plane=self.far_plane,
            tile_size=self.tile_size, chunk=self.chunk)
        out.primitives = gaussians.num_gaussians
        return out


__all__ = ['TorchSplatRenderer', 'rasterize_torch', 'auto_tile_size']
