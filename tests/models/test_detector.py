"""The full SplattingOcc model on small random inputs (CPU): losses, gradients, predict format."""
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from torch.nn import functional as F

import splattingocc.models  # noqa: F401
from splattingocc.geometry import labels_in_range, rigid_inverse
from splattingocc.models.detector import density_grid_to_voxels
from splattingocc.registry import MODELS
from splattingocc.structures import Cameras, DensityGrid, Gaussians

PC = [-8.0, -8.0, -1.0, 8.0, 8.0, 3.0]
PRED_GRID = [8, 8, 4]  # 2 m x 2 m x 1 m voxels, one Gaussian each
OCC_GRID = [16, 16, 8]  # the evaluation grid, 1 m x 1 m x 0.5 m
NUM_CLASSES, FREE = 18, 17


def small_model_cfg(**overrides):
    cfg = dict(
        type='SplattingOcc',
        backbone=dict(type='ResNet', depth='tiny', widths=[8, 8, 16, 16], stem_channels=8,
                      out_indices=[2, 3]),
        neck=dict(type='MergeNeck', in_channels=[16, 16], out_channels=16),
        view_transform=dict(type='LSSViewTransform', in_channels=16, out_channels=8,
                            depth_bins=[1.0, 13.0, 1.0], pc_range=PC, grid_size=PRED_GRID),
        volume_encoder=dict(type='VolumeEncoder3D', in_channels=8, channels=8, num_blocks=1),
        head=dict(type='GaussianHead', in_channels=8, pc_range=PC, grid_size=PRED_GRID,
                  num_classes=NUM_CLASSES - 1, min_scale=0.25, max_scale=[1.0, 1.0, 0.5],
                  hidden_channels=8, scene_type='auto'),
        renderer=dict(type='TorchSplatRenderer'),
        voxelizer=dict(type='GaussianVoxelizer', pc_range=PC, occ_size=OCC_GRID,
                       num_classes=NUM_CLASSES, free_label=FREE, density_threshold=0.3,
                       label_dtype='uint8'),
        pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=96,
                           num_classes=NUM_CLASSES - 1),
        loss_depth=dict(type='SILogLoss'),
        loss_sem=dict(type='RenderedCELoss', class_weight='batch'),
        loss_lss_depth=dict(type='LSSDepthLoss', loss_weight=0.5),
        loss_opacity=dict(type='OpacityEntropyLoss', loss_weight=0.01),
        loss_3d=dict(type='Occupancy3DLoss'),
        aux_weight=0.3,
        dynamic_classes=[2, 3, 4],
    )
    cfg.update(overrides)
    return cfg


def ring_cameras(n):
    """n cameras 1.5 m up, looking outwards horizontally (OpenCV axes) -> cam2ego [n, 4, 4]."""
    T = torch.zeros(n, 4, 4)
    for i in range(n):
        yaw = 2 * math.pi * i / n
        T[i, :3, :3] = torch.tensor([[math.sin(yaw), 0, math.cos(yaw)],
                                     [-math.cos(yaw), 0, math.sin(yaw)], [0, -1, 0.0]])
        T[i, :3, 3] = torch.tensor([0.0, 0.0, 1.5])
        T[i, 3, 3] = 1
    return T


