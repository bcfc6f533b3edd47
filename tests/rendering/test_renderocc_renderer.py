"""RenderOccRenderer: each of upstream's formulas on a hand case, the whole renderer against a
per-ray reference that follows upstream's algorithm step by step, gradients."""
import math

import numpy as np
import pytest
import torch

from splattingocc.geometry import pixel_rays, rigid_inverse
from splattingocc.registry import MODELS
from splattingocc.rendering.renderocc_renderer import (
    RawDensityGrid, RenderOccRenderer, background_length, composite_weights, contract,
    cumulative_distance_mask, keep_samples, renderocc_alpha, renderocc_shift, sample_parameters,
    squash, upstream_grid_box)
from splattingocc.structures import Cameras

DT = torch.float64
OCC3D = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)


# ------------------------------------------------------------------------------------------------
# the formulas, hand cases (docs/renderocc-fidelity.md cites each test)
# ------------------------------------------------------------------------------------------------

def test_alpha_activation_with_the_shift():
    shift = renderocc_shift(1e-6)
    assert shift == pytest.approx(math.log(1e-6 / (1 - 1e-6)), rel=1e-12)  # -13.8155
    raw = torch.tensor([0.0, -shift, 20.0], dtype=DT)
    a = renderocc_alpha(raw, shift, 0.5)
    # 1 - (1 + exp(raw + shift)) ** -0.5: raw 0 -> transparent (about alpha_init / 2), raw =
    # -shift -> 1 - 2 ** -0.5, raw 20 -> 1 - (1 + e^6.18) ** -0.5
    expected = [1 - (1 + math.exp(shift)) ** -0.5, 1 - 2 ** -0.5,
                1 - (1 + math.exp(20 + shift)) ** -0.5]
    assert a.tolist() == pytest.approx(expected, rel=1e-9)
    assert a[0] == pytest.approx(0.5e-6, rel=1e-5)


def test_sample_placement_occ3d_numbers():
    bg = background_length(OCC3D, 39.0)
    assert bg == pytest.approx(1 / 39)
    t, n_in = sample_parameters(bg, 200, 0.5)
    # float32 as upstream: int(2 / (2 + 2 / 39) * 200 / 0.5) + 1 = 391 inner intervals, 26 outer
    assert n_in == 391 and t.numel() == 391 + 26
    assert t[0].item() == pytest.approx(1 / 391, rel=1e-6)
    assert (t[1] - t[0]).item() * 39 == pytest.approx(78 / 391, rel=1e-5)  # 0.1995 m steps
    edges = 2 / torch.linspace(1, 1 / 64, 27)
    assert t[391].item() == pytest.approx(((edges[0] + edges[1]) / 2).item(), rel=1e-6)
    assert t[-1].item() == pytest.approx(((edges[-2] + edges[-1]) / 2).item(), rel=1e-6)
    assert t[-1].item() * 39 > 3000  # the background reaches kilometres


def test_contraction_and_cumulative_distance_hand_case():
    bg = 1 / 39
    q = torch.tensor([[0.5, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, -4.0, 0.0]], dtype=DT)
    pts, inner = contract(q, bg)
    assert inner.tolist() == [True, False, False]
    assert pts[0].tolist() == [0.5, 0.0, 0.0]
    assert pts[1, 0].item() == pytest.approx(1 + bg - bg / 2)  # 1 + 1/78
    assert pts[2, 1].item() == pytest.approx(-(1 + bg - bg / 4))
    # sums 0.3, 0.6 > 0.5 (mark, restart), 0.5 (not above), 0.6 (mark)
    m = cumulative_distance_mask(torch.tensor([[0.3, 0.3, 0.5, 0.1]]), 0.5)
    assert m.tolist() == [[False, True, False, True]]


def test_keep_samples_inner_then_thinned_background():
    # a ray from the centre along x: inner samples kept, the contracted ones thinned to about one
    # per threshold of contracted path
    bg = 1 / 39
    t, n_in = sample_parameters(bg, 200, 0.5)
    q = torch.zeros(1, t.numel(), 3, dtype=DT)
    q[0, :, 0] = t.to(DT)
    pts, keep = keep_samples(q, bg, 0.95 * (2 + 2 * bg) / 200 * 0.5)
    n_inside = int((t <= 1).sum())
    assert keep[0, :n_inside].all()  # 195 samples inside the 39 m sphere
    n_bg = int(keep[0, n_inside:].sum())
    # the shell is bg = 1 m thick and the threshold 0.19 m of contracted path: a handful
    assert 1 <= n_bg <= 6
    assert pts[0, keep[0]][:, 0].max() <= 1 + bg


