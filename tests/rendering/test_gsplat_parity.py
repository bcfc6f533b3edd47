"""gsplat's CUDA rasterizer ('RGB+ED') against the pure-torch backend, forward and backward.

The parity tests need CUDA (``@pytest.mark.gpu``: skipped without it); where CUDA is present but
gsplat's CUDA extension cannot be built or loaded they fail, naming the reason (a GPU machine
that silently cannot use gsplat is what they are there to catch). They cover Gaussians that
straddle the near plane and more than 32 channels (several gsplat channel chunks). The
error-message and backend-choice tests run anywhere.
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
    """Fail (not skip): these tests run only where CUDA is present, and there gsplat must work."""
    from splattingocc.rendering.gsplat_renderer import _GSPLAT_STATE, gsplat_available
    if not gsplat_available():
        pytest.fail(f"CUDA is present but gsplat's CUDA rasterizer cannot run: "
                    f"{_GSPLAT_STATE['why']}")


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


def _compare_dense(gs, cams, gsplat_renderer, torch_renderer, frac=0.998, grad_rel=2e-2):
    out_g, leaves_g = _render(gsplat_renderer, gs, cams)
    out_t, leaves_t = _render(torch_renderer, gs, cams)
    assert out_g.alpha.max() > 0.5, 'an empty image tests nothing'
    for name in ('alpha', 'features', 'depth'):
        a, b = getattr(out_t, name), getattr(out_g, name)
        assert torch.isfinite(b).all(), name
        assert _close_fraction(a, b, 1e-3, 1e-3) > frac, name
    gen = torch.Generator(device='cuda').manual_seed(7)
    w_f = torch.randn(out_g.features.shape, generator=gen, device='cuda')
    w_a = torch.randn(out_g.alpha.shape, generator=gen, device='cuda')
    for out, leaves in ((out_g, leaves_g), (out_t, leaves_t)):
        ((out.features * w_f).sum() + (out.alpha * w_a).sum()).backward()
    for k in PARAMS:
        g_g, g_t = getattr(leaves_g[k], 'grad'), getattr(leaves_t[k], 'grad')
        assert torch.isfinite(g_g).all(), k
        rel = (g_g - g_t).norm() / g_t.norm().clamp_min(1e-12)
        assert rel < grad_rel, (k, rel.item())
    return out_g


@pytest.mark.gpu
def test_gaussians_straddling_the_near_plane_match_the_torch_renderer():
    _require_gsplat()
    gs, cams = random_scene(8, 'cuda', N=2000)
    near = 0.5
    g = torch.Generator().manual_seed(8)
    # a third of the Gaussians centred within +-0.3 m of the near plane, 0.1-0.4 m wide: their
    # ellipsoids cross it; gsplat and the torch renderer cull by the centre's depth alike
    k = gs['means'].shape[1] // 3
    z = near + (torch.rand(1, k, generator=g) - 0.5) * 0.6
    gs['means'][:, :k, 2] = z.to('cuda')
    gs['means'][:, :k, :2] *= (z / 6.0).to('cuda')[..., None]  # inside the view cone
    gs['scales'][:, :k] = (0.1 + 0.3 * torch.rand(1, k, 3, generator=g)).to('cuda')
    common = dict(near_plane=near, channel_chunk=None)
    # float32 with fast-math exp on Gaussians a few cm from the camera: a looser match
    out = _compare_dense(gs, cams, GsplatRenderer(**common), TorchSplatRenderer(near_plane=near),
                         frac=0.99, grad_rel=5e-2)
    assert out.alpha.mean() > 0.2


@pytest.mark.gpu
@pytest.mark.parametrize('K', [40, 70])
def test_more_than_32_channels_match_and_chunking_does_not_change_the_render(K):
    _require_gsplat()
    gs, cams = random_scene(9, 'cuda', N=1500, K=K)
    out = _compare_dense(gs, cams, GsplatRenderer(), TorchSplatRenderer())
    assert out.features.shape[-1] == K
    # the chunk plan against gsplat's default chunk of 32: the same render
    for chunk in (32, 8):
        other, _ = _render(GsplatRenderer(channel_chunk=chunk), gs, cams)
        torch.testing.assert_close(other.features, out.features, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(other.depth, out.depth, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(other.alpha, out.alpha)


@pytest.mark.gpu
def test_gsplat_under_autocast_renders_in_float32():
    _require_gsplat()
    gs, cams = random_scene(10, 'cuda', N=500)
    ref, _ = _render(GsplatRenderer(), gs, cams)
    with torch.autocast('cuda', dtype=torch.float16):
        out, _ = _render(GsplatRenderer(), gs, cams)
    assert out.features.dtype == torch.float32
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
