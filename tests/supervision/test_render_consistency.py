"""RenderConsistencySupervision (GaussRender): the loss maths against hand-computed cases, the
bird's-eye camera against GaussRender's and a hand projection, a prediction equal to the ground
truth renders the same (all terms 0), an empty prediction against the formula, gradients, the
camera draw, left-out voxels, the model and the configs."""
import pytest
import torch
from mmengine.config import Config

from small_model import (FREE, NUM_CLASSES, OCC_GRID, PC, check_grads, loss_sum, random_batch,
                         random_voxel_gaussians, small_model_cfg, volume_supervision)
from splattingocc.fields import GaussianField, SceneField
from splattingocc.geometry import rigid_inverse, voxel_centres
from splattingocc.registry import MODELS
from splattingocc.structures import Cameras, NetworkOutputs
from splattingocc.supervision.functional import render_consistency_l1, with_background
from splattingocc.supervision.render_consistency import bev_camera, drop_faint, label_channels

CAR = 4


def rc_cfg(**overrides):
    cfg = dict(type='RenderConsistencySupervision', renderer=dict(type='TorchSplatRenderer'),
               pc_range=PC, num_classes=NUM_CLASSES, free_label=FREE, num_cameras=None,
               camera_scale=0.5, bev_size=32)
    cfg.update(overrides)
    return cfg


class GridField(SceneField):
    """A field given by its density [B, X, Y, Z] and class scores [B, X, Y, Z, K] on one grid."""

    def __init__(self, density, scores):
        self.density, self.scores = density, scores
        self.box, self.num_classes = tuple(PC), scores.shape[-1]

    @property
    def batch_size(self):
        return self.density.shape[0]

    def to_grid(self, pc_range, grid_size):
        assert tuple(pc_range) == tuple(PC) and tuple(grid_size) == self.density.shape[1:]
        return self.density, self.scores


def one_class_scene():
    """Ground (z index 0) and a block, all one class; free elsewhere. [1, 16, 16, 8]."""
    sem = torch.full((1, *OCC_GRID), FREE, dtype=torch.uint8)
    sem[0, :, :, 0] = CAR
    sem[0, 10:13, 6:10, 1:4] = CAR
    return sem


def test_render_consistency_l1_hand_case():
    # K = 3 classes, free = 2; image 0 has two pixels, image 1 renders nothing on either side
    f_pred = torch.tensor([[[0.2, 0.1, 0.3], [0.0, 0.0, 0.0]], [[0.0] * 3, [0.0] * 3]])
    a_pred = torch.tensor([[0.6, 0.0], [0.0, 0.0]])
    f_gt = torch.tensor([[[0.9, 0.0, 0.0], [0.0, 0.5, 0.0]], [[0.0] * 3, [0.0] * 3]])
    a_gt = torch.tensor([[0.9, 0.5], [0.0, 0.0]])
    sem_p, sem_g = with_background(f_pred, a_pred, 2), with_background(f_gt, a_gt, 2)
    # free space behind: pred pixel 0 -> [0.2, 0.1, 0.7], pixel 1 -> [0, 0, 1];
    # gt pixel 0 -> [0.9, 0, 0.1], pixel 1 -> [0, 0.5, 0.5]
    assert torch.allclose(sem_p[0], torch.tensor([[0.2, 0.1, 0.7], [0.0, 0.0, 1.0]]))
    assert torch.allclose(sem_g[0], torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.5, 0.5]]))
    # accumulated depth: pred 0.6 * 10 = 6 and 0; gt 0.9 * 12 = 10.8 and 0.5 * 20 = 10
    d_pred = torch.tensor([[6.0, 0.0], [0.0, 0.0]], requires_grad=True)
    d_gt = torch.tensor([[10.8, 10.0], [0.0, 0.0]])
    l_sem, l_depth = render_consistency_l1(sem_p, d_pred, sem_g, d_gt, depth_norm=50.0)
    # image 0: |diff| = [0.7, 0.1, 0.6] + [0, 0.5, 0.5] = 2.4 over 6 entries = 0.4; image 1: 0
    assert l_sem.item() == pytest.approx((0.4 + 0.0) / 2)
    # depth: image 0 only (image 1 has no ground-truth depth): (4.8 + 10) / 2 / 50
    assert l_depth.item() == pytest.approx(7.4 / 50)
    l_depth.backward()
    assert torch.allclose(d_pred.grad, torch.tensor([[-0.5 / 50, -0.5 / 50], [0.0, 0.0]]))
    # no ground-truth depth at all: a zero that keeps the graph
    _, none = render_consistency_l1(sem_p, d_pred, sem_g, torch.zeros(2, 2), depth_norm=50.0)
    assert none.item() == 0 and none.requires_grad
    with pytest.raises(ValueError, match='channel'):
        with_background(f_pred, a_pred, 3)