def random_batch(B=1, N=2, F=2, H=32, W=64, ds=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = H // ds, W // ds
    K = torch.tensor([[32.0, 0, 32], [0, 32.0, 16], [0, 0, 1]])
    Kl = K.clone()
    Kl[:2] /= ds
    cam2ego = ring_cameras(N)
    labelled = torch.rand(B, F * N, h, w, generator=g) < 0.5
    return dict(
        img=torch.rand(B, N, 3, H, W, generator=g) * 255,
        cam2img=K.expand(B, N, 3, 3).clone(),
        cam2ego=cam2ego.expand(B, N, 4, 4).clone(),
        render_viewmats=rigid_inverse(cam2ego).repeat(F, 1, 1).expand(B, F * N, 4, 4).clone(),
        render_Ks=Kl.expand(B, F * N, 3, 3).clone(),
        render_frame_offset=torch.tensor([0] * N + [-1] * N * (F - 1)).expand(B, F * N).clone(),
        gt_depth=torch.where(labelled, 2 + 8 * torch.rand(B, F * N, h, w, generator=g),
                             torch.zeros(B, F * N, h, w)),
        gt_semantics=torch.where(labelled, torch.randint(0, 17, (B, F * N, h, w), generator=g),
                                 torch.full((B, F * N, h, w), 255)),
        voxel_semantics=torch.randint(0, 18, (B, *OCC_GRID), generator=g).to(torch.uint8),
        mask_camera=torch.ones(B, *OCC_GRID, dtype=torch.uint8),
        meta=dict(sample_token=[f'tok{b}' for b in range(B)],
                  scene_name=[f'scene-{b}' for b in range(B)]),
    )


def _check_grads(model):
    missing = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None or p.grad.abs().sum() == 0:
            missing.append(name)
        else:
            assert torch.isfinite(p.grad).all(), name
    return missing


@pytest.mark.parametrize('renderer', ['TorchSplatRenderer', 'VolumeRenderer'])
def test_forward_backward_every_parameter_gets_a_finite_gradient(renderer):
    torch.manual_seed(0)
    cfg = small_model_cfg(use_3d_supervision=True,
                          loss_distortion=dict(type='RayDistortionLoss', loss_weight=0.01))
    if renderer == 'VolumeRenderer':
        cfg['renderer'] = dict(type='VolumeRenderer', step_ratio=0.5)
    model = MODELS.build(cfg)
    assert model.scene_type == ('density' if renderer == 'VolumeRenderer' else 'gaussians')
    model.train()
    losses = model(mode='loss', **random_batch(B=2))
    expected = {'loss_depth', 'loss_sem', 'loss_lss_depth', 'loss_occ3d', 'loss_sem3d',
                'loss_distortion'}
    if renderer == 'TorchSplatRenderer':
        expected.add('loss_opacity')
    assert expected <= set(losses)
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    # (with the volume renderer the Gaussian-only head layers are not built)
    assert _check_grads(model) == []
    # the render time is logged: this step's forward (no backward before the first step) ...
    assert 0 < float(losses['time_render']) == pytest.approx(model._render_clock._forward)
    # ... and the next step adds the render backward that has just run
    losses2 = model(mode='loss', **random_batch(B=2))
    bwd = model._render_clock._last_backward
    assert bwd > 0
    assert float(losses2['time_render']) == pytest.approx(model._render_clock._forward + bwd)


def test_2d_only_loss_does_not_need_3d_labels():
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(loss_opacity=None))
    batch = random_batch()
    for k in ('voxel_semantics', 'mask_camera'):
        batch.pop(k)
    losses = model(mode='loss', **batch)
    assert set(k for k in losses if k.startswith('loss')) == {'loss_depth', 'loss_sem',
                                                              'loss_lss_depth'}
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    assert _check_grads(model) == []


def test_3d_only_upper_bound():
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(use_2d_supervision=False, use_3d_supervision=True,
                                         loss_lss_depth=None, loss_opacity=None))
    batch = random_batch()
    for k in ('gt_depth', 'gt_semantics', 'render_viewmats', 'render_Ks'):
        batch.pop(k)
    losses = model(mode='loss', **batch)
    assert set(losses) == {'loss_occ3d', 'loss_sem3d'}
    sum(losses.values()).backward()
    assert torch.isfinite(model.head.opacity.weight.grad).all()
    with pytest.raises(ValueError, match='both'):
        MODELS.build(small_model_cfg(use_2d_supervision=False))


def test_adjacent_dynamic_rays_do_not_affect_the_loss():
    """Changing the depth of adjacent-frame rays labelled with a dynamic class changes nothing;
    changing it on a static class does (weight 0.3, not 0)."""
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(
        loss_lss_depth=None, loss_opacity=None, loss_sem=None,
        pixel_sampler=dict(type='PixelSampler', mode='dense')))
    model.eval()  # BatchNorm in eval: identical network outputs for both batches
    batch = random_batch(F=2)
    N = batch['img'].shape[1]
    sem = batch['gt_semantics']
    sem[:, N:] = torch.where(sem[:, N:] == 255, sem[:, N:], torch.full_like(sem[:, N:], 11))
    sem[:, N:, :4] = torch.where(batch['gt_depth'][:, N:, :4] > 0, 4, 255)  # cars at the top
    with torch.no_grad():
        base = model(mode='loss', **batch)['loss_depth']
        dyn = dict(batch, gt_depth=batch['gt_depth'].clone())
        dyn['gt_depth'][:, N:, :4] *= 3.0
        assert torch.allclose(model(mode='loss', **dyn)['loss_depth'], base)
        static = dict(batch, gt_depth=batch['gt_depth'].clone())
        static['gt_depth'][:, N:, 8:] *= 3.0
        assert not torch.allclose(model(mode='loss', **static)['loss_depth'], base)


@pytest.mark.parametrize('renderer', ['TorchSplatRenderer', 'VolumeRenderer'])
def test_predict_output_format(renderer):
    torch.manual_seed(0)
    cfg = small_model_cfg()
    if renderer == 'VolumeRenderer':
        cfg['renderer'] = dict(type='VolumeRenderer')
    model = MODELS.build(cfg)
    model.eval()
    out = model(mode='predict', **random_batch(B=2))
    assert isinstance(out, list) and len(out) == 2
    for b, o in enumerate(out):
        assert set(o) == {'semantics', 'sample_token', 'scene_name'}
        assert isinstance(o['semantics'], np.ndarray)
        assert o['semantics'].dtype == np.uint8 and o['semantics'].shape == tuple(OCC_GRID)
        assert o['semantics'].max() <= FREE
        assert o['sample_token'] == f'tok{b}' and o['scene_name'] == f'scene-{b}'


