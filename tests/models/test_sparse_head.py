"""models/sparse_head.py: the sparse Gaussian head against the dense (per-voxel) path, its
selection, its refinement and gradients, the model built with it and its configs."""
import math

import pytest
import torch
from mmengine.config import Config

import splattingocc.models  # noqa: F401
from small_model import (OCC_GRID, PC, PRED_GRID, check_grads, loss_sum, random_batch,
                         ray_supervision, small_model_cfg)
from splattingocc.fields import SparseGaussianField, VoxelGaussianField
from splattingocc.geometry import voxel_centres
from splattingocc.models import GaussianHead, SparseGaussianHead
from splattingocc.registry import MODELS

V = math.prod(PRED_GRID)


def sparse_head(**overrides):
    cfg = dict(type='SparseGaussianHead', in_channels=8, pc_range=PC, grid_size=PRED_GRID,
               num_gaussians=100, num_classes=17, min_scale=0.25, max_scale=[1.0, 1.0, 0.5],
               hidden_channels=8, num_refine=2)
    cfg.update(overrides)
    return cfg


def volume(B=2, seed=0):
    return torch.randn(B, 8, *PRED_GRID, generator=torch.Generator().manual_seed(seed))


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return MODELS.build(sparse_head(**overrides))


def randomise(head, seed=1, std=0.5):
    """Weights large enough that priors, shapes and refinements differ across cells."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.mark.parametrize('num_gaussians', [V, 37])
def test_at_voxel_centres_the_sparse_gaussians_voxelize_as_the_dense_path(num_gaussians):
    """Without refinement the sparse head's Gaussians sit at the centres of the N selected cells;
    on any grid they give exactly what the dense path (``GaussianHead.decode``: one Gaussian per
    cell, at its centre, same scale / rotation / opacity / class mappings) gives with every
    unselected cell's opacity 0."""
    head = build(num_gaussians=num_gaussians, num_refine=0)
    randomise(head)
    x = volume()
    field = head(x)
    assert isinstance(field, SparseGaussianField)
    g = field.gaussians
    # the dense path on the same per-cell raw values
    h = head.mlp(x)
    flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731  [B, c, X, Y, Z] -> [B, V, c]
    prior, shape, logits = flat(head.prior(h))[..., 0], flat(head.shape(h)), flat(head.semantics(h))
    idx = head.select(prior)  # [B, N]
    dense_head = GaussianHead(8, PC, PRED_GRID, num_classes=17, min_scale=0.25,
                              max_scale=[1.0, 1.0, 0.5])
    keep = torch.zeros_like(prior, dtype=torch.bool).scatter_(1, idx, True)  # [B, V]
    opacity = torch.where(keep, prior, torch.full_like(prior, -torch.inf))
    dense = dense_head.decode(torch.zeros(2, V, 3), shape[..., :3], shape[..., 3:], opacity,
                              logits)
    dense_field = VoxelGaussianField(dense, PC, PRED_GRID)
    centres = voxel_centres(PC, PRED_GRID).reshape(V, 3)
    assert torch.equal(g.means, centres[idx])  # at the voxel centres
    for b in range(2):
        assert torch.equal(g.means[b], dense.means[b][keep[b]])
        assert torch.allclose(g.scales[b], dense.scales[b][keep[b]])
        assert torch.allclose(g.quats[b], dense.quats[b][keep[b]])
        assert torch.allclose(g.opacities[b], dense.opacities[b][keep[b]])
    for grid in (PRED_GRID, OCC_GRID):
        d_sparse, s_sparse = field.to_grid(PC, grid)
        d_dense, s_dense = dense_field.to_grid(PC, grid)
        assert torch.allclose(d_sparse, d_dense, atol=1e-5, rtol=1e-5), grid
        assert torch.allclose(s_sparse, s_dense, atol=1e-5, rtol=1e-5), grid
        assert (d_sparse > 0.05).any()


def test_selection_is_the_top_n_of_the_prior_deterministic_with_ties_by_index():
    head = build(num_gaussians=40)
    prior = torch.randn(2, V, generator=torch.Generator().manual_seed(0))
    idx = head.select(prior)
    assert idx.shape == (2, 40) and (idx.diff(dim=1) > 0).all()  # ascending cell order
    for b in range(2):
        chosen = torch.zeros(V, dtype=torch.bool)
        chosen[idx[b]] = True
        assert prior[b][chosen].min() > prior[b][~chosen].max()
    # ties: the lower cell indices first
    ties = torch.zeros(2, V)
    ties[:, 100] = 1.0
    want = torch.cat([torch.arange(39), torch.tensor([100])])
    assert torch.equal(head.select(ties), want.expand(2, -1))
    # the whole head is deterministic
    randomise(head)
    a, b = head(volume()).gaussians, head(volume()).gaussians
    assert all(torch.equal(u, v) for u, v in zip(
        (a.means, a.scales, a.quats, a.opacities, a.features),
        (b.means, b.scales, b.quats, b.opacities, b.features)))


