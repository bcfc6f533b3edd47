"""EWA projection against gsplat 1.5.3's own pure-torch reference (runs on CPU)."""
import math

import pytest
import torch

from splattingocc.geometry import quat_to_rotmat
from splattingocc.rendering.projection import (ALPHA_THRESHOLD, project_gaussians,
                                               quat_scale_to_covar)

gsplat_torch = pytest.importorskip('gsplat.cuda._torch_impl')


def _random_rigid(n, g, dtype=torch.float64):
    q = torch.randn(n, 4, generator=g, dtype=dtype)
    R = quat_to_rotmat(q)
    T = torch.eye(4, dtype=dtype).repeat(n, 1, 1)
    T[:, :3, :3] = R
    T[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=dtype)
    return T


def _random_case(seed, B=2, C=3, N=300, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    width, height = 64 + seed * 7, 40 + seed * 5
    viewmats = _random_rigid(B * C, g, dtype).reshape(B, C, 4, 4)
    # Gaussians spread around the cameras: some behind, some outside the frustum, some near
    means = torch.randn(B, N, 3, generator=g, dtype=dtype) * 6
    quats = torch.randn(B, N, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.rand(B, N, 3, generator=g, dtype=dtype) * 5 - 4)  # 0.02 .. 2.7
    f = 20 + 150 * torch.rand(B, C, 2, generator=g, dtype=dtype)
    c = torch.rand(B, C, 2, generator=g, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    Ks = torch.zeros(B, C, 3, 3, dtype=dtype)
    Ks[..., 0, 0], Ks[..., 1, 1] = f[..., 0], f[..., 1]
    Ks[..., 0, 2], Ks[..., 1, 2] = c[..., 0], c[..., 1]
    Ks[..., 2, 2] = 1
    return dict(means=means, quats=quats, scales=scales, viewmats=viewmats, Ks=Ks,
                width=width, height=height)


def test_covariance_matches_gsplat():
    case = _random_case(0)
    ours = quat_scale_to_covar(case['quats'], case['scales'])
    ref, _ = gsplat_torch._quat_scale_to_covar_preci(case['quats'], case['scales'], True, False)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_projection_matches_gsplat_torch_reference(seed):
    case = _random_case(seed)
    covars = quat_scale_to_covar(case['quats'], case['scales'])
    kw = dict(width=case['width'], height=case['height'], eps2d=0.3, near_plane=0.01,
              far_plane=1e10)
    ours = project_gaussians(case['means'], covars, case['viewmats'], case['Ks'], **kw)
    radii, means2d, depths, conics, _ = gsplat_torch._fully_fused_projection(
        case['means'], covars, case['viewmats'], case['Ks'], **kw)
    valid = (radii > 0).all(-1)
    # a real mix: visible, culled by depth and culled as outside the image
    behind = depths <= 0.01
    assert valid.float().mean() > 0.1 and behind.any() and (~valid & ~behind).any()
    assert torch.equal(ours.radii, radii.to(torch.int32))
    torch.testing.assert_close(ours.depths, depths, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.means2d[valid], means2d[valid], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(ours.conics[valid], conics[valid], rtol=1e-10, atol=1e-12)


def test_projection_gradients_match_gsplat_torch_reference():
    case = _random_case(4, N=80)
    case['means'][..., :] = case['means'] * 0.1  # near the origin: in front of most cameras
    leaves = [case[k].clone().requires_grad_(True) for k in ('means', 'quats', 'scales')]
    kw = dict(width=case['width'], height=case['height'])
    w = torch.Generator().manual_seed(9)

    def loss(means2d, depths, conics, valid):
        r = [torch.randn(t.shape, generator=w.manual_seed(i), dtype=t.dtype)
             for i, t in enumerate((means2d, depths, conics))]
        return ((means2d * r[0])[valid].sum() + (depths * r[1])[valid].sum()
                + (conics * r[2])[valid].sum())

    covars = quat_scale_to_covar(leaves[1], leaves[2])
    ours = project_gaussians(leaves[0], covars, case['viewmats'], case['Ks'], **kw)
    valid = (ours.radii > 0).all(-1)
    assert valid.float().mean() > 0.3
    g_ours = torch.autograd.grad(loss(ours.means2d, ours.depths, ours.conics, valid), leaves)
    covars_ref, _ = gsplat_torch._quat_scale_to_covar_preci(leaves[1], leaves[2], True, False)
    _, m2, d, c, _ = gsplat_torch._fully_fused_projection(
        leaves[0], covars_ref, case['viewmats'], case['Ks'], **kw)
    g_ref = torch.autograd.grad(loss(m2, d, c, valid), leaves)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_opacity_aware_radius_and_culling():
    """With opacities, gsplat CUDA: extend = min(3.33, sqrt(2 ln(255 o))); o < 1/255: culled."""
    dtype = torch.float64
    means = torch.tensor([[[0.0, 0.0, 5.0]] * 4])
    covars = torch.diag(torch.tensor([0.04, 0.09, 0.01])).expand(1, 4, 3, 3).to(dtype)
    opac = torch.tensor([[1.0, 0.5, 0.01, 0.5 / 255]], dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype)[None, None]
    Ks = torch.tensor([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]], dtype=dtype)[None, None]
    out = project_gaussians(means.to(dtype), covars, viewmats, Ks, 64, 48, opacities=opac)
    var_x = 0.04 * (100 / 5) ** 2 + 0.3  # J Sigma J^T + eps2d on the axis
    var_y = 0.09 * (100 / 5) ** 2 + 0.3
    for i, o in enumerate([1.0, 0.5, 0.01]):
        ext = min(3.33, math.sqrt(2 * math.log(o / ALPHA_THRESHOLD)))
        assert out.radii[0, 0, i].tolist() == [math.ceil(ext * math.sqrt(var_x)),
                                               math.ceil(ext * math.sqrt(var_y))]
    assert out.radii[0, 0, 3].tolist() == [0, 0]
    # without opacities: 3.33 sigmas
    out = project_gaussians(means.to(dtype), covars, viewmats, Ks, 64, 48)
    assert out.radii[0, 0, 0].tolist() == [math.ceil(3.33 * math.sqrt(var_x)),
                                           math.ceil(3.33 * math.sqrt(var_y))]


def test_degenerate_inputs_have_finite_gradients():
    means = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.1, 0.2, 3.0], [1e3, 0.0, 2.0]]],
                         requires_grad=True)
    quats = torch.tensor([[[0.0, 0, 0, 0], [1, 0, 0, 0], [2, 1, 0, 0], [1, 0, 0, 0]]],
                         requires_grad=True)
    scales = torch.tensor([[[0.1] * 3, [0.1] * 3, [0.0] * 3, [1e4] * 3]], requires_grad=True)
    viewmats = torch.eye(4)[None, None]
    Ks = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])[None, None]
    out = project_gaussians(means, quat_scale_to_covar(quats, scales), viewmats, Ks, 64, 48,
                            opacities=torch.full((1, 4), 0.5))
    assert out.radii[0, 0, 0].tolist() == [0, 0] and out.radii[0, 0, 1].tolist() == [0, 0]
    assert (out.radii[0, 0, 2] > 0).all()
    total = out.means2d.sum() + out.conics.sum() + out.depths.sum()
    total.backward()
    for t in (means, quats, scales):
        assert torch.isfinite(t.grad).all()