def test_predict_labels_match_the_voxelizer():
    """predict() = the voxelizer on the head's Gaussians (so a Gaussian with known class at a
    known voxel shows up there)."""
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg())
    model.eval()
    centre = torch.tensor([[[0.5, 0.5, 0.25]]])  # centre of Occ3D voxel (8, 8, 2)
    logits = torch.full((1, 1, 17), -5.0)
    logits[0, 0, 4] = 5.0
    g = Gaussians(means=centre, quats=torch.tensor([[[1.0, 0, 0, 0]]]),
                  scales=torch.full((1, 1, 3), 0.3), opacities=torch.ones(1, 1), features=logits)
    sem = model.predict_semantics(g)[0]
    assert sem[8, 8, 2] == 4
    assert (sem == FREE).sum() == sem.numel() - (sem == 4).sum()


def test_density_grid_to_voxels_on_the_same_grid_is_identity():
    g = torch.Generator().manual_seed(0)
    grid = DensityGrid(density=torch.rand(1, 4, 4, 2, generator=g),
                       features=torch.randn(1, 4, 4, 2, 3, generator=g), pc_range=tuple(PC))
    tau, probs = density_grid_to_voxels(grid, PC, [4, 4, 2])
    assert torch.allclose(tau, grid.density * 1.0 * min(4.0, 4.0, 2.0), atol=1e-5)
    assert torch.allclose(probs, grid.features.softmax(-1), atol=1e-5)


def test_configs_build():
    """Every model config builds (pretrained weights switched off) and has the right switches."""
    names = ['splattingocc/splattingocc-tiny-synthetic', 'splattingocc/splattingocc-Nframe',
             'splattingocc/splattingocc-tiny-synthetic-3d',
             'splattingocc/splattingocc-tiny-synthetic-2d3d',
             'splattingocc/splattingocc-tiny-synthetic-oracle-depth',
             'renderocc/renderocc-tiny-synthetic', 'renderocc/renderocc-Nframe']
    cfgs = {n: Config.fromfile(f'configs/{n}.py') for n in names}
    tiny = MODELS.build(cfgs['splattingocc/splattingocc-tiny-synthetic'].model)
    assert tiny.scene_type == 'gaussians' and tiny.head.grid_size == (50, 50, 8)
    assert MODELS.build(cfgs['renderocc/renderocc-tiny-synthetic'].model).scene_type == 'density'
    assert cfgs['splattingocc/splattingocc-tiny-synthetic-3d'].model.use_2d_supervision is False
    assert cfgs['splattingocc/splattingocc-tiny-synthetic-2d3d'].model.use_3d_supervision is True
    # the oracle-depth diagnostic: the tiny model plus the switch, labels loaded at test
    oracle = cfgs['splattingocc/splattingocc-tiny-synthetic-oracle-depth']
    mo = oracle.model.to_dict()
    assert mo.pop('oracle_lift_depth') is True
    assert mo == cfgs['splattingocc/splattingocc-tiny-synthetic'].model.to_dict()
    assert 'LoadLabels2D' in [t['type'] for t in oracle.test_dataloader.dataset.pipeline]
    # renderocc variants differ from their splatting configs only in the renderer
    for a, b in [('splattingocc/splattingocc-tiny-synthetic', 'renderocc/renderocc-tiny-synthetic'),
                 ('splattingocc/splattingocc-Nframe', 'renderocc/renderocc-Nframe')]:
        ma, mb = cfgs[a].model.to_dict(), cfgs[b].model.to_dict()
        assert ma.pop('renderer') != mb.pop('renderer')
        assert ma == mb
    real = cfgs['splattingocc/splattingocc-Nframe'].model
    assert real.backbone.depth == 50 and tuple(real.head.grid_size) == (200, 200, 16)
    with pytest.raises(FileNotFoundError, match='resnet50'):
        MODELS.build(real.backbone)


def test_downsample_labels_hand_case():
    from splattingocc.models.detector import downsample_labels, downsample_mask
    sem = torch.full((1, 4, 2, 2), FREE)
    sem[0, 0, 0, 0] = 4  # block 0 (x 0..1): one car, seven free -> free
    sem[0, 2:, :, 0] = 11  # block 1 (x 2..3): four road, four free -> tie -> road (lower index)
    sem[0, 0:2, :, :] = torch.where(sem[0, 0:2] == FREE, 255, sem[0, 0:2])  # block 0: ignore free
    out = downsample_labels(sem, (2, 2, 2), NUM_CLASSES)
    assert out.shape == (1, 2, 1, 1)
    assert out[0, 0, 0, 0] == 4 and out[0, 1, 0, 0] == 11
    all_ignored = torch.full((1, 2, 2, 2), 255)
    assert downsample_labels(all_ignored, (2, 2, 2), NUM_CLASSES).item() == 255
    mask = torch.zeros(1, 4, 2, 2, dtype=torch.uint8)
    mask[0, 3, 1, 1] = 1
    assert downsample_mask(mask, (2, 2, 2)).flatten().tolist() == [False, True]
    with pytest.raises(ValueError, match='divisible'):
        downsample_labels(sem, (3, 2, 2), NUM_CLASSES)