def test_upstream_grid_box_and_corner_alignment():
    lo, hi = upstream_grid_box(OCC3D, 39.0)
    assert lo.tolist() == pytest.approx([-40 / 39, -40 / 39, -0.08], rel=1e-6)
    assert hi.tolist() == pytest.approx([40 / 39, 40 / 39, 0.08], rel=1e-6)
    # in metres: x in [-40, 40], z in 2.2 +- 3.12 = [-0.92, 5.32] (upstream's z extent)
    assert (2.2 + 39 * lo[2].item(), 2.2 + 39 * hi[2].item()) == pytest.approx((-0.92, 5.32))


def test_compositing_of_logits_depth_and_last_transmittance():
    # two samples with optical depths tau1, tau2: w1 = a1, w2 = (1 - a1) a2
    tau = torch.tensor([[0.5, 1.0]], dtype=DT)
    w, last, comp = composite_weights(tau, torch.ones_like(tau, dtype=torch.bool))
    a1, a2 = 1 - math.exp(-0.5), 1 - math.exp(-1.0)
    assert w[0].tolist() == pytest.approx([a1, (1 - a1) * a2])
    assert last.item() == pytest.approx((1 - a1) * (1 - a2))
    assert comp.all()
    # composited logits and the (unnormalised) depth are the weighted sums
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]], dtype=DT)
    assert (w[0] @ logits).tolist() == pytest.approx([2 * a1, -a1 + 3 * (1 - a1) * a2])
    t = torch.tensor([0.25, 1.0], dtype=DT)
    s = squash(t)
    assert s.tolist() == pytest.approx([0.2, 0.5])
    assert (39 * (w[0] * s).sum()).item() == pytest.approx(39 * (0.2 * a1 + 0.5 * (1 - a1) * a2))


