"""The scene-field interface: Gaussian fields against brute force and the voxelizer, the density
grid's interpolation and its optical-depth scale."""
import math

import pytest
import torch

from small_model import PC, PRED_GRID, random_voxel_gaussians
from splattingocc.fields import (DensityGridField, GaussianField, SceneField, VoxelGaussianField,
                                 density_grid_at, density_grid_to_voxels)
from splattingocc.geometry import quat_to_rotmat, voxel_centres
from splattingocc.structures import DensityGrid, Gaussians
from splattingocc.voxelizer import voxelize_gaussians


def brute_force(g: Gaussians, points):
    """Density and softmax class scores of every Gaussian at every point (no truncation)."""
    R = quat_to_rotmat(g.quats[0])
    prec = torch.linalg.inv(R @ torch.diag_embed(g.scales[0].square()) @ R.mT)  # [N, 3, 3]
    d = points[0][:, None, :] - g.means[0][None]  # [P, N, 3]
    w = g.opacities[0] * torch.exp(-0.5 * torch.einsum('pni,nij,pnj->pn', d, prec, d))
    return w.sum(1), w @ g.features[0].softmax(-1)


def test_voxel_gaussian_point_queries_match_brute_force():
    """With a window covering the grid the point queries are exact; the default window (2: the
    8 voxels around a point) drops only far tails for these Gaussians."""
    gauss = random_voxel_gaussians()
    g = torch.Generator().manual_seed(1)
    lo, hi = torch.tensor(PC[:3]), torch.tensor(PC[3:])
    pts = (lo + (hi - lo) * torch.rand(1, 64, 3, generator=g)).double()
    gauss = Gaussians(*(t.double() for t in (gauss.means, gauss.quats, gauss.scales,
                                             gauss.opacities, gauss.features)))
    want_d, want_s = brute_force(gauss, pts)
    wide = VoxelGaussianField(gauss, PC, PRED_GRID, window=max(PRED_GRID) * 2)
    d, s = wide.fields_at(pts)
    assert torch.allclose(d[0], want_d, atol=1e-10) and torch.allclose(s[0], want_s, atol=1e-10)
    assert torch.allclose(wide.density_at(pts), d)
    # window 2: the Gaussians of the 8 voxels whose centres surround the point, by brute force
    near = VoxelGaussianField(gauss, PC, PRED_GRID, window=2).density_at(pts)[0]
    size = torch.tensor(PRED_GRID)
    x = (pts[0] - lo.double()) / (hi - lo).double() * size  # continuous voxel coordinates
    start = (x - 0.5).floor().long()
    idx = torch.arange(math.prod(PRED_GRID))
    ijk = torch.stack([idx // (PRED_GRID[1] * PRED_GRID[2]), idx // PRED_GRID[2] % PRED_GRID[1],
                       idx % PRED_GRID[2]], -1)  # [N, 3] voxel of each Gaussian
    picked = ((ijk[None] >= start[:, None]) & (ijk[None] <= start[:, None] + 1)).all(-1)
    R = quat_to_rotmat(gauss.quats[0])
    prec = torch.linalg.inv(R @ torch.diag_embed(gauss.scales[0].square()) @ R.mT)
    d = pts[0][:, None, :] - gauss.means[0][None]
    w = gauss.opacities[0] * torch.exp(-0.5 * torch.einsum('pni,nij,pnj->pn', d, prec, d))
    assert torch.allclose(near, (w * picked).sum(1), atol=1e-10)
    assert (near <= want_d + 1e-12).all() and (near < want_d - 1e-6).any()  # a truncation


def test_gaussian_field_grid_renderable_and_interface():
    gauss = random_voxel_gaussians(B=2)
    field = VoxelGaussianField(gauss, PC, PRED_GRID, cutoff=3.0)
    density, scores = field.to_grid(PC, [16, 16, 8])
    ref = voxelize_gaussians(gauss.means, gauss.quats, gauss.scales, gauss.opacities,
                             gauss.features, PC, [16, 16, 8], cutoff=3.0)
    assert torch.equal(density, ref.density) and torch.equal(scores, ref.scores)
    # the read-out thresholds the opacity of one voxel, 1 - exp(-rho) (monotone in rho)
    assert torch.allclose(field.occupancy(density), 1 - torch.exp(-density), atol=1e-7)
    assert field.opacities() is gauss.opacities and field.num_classes == 5
    r = field.renderable()
    assert torch.allclose(r.features, gauss.features.softmax(-1)) and r.means is gauss.means
    rp = field.renderable(with_positions=True)
    assert rp.features.shape[-1] == 5 + 4
    assert torch.equal(rp.features[..., 5:8], gauss.means)
    assert torch.allclose(rp.features[..., 8], gauss.means.square().sum(-1))
    assert set(field.tensors()) == {'means', 'quats', 'scales', 'opacities', 'features'}
    with pytest.raises(NotImplementedError, match='point queries'):
        GaussianField(gauss, PC).fields_at(torch.zeros(2, 1, 3))


def test_density_grid_to_voxels_on_the_same_grid_is_identity():
    g = torch.Generator().manual_seed(0)
    grid = DensityGrid(density=torch.rand(1, 4, 4, 2, generator=g),
                       features=torch.randn(1, 4, 4, 2, 3, generator=g), pc_range=tuple(PC))
    tau, probs = density_grid_to_voxels(grid, PC, [4, 4, 2])
    assert torch.allclose(tau, grid.density * 1.0 * min(4.0, 4.0, 2.0), atol=1e-5)
    assert torch.allclose(probs, grid.features.softmax(-1), atol=1e-5)


def test_density_grid_at_voxel_centres_and_the_point_scale():
    """At voxel centres the trilinear density is the voxel's own value (halfway between two
    voxels, their mean); the field's point density is that times its edge (optical depth), its
    class scores the interpolated probabilities times that density; the read-out thresholds
    1 - exp(-rho)."""
    g = torch.Generator().manual_seed(0)
    density = torch.rand(1, *PRED_GRID, generator=g)
    logits = torch.randn(1, *PRED_GRID, 17, generator=g)
    grid = DensityGrid(density=density, features=logits, pc_range=PC)
    c = voxel_centres(PC, PRED_GRID).reshape(1, -1, 3)
    assert torch.allclose(density_grid_at(grid, c), density.reshape(1, -1), atol=1e-6)
    mid = (c[:, :1] + c[:, 1:2]) / 2  # halfway between voxels (0, 0, 0) and (0, 0, 1)
    assert torch.allclose(density_grid_at(grid, mid)[0, 0], density[0, 0, 0, :2].mean(),
                          atol=1e-6)
    field = DensityGridField(grid, edge=0.5)
    assert torch.allclose(field.density_at(c), 0.5 * density.reshape(1, -1), atol=1e-6)
    rho, scores = field.fields_at(c)
    probs = logits.softmax(-1).reshape(1, -1, 17)
    assert torch.allclose(scores, probs * rho[..., None], atol=1e-6)
    assert torch.allclose(field.occupancy(torch.tensor([0.0, math.log(2)])),
                          torch.tensor([0.0, 0.5]))
    with pytest.raises(NotImplementedError, match='opacities'):
        field.opacities()
    with pytest.raises(ValueError, match='edge'):
        DensityGridField(grid, edge=0.0)


def test_base_field_says_what_is_missing():
    class Points(SceneField):
        pass

    with pytest.raises(NotImplementedError, match='Points cannot be rendered'):
        Points().renderable()
    with pytest.raises(NotImplementedError, match='opacity prior'):
        Points().opacities()