@pytest.mark.parametrize('renderer', ['TorchSplatRenderer', 'VolumeRenderer'])
def test_3d_loss_on_the_prediction_grid(renderer):
    torch.manual_seed(0)
    cfg = small_model_cfg(use_2d_supervision=False, use_3d_supervision=True,
                          loss_lss_depth=None, loss_opacity=None, loss_3d_grid='pred')
    if renderer == 'VolumeRenderer':
        cfg['renderer'] = dict(type='VolumeRenderer')
    model = MODELS.build(cfg)
    losses = model(mode='loss', **random_batch())
    assert set(losses) == {'loss_occ3d', 'loss_sem3d'}
    sum(losses.values()).backward()
    assert model.head.semantics.weight.grad.abs().sum() > 0


def test_render_pruning_is_exact():
    """Leaving out Gaussians with opacity < 1/255 changes neither the render nor the gradients."""
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg())
    g = torch.Generator().manual_seed(1)
    B, N = 2, 300
    means = (torch.rand(B, N, 3, generator=g) - 0.5) * torch.tensor([14.0, 14.0, 3.0])
    opac = torch.rand(B, N, generator=g)
    opac[:, ::2] = opac[:, ::2] / 300  # half of them below 1/255
    leaves = [means, torch.randn(B, N, 4, generator=g),
              0.2 + torch.rand(B, N, 3, generator=g), opac,
              torch.randn(B, N, 17, generator=g)]
    batch = random_batch(B=B)
    from splattingocc.structures import Cameras
    cams = Cameras(batch['render_viewmats'], batch['render_Ks'], 32, 16)
    outs, grads = [], []
    for thr in (0.0, 1.0 / 255.0):
        model.render_min_opacity = thr
        ps = [t.clone().requires_grad_(True) for t in leaves]
        scene = model.render_scene(Gaussians(*ps))
        if thr > 0:
            assert scene.num_gaussians < N
        out = model.renderer(scene, cams)
        (out.depth.square().sum() + (out.features * torch.arange(17.0)).sum()).backward()
        outs.append(out)
        grads.append([p.grad for p in ps])
    assert outs[0].alpha.max() > 0.5  # something was rendered
    assert torch.allclose(outs[0].depth, outs[1].depth, atol=1e-5)
    assert torch.allclose(outs[0].features, outs[1].features, atol=1e-5)
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_render_opacity_power():
    """The renderer sees opacity ** power; the voxelizer the opacity itself; power must be > 0."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    B, N = 1, 50
    opac = torch.rand(B, N, generator=g) * 0.9 + 0.05
    scene = Gaussians(torch.randn(B, N, 3, generator=g), torch.randn(B, N, 4, generator=g),
                      0.2 + torch.rand(B, N, 3, generator=g), opac,
                      torch.randn(B, N, 17, generator=g))
    model = MODELS.build(small_model_cfg(render_opacity_power=2.0))
    rendered = model.render_scene(scene)
    assert torch.allclose(rendered.opacities, opac.square())
    assert torch.equal(scene.opacities, opac)  # the scene (voxelizer input) is untouched
    plain = MODELS.build(small_model_cfg())
    assert torch.equal(plain.render_scene(scene).opacities, opac)
    with pytest.raises(ValueError, match='render_opacity_power'):
        MODELS.build(small_model_cfg(render_opacity_power=0.0))


def test_lift_upsample_with_the_lss_depth_loss():
    """With lift_upsample=2 the LSS depth loss is taken on the upsampled depth distribution
    (labels min-pooled to its finer cells): the step runs and every parameter trains."""
    torch.manual_seed(0)
    cfg = small_model_cfg()
    cfg['view_transform'] = dict(cfg['view_transform'], lift_upsample=2)
    model = MODELS.build(cfg)
    model.train()
    losses = model(mode='loss', **random_batch())
    assert torch.isfinite(losses['loss_lss_depth']) and losses['loss_lss_depth'] > 0
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    assert _check_grads(model) == []


def test_semantic_lift_with_the_image_semantic_loss():
    """semantic_classes + loss_image_sem: the loss is the CE of the lift's logits against the
    current frame's label maps (recomputed here from the returned logits), and every parameter
    trains; either setting alone is a clear error."""
    torch.manual_seed(0)
    cfg = small_model_cfg(loss_image_sem=dict(type='ImageSemanticLoss', class_weight=None))
    cfg['view_transform'] = dict(cfg['view_transform'], semantic_classes=NUM_CLASSES - 1)
    cfg['volume_encoder'] = dict(cfg['volume_encoder'], in_channels=8 + NUM_CLASSES - 1)
    model = MODELS.build(cfg)
    model.train()
    batch = random_batch()
    losses = model(mode='loss', **batch)
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    assert _check_grads(model) == []
    model.eval()
    with torch.no_grad():
        _, _, logits = model.extract_scene(batch['img'], batch['cam2img'], batch['cam2ego'])
        again = model(mode='loss', **batch)['loss_image_sem']
    N = batch['img'].shape[1]
    lab = batch['gt_semantics'][:, :N]
    up = F.interpolate(logits.flatten(0, 1), size=lab.shape[-2:], mode='bilinear')
    ref = F.cross_entropy(up, lab.flatten(0, 1).long(), ignore_index=255)
    assert torch.isfinite(ref) and torch.allclose(again, ref, atol=1e-5)
    with pytest.raises(ValueError, match='semantic_classes'):
        MODELS.build(small_model_cfg(loss_image_sem=dict(type='ImageSemanticLoss')))
    cfg.pop('loss_image_sem')
    with pytest.raises(ValueError, match='loss_image_sem'):
        MODELS.build(cfg)


def test_oracle_lift_depth_reaches_the_lift_and_needs_labels():
    """oracle_lift_depth (diagnostic): with depth labels the Gaussians change, without any label
    they equal the plain model's; a batch without gt_depth is a clear error."""
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(oracle_lift_depth=True)).eval()
    batch = random_batch()
    with torch.no_grad():
        out = model(mode='tensor', **batch)
        model.oracle_lift_depth = False
        plain = model(mode='tensor', **batch)
        model.oracle_lift_depth = True
        empty = dict(batch, gt_depth=torch.zeros_like(batch['gt_depth']))
        none = model(mode='tensor', **empty)
    assert not torch.allclose(out['opacities'], plain['opacities'])
    assert torch.equal(none['opacities'], plain['opacities'])
    batch.pop('gt_depth')
    with pytest.raises(KeyError, match='LoadLabels2D'):
        model(mode='predict', **batch)


