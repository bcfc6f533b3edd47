"""Under autocast the Gaussian geometry still multiplies in float32 (issue 25, defect 6).

``--amp`` is float16 autocast on CUDA; on a CPU ``torch.autocast('cpu', dtype=torch.bfloat16)``
casts the same operations (``mm``, ``bmm``, ``matmul``, ...) to a half type, so it stands in for it
here. A dispatch mode records the dtype of every matrix product that runs: under autocast the
projection, the covariances, the torch rasterizer and the voxelizer must run none in a half type
and give exactly the float32 result. The control shows the recorder sees autocast's casts.
"""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from splattingocc.precision import float32_math
from splattingocc.rendering import TorchSplatRenderer, project_gaussians, quat_scale_to_covar
from splattingocc.structures import Cameras, Gaussians
from splattingocc.voxelizer import grid_gaussian_fields, voxelize_gaussians

HALF = (torch.float16, torch.bfloat16)
PRODUCTS = ('mm', 'bmm', 'addmm', 'baddbmm', 'addbmm', 'matmul', 'linear', 'dot', 'mv',
            'sampled_addmm', '_sparse_mm', 'sparse_sampled_addmm', '_sparse_addmm', 'addmv')


class ProductDtypes(TorchDispatchMode):
    """Records (op name, dtypes of the floating inputs and outputs) of every matrix product."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in PRODUCTS:
            flat = [*args, *(kwargs or {}).values()]
            outs = out if isinstance(out, (tuple, list)) else [out]
            dtypes = {t.dtype for t in [*flat, *outs]
                      if isinstance(t, torch.Tensor) and t.is_floating_point()}
            self.seen.append((name, dtypes))
        return out

    def half_products(self):
        return [(n, d) for n, d in self.seen if d & set(HALF)]


def _autocast():
    return torch.autocast('cpu', dtype=torch.bfloat16)


def _scene(seed=0, N=400, C=2, W=48, H=32, K=5):
    g = torch.Generator().manual_seed(seed)
    means = torch.stack([(torch.rand(1, N, generator=g) - 0.5) * 6,
                         (torch.rand(1, N, generator=g) - 0.5) * 4,
                         3 + 8 * torch.rand(1, N, generator=g)], -1)
    quats = torch.randn(1, N, 4, generator=g)
    scales = torch.exp(torch.rand(1, N, 3, generator=g) * 2.5 - 3.5)
    opacities = 0.1 + 0.85 * torch.rand(1, N, generator=g)
    features = torch.randn(1, N, K, generator=g)
    viewmats = torch.eye(4).repeat(1, C, 1, 1)
    for c in range(C):
        a = 0.15 * c
        viewmats[0, c, 0, 0], viewmats[0, c, 0, 2] = math.cos(a), math.sin(a)
        viewmats[0, c, 2, 0], viewmats[0, c, 2, 2] = -math.sin(a), math.cos(a)
    Ks = torch.tensor([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]]).repeat(1, C, 1, 1)
    return Gaussians(means, quats, scales, opacities, features), Cameras(viewmats, Ks, W, H)


def test_control_the_recorder_sees_autocast_lower_a_float32_product():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with _autocast(), ProductDtypes() as rec:
        c = a @ b
    assert c.dtype == torch.bfloat16 and rec.half_products(), rec.seen
    # and float32_math undoes it
    with _autocast(), ProductDtypes() as rec:
        c = float32_math(torch.matmul)(a, b)
    assert c.dtype == torch.float32 and rec.seen and not rec.half_products(), rec.seen


def test_projection_and_covariances_multiply_in_float32_under_autocast():
    gs, cams = _scene()
    ref_cov = quat_scale_to_covar(gs.quats, gs.scales)
    ref = project_gaussians(gs.means, ref_cov, cams.viewmats, cams.Ks, cams.width, cams.height,
                            opacities=gs.opacities)
    with _autocast(), ProductDtypes() as rec:
        cov = quat_scale_to_covar(gs.quats, gs.scales)
        proj = project_gaussians(gs.means, cov, cams.viewmats, cams.Ks, cams.width, cams.height,
                                 opacities=gs.opacities)
    assert rec.seen and not rec.half_products(), rec.half_products()
    assert cov.dtype == torch.float32 and torch.equal(cov, ref_cov)
    for name in ('means2d', 'depths', 'conics'):
        got, want = getattr(proj, name), getattr(ref, name)
        assert got.dtype == torch.float32 and torch.equal(got, want), name
    assert torch.equal(proj.radii, ref.radii) and (proj.radii > 0).any()


@pytest.mark.parametrize('pixels', [False, True], ids=['dense', 'sampled'])
def test_torch_renderer_forward_and_backward_in_float32_under_autocast(pixels):
    gs, cams = _scene(1)
    pix = None
    if pixels:
        g = torch.Generator().manual_seed(3)
        pix = torch.rand(1, cams.num_cameras, 200, 2, generator=g) * torch.tensor(
            [cams.width, cams.height])
    renderer = TorchSplatRenderer()

    def run():
        leaves = Gaussians(*(t.clone().requires_grad_(True) for t in (
            gs.means, gs.quats, gs.scales, gs.opacities, gs.features)))
        out = renderer(leaves, cams, pix)
        return out, leaves

    ref, ref_leaves = run()
    (ref.depth.sum() + ref.features.sum() + ref.alpha.sum()).backward()
    with _autocast(), ProductDtypes() as rec:
        out, leaves = run()
        loss = out.depth.sum() + out.features.sum() + out.alpha.sum()
    assert rec.seen and not rec.half_products(), rec.half_products()
    for name in ('depth', 'features', 'alpha'):
        got, want = getattr(out, name), getattr(ref, name)
        assert got.dtype == torch.float32 and torch.equal(got, want), name
    assert ref.alpha.max() > 0.5  # a scene, not an empty image
    with ProductDtypes() as rec:
        loss.backward()
    assert not rec.half_products(), rec.half_products()
    for name in ('means', 'quats', 'scales', 'opacities', 'features'):
        assert torch.equal(getattr(leaves, name).grad, getattr(ref_leaves, name).grad), name


def test_torch_renderer_half_inputs_render_in_float32():
    gs, cams = _scene(2)
    half = Gaussians(*(t.bfloat16() for t in (gs.means, gs.quats, gs.scales, gs.opacities,
                                              gs.features)))
    as_float = Gaussians(*(t.float() for t in (half.means, half.quats, half.scales,
                                               half.opacities, half.features)))
    with ProductDtypes() as rec:
        out = TorchSplatRenderer()(half, cams)
    assert not rec.half_products(), rec.half_products()
    ref = TorchSplatRenderer()(as_float, cams)
    assert out.depth.dtype == torch.float32 and torch.equal(out.depth, ref.depth)


def test_voxelizer_multiplies_in_float32_under_autocast():
    g = torch.Generator().manual_seed(4)
    N, K = 60, 4
    means = torch.rand(1, N, 3, generator=g) * torch.tensor([4.0, 4.0, 2.0])
    quats = torch.randn(1, N, 4, generator=g)
    scales = 0.05 + 0.3 * torch.rand(1, N, 3, generator=g)
    opac = torch.rand(1, N, generator=g)
    feats = torch.randn(1, N, K, generator=g)
    pc_range, occ_size = [0.0, 0.0, 0.0, 4.0, 4.0, 2.0], [8, 8, 4]
    ref = voxelize_gaussians(means, quats, scales, opac, feats, pc_range, occ_size)
    points = torch.rand(1, 50, 3, generator=g) * torch.tensor([4.0, 4.0, 2.0])
    grid_means = torch.rand(1, 8 * 8 * 4, 3, generator=g) * 0.5 + 0.25  # unused values: shapes
    with _autocast(), ProductDtypes() as rec:
        out = voxelize_gaussians(means, quats, scales, opac, feats, pc_range, occ_size)
    assert rec.seen and not rec.half_products(), rec.half_products()
    assert out.density.dtype == torch.float32 and torch.equal(out.density, ref.density)
    assert torch.equal(out.scores, ref.scores) and ref.density.max() > 0
    n = grid_means.shape[1]
    args = (points, grid_means, torch.randn(1, n, 4, generator=g),
            0.1 + 0.2 * torch.rand(1, n, 3, generator=g), torch.rand(1, n, generator=g),
            pc_range, occ_size)
    ref_d, _ = grid_gaussian_fields(*args)
    with _autocast(), ProductDtypes() as rec:
        dens, _ = grid_gaussian_fields(*args)
    assert rec.seen and not rec.half_products(), rec.half_products()
    assert dens.dtype == torch.float32 and torch.equal(dens, ref_d)
