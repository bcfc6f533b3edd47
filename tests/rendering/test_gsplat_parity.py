"""gsplat's CUDA rasterizer ('RGB+ED') against the pure-torch backend, forward and backward.

The parity tests need CUDA and gsplat's CUDA extension (``@pytest.mark.gpu``); the error-message
and backend-choice tests run anywhere.
"""
import math

import pytest
import torch

from splattingocc.registry import MODELS
from splattingocc.rendering import GsplatRenderer, SplatRenderer, TorchSplatRenderer
from splattingocc.structures import Cameras, Gaussians

PARAMS = ('means', 'quats', 'scales', 'opacities', 'features')


def random_scene(seed, device='cpu', B=1, N=3000, C=3, width=96, height=64, K=18):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.rand(*shape, generator=g)

    means = torch.stack([(rnd(B, N) - 0.5) * 8, (rnd(B, N) - 0.5) * 5, 2 + 10 * rnd(B, N)], -1)
    quats = torch.randn(B, N, 4, generator=g)
    scales = torch.exp(rnd(B, N, 3) * 2.5 - 3.5)  # 0.03 .. 0.37 m
    opacities = 0.05 + 0.94 * rnd(B, N)
    features = torch.randn(B, N, K, generator=g)
    viewmats = torch.eye(4).repeat(B, C, 1, 1)
    for c in range(C):
        ang = 0.2 * (c - 1)
        viewmats[:, c, 0, 0] = math.cos(ang)
        viewmats[:, c, 0, 2] = math.sin(ang)
        viewmats[:, c, 2, 0] = -math.sin(ang)
        viewmats[:, c, 2, 2] = math.cos(ang)
        viewmats[:, c, 1, 3] = 0.2 * c
    Ks = torch.tensor([[60.0, 0, width / 2], [0, 60.0, height / 2], [0, 0, 1]]).repeat(B, C, 1, 1)
    gs = {k: v.to(device) for k, v in dict(means=means, quats=quats, scales=scales,
                                            opacities=opacities, features=features).items()}
    return gs, Cameras(viewmats.to(device), Ks.to(device), width, height)


def _render(renderer, gs, cams, pixels=None):
    leaves = {k: v.clone().requires_grad_(True) for k, v in gs.items()}
    out = renderer(Gaussians(**leaves), cams, pixels)
    return out, leaves


def _require_gsplat():
    from splattingocc.rendering.gsplat_renderer import _GSPLAT_STATE, gsplat_available
    if not gsplat_available():
        pytest.skip(f"gsplat's CUDA rasterizer is unavailable: {_GSPLAT_STATE['why']}")


def _close_fraction(a, b, atol, rtol=0.0):
    return ((a - b).abs() <= atol + rtol * b.abs()).float().mean().item()


@pytest.mark.gpu
@pytest.mark.parametrize('seed', [0, 1])
def test_dense_forward_and_backward_match_gsplat(seed):
    _require_gsplat()
    gs, cams = random_scene(seed, 'cuda')
    out_g, leaves_g = _render(GsplatRenderer(), gs, cams)
    out_t, leaves_t = _render(TorchSplatRenderer(), gs, cams)
    assert out_g.alpha.max() > 0.9 and out_g.alpha.mean() > 0.2  # a scene, not an empty image
    # float32 with gsplat's fast-math exp: a few pixels may flip at the 1/255 or 1e-4 thresholds
    assert _close_fraction(out_t.alpha, out_g.alpha, 1e-4) > 0.998
    assert _close_fraction(out_t.features, out_g.features, 1e-3) > 0.998
    seen = out_g.alpha > 0.05
    assert _close_fraction(out_t.depth[seen], out_g.depth[seen], 1e-4, 1e-4) > 0.998
    assert (out_t.alpha - out_g.alpha).abs().mean() < 1e-5

    gen = torch.Generator(device='cuda').manual_seed(seed)
    w_d = torch.randn(out_g.depth.shape, generator=gen, device='cuda') * seen  # depth where seen
    w_f = torch.randn(out_g.features.shape, generator=gen, device='cuda')
    w_a = torch.randn(out_g.alpha.shape, generator=gen, device='cuda')
    for out, leaves in ((out_g, leaves_g), (out_t, leaves_t)):
        ((out.depth * w_d).sum() + (out.features * w_f).sum() + (out.alpha * w_a).sum()).backward()
    for k in PARAMS:
        a, b = leaves_t[k].grad.flatten(), leaves_g[k].grad.flatten()
        assert b.abs().max() > 0, k
        rel = (a - b).norm() / b.norm()
        cos = torch.dot(a, b) / (a.norm() * b.norm())
        assert rel < 2e-2 and cos > 0.999, (k, rel.item(), cos.item())