def test_tensor_mode_and_bad_mode():
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg())
    out = model(mode='tensor', **random_batch())
    n = PRED_GRID[0] * PRED_GRID[1] * PRED_GRID[2]
    assert out['means'].shape == (1, n, 3) and out['features'].shape == (1, n, 17)
    with pytest.raises(ValueError, match="mode must be"):
        model(mode='train', **random_batch())
    batch = random_batch()
    batch.pop('cam2ego')
    with pytest.raises(KeyError, match='cam2ego'):
        model(mode='loss', **batch)


def test_labels_in_range_hand_case():
    """Camera = world frame, f = 2, principal point (1, 1), 2 x 2 labels: pixel (row i, col j)
    at depth d back-projects to ((j + 0.5 - 1) d / 2, (i + 0.5 - 1) d / 2, d)."""
    depth = torch.tensor([[4.0, 0.0], [8.0, 2.0]]).reshape(1, 1, 2, 2)
    K = torch.tensor([[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]]).reshape(1, 1, 3, 3)
    V = torch.eye(4).reshape(1, 1, 4, 4)
    # points: (0,0): (-1, -1, 4); (0,1): no depth; (1,0): (-2, 2, 8); (1,1): (0.5, 0.5, 2)
    box = [-1.5, -1.5, 0.0, 1.5, 1.5, 5.0]
    got = labels_in_range(depth, V, K, box)
    assert got.tolist() == [[[[True, False], [False, True]]]]
    got = labels_in_range(depth, V, K, [-3.0, -3.0, 0.0, 3.0, 3.0, 5.0])  # (1,0): z = 8 > 5
    assert got.tolist() == [[[[True, False], [False, True]]]]
    got = labels_in_range(depth, V, K, [-3.0, -3.0, 0.0, 3.0, 3.0, 9.0])
    assert got.tolist() == [[[[True, False], [True, True]]]]


def test_labels_in_range_matches_a_per_pixel_loop():
    """Rotated, translated cameras: the same answer as back-projecting pixel by pixel."""
    g = torch.Generator().manual_seed(3)
    cam2ego = ring_cameras(3)
    cam2ego[:, :3, 3] += torch.tensor([1.0, -2.0, 0.3])
    V = rigid_inverse(cam2ego)[None]
    K = torch.tensor([[5.0, 0, 4], [0, 5.0, 3], [0, 0, 1]]).expand(1, 3, 3, 3)
    depth = 1 + 12 * torch.rand(1, 3, 6, 8, generator=g)
    depth[torch.rand(depth.shape, generator=g) < 0.2] = 0
    box = [-6.0, -5.0, -1.0, 7.0, 6.0, 2.5]
    got = labels_in_range(depth, V, K, box)
    want = torch.zeros_like(got)
    for c in range(3):
        for i in range(6):
            for j in range(8):
                d = float(depth[0, c, i, j])
                if d <= 0:
                    continue
                p_cam = torch.tensor([(j + 0.5 - 4) / 5 * d, (i + 0.5 - 3) / 5 * d, d, 1.0])
                p = (cam2ego[c].double() @ p_cam.double())[:3]
                want[0, c, i, j] = bool(all(box[a] <= p[a] < box[a + 3] for a in range(3)))
    assert got.any() and not got.all()
    assert torch.equal(got, want)