def test_bev_camera_is_gaussrenders_and_projects_by_hand():
    # GaussRender (gaussian_render.py 369-390): 80 m above the ego, focal 400, 400 x 400 pixels
    cam = bev_camera([-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], 400)
    assert torch.equal(cam.viewmats[0, 0], torch.tensor(
        [[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 80], [0, 0, 0, 1]]))
    assert torch.equal(cam.Ks[0, 0], torch.tensor([[400.0, 0, 200], [0, 400, 200], [0, 0, 1]]))
    assert (cam.width, cam.height) == (400, 400)
    # world (10, 20, 0): camera (10, -20, 80) -> pixel (400 * 10 / 80 + 200, -400 * 20 / 80 + 200)
    p = cam.viewmats[0, 0] @ torch.tensor([10.0, 20.0, 0.0, 1.0])
    uvw = cam.Ks[0, 0] @ p[:3]
    assert torch.allclose(uvw[:2] / uvw[2], torch.tensor([250.0, 100.0])) and p[2] == 80
    # the box corners at z = 0 are the image corners; another height keeps that
    high = bev_camera([-40.0, -40.0, -1.0, 40.0, 40.0, 5.4], 100, height=400.0)
    q = high.viewmats[0, 0] @ torch.tensor([40.0, -40.0, 0.0, 1.0])
    uvw = high.Ks[0, 0] @ q[:3]
    assert torch.allclose(uvw[:2] / uvw[2], torch.tensor([100.0, 100.0]))


def test_a_single_ground_truth_voxel_lands_where_the_hand_projection_says():
    sup = MODELS.build(rc_cfg(bev_size=64, gaussian_scale=0.3))
    sem = torch.full((1, *OCC_GRID), FREE, dtype=torch.long)
    sem[0, 12, 3, 5] = CAR  # centre (4.5, -4.5, 1.75): 1 m x 1 m x 0.5 m voxels from (-8, -8, -1)
    gt = sup.gt_gaussians(sem, torch.ones_like(sem, dtype=torch.bool))
    assert torch.allclose(gt.means[0, 0], torch.tensor([4.5, -4.5, 1.75]))
    assert torch.allclose(gt.scales[0, 0], torch.tensor([0.3, 0.3, 0.15]))
    cam = bev_camera(PC, 64, None, 1)  # 16 m above z = 0, focal 64 * 16 / 16 = 64
    out = sup.renderer(gt, cam)
    v, u = divmod(int(out.alpha[0, 0].argmax()), 64)
    # u = 64 * 4.5 / (16 - 1.75) + 32 = 52.2, v = 64 * 4.5 / 14.25 + 32 = 52.2: pixel 52
    assert (u, v) == (52, 52)
    assert out.depth[0, 0, v, u].item() == pytest.approx(16 - 1.75, abs=1e-4)
    assert out.features[0, 0, v, u, CAR].item() == pytest.approx(out.alpha[0, 0, v, u].item())


