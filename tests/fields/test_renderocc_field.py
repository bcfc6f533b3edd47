"""RenderOccField: the density scale (one voxel's opacity), upstream's read-out rule through
OccupancyReadout, resampling and point queries."""
import math

import pytest
import torch

from splattingocc.fields import RenderOccField, opacity_threshold
from splattingocc.models.readout import OccupancyReadout
from splattingocc.rendering.renderocc_renderer import RawDensityGrid, renderocc_shift

BOX = (-2.0, -2.0, -1.0, 2.0, 2.0, 1.0)  # 4 x 4 x 2 voxels of 1 m


def test_occupancy_is_one_voxels_opacity_sigmoid_of_shifted_raw():
    raw = torch.tensor([0.0, 8.5, 13.8155, 30.0], dtype=torch.float64).view(1, 4, 1, 1)
    f = RenderOccField(raw, torch.zeros(1, 4, 1, 1, 3, dtype=torch.float64), (0, 0, 0, 4, 1, 1))
    rho, probs = f.to_grid(f.box, (4, 1, 1))
    shift = renderocc_shift(1e-6)
    # rho = (interval / step_size) softplus(raw + shift) = softplus(raw + shift) (ratio 1), and
    # 1 - exp(-softplus(x)) = sigmoid(x): the opacity of two 0.5-interval steps, one voxel
    assert rho.flatten().tolist() == pytest.approx(
        [math.log1p(math.exp(v + shift)) for v in raw.flatten().tolist()], rel=1e-12)
    occ = f.occupancy(rho).flatten()
    assert occ.tolist() == pytest.approx(torch.sigmoid(raw.flatten() + shift).tolist(),
                                         rel=1e-9)
    assert probs.shape == (1, 4, 1, 1, 3) and torch.allclose(probs, torch.full_like(probs, 1 / 3))
    # upstream's test_threshold 8.5 on this scale
    assert opacity_threshold(8.5) == pytest.approx(1 / (1 + math.exp(-(8.5 + shift))), rel=1e-12)
    assert opacity_threshold(8.5) == pytest.approx(0.0048907, abs=1e-7)
    assert f.tensors()['density'] is raw


def test_readout_reproduces_upstreams_rule():
    """Upstream: occupied where raw > 8.5, then the argmax of the 17 logits; free (17) else."""
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(2, 4, 4, 2, generator=g) * 4 + 6.5  # around 8.5
    raw[0, 0, 0, 0], raw[0, 0, 0, 1] = 8.49, 8.51
    logits = torch.randn(2, 4, 4, 2, 17, generator=g)
    f = RenderOccField(raw, logits, BOX)
    readout = OccupancyReadout(BOX, (4, 4, 2), num_classes=18, free_label=17,
                               threshold=opacity_threshold(8.5))
    got = readout(f)
    want = torch.where(raw > 8.5, logits.argmax(-1), torch.full_like(raw, 17, dtype=torch.long))
    assert torch.equal(got.long(), want)
    assert got[0, 0, 0, 0] == 17 and got[0, 0, 0, 1] != 17


def test_resampling_and_point_queries_interpolate_raw_then_activate():
    g = torch.Generator().manual_seed(1)
    raw = torch.rand(1, 4, 4, 2, generator=g, dtype=torch.float64) * 20
    logits = torch.randn(1, 4, 4, 2, 5, generator=g, dtype=torch.float64)
    f = RenderOccField(raw, logits, BOX)
    # at the voxel centres a point query returns the voxels
    centres = torch.tensor([[-1.5, -1.5, -0.5], [0.5, 1.5, 0.5]], dtype=torch.float64)[None]
    rho, scores = f.fields_at(centres)
    assert rho[0].tolist() == pytest.approx(f.activate(raw[0, [0, 2], [0, 3], [0, 1]]).tolist())
    assert torch.allclose(scores[0, 1], logits[0, 2, 3, 1].softmax(-1) * rho[0, 1])
    assert torch.allclose(f.density_at(centres), rho)
    # half way between two voxels along x: the mean of the raw values, then the activation
    mid = torch.tensor([[[-1.0, -1.5, -0.5]]], dtype=torch.float64)
    assert f.density_at(mid).item() == pytest.approx(
        f.activate((raw[0, 0, 0, 0] + raw[0, 1, 0, 0]) / 2).item())
    # a coarser grid over the same box: 2 x 2 x 1 voxels, each the mean of a 2 x 2 x 2 block
    rho2, probs2 = f.to_grid(BOX, (2, 2, 1))
    block = raw[0, :2, :2, :].mean()
    assert rho2[0, 0, 0, 0].item() == pytest.approx(f.activate(block).item())
    assert torch.allclose(probs2[0, 0, 0, 0], logits[0, :2, :2, :].mean((0, 1, 2)).softmax(-1))


def test_renderable_is_the_raw_grid_and_no_positions():
    raw, logits = torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 2, 3)
    f = RenderOccField(raw, logits, BOX)
    r = f.renderable()
    assert isinstance(r, RawDensityGrid) and r.raw is raw and r.logits is logits
    assert r.pc_range == BOX and f.batch_size == 1 and f.num_classes == 3
    with pytest.raises(ValueError, match='RenderOccDistortionLoss'):
        f.renderable(with_positions=True)