def test_labels_outside_the_grid_do_not_affect_the_loss():
    """label_range='grid' (default): changing labels whose point lies outside the head's box
    changes nothing in the rendering losses; with label_range=None it does. The free-space term
    uses those rays either way (their path inside the box is still empty)."""
    torch.manual_seed(0)
    batch = random_batch(F=1)
    outside = ~labels_in_range(batch['gt_depth'], batch['render_viewmats'], batch['render_Ks'],
                               PC) & (batch['gt_depth'] > 0)
    assert outside.any() and (~outside & (batch['gt_depth'] > 0)).any()
    changed = dict(batch, gt_depth=torch.where(outside, batch['gt_depth'] * 1.1,
                                               batch['gt_depth']),
                   gt_semantics=torch.where(outside, (batch['gt_semantics'] + 1) % 17,
                                            batch['gt_semantics']))
    for label_range, same in (('grid', True), (None, False)):
        model = MODELS.build(small_model_cfg(
            loss_lss_depth=None, loss_opacity=None, label_range=label_range,
            loss_free_space=dict(type='FreeSpaceLoss'),
            pixel_sampler=dict(type='PixelSampler', mode='dense')))
        model.eval()
        with torch.no_grad():
            a = model(mode='loss', **batch)
            b = model(mode='loss', **changed)
        for key in ('loss_depth', 'loss_sem'):
            assert torch.allclose(a[key], b[key]) == same, (label_range, key)
        assert not torch.allclose(a['loss_free_space'], b['loss_free_space'])


def test_label_range_bad_value():
    with pytest.raises(ValueError, match='label_range'):
        MODELS.build(small_model_cfg(label_range='box'))
    with pytest.raises(ValueError, match='6 numbers'):
        MODELS.build(small_model_cfg(label_range=[0, 1, 2]))


@pytest.mark.parametrize('flat', [False, True])
def test_free_space_term_matches_a_per_point_reference(flat):
    """free_space_term = weighted mean over the in-box points before each labelled depth of the
    density of all Gaussians (a window covering the whole grid), points at the stratum centres in
    eval mode, back-projected pixel by pixel here; the stop depth relative (flat=False) or per
    class (flat=True: ground classes 11..14 stop 0.4 m above the hit, others 0.8 m before it)."""
    from splattingocc.geometry import quat_to_rotmat
    torch.manual_seed(0)
    extra = dict(flat_classes=[11, 12, 13, 14], flat_margin=0.4, margin=0.8) if flat else {}
    model = MODELS.build(small_model_cfg(
        loss_free_space=dict(type='FreeSpaceLoss', samples_per_ray=3, near=0.5, rel_margin=0.2,
                             window=17, **extra)))
    model.eval()
    batch = random_batch(F=1, H=8, W=16, ds=2)
    with torch.no_grad():
        scene = model.head(torch.randn(1, 8, *PRED_GRID))
        cams = Cameras(viewmats=batch['render_viewmats'], Ks=batch['render_Ks'], width=8, height=4)
        depth = batch['gt_depth']  # [1, C, 4, 8]
        sem = batch['gt_semantics']
        weight = torch.rand(depth.numel())
        got = model.free_space_term(scene, cams, None, depth, weight, sem)
        R = quat_to_rotmat(scene.quats[0])
        prec = torch.linalg.inv(R @ torch.diag_embed(scene.scales[0].square()) @ R.mT)
        num = den = 0.0
        C, h, w = depth.shape[1:]
        for c in range(C):
            Kinv = torch.linalg.inv(batch['render_Ks'][0, c])
            cam2world = rigid_inverse(batch['render_viewmats'][0, c])
            for i in range(h):
                for j in range(w):
                    d = float(depth[0, c, i, j])
                    r = (c * h + i) * w + j
                    far = 0.8 * d
                    if flat:
                        ray = cam2world[:3, :3] @ (Kinv @ torch.tensor([j + 0.5, i + 0.5, 1.0]))
                        lab = int(sem[0, c, i, j])
                        if 11 <= lab <= 14:
                            far = d - 0.4 / float(-ray[2]) if ray[2] < 0 else 0.0
                        else:
                            far = d - 0.8 / float(ray.norm())
                    if d <= 0 or far <= 0.5:
                        continue
                    for k in range(3):
                        z = 0.5 + (far - 0.5) * (k + 0.5) / 3
                        p = cam2world[:3, :3] @ (Kinv @ torch.tensor([j + 0.5, i + 0.5, 1.0]) * z)
                        p = p + cam2world[:3, 3]
                        if not all(PC[a] <= p[a] < PC[a + 3] for a in range(3)):
                            continue
                        dd = p - scene.means[0]
                        rho = (scene.opacities[0] * torch.exp(
                            -0.5 * torch.einsum('ni,nij,nj->n', dd, prec, dd))).sum()
                        num += float(weight[r] * rho)
                        den += float(weight[r])
    assert den > 0
    assert torch.allclose(got, torch.tensor(num / den), rtol=1e-4)


@pytest.mark.parametrize('renderer', ['TorchSplatRenderer', 'VolumeRenderer'])
def test_free_space_loss_trains(renderer):
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(loss_free_space=dict(type='FreeSpaceLoss'),
                                         renderer=dict(type=renderer)))
    losses = model(mode='loss', **random_batch())
    assert torch.isfinite(losses['loss_free_space']) and losses['loss_free_space'] > 0
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    assert model.head.opacity.weight.grad.abs().sum() > 0