@pytest.mark.parametrize('opacity', ['density', 'free_class'])
def test_a_prediction_equal_to_the_ground_truth_renders_the_same(opacity):
    sem = one_class_scene()
    occ = (sem != FREE)
    density = torch.where(occ, 50.0, 0.0).float()  # occupancy 1 - exp(-50) = 1 in float32
    scores = torch.nn.functional.one_hot(sem.long(), NUM_CLASSES).float()
    sup = MODELS.build(rc_cfg(opacity=opacity))
    batch = random_batch()
    batch.update(voxel_semantics=sem)
    losses = sup(NetworkOutputs(field=GridField(density, scores)), batch)
    assert {k for k in losses if k.startswith('loss')} == {
        'loss_rc_cam_sem', 'loss_rc_cam_depth', 'loss_rc_bev_sem', 'loss_rc_bev_depth'}
    # exactly: the same Gaussians in the same order (drop_faint keeps the voxel order, and the
    # renderer's stop at transmittance 1e-4 depends on the order of Gaussians at equal depth)
    for key in ('loss_rc_cam_sem', 'loss_rc_cam_depth', 'loss_rc_bev_sem', 'loss_rc_bev_depth'):
        assert losses[key].item() == 0.0, key
    assert losses['rc_gaussians_pred'].item() == losses['rc_gaussians_gt'].item() == occ.sum()
    # a wrong class in the block is seen from the bird's-eye view and by the cameras
    scores[0, 10:13, 6:10, 1:4] = torch.nn.functional.one_hot(torch.tensor(11), NUM_CLASSES)
    wrong = sup(NetworkOutputs(field=GridField(density, scores)), batch)
    assert wrong['loss_rc_bev_sem'].item() > 1e-3
    assert wrong['loss_rc_bev_depth'].item() == 0.0


def test_an_empty_prediction_scores_the_ground_truth_render():
    """With nothing predicted every pixel renders free space at depth 0, so per image
    l_sem = mean over pixels of 2 alpha_gt / C and l_depth = mean over pixels with
    D_gt > 0.1 of D_gt / depth_norm (module docstring), from the ground truth's own render."""
    sem = one_class_scene()
    field = GridField(torch.zeros(1, *OCC_GRID), torch.zeros(1, *OCC_GRID, NUM_CLASSES))
    sup = MODELS.build(rc_cfg(depth_norm=dict(cam=10.0, bev=20.0)))
    batch = random_batch()
    batch.update(voxel_semantics=sem)
    losses = sup(NetworkOutputs(field=field), batch)
    gt = sup.gt_gaussians(sem.long(), torch.ones(sem.shape, dtype=torch.bool))
    views = dict(cam=sup.sample_cameras(batch), bev=bev_camera(PC, 32, None, 1))
    for kind, norm in (('cam', 10.0), ('bev', 20.0)):
        out = sup.renderer(gt, views[kind])
        n_img = out.alpha.shape[0] * out.alpha.shape[1]
        a = out.alpha.reshape(n_img, -1).double()
        D = (out.depth * out.alpha).reshape(n_img, -1).double()
        assert a.max() > 0.5  # the scene is in view
        want_sem = (2 * a / NUM_CLASSES).mean(1).mean()
        used = D > 0.1
        want_depth = torch.stack([(D[i][used[i]] / norm).mean() for i in range(n_img)
                                  if used[i].any()]).mean()
        assert losses[f'loss_rc_{kind}_sem'].item() == pytest.approx(want_sem.item(), rel=1e-5)
        assert losses[f'loss_rc_{kind}_depth'].item() == pytest.approx(want_depth.item(),
                                                                       rel=1e-5)
    assert losses['rc_gaussians_pred'].item() == 0