def test_compositing_stops_below_1e3_and_drops_faint_samples():
    # the first sample leaves T = e^-8 < 1e-3: the ray stops after it (the second is not
    # composited and the last transmittance is e^-8)
    tau = torch.tensor([[8.0, 1.0]], dtype=DT)
    w, last, comp = composite_weights(tau, torch.ones_like(tau, dtype=torch.bool))
    assert comp.tolist() == [[True, False]] and w[0, 1] == 0
    assert last.item() == pytest.approx(math.exp(-8))
    # alpha <= 1e-7 is left out before the product, a weight <= 1e-7 after it
    tau = torch.tensor([[5e-8, 0.5, 1.5e-7]], dtype=DT)  # w3 = e^-0.5 * 1.5e-7 < 1e-7
    w, last, comp = composite_weights(tau, torch.ones_like(tau, dtype=torch.bool))
    assert comp.tolist() == [[False, True, False]]
    a = 1 - math.exp(-0.5)
    # T keeps the faint third sample
    assert last.item() == pytest.approx((1 - a) * math.exp(-1.5e-7), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# the renderer against a per-ray reference of upstream's algorithm
# ------------------------------------------------------------------------------------------------

def trilinear_corners(vol, p, lo, hi):
    """grid_sample(align_corners=True, zeros) of vol [X, Y, Z, C] at normalised p [3]."""
    n = np.array(vol.shape[:3])
    x = (p - lo) / (hi - lo) * (n - 1)  # index coordinates: box faces at voxels 0 and n-1
    i0 = np.floor(x).astype(int)
    f = x - i0
    out = np.zeros(vol.shape[3])
    for c in np.ndindex(2, 2, 2):
        idx = i0 + np.array(c)
        if np.all(idx >= 0) and np.all(idx < n):
            wgt = np.prod(np.where(np.array(c) == 1, f, 1 - f))
            out += wgt * vol[tuple(idx)]
    return out


def reference_ray(raw, logits, pc, radius, o, d, step=0.5, interval=0.5, alpha_init=1e-6,
                  thr=1e-7, stop=1e-3):
    """Upstream's steps for one ray, in float64 numpy loops."""
    centre = np.array([(pc[a] + pc[a + 3]) / 2 for a in range(3)])
    bg = (math.floor((pc[3] - pc[0]) / 2) - radius) / radius
    t, _ = sample_parameters(bg, raw.shape[0], step)
    t = t.double().numpy()
    u = d / np.linalg.norm(d)
    q = (o - centre) / radius + u[None] * t[:, None]
    norm = np.linalg.norm(q, axis=1)
    pts = np.where((norm <= 1)[:, None], q, q / norm[:, None] * ((1 + bg) - bg / norm[:, None]))
    keep = norm <= 1
    acc, thres = 0.0, np.float32(0.95 * (2 + 2 * bg) / raw.shape[0] * step)
    for k in range(1, len(t)):
        acc += np.linalg.norm(pts[k] - pts[k - 1])
        if acc > thres:
            keep[k] = True
            acc = 0.0
    lo, hi = (b.double().numpy() for b in upstream_grid_box(pc, radius))
    vol = np.concatenate([raw[..., None], logits], axis=-1)
    shift = math.log(1 / (1 - alpha_init) - 1)
    samples = []
    for k in np.nonzero(keep)[0]:
        v = trilinear_corners(vol, pts[k], lo, hi)
        a = 1 - (1 + math.exp(v[0] + shift)) ** -interval
        if a > thr:
            samples.append((a, v[1:], t[k]))
    T, ws = 1.0, []
    for a, lg, tk in samples:
        ws.append((T * a, lg, tk))
        T *= 1 - a
        if T < stop:
            break
    ws = [x for x in ws if x[0] > thr]
    feats = sum((w * lg for w, lg, _ in ws), np.zeros(logits.shape[-1]))
    depth = radius * sum(w * tk / (1 + tk) for w, _, tk in ws)
    return dict(features=feats, depth=depth, alpha=sum(w for w, _, _ in ws), last=T,
                weights=[w for w, _, _ in ws], s=[tk / (1 + tk) for _, _, tk in ws])


def ring_cameras(n, height=0.3, tilt=0.15):
    """n cameras at the origin, height ``height``, looking outwards and ``tilt`` rad down."""
    V = torch.zeros(n, 4, 4, dtype=DT)
    for i in range(n):
        yaw = 2 * math.pi * i / n
        fwd = torch.tensor([math.cos(yaw) * math.cos(tilt), math.sin(yaw) * math.cos(tilt),
                            -math.sin(tilt)], dtype=DT)
        right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0], dtype=DT)
        down = torch.linalg.cross(fwd, right)
        c2w = torch.eye(4, dtype=DT)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = right, down, fwd
        c2w[:3, 3] = torch.tensor([0.3, -0.2, height], dtype=DT)
        V[i] = rigid_inverse(c2w)
    return V


def small_scene(seed=0, K=3):
    g = torch.Generator().manual_seed(seed)
    pc = (-8.0, -8.0, -1.0, 8.0, 8.0, 3.0)
    raw = torch.rand(1, 20, 20, 4, generator=g, dtype=DT) * 16  # some opaque, most faint
    raw[0, :, :, 0] = 22.0  # an opaque floor ends every downward ray
    logits = torch.randn(1, 20, 20, 4, K, generator=g, dtype=DT)
    return RawDensityGrid(raw, logits, pc)