def test_density_grid_at_voxel_centres_and_free_space_scale():
    """At voxel centres the trilinear density is the voxel's own value; the free-space term of a
    DensityGrid is density * (shortest Occ3D voxel edge) at the points."""
    g = torch.Generator().manual_seed(0)
    density = torch.rand(1, *PRED_GRID, generator=g)
    grid = DensityGrid(density=density, features=torch.zeros(1, *PRED_GRID, 17), pc_range=PC)
    from splattingocc.geometry import voxel_centres
    from splattingocc.models.detector import density_grid_at
    c = voxel_centres(PC, PRED_GRID).reshape(1, -1, 3)
    assert torch.allclose(density_grid_at(grid, c), density.reshape(1, -1), atol=1e-6)
    mid = (c[:, :1] + c[:, 1:2]) / 2  # halfway between voxels (0, 0, 0) and (0, 0, 1)
    assert torch.allclose(density_grid_at(grid, mid)[0, 0], density[0, 0, 0, :2].mean(),
                          atol=1e-6)
    model = MODELS.build(small_model_cfg(renderer=dict(type='VolumeRenderer'),
                                         loss_free_space=dict(type='FreeSpaceLoss')))
    assert model.voxelizer_edge() == 0.5  # OCC_GRID: 1 m x 1 m x 0.5 m voxels


@pytest.mark.parametrize('behind', [0.0, 0.3])
def test_surface_term_matches_a_per_pixel_reference(behind):
    """surface_term: at each labelled pixel back-projected with its depth (+ behind metres along
    the ray) and inside the box, the density and class scores of all Gaussians (a window
    covering the grid), computed pixel by pixel here; BCE against occupied and CE of the
    normalised scores, both weighted by the ray weights."""
    import math
    from splattingocc.geometry import quat_to_rotmat
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(
        loss_surface=dict(type='SurfaceLoss', behind=behind, class_weight=None, window=17)))
    model.eval()
    batch = random_batch(F=1, H=8, W=16, ds=2)
    with torch.no_grad():
        scene = model.head(torch.randn(1, 8, *PRED_GRID))
        cams = Cameras(viewmats=batch['render_viewmats'], Ks=batch['render_Ks'], width=8, height=4)
        depth, sem = batch['gt_depth'], batch['gt_semantics']
        weight = torch.rand(depth.numel())
        got = model.surface_term(scene, cams, None, depth, weight, sem)
        R = quat_to_rotmat(scene.quats[0])
        prec = torch.linalg.inv(R @ torch.diag_embed(scene.scales[0].square()) @ R.mT)
        probs = scene.features[0].softmax(-1)
        occ_num = sem_num = den = sem_den = 0.0
        C, h, w = depth.shape[1:]
        for c in range(C):
            Kinv = torch.linalg.inv(batch['render_Ks'][0, c])
            cam2world = rigid_inverse(batch['render_viewmats'][0, c])
            for i in range(h):
                for j in range(w):
                    d = float(depth[0, c, i, j])
                    if d <= 0:
                        continue
                    ray = cam2world[:3, :3] @ (Kinv @ torch.tensor([j + 0.5, i + 0.5, 1.0]))
                    p = cam2world[:3, 3] + ray * d + behind * ray / ray.norm()
                    if not all(PC[a] <= p[a] < PC[a + 3] for a in range(3)):
                        continue
                    dd = p - scene.means[0]
                    dens = scene.opacities[0] * torch.exp(
                        -0.5 * torch.einsum('ni,nij,nj->n', dd, prec, dd))  # [N]
                    rho = float(dens.sum())
                    r = (c * h + i) * w + j
                    occ_num += float(weight[r]) * -math.log(1 - math.exp(-rho) + 1e-6)
                    den += float(weight[r])
                    lab = int(sem[0, c, i, j])
                    if lab != 255:
                        s = (dens[:, None] * probs).sum(0)
                        sem_num += float(weight[r]) * -math.log(float(s[lab] / s.sum()) + 1e-6)
                        sem_den += float(weight[r])
    assert den > 0 and sem_den > 0
    assert torch.allclose(got['loss_surface_occ'], torch.tensor(occ_num / den), rtol=1e-4)
    assert torch.allclose(got['loss_surface_sem'], torch.tensor(sem_num / sem_den), rtol=1e-4)


@pytest.mark.parametrize('renderer', ['TorchSplatRenderer', 'VolumeRenderer'])
def test_surface_loss_trains(renderer):
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(loss_surface=dict(type='SurfaceLoss'),
                                         renderer=dict(type=renderer)))
    losses = model(mode='loss', **random_batch())
    for key in ('loss_surface_occ', 'loss_surface_sem'):
        assert torch.isfinite(losses[key]) and losses[key] > 0, key
    losses['loss_surface_occ'].backward(retain_graph=True)
    assert model.head.opacity.weight.grad.abs().sum() > 0
    model.zero_grad()
    losses['loss_surface_sem'].backward()
    assert model.head.semantics.weight.grad.abs().sum() > 0