def test_gradients_reach_every_parameter_of_a_gaussian_field():
    torch.manual_seed(0)
    g = random_voxel_gaussians(K=NUM_CLASSES)
    leaves = {k: getattr(g, k).clone().requires_grad_(True)
              for k in ('means', 'quats', 'scales', 'opacities', 'features')}
    field = GaussianField(type(g)(**leaves), PC)
    batch = random_batch()
    for cfg in (rc_cfg(), rc_cfg(pixels_per_view=50, grid_size=[8, 8, 4], num_cameras=1)):
        for t in leaves.values():
            t.grad = None
        losses = MODELS.build(cfg)(NetworkOutputs(field=field), batch)
        loss_sum(losses).backward()
        for name, t in leaves.items():
            assert t.grad is not None and torch.isfinite(t.grad).all(), name
            assert t.grad.abs().sum() > 0, name


def test_the_camera_draw_and_resolution():
    batch = random_batch(N=3)
    sup = MODELS.build(rc_cfg(num_cameras=1, camera_weights=[0, 0, 1], camera_scale=0.25))
    cams = sup.sample_cameras(batch)
    assert cams.viewmats.shape == (1, 1, 4, 4) and (cams.width, cams.height) == (16, 8)
    assert torch.allclose(cams.viewmats[0, 0], rigid_inverse(batch['cam2ego'][0, 2]))
    K = batch['cam2img'][0, 2].clone()
    K[:2] *= 0.25
    assert torch.allclose(cams.Ks[0, 0], K)
    every = MODELS.build(rc_cfg()).sample_cameras(batch)
    assert every.viewmats.shape == (1, 3, 4, 4) and (every.width, every.height) == (32, 16)
    torch.manual_seed(0)
    drawn = [int(torch.nonzero((MODELS.build(rc_cfg(num_cameras=2)).sample_cameras(batch)
                                .viewmats[0, :, None] == rigid_inverse(batch['cam2ego'][0]))
                               .all(-1).all(-1))[:, 1].sort().values.sum()) for _ in range(20)]
    assert set(drawn) > {1}  # two distinct cameras each time, different pairs over draws
    with pytest.raises(ValueError, match='camera_weights'):
        MODELS.build(rc_cfg(num_cameras=1, camera_weights=[1, 1])).sample_cameras(batch)
    pix = MODELS.build(rc_cfg(pixels_per_view=7)).sample_pixels(
        Cameras(viewmats=cams.viewmats, Ks=cams.Ks, width=4, height=3))
    assert pix.shape == (1, 1, 7, 2) and len({tuple(p) for p in pix[0, 0].tolist()}) == 7
    assert ((pix % 1) == 0.5).all() and pix[..., 0].max() < 4 and pix[..., 1].max() < 3


def test_ignored_and_unobserved_voxels_are_left_out_on_both_sides():
    sem = one_class_scene()
    sem[0, 0, 0, 0] = 255  # ignored
    mask = torch.ones(1, *OCC_GRID, dtype=torch.uint8)
    mask[0, 10:13, 6:10, :] = 0  # the block unobserved
    field = GridField(torch.full((1, *OCC_GRID), 50.0), torch.ones(1, *OCC_GRID, NUM_CLASSES))
    for masked in (False, True):
        sup = MODELS.build(rc_cfg(mask_camera=masked))
        lab, keep = sup.labels(dict(voxel_semantics=sem, mask_camera=mask))
        pred = sup.pred_gaussians(field, OCC_GRID, keep)
        gt = sup.gt_gaussians(lab, keep)
        want = (sem != 255) & (mask.bool() if masked else True)
        centres = voxel_centres(PC, OCC_GRID)[want[0]]  # [M, 3] in voxel order
        assert torch.equal(pred.means[0][pred.opacities[0] > 0], centres)
        occupied = (sem != FREE) & want
        assert int((gt.opacities > 0).sum()) == int(occupied.sum())


