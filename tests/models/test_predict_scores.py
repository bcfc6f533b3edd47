"""The read-out's occupancy scale and its scores: the threshold 1 - exp(-0.5) on the opacity picks
exactly the voxels of the former 0.5 on a Gaussian density; predict's scores reproduce its labels
at every threshold of the sweep; renders at the labelled pixels equal a dense render there."""
import math

import numpy as np
import pytest
import torch

import splattingocc.models  # noqa: F401
from small_model import FREE, OCC_GRID, PC, random_batch, small_model_cfg
from splattingocc.evaluation.functional import sweep_confusions, sweep_histogram, threshold_grid
from splattingocc.evaluation.functional.occ_miou import confusion_matrix
from splattingocc.fields import DensityGridField, SceneField
from splattingocc.geometry import labels_in_range
from splattingocc.models.readout import OccupancyReadout
from splattingocc.registry import MODELS
from splattingocc.structures import Cameras, DensityGrid
from splattingocc.voxelizer import scores_to_semantics

C = 18


class _Stub(SceneField):
    """A field given by its grid values (the default occupancy, 1 - exp(-density))."""

    def __init__(self, density, scores):
        self.density, self.scores, self.num_classes = density, scores, scores.shape[-1]
        self.box = tuple(PC)

    def to_grid(self, pc_range, grid_size):
        return self.density, self.scores


def _readout(threshold):
    return OccupancyReadout(PC, OCC_GRID, C, FREE, threshold=threshold)


def test_threshold_on_the_opacity_scale_equals_the_former_threshold_on_density():
    g = torch.Generator().manual_seed(0)
    n = int(np.prod(OCC_GRID))
    density = torch.rand(n, generator=g) * 2  # float32, as the voxelizer's
    # the boundary itself and its float32 neighbours
    half = torch.tensor(0.5)
    special = torch.stack([half, torch.nextafter(half, torch.tensor(0.0)),
                           torch.nextafter(half, torch.tensor(1.0)), torch.tensor(0.0)])
    density[:4] = special
    density = density.reshape(1, *OCC_GRID)
    scores = torch.rand(1, *OCC_GRID, C - 1, generator=g)
    old = scores_to_semantics(density, scores, 0.5, FREE, C, torch.uint8)  # rho >= 0.5
    new = _readout(1 - math.exp(-0.5))(_Stub(density, scores))
    assert torch.equal(new, old)
    assert new.reshape(-1)[0] != FREE and new.reshape(-1)[1] == FREE  # 0.5 in, 0.5 - ulp out


def test_density_grid_occupancy_is_the_opacity_of_one_voxel():
    sigma = 2.5  # 1/m, constant: the opacity of a 0.4 m voxel is 1 - exp(-1)
    grid = DensityGrid(torch.full((1, 4, 4, 2), sigma), torch.zeros(1, 4, 4, 2, 17), tuple(PC))
    field = DensityGridField(grid, edge=0.4)
    density, _ = field.to_grid(PC, (40, 40, 10))  # 0.4 m voxels
    np.testing.assert_allclose(field.occupancy(density).numpy(), 1 - math.exp(-1), rtol=1e-6)


def test_predict_scores_and_labels():
    g = torch.Generator().manual_seed(1)
    density = torch.rand(2, *OCC_GRID, generator=g)
    for K in (C - 1, C):  # free left out / free among the field's classes
        scores = torch.rand(2, *OCC_GRID, K, generator=g)
        scores[0, 0, 0, 0] = 0  # a voxel no element reaches: probabilities 0
        ro = _readout(0.3)
        out = ro.predict(_Stub(density, scores))
        assert torch.equal(out['semantics'], ro(_Stub(density, scores)))
        assert out['occupancy'].dtype == torch.float64
        occupied = out['occupancy'] >= 0.3
        assert torch.equal(out['semantics'][occupied], out['class_labels'][occupied])
        assert (out['semantics'][~occupied] == FREE).all()
        probs = out['class_probs']
        assert probs.shape == (2, *OCC_GRID, C - 1)
        s = probs.sum(-1)
        assert torch.allclose(s[s > 0], torch.ones_like(s[s > 0]))
        if K == C:  # the free column is dropped and the others renormalised
            ref = scores[..., :FREE] / scores[..., :FREE].sum(-1, keepdim=True)
            assert torch.allclose(probs[1], ref[1])
    with pytest.raises(ValueError, match='opacity'):
        _readout(1.5)


def test_sweep_of_predict_reproduces_the_readout_at_every_threshold():
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg()).eval()
    batch = random_batch(B=1)
    with torch.no_grad():
        field = model.extract(batch['img'], batch['cam2img'], batch['cam2ego']).field
        out = model(mode='predict', **batch)[0]
    gt = batch['voxel_semantics'][0].numpy()
    mask = (np.arange(gt.size).reshape(gt.shape) % 3) > 0
    occ = out['occupancy']
    t = threshold_grid(np.quantile(occ, [0.1, 0.5, 0.9]), base=[0.01, 0.3])
    conf = sweep_confusions(sweep_histogram(occ, out['class_labels'], gt, mask, t, C), FREE)
    for j, tj in enumerate(t):
        labels = model.readout.predict(field, tj)['semantics'][0].numpy()
        np.testing.assert_array_equal(conf[j], confusion_matrix(labels, gt, mask, C))
    assert np.array_equal(out['semantics'], model.readout(field)[0].numpy())


@pytest.mark.parametrize('density', [False, True])
def test_render_at_labels_equals_a_dense_render(density):
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(density=density)).eval()
    batch = random_batch(B=2, F=2)
    with torch.no_grad():
        out = model(mode='predict', **batch)
        field = model.extract(batch['img'], batch['cam2img'], batch['cam2ego']).field
        N = batch['img'].shape[1]  # current-frame cameras: the first N label views
        h, w = batch['gt_depth'].shape[-2:]
        cams = Cameras(viewmats=batch['render_viewmats'][:, :N], Ks=batch['render_Ks'][:, :N],
                       width=w, height=h)
        dense = model.supervision[0].renderer(field.renderable(), cams)  # [B, N, h, w]
    for b in range(2):
        r = out[b]['render']
        depth = batch['gt_depth'][b, :N]
        # labelled pixels whose LiDAR point lies in the read-out's range (a few do not)
        pts_ok = labels_in_range(batch['gt_depth'][b:b + 1, :N], cams.viewmats[b:b + 1],
                                 cams.Ks[b:b + 1], PC)[0]
        assert 0 < pts_ok.sum() < (depth > 0).sum()
        np.testing.assert_array_equal(r['gt_depth'], depth[pts_ok].numpy())
        np.testing.assert_allclose(r['depth'], dense.depth[b][pts_ok].numpy(), rtol=1e-4,
                                   atol=1e-4)
        want = dense.features[b][pts_ok].argmax(-1).numpy()  # field class = label (K = 17)
        assert (r['classes'] == want).mean() > 0.99  # ties of near-equal probabilities aside
        np.testing.assert_array_equal(r['gt_classes'],
                                      batch['gt_semantics'][b, :N][pts_ok].numpy())
    # no 2D labels in the batch: no render
    plain = {k: v for k, v in batch.items() if k not in ('gt_depth', 'gt_semantics')}
    with torch.no_grad():
        assert 'render' not in model(mode='predict', **plain)[0]