def test_renderer_matches_the_upstream_reference():
    scene = small_scene()
    V = ring_cameras(3)
    Ks = torch.tensor([[8.0, 0, 8], [0, 8.0, 6], [0, 0, 1]], dtype=DT).expand(1, 3, 3, 3)
    cams = Cameras(V[None], Ks, 16, 12)
    g = torch.Generator().manual_seed(1)
    pix = torch.rand(1, 3, 20, 2, generator=g, dtype=DT) * torch.tensor([16.0, 12.0], dtype=DT)
    r = RenderOccRenderer(radius=7.0)
    out = r(scene, cams, pix)
    assert out.depth.shape == (1, 3, 20) and out.features.shape == (1, 3, 20, 3)
    origins, dirs = pixel_rays(V[None], Ks, pix)
    raw, logits = scene.raw[0].numpy(), scene.logits[0].numpy()
    stopped = 0
    for c in range(3):
        for p in range(20):
            ref = reference_ray(raw, logits, scene.pc_range, 7.0, origins[0, c].numpy(),
                                dirs[0, c, p].numpy())
            assert out.features[0, c, p].tolist() == pytest.approx(ref['features'].tolist(),
                                                                   rel=1e-7, abs=1e-10)
            assert out.depth[0, c, p].item() == pytest.approx(ref['depth'], rel=1e-7, abs=1e-10)
            assert out.alpha[0, c, p].item() == pytest.approx(ref['alpha'], rel=1e-7, abs=1e-10)
            ex = out.extras
            assert ex['last_transmittance'][0, c, p].item() == pytest.approx(ref['last'],
                                                                             rel=1e-7)
            n = int(ex['samples'][0, c, p])
            assert n == len(ref['weights'])
            assert ex['weights'][0, c, p, :n].tolist() == pytest.approx(ref['weights'], rel=1e-7)
            assert ex['s'][0, c, p, :n].tolist() == pytest.approx(ref['s'], rel=1e-7)
            assert not ex['weights'][0, c, p, n:].any()
            stopped += ref['last'] < 1e-3
    assert 0 < stopped < 60  # some rays end on the scene, others run on into the background
    # a dense render is the same numbers at every pixel centre, shaped as the image
    dense = r(scene, Cameras(V[None], Ks, 4, 3))
    assert dense.depth.shape == (1, 3, 3, 4) and dense.extras['weights'].shape[:4] == (1, 3, 3, 4)


def test_background_off_and_ray_chunks_change_nothing_else():
    scene = small_scene(2)
    V = ring_cameras(2, tilt=-0.2)  # looking up: rays leave the box into the background
    Ks = torch.tensor([[8.0, 0, 8], [0, 8.0, 6], [0, 0, 1]], dtype=DT).expand(1, 2, 3, 3)
    cams = Cameras(V[None], Ks, 16, 12)
    full = RenderOccRenderer(radius=7.0)(scene, cams)
    chunked = RenderOccRenderer(radius=7.0, ray_chunk=37)(scene, cams)
    assert torch.allclose(full.features, chunked.features)
    assert torch.allclose(full.extras['last_transmittance'], chunked.extras['last_transmittance'])
    nobg, withbg = RenderOccRenderer(radius=7.0, background=False), RenderOccRenderer(radius=7.0)
    out, ref = nobg(scene, cams), withbg(scene, cams)
    assert nobg.last_stats['samples_kept'] < withbg.last_stats['samples_kept']
    # inside the sphere t <= 1 + |camera offset from the centre| (0.1 here): s = t / (1 + t)
    assert out.extras['s'].max() < 0.53 < ref.extras['s'].max()


def test_gradients_against_finite_differences():
    g = torch.Generator().manual_seed(3)
    pc = (-8.0, -8.0, -1.0, 8.0, 8.0, 3.0)
    raw = (torch.rand(1, 6, 6, 2, generator=g, dtype=DT) * 14 + 4).requires_grad_()
    logits = torch.randn(1, 6, 6, 2, 2, generator=g, dtype=DT, requires_grad=True)
    V = ring_cameras(2)
    Ks = torch.tensor([[4.0, 0, 2], [0, 4.0, 2], [0, 0, 1]], dtype=DT).expand(1, 2, 3, 3)
    cams = Cameras(V[None], Ks, 4, 4)
    r = RenderOccRenderer(radius=7.0, fast_color_thres=0.0, stop_transmittance=0.0)

    def f(raw, logits):
        out = r(RawDensityGrid(raw, logits, pc), cams)
        return (out.features.sum(-1), out.depth, out.extras['last_transmittance'])

    assert torch.autograd.gradcheck(f, (raw, logits), eps=1e-6, atol=1e-6)


def test_registered_and_checks_its_input():
    r = MODELS.build(dict(type='RenderOccRenderer'))
    assert r.shift == pytest.approx(-13.815510557964274)
    with pytest.raises(TypeError, match='RawDensityGrid'):
        r(object(), None)
    with pytest.raises(ValueError, match='alpha_init'):
        RenderOccRenderer(alpha_init=0.0)