def test_open_sky_mask_hand_case():
    """Rows above the highest label of the column (window 1) or of the column and its
    neighbours (window 3), minus a margin; a window with an unlabelled column gives no sky."""
    from splattingocc.models.detector import open_sky_mask
    d = torch.zeros(1, 1, 6, 7)
    for row, col in ((3, 0), (4, 1), (2, 3), (5, 4), (4, 5), (4, 6)):  # column 2: no label
        d[0, 0, row, col] = 5.0
    tops1 = [3, 4, -1, 2, 5, 4, 4]  # highest labelled row per column (-1: none)
    tops3 = [3, -1, -1, -1, 2, 4, 4]  # min over the column and its neighbours
    for window, margin, tops in ((1, 1, tops1), (3, 0, tops3)):
        want = torch.zeros(6, 7, dtype=torch.bool)
        for col, top in enumerate(tops):
            want[:max(top - margin, 0), col] = top >= 0
        got = open_sky_mask(d, column_window=window, margin_rows=margin)[0, 0]
        assert torch.equal(got, want), (window, got.int())


def test_sample_mask_pixels_draws_inside_the_mask():
    from splattingocc.models.detector import sample_mask_pixels
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 3, 5, 6, generator=g) < 0.3
    pixels, ok = sample_mask_pixels(mask, 4, generator=g)
    assert pixels.shape == (2, 3, 4, 2)
    for b in range(2):
        for c in range(3):
            n = int(mask[b, c].sum())
            assert int(ok[b, c].sum()) == min(n, 4)
            picked = {(int(v), int(u)) for (u, v), k in zip(pixels[b, c] - 0.5, ok[b, c]) if k}
            assert len(picked) == min(n, 4)  # no pixel twice
            assert all(bool(mask[b, c, r, col]) for r, col in picked)


def test_sky_free_space_term_and_training():
    """loss_free_sky = free_space_term on the drawn sky pixels with far = sky_depth (same random
    draw replayed), adjacent-frame cameras weighted aux_weight; it trains the opacities."""
    from splattingocc.models.detector import open_sky_mask, sample_mask_pixels
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(loss_free_space=dict(
        type='FreeSpaceLoss', sky_rays=5, sky_depth=30.0, samples_per_ray=4)))
    model.eval()
    batch = random_batch(F=1, H=8, W=16, ds=2)
    depth = batch['gt_depth'].clone()
    depth[:, :, :2] = 0  # the two top rows unlabelled: sky where the columns have labels
    with torch.no_grad():
        scene = model.head(torch.randn(1, 8, *PRED_GRID))
        cams = Cameras(viewmats=batch['render_viewmats'], Ks=batch['render_Ks'], width=8,
                       height=4)
        offset = torch.zeros(1, depth.shape[1], dtype=torch.long)
        offset[0, -1] = 1
        torch.manual_seed(5)
        got = model.sky_free_space_term(scene, cams, depth, offset)
        torch.manual_seed(5)
        pixels, ok = sample_mask_pixels(open_sky_mask(depth), 5)
        assert ok.any()
        w = (ok * torch.where(offset == 0, 1.0, model.aux_weight)[:, :, None]).reshape(-1)
        far = torch.full(ok.shape, 30.0)
        want = model.free_space_term(scene, cams, pixels, far, w, far=far)
    assert torch.allclose(got, want)
    model.train()
    losses = model(mode='loss', **batch)
    assert torch.isfinite(losses['loss_free_sky'])
    with pytest.raises(ValueError, match='sky_rays'):
        MODELS.build(small_model_cfg(loss_free_space=dict(type='FreeSpaceLoss', sky_rays=-1)))


def test_label_lift_prob_acts_in_training_only():
    """label_lift_prob: the loss at p = 1 is the oracle's (every labelled cell at its label), at
    p = 0 the plain model's; predictions never use the labels; bad values and a training batch
    without gt_depth are clear errors."""
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(label_lift_prob=1.0))
    batch = random_batch()

    def loss(**flags):
        for k, v in flags.items():
            setattr(model, k, v)
        torch.manual_seed(1)  # the pixel sampler's draws
        out = model(mode='loss', **batch)
        model.oracle_lift_depth, model.label_lift_prob = False, 1.0
        return sum(v for k, v in out.items() if k.startswith('loss'))

    with torch.no_grad():
        taught = loss()
        oracle = loss(oracle_lift_depth=True)
        plain = loss(label_lift_prob=0.0)
        assert torch.allclose(taught, oracle) and not torch.allclose(taught, plain)
        model.eval()
        out = model(mode='tensor', **batch)
        model.label_lift_prob = 0.0
        assert torch.equal(out['opacities'], model(mode='tensor', **batch)['opacities'])
    with pytest.raises(ValueError, match='label_lift_prob'):
        MODELS.build(small_model_cfg(label_lift_prob=1.5))
    model.label_lift_prob = 0.5
    batch.pop('gt_depth')
    with pytest.raises(KeyError, match='LoadLabels2D'):
        model(mode='loss', **batch)