@pytest.mark.gpu
def test_sampled_pixel_centres_match_gsplat():
    _require_gsplat()
    gs, cams = random_scene(2, 'cuda', B=2, C=2)
    gen = torch.Generator(device='cuda').manual_seed(0)
    P = 500
    cols = torch.randint(0, cams.width, (2, 2, P), generator=gen, device='cuda')
    rows = torch.randint(0, cams.height, (2, 2, P), generator=gen, device='cuda')
    pixels = torch.stack([cols, rows], -1).float() + 0.5
    out_g, _ = _render(GsplatRenderer(), gs, cams, pixels)
    out_t, _ = _render(TorchSplatRenderer(), gs, cams, pixels)
    dense, _ = _render(GsplatRenderer(), gs, cams)
    b = torch.arange(2, device='cuda')[:, None, None]
    c = torch.arange(2, device='cuda')[None, :, None]
    torch.testing.assert_close(out_g.alpha, dense.alpha[b, c, rows, cols])
    torch.testing.assert_close(out_g.features, dense.features[b, c, rows, cols])
    assert _close_fraction(out_t.alpha, out_g.alpha, 1e-4) > 0.995
    assert _close_fraction(out_t.features, out_g.features, 1e-3) > 0.995


@pytest.mark.gpu
def test_auto_backend_uses_gsplat_on_cuda():
    _require_gsplat()
    r = MODELS.build(dict(type='SplatRenderer', backend='auto'))
    assert r.resolve_backend(torch.device('cuda')) == 'gsplat'
    gs, cams = random_scene(3, 'cuda', N=200)
    out = r(Gaussians(**gs), cams)
    ref = GsplatRenderer()(Gaussians(**gs), cams)
    torch.testing.assert_close(out.features, ref.features)


def test_gsplat_on_cpu_tensors_names_the_torch_backend():
    gs, cams = random_scene(4, N=20, width=40, height=30)
    cfg = dict(type='GsplatRenderer', eps2d=0.3, tile_size=16, packed=True, channel_chunk=32)
    with pytest.raises(RuntimeError, match="renderer.type='TorchSplatRenderer'"):
        MODELS.build(cfg)(Gaussians(**gs), cams)
    # the suggested switch works with the rest of the config unchanged
    out = MODELS.build(dict(cfg, type='TorchSplatRenderer'))(Gaussians(**gs), cams)
    assert out.depth.shape == (1, 3, 30, 40)
    with pytest.raises(RuntimeError, match="renderer.backend='torch'"):
        SplatRenderer(backend='gsplat')(Gaussians(**gs), cams)


def test_auto_backend_on_cpu_is_the_torch_renderer():
    r = MODELS.build(dict(type='SplatRenderer'))
    assert r.resolve_backend(torch.device('cpu')) == 'torch'
    gs, cams = random_scene(5, N=200, C=2, width=40, height=30)
    out = r(Gaussians(**gs), cams)
    ref = TorchSplatRenderer()(Gaussians(**gs), cams)
    assert out.alpha.max() > 0.5
    torch.testing.assert_close(out.features, ref.features)
    torch.testing.assert_close(out.depth, ref.depth)
    with pytest.raises(ValueError, match='renderer.backend'):
        SplatRenderer(backend='cuda')
