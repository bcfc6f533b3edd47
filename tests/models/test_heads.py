import pytest
import torch

from splattingocc.geometry import voxel_centres
from splattingocc.fields import DensityGridField, VoxelGaussianField
from splattingocc.models.heads import DensityGridHead, FixedGaussianHead, GaussianHead
from splattingocc.structures import DensityGrid, Gaussians

PC_RANGE = (-8.0, -8.0, -1.0, 8.0, 8.0, 3.0)
GRID = (4, 4, 2)  # voxels 4 m x 4 m x 2 m


def _saturating_input(c, g):
    # large inputs drive tanh / sigmoid to their limits, where a bug in the bounds would show
    return torch.randn(2, c, *GRID, generator=g) * 100


def test_voxel_centres():
    c = voxel_centres(PC_RANGE, GRID)
    assert c.shape == (4, 4, 2, 3)
    assert torch.allclose(c[0, 0, 0], torch.tensor([-6.0, -6.0, 0.0]))
    assert torch.allclose(c[3, 2, 1], torch.tensor([6.0, 2.0, 2.0]))


def test_gaussian_head_bounds():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    head = GaussianHead(8, PC_RANGE, GRID, num_classes=17, min_scale=(0.1, 0.2, 0.05),
                        max_scale=(1.0, 2.0, 0.5), hidden_channels=16)
    for m in (head.offset, head.scale, head.rotation, head.opacity):
        torch.nn.init.normal_(m.weight, std=1.0)  # far from the near-zero initialisation
    field = head(_saturating_input(8, g))
    assert isinstance(field, VoxelGaussianField)
    assert field.grid_size == GRID and field.box == PC_RANGE and field.cutoff == 3.0
    out = field.gaussians
    assert isinstance(out, Gaussians)
    assert out.means.shape == (2, 32, 3) and out.features.shape == (2, 32, 17)
    centres = voxel_centres(PC_RANGE, GRID).reshape(1, -1, 3)
    half = torch.tensor([2.0, 2.0, 1.0])
    assert ((out.means - centres).abs() <= half + 1e-5).all()
    assert (out.scales >= torch.tensor([0.1, 0.2, 0.05]) - 1e-6).all()
    assert (out.scales <= torch.tensor([1.0, 2.0, 0.5]) + 1e-6).all()
    assert torch.allclose(out.quats.norm(dim=-1), torch.ones(2, 32), atol=1e-5)
    assert ((out.opacities >= 0) & (out.opacities <= 1)).all()
    # saturation is actually reached somewhere (the test is not vacuous)
    assert (out.means - centres).abs().amax() > 1.9


def test_gaussian_head_initialisation_and_voxel_order():
    head = GaussianHead(8, PC_RANGE, GRID, init_opacity=0.1)
    for m in (head.offset, head.rotation, head.opacity):
        torch.nn.init.zeros_(m.weight)
    out = head(torch.randn(1, 8, *GRID)).gaussians
    # zero output layers: Gaussians at the voxel centres, in (x, y, z) order, init opacity
    assert torch.allclose(out.means[0], voxel_centres(PC_RANGE, GRID).reshape(-1, 3), atol=1e-6)
    assert torch.allclose(out.opacities, torch.full((1, 32), 0.1), atol=1e-4)
    assert torch.allclose(out.quats, torch.tensor([1.0, 0, 0, 0]).expand(1, 32, 4), atol=1e-5)


def test_gaussian_head_isotropic():
    g = torch.Generator().manual_seed(1)
    head = GaussianHead(8, PC_RANGE, GRID, isotropic=True, min_scale=0.1, max_scale=1.0)
    out = head(_saturating_input(8, g)).gaussians
    assert torch.equal(out.scales[..., 0], out.scales[..., 1])
    assert torch.equal(out.scales[..., 0], out.scales[..., 2])
    assert torch.equal(out.quats, torch.tensor([1.0, 0, 0, 0]).expand(2, 32, 4))
    with pytest.raises(ValueError, match='isotropic'):
        GaussianHead(8, PC_RANGE, GRID, isotropic=True, min_scale=(0.1, 0.2, 0.1))


def test_density_head():
    head = DensityGridHead(8, PC_RANGE, GRID, num_classes=17, edge=0.4)
    field = head(torch.randn(2, 8, *GRID))
    assert isinstance(field, DensityGridField) and field.edge == 0.4
    out = field.grid
    assert isinstance(out, DensityGrid)
    assert out.density.shape == (2, 4, 4, 2) and out.features.shape == (2, 4, 4, 2, 17)
    assert (out.density >= 0).all()
    assert out.pc_range == PC_RANGE
    # the density starts at softplus(density_bias) everywhere
    assert torch.allclose(out.density, torch.nn.functional.softplus(torch.tensor(-2.0)),
                          atol=1e-2)
    with pytest.raises(ValueError, match='edge'):
        DensityGridHead(8, PC_RANGE, GRID, edge=0.0)


def test_head_gradients_reach_every_output_layer():
    head = GaussianHead(8, PC_RANGE, GRID)
    out = head(torch.randn(1, 8, *GRID)).gaussians
    loss = (out.means.square().sum() + out.scales.sum() + out.quats[..., 1:].sum() * 3
            + out.opacities.sum() + out.features.square().sum())
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_fixed_gaussian_head_learns_only_opacity_and_classes():
    head = FixedGaussianHead(8, PC_RANGE, GRID, scale=0.6, num_classes=17, hidden_channels=8,
                             init_opacity=0.1)
    field = head(torch.randn(2, 8, *GRID))
    assert isinstance(field, VoxelGaussianField) and field.grid_size == GRID
    g = field.gaussians
    assert torch.equal(g.means, voxel_centres(PC_RANGE, GRID).reshape(1, -1, 3).expand(2, -1, 3))
    assert torch.equal(g.scales, torch.full((2, 32, 3), 0.6))
    assert torch.equal(g.quats, torch.tensor([1.0, 0, 0, 0]).expand(2, 32, 4))
    assert torch.allclose(g.opacities, torch.full((2, 32), 0.1), atol=1e-3)
    (g.opacities.sum() + g.features.square().sum()).backward()
    assert {n for n, p in head.named_parameters() if p.grad is not None
            and p.grad.abs().sum() > 0} == {n for n, _ in head.named_parameters()}
    assert not g.means.requires_grad and not g.scales.requires_grad
    with pytest.raises(ValueError, match='scale'):
        FixedGaussianHead(8, PC_RANGE, GRID, scale=0.0)