def test_refinement_moves_the_means_by_at_most_max_step_per_step():
    head = build(num_gaussians=60, num_refine=3, max_step=[0.3, 0.2, 0.1])
    x = volume()
    centres = voxel_centres(PC, PRED_GRID).reshape(V, 3)

    def start(head):  # [B, N, 3] the centres of the selected cells
        return centres[head.select(head.prior(head.mlp(x)).flatten(1))]

    # at initialisation (delta layers near 0) the means are near their cells' centres
    assert (head(x).gaussians.means - start(head)).abs().max() < 0.05
    randomise(head, std=1.0)
    field = head(x)
    move = (field.gaussians.means - start(head)).abs()
    assert (move <= torch.tensor([0.3, 0.2, 0.1]) * 3 + 1e-5).all()
    assert (move.amax((0, 1)) > torch.tensor([0.3, 0.2, 0.1])).all()  # they do move
    g = field.gaussians
    assert (g.scales >= torch.tensor([0.25] * 3) - 1e-6).all()
    assert (g.scales <= torch.tensor([1.0, 1.0, 0.5]) + 1e-6).all()
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(2, 60), atol=1e-5)
    assert ((g.opacities >= 0) & (g.opacities <= 1)).all()


def test_every_parameter_learns_through_grids_point_queries_and_renders():
    """A loss on the field's grid and point queries reaches every parameter; the selected cells'
    prior logits get their opacities' gradient (what decides the selection is trained)."""
    head = build(num_gaussians=50)
    randomise(head, std=0.3)
    x = volume().requires_grad_()
    field = head(x)
    density, scores = field.to_grid(PC, OCC_GRID)
    pts = torch.rand(2, 200, 3) * torch.tensor([16.0, 16.0, 4.0]) + torch.tensor(PC[:3])
    rho, sc = field.fields_at(pts)
    (density.square().sum() + scores[..., 0].sum() + rho.sum() + sc[..., 3].sum()).backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert x.grad.abs().sum() > 0


def test_the_model_trains_a_step_with_free_space_and_surface_terms():
    """The network with the sparse head: the 2D losses, the line-of-sight terms on the field's
    point queries, the LSS loss; every parameter gets a finite gradient; the read-out works."""
    torch.manual_seed(0)
    losses_cfg = [dict(type='SILogLoss'), dict(type='RenderedCELoss', class_weight='batch'),
                  dict(type='FreeSpaceLoss', samples_per_ray=4, sky_rays=8, surface_samples=2),
                  dict(type='SurfaceLoss', occ_weight=0.1, occ_target=1.0)]
    cfg = small_model_cfg(supervision=[ray_supervision(losses=losses_cfg),
                                       dict(type='LSSDepthLoss', loss_weight=0.5),
                                       dict(type='OpacityEntropyLoss', loss_weight=0.01)],
                          head=sparse_head(num_gaussians=80))
    model = MODELS.build(cfg)
    model.train()
    losses = model(mode='loss', **random_batch(B=2))
    assert {'loss_free_space', 'loss_free_sky', 'loss_surface_occ', 'loss_surface_sem'} <= \
        set(losses)
    for k, v in losses.items():
        assert torch.isfinite(v), k
    assert float(losses['loss_free_space'].detach()) > 0
    loss_sum(losses).backward()
    assert check_grads(model) == []
    model.eval()
    with torch.no_grad():
        out = model(mode='predict', **random_batch(B=1))
    assert len(out) == 1


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match='num_gaussians must be in'):
        build(num_gaussians=V + 1)
    with pytest.raises(ValueError, match='min_scale < max_scale'):
        build(min_scale=2.0)
    with pytest.raises(ValueError, match='max_step'):
        build(max_step=0.0)
    head = build()
    with pytest.raises(AssertionError):
        head(torch.zeros(1, 8, 4, 4, 4))


def test_sparse_configs_replace_the_head_only():
    """The tiny and the real sparse configs are their base with the head replaced by the base's
    sparse_head (N = 4,000 and 25,000); both build."""
    pairs = [('splattingocc-tiny-synthetic', 4000), ('splattingocc-Nframe', 25000)]
    for base_name, n in pairs:
        base = Config.fromfile(f'configs/splattingocc/{base_name}.py')
        sparse = Config.fromfile(f'configs/splattingocc/{base_name}-sparse.py')
        mb, ms = base.model.to_dict(), sparse.model.to_dict()
        assert mb.pop('head')['type'] == 'GaussianHead'
        head = ms.pop('head')
        assert head == base.sparse_head.to_dict() and head['type'] == 'SparseGaussianHead'
        assert head['num_gaussians'] == n
        assert ms == mb
        built = MODELS.build(head)
        assert isinstance(built, SparseGaussianHead) and built.num_gaussians == n
    tiny = MODELS.build(Config.fromfile(
        'configs/splattingocc/splattingocc-tiny-synthetic-sparse.py').model)
    assert type(tiny.head).__name__ == 'SparseGaussianHead'