def test_label_channels_and_errors():
    s = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert torch.allclose(label_channels(s, 3, 1), torch.tensor([[0.25, 0, 0.75], [0, 0, 0]]))
    assert torch.allclose(label_channels(s, 2, 1), torch.tensor([[0.25, 0.75], [0, 0]]))
    with pytest.raises(ValueError, match='K=2'):
        label_channels(s, 4, 1)
    with pytest.raises(ValueError, match='loss_weights'):
        MODELS.build(rc_cfg(loss_weights=dict(cam_semantics=1.0)))
    with pytest.raises(ValueError, match='opacity'):
        MODELS.build(rc_cfg(opacity='alpha'))
    field = GridField(torch.zeros(1, *OCC_GRID), torch.zeros(1, *OCC_GRID, NUM_CLASSES - 1))
    sup = MODELS.build(rc_cfg(opacity='free_class'))
    with pytest.raises(ValueError, match='free class'):
        sup.pred_gaussians(field, OCC_GRID, torch.ones(1, *OCC_GRID, dtype=torch.bool))
    with pytest.raises(KeyError, match='voxel_semantics'):
        sup(NetworkOutputs(field=field), {})
    # a view whose two weights are 0 is not rendered
    off = MODELS.build(rc_cfg(loss_weights=dict(bev_sem=0.0, bev_depth=0.0)))
    assert not any('bev' in k for k in off(NetworkOutputs(field=field), random_batch()))


def test_the_3d_bound_with_render_consistency_trains():
    torch.manual_seed(0)
    cfg = small_model_cfg(supervision=[
        volume_supervision(mask_camera=True, losses=[dict(type='SemanticVoxelCELoss')]),
        dict(type='LSSDepthLoss', loss_weight=0.2), rc_cfg(grid_size=[8, 8, 4], num_cameras=1)])
    cfg['head']['num_classes'] = NUM_CLASSES
    cfg['readout']['threshold'] = None
    model = MODELS.build(cfg)
    losses = model(mode='loss', **random_batch())
    assert {'loss_voxel_ce', 'loss_lss_depth', 'loss_rc_cam_sem', 'loss_rc_cam_depth',
            'loss_rc_bev_sem', 'loss_rc_bev_depth', 'time_render'} <= set(losses)
    loss_sum(losses).backward()
    assert check_grads(model) == []


def test_the_3d_render_config_is_the_3d_bound_plus_the_base_render_consistency():
    c3d = Config.fromfile('configs/splattingocc/splattingocc-tiny-synthetic-3d.py')
    rc = Config.fromfile('configs/splattingocc/splattingocc-tiny-synthetic-3d-render.py')
    m3d, mrc = c3d.model.to_dict(), rc.model.to_dict()
    assert mrc.pop('supervision') == m3d.pop('supervision') + [
        rc.render_consistency.to_dict()]
    assert mrc == m3d
    assert rc.train_dataloader.to_dict() == c3d.train_dataloader.to_dict()
    sup = MODELS.build(rc.render_consistency)
    assert sup.grid_size == (100, 100, 8) and sup.camera_weights == (2, 1, 1, 2, 1, 1)
    assert rc.render_consistency.depth_norm == dict(cam=50.0, bev=100.0)


def test_drop_faint_keeps_the_order_and_the_render():
    torch.manual_seed(0)
    g = random_voxel_gaussians(B=2, K=NUM_CLASSES)
    opac = g.opacities.clone()
    opac[0, ::3] = 0.001  # below 1/255
    opac[1, ::2] = 0.0
    g = type(g)(g.means, g.quats, g.scales, opac, g.features)
    kept = drop_faint(g, 1 / 255)
    n0, n1 = int((opac[0] >= 1 / 255).sum()), int((opac[1] >= 1 / 255).sum())
    assert kept.num_gaussians == max(n0, n1)
    assert torch.equal(kept.means[0, :n0], g.means[0][opac[0] >= 1 / 255])  # voxel order
    assert torch.equal(kept.means[1, :n1], g.means[1][opac[1] >= 1 / 255])
    renderer = MODELS.build(dict(type='TorchSplatRenderer'))
    cams = bev_camera(PC, 24, None, 2)
    a, b = renderer(g, cams), renderer(kept, cams)
    assert torch.allclose(a.alpha, b.alpha, atol=1e-6)
    assert torch.allclose(a.features, b.features, atol=1e-6)
