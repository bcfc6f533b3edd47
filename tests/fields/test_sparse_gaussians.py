"""fields/sparse_gaussians.py: the exact point queries of free-mean Gaussians against brute force,
their gradients, and the field against the voxelizer."""
import pytest
import torch

from small_model import PC
from splattingocc.fields import SparseGaussianField, gaussian_fields_at
from splattingocc.geometry import quat_to_rotmat, voxel_centres
from splattingocc.structures import Gaussians
from splattingocc.voxelizer import voxelize_gaussians


def free_gaussians(B=2, N=60, K=4, seed=0, dtype=torch.float64):
    """Gaussians with free means anywhere in (and a little outside) the small box PC, scales from
    0.1 to 1.3 m, random rotations."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(PC[:3]), torch.tensor(PC[3:])
    means = lo - 1 + (hi - lo + 2) * torch.rand(B, N, 3, generator=g)
    return Gaussians(means=means.to(dtype), quats=torch.randn(B, N, 4, generator=g).to(dtype),
                     scales=(0.1 + 1.2 * torch.rand(B, N, 3, generator=g)).to(dtype),
                     opacities=torch.rand(B, N, generator=g).to(dtype),
                     features=torch.randn(B, N, K, generator=g).to(dtype))


def random_points(B=2, P=400, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(PC[:3]), torch.tensor(PC[3:])
    return (lo - 3 + (hi - lo + 6) * torch.rand(B, P, 3, generator=g)).to(dtype)


def brute_force(g: Gaussians, points, cutoff, score_mode='softmax'):
    """Every Gaussian at every point, with an explicit inverse covariance and the cutoff mask."""
    R = quat_to_rotmat(g.quats)
    prec = torch.linalg.inv(R @ torch.diag_embed(g.scales.square()) @ R.mT)  # [B, N, 3, 3]
    d = points[:, :, None, :] - g.means[:, None]  # [B, P, N, 3]
    m2 = torch.einsum('bpni,bnij,bpnj->bpn', d, prec, d)
    w = g.opacities[:, None] * torch.exp(-0.5 * m2) * (m2 <= cutoff ** 2)  # [B, P, N]
    f = g.features.softmax(-1) if score_mode == 'softmax' else g.features
    return w.sum(-1), torch.einsum('bpn,bnk->bpk', w, f)


@pytest.mark.parametrize('cutoff', [1.0, 3.0, 40.0])
def test_point_queries_are_the_brute_force_sum(cutoff):
    """Any chunking and any hash cell give the brute-force sum over the Gaussians whose cutoff
    ellipsoid holds the point; points far outside every Gaussian get 0."""
    gs, pts = free_gaussians(), random_points()
    want_d, want_s = brute_force(gs, pts, cutoff)
    assert (want_d > 0).sum() > 10  # the points do meet Gaussians
    for chunk, cell in [(None, None), (7, None), (None, (0.3, 0.3, 0.3)), (50, (9.0, 9.0, 9.0))]:
        d, s = gaussian_fields_at(pts, gs.means, gs.quats, gs.scales, gs.opacities, gs.features,
                                  cutoff=cutoff, cell_size=cell, max_pairs_per_chunk=chunk)
        assert torch.allclose(d, want_d, atol=1e-12, rtol=0), (chunk, cell)
        assert torch.allclose(s, want_s, atol=1e-12, rtol=0), (chunk, cell)
    raw_d, raw_s = gaussian_fields_at(pts, gs.means, gs.quats, gs.scales, gs.opacities,
                                      gs.features, cutoff=cutoff, score_mode='raw')
    assert torch.allclose(raw_s, brute_force(gs, pts, cutoff, 'raw')[1], atol=1e-12, rtol=0)
    only_d, none = gaussian_fields_at(pts, gs.means, gs.quats, gs.scales, gs.opacities,
                                      cutoff=cutoff)
    assert none is None and torch.equal(only_d, raw_d)
    far = torch.full((2, 3, 3), 1e4, dtype=torch.float64)
    d_far, s_far = gaussian_fields_at(far, gs.means, gs.quats, gs.scales, gs.opacities,
                                      gs.features, cutoff=cutoff)
    assert not d_far.any() and not s_far.any()


def test_point_queries_batches_do_not_mix_and_empty_inputs():
    gs, pts = free_gaussians(B=2), random_points(B=2)
    d, s = gaussian_fields_at(pts, gs.means, gs.quats, gs.scales, gs.opacities, gs.features)
    one = Gaussians(*(t[1:] for t in (gs.means, gs.quats, gs.scales, gs.opacities, gs.features)))
    d1, s1 = gaussian_fields_at(pts[1:], one.means, one.quats, one.scales, one.opacities,
                                one.features)
    assert torch.allclose(d[1:], d1, atol=1e-12) and torch.allclose(s[1:], s1, atol=1e-12)
    # no Gaussians, no points
    e = torch.zeros(2, 0, 3, dtype=torch.float64)
    d0, s0 = gaussian_fields_at(pts, e, torch.zeros(2, 0, 4, dtype=torch.float64), e,
                                torch.zeros(2, 0, dtype=torch.float64),
                                torch.zeros(2, 0, 4, dtype=torch.float64))
    assert d0.shape == (2, 400) and s0.shape == (2, 400, 4) and not d0.any()
    dp, sp = gaussian_fields_at(pts[:, :0], gs.means, gs.quats, gs.scales, gs.opacities,
                                gs.features)
    assert dp.shape == (2, 0) and sp.shape == (2, 0, 4)
    with pytest.raises(ValueError, match='cell_size'):
        gaussian_fields_at(pts, gs.means, gs.quats, gs.scales, gs.opacities, cell_size=(1, 0, 1))
    with pytest.raises(ValueError, match='score_mode'):
        gaussian_fields_at(pts, gs.means, gs.quats, gs.scales, gs.opacities, gs.features,
                           score_mode='probs')


def test_point_query_gradients():
    """gradcheck in float64 w.r.t. the points and every Gaussian parameter, in small chunks (the
    backward recomputes each chunk's pairs); cutoff large enough that no pair sits on the
    ellipsoid surface, and a cutoff of 2 where pairs are dropped."""
    gs = free_gaussians(B=2, N=12, K=3, seed=3)
    pts = random_points(B=2, P=20, seed=4) * 0.5
    leaves = [t.clone().requires_grad_() for t in
              (pts, gs.means, gs.quats, gs.scales, gs.opacities, gs.features)]

    def f(cutoff):
        return lambda *a: gaussian_fields_at(*a, cutoff=cutoff, max_pairs_per_chunk=64)

    assert torch.autograd.gradcheck(f(40.0), leaves, fast_mode=True)
    assert torch.autograd.gradcheck(f(2.0), leaves, fast_mode=True)
    # only some inputs need gradients
    p, m, q, s, o, k = leaves
    assert torch.autograd.gradcheck(
        lambda m, k: gaussian_fields_at(pts, m, gs.quats, gs.scales, gs.opacities, k,
                                        max_pairs_per_chunk=64), (m, k), fast_mode=True)
    assert torch.autograd.gradcheck(
        lambda p: gaussian_fields_at(p, gs.means, gs.quats, gs.scales, gs.opacities,
                                     max_pairs_per_chunk=64)[0], (p, ), fast_mode=True)


def test_at_voxel_centres_the_point_queries_are_the_voxelizer():
    gs = free_gaussians(B=2, N=80, K=5, dtype=torch.float32)
    grid = [16, 16, 8]
    ref = voxelize_gaussians(gs.means, gs.quats, gs.scales, gs.opacities, gs.features, PC, grid,
                             cutoff=3.0)
    c = voxel_centres(PC, grid).reshape(1, -1, 3).expand(2, -1, 3)
    d, s = gaussian_fields_at(c, gs.means, gs.quats, gs.scales, gs.opacities, gs.features,
                              cutoff=3.0)
    assert torch.allclose(d.reshape(ref.density.shape), ref.density, atol=1e-5)
    assert torch.allclose(s.reshape(ref.scores.shape), ref.scores, atol=1e-5)
    assert (ref.density > 0).float().mean() > 0.3


def test_sparse_gaussian_field_interface():
    gs = free_gaussians(B=2, N=50, K=5, dtype=torch.float32)
    field = SparseGaussianField(gs, PC, cutoff=3.0, query_cell=(1.0, 1.0, 1.0))
    pts = random_points(dtype=torch.float32)
    rho, scores = field.fields_at(pts)
    want_d, want_s = brute_force(gs, pts, 3.0)
    assert torch.allclose(rho, want_d, atol=1e-5) and torch.allclose(scores, want_s, atol=1e-5)
    assert torch.equal(field.density_at(pts), rho)
    density, sc = field.to_grid(PC, [16, 16, 8])
    ref = voxelize_gaussians(gs.means, gs.quats, gs.scales, gs.opacities, gs.features, PC,
                             [16, 16, 8], cutoff=3.0)
    assert torch.equal(density, ref.density) and torch.equal(sc, ref.scores)
    assert field.opacities() is gs.opacities and field.num_classes == 5 and field.batch_size == 2
    assert torch.allclose(field.renderable().features, gs.features.softmax(-1))
    assert set(field.tensors()) == {'means', 'quats', 'scales', 'opacities', 'features'}
