"""The SplattingOcc network on small random inputs (CPU): supervision lists, gradients, predict
format, the lift's label options, the repository's configs."""
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from torch.nn import functional as F

import splattingocc.models  # noqa: F401
from small_model import (FREE, NUM_CLASSES, OCC_GRID, PC, PRED_GRID, check_grads, loss_sum,
                         random_batch, ray_supervision, small_model_cfg, volume_supervision)
from splattingocc.fields import GaussianField
from splattingocc.geometry import labels_in_range
from splattingocc.registry import MODELS
from splattingocc.structures import Gaussians


@pytest.mark.parametrize('density', [False, True])
def test_forward_backward_every_parameter_gets_a_finite_gradient(density):
    torch.manual_seed(0)
    renderer = 'VolumeRenderer' if density else 'TorchSplatRenderer'
    sup = [ray_supervision(renderer, losses=[dict(type='RayDistortionLoss', loss_weight=0.01),
                                             dict(type='SILogLoss'),
                                             dict(type='RenderedCELoss', class_weight='batch')]),
           dict(type='LSSDepthLoss', loss_weight=0.5), volume_supervision()]
    if not density:
        sup.append(dict(type='OpacityEntropyLoss', loss_weight=0.01))
    model = MODELS.build(small_model_cfg(supervision=sup, density=density))
    model.train()
    losses = model(mode='loss', **random_batch(B=2))
    expected = {'loss_depth', 'loss_sem', 'loss_lss_depth', 'loss_occ3d', 'loss_sem3d',
                'loss_distortion', 'render_alpha', 'time_render'}
    if not density:  # a splatting render also logs the Gaussians it used
        expected |= {'loss_opacity', 'render_gaussians'}
    assert set(losses) == expected
    if not density:  # at most one per cell of the head's grid; counted, so a whole number
        n = float(losses['render_gaussians'])
        assert 0 < n <= math.prod(model.head.grid_size) and n == int(n)
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    loss_sum(losses).backward()
    assert check_grads(model) == []
    # the render time is logged: this step's forward (no backward before the first step) ...
    clock = model.supervision[0].clock
    assert 0 < float(losses['time_render']) == pytest.approx(clock._forward)
    # ... and the next step adds the render backward that has just run
    losses2 = model(mode='loss', **random_batch(B=2))
    assert clock._last_backward > 0
    assert float(losses2['time_render']) == pytest.approx(clock._forward + clock._last_backward)


def test_2d_only_loss_does_not_need_3d_labels():
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(
        supervision=[ray_supervision(), dict(type='LSSDepthLoss', loss_weight=0.5)]))
    batch = random_batch()
    for k in ('voxel_semantics', 'mask_camera'):
        batch.pop(k)
    losses = model(mode='loss', **batch)
    assert set(k for k in losses if k.startswith('loss')) == {'loss_depth', 'loss_sem',
                                                              'loss_lss_depth'}
    loss_sum(losses).backward()
    assert check_grads(model) == []


def test_3d_only_upper_bound_and_an_empty_or_clashing_supervision():
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(supervision=[volume_supervision()]))
    batch = random_batch()
    for k in ('gt_depth', 'gt_semantics', 'render_viewmats', 'render_Ks'):
        batch.pop(k)
    losses = model(mode='loss', **batch)
    assert set(losses) == {'loss_occ3d', 'loss_sem3d'}
    sum(losses.values()).backward()
    assert torch.isfinite(model.head.opacity.weight.grad).all()
    with pytest.raises(ValueError, match='supervision is empty'):
        MODELS.build(small_model_cfg(supervision=[]))
    twice = MODELS.build(small_model_cfg(supervision=[volume_supervision(),
                                                      volume_supervision()]))
    with pytest.raises(ValueError, match="'loss_occ3d'"):
        twice(mode='loss', **random_batch())
    batch.pop('voxel_semantics')
    with pytest.raises(KeyError, match='LoadOcc3DLabels'):
        model(mode='loss', **batch)


def test_adjacent_dynamic_rays_do_not_affect_the_loss():
    """Changing the depth of adjacent-frame rays labelled with a dynamic class changes nothing;
    changing it on a static class does (weight 0.3, not 0)."""
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(supervision=[ray_supervision(
        losses=[dict(type='SILogLoss')], pixel_sampler=dict(type='PixelSampler', mode='dense'))]))
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


@pytest.mark.parametrize('density', [False, True])
def test_predict_output_format(density):
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(density=density))
    model.eval()
    out = model(mode='predict', **random_batch(B=2))
    assert isinstance(out, list) and len(out) == 2
    for b, o in enumerate(out):
        # the labels and identifiers, plus the scores behind the labels (and, with 2D labels in
        # the batch, renders at the labelled pixels: tests/models/test_predict_scores.py)
        assert {'semantics', 'sample_token', 'scene_name'} <= set(o)
        assert isinstance(o['semantics'], np.ndarray)
        assert o['semantics'].dtype == np.uint8 and o['semantics'].shape == tuple(OCC_GRID)
        assert o['semantics'].max() <= FREE
        assert o['sample_token'] == f'tok{b}' and o['scene_name'] == f'scene-{b}'


def test_predict_labels_are_the_readout_of_the_field():
    """The read-out of a Gaussian field is the voxelizer's: a Gaussian with a known class at a
    known voxel shows up there, everything else is free."""
    cfg = small_model_cfg()
    model = MODELS.build(cfg)
    centre = torch.tensor([[[0.5, 0.5, 0.25]]])  # centre of Occ3D voxel (8, 8, 2)
    logits = torch.full((1, 1, 17), -5.0)
    logits[0, 0, 4] = 5.0
    g = Gaussians(means=centre, quats=torch.tensor([[[1.0, 0, 0, 0]]]),
                  scales=torch.full((1, 1, 3), 0.3), opacities=torch.ones(1, 1), features=logits)
    sem = model.readout(GaussianField(g, PC))[0]
    assert sem.dtype == torch.uint8
    assert sem[8, 8, 2] == 4
    assert (sem == FREE).sum() == sem.numel() - (sem == 4).sum()
    # the argmax read-out (threshold None) of a field that scores free as a class: a faint
    # Gaussian (far below the threshold above) still decides its voxels; where its free logit
    # wins they are free; voxels no Gaussian reaches are free
    argmax = MODELS.build(dict(cfg['readout'], threshold=None))
    logits18 = torch.full((1, 1, 18), -5.0)
    logits18[0, 0, 4] = 5.0
    faint = Gaussians(means=centre, quats=g.quats, scales=g.scales,
                      opacities=torch.full((1, 1), 0.01), features=logits18)
    sem = argmax(GaussianField(faint, PC))[0]
    assert sem[8, 8, 2] == 4 and (sem == 4).sum() > 1 and (sem == FREE).any()
    logits18[0, 0, FREE] = 9.0
    assert (argmax(GaussianField(faint, PC)) == FREE).all()
    with pytest.raises(ValueError, match='every label'):
        argmax(GaussianField(g, PC))  # 17 classes: free is not among them


def test_configs_build():
    """Every model config builds (pretrained weights switched off) and its variants differ from
    their base in exactly the documented parts."""
    names = ['splattingocc/splattingocc-tiny-synthetic', 'splattingocc/splattingocc-Nframe',
             'splattingocc/splattingocc-tiny-synthetic-3d',
             'splattingocc/splattingocc-tiny-synthetic-2d3d',
             'splattingocc/splattingocc-tiny-synthetic-oracle-depth',
             'splattingocc/splattingocc-tiny-synthetic-seed',
             'renderocc/renderocc-tiny-synthetic', 'renderocc/renderocc-Nframe']
    cfgs = {n: Config.fromfile(f'configs/{n}.py') for n in names}
    tiny_cfg = cfgs['splattingocc/splattingocc-tiny-synthetic'].model.to_dict()
    tiny = MODELS.build(tiny_cfg)
    assert type(tiny.head).__name__ == 'GaussianHead' and tiny.head.grid_size == (50, 50, 8)
    assert [type(s).__name__ for s in tiny.supervision] == ['RaySupervision', 'LSSDepthLoss']
    nerf = MODELS.build(cfgs['renderocc/renderocc-tiny-synthetic'].model)
    assert type(nerf.head).__name__ == 'RenderOccHead'
    assert type(nerf.supervision[0].renderer).__name__ == 'RenderOccRenderer'
    # 3D bound: the base's volume supervision (18-way CE on the Occ3D grid inside mask_camera)
    # and the lift's depth loss; 2D + 3D: the demo's supervision plus the same volume term;
    # both score every label (18 classes) and read out the argmax
    base_vol = cfgs['splattingocc/splattingocc-tiny-synthetic'].volume_supervision.to_dict()
    assert base_vol['grid_size'] is None and base_vol['mask_camera']
    m3d = cfgs['splattingocc/splattingocc-tiny-synthetic-3d'].model.to_dict()
    assert m3d['supervision'] == [base_vol, dict(type='LSSDepthLoss', loss_weight=0.2)]
    m2d3d = cfgs['splattingocc/splattingocc-tiny-synthetic-2d3d'].model.to_dict()
    assert m2d3d['supervision'] == tiny_cfg['supervision'] + [base_vol]
    for name in ('3d', '2d3d'):
        cfg = cfgs[f'splattingocc/splattingocc-tiny-synthetic-{name}']
        assert 'LoadOcc3DLabels' in [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
        m = cfg.model.to_dict()
        assert m['head'].pop('num_classes') == 18 and m['readout'].pop('threshold') is None
        m.pop('supervision')
        want = {k: v for k, v in tiny_cfg.items() if k != 'supervision'}
        want['head'] = {k: v for k, v in want['head'].items() if k != 'num_classes'}
        want['readout'] = {k: v for k, v in want['readout'].items() if k != 'threshold'}
        assert m == want, name
        assert MODELS.build(cfg.model).readout.threshold is None
    # the seed variant: the tiny model with the fixed-Gaussian head
    seed = cfgs['splattingocc/splattingocc-tiny-synthetic-seed'].model.to_dict()
    assert seed.pop('head')['type'] == 'FixedGaussianHead'
    assert seed == {k: v for k, v in tiny_cfg.items() if k != 'head'}
    # the oracle-depth diagnostic: the tiny model plus the switch, labels loaded at test
    oracle = cfgs['splattingocc/splattingocc-tiny-synthetic-oracle-depth']
    mo = oracle.model.to_dict()
    assert mo['view_transform'].pop('oracle_lift') is True
    assert mo == tiny_cfg
    assert 'LoadLabels2D' in [t['type'] for t in oracle.test_dataloader.dataset.pipeline]
    # renderocc variants differ from their splatting configs in the head, the supervision and
    # the read-out threshold only: their base's renderocc variable
    for a, b in [('splattingocc/splattingocc-tiny-synthetic', 'renderocc/renderocc-tiny-synthetic'),
                 ('splattingocc/splattingocc-Nframe', 'renderocc/renderocc-Nframe')]:
        ma, mb = cfgs[a].model.to_dict(), cfgs[b].model.to_dict()
        ro = cfgs[a].renderocc.to_dict()
        assert ma.pop('head')['type'] == 'GaussianHead'
        assert mb.pop('head') == ro['head'] and ro['head']['type'] == 'RenderOccHead'
        assert ma.pop('supervision')[0]['renderer']['type'] != 'RenderOccRenderer'
        assert mb.pop('supervision') == ro['supervision']
        assert mb['readout'].pop('threshold') == ro['readout_threshold']
        ma['readout'].pop('threshold')
        assert ma == mb
    real = cfgs['splattingocc/splattingocc-Nframe'].model
    assert real.backbone.depth == 50 and tuple(real.head.grid_size) == (200, 200, 16)
    with pytest.raises(FileNotFoundError, match='resnet50'):
        MODELS.build(real.backbone)


def test_the_3d_bound_scores_every_label_and_reads_out_the_argmax():
    """18 classes (free included), SemanticVoxelCELoss inside mask_camera on the Occ3D grid and
    the LSS depth loss; the argmax read-out predicts free and occupied voxels."""
    torch.manual_seed(0)
    cfg = small_model_cfg(supervision=[
        volume_supervision(mask_camera=True, losses=[dict(type='SemanticVoxelCELoss')]),
        dict(type='LSSDepthLoss', loss_weight=0.2)])
    cfg['head']['num_classes'] = NUM_CLASSES
    cfg['readout']['threshold'] = None
    model = MODELS.build(cfg)
    losses = model(mode='loss', **random_batch())
    assert set(losses) == {'loss_voxel_ce', 'loss_lss_depth'}
    loss_sum(losses).backward()
    assert check_grads(model) == []
    model.eval()
    out = model(mode='predict', **random_batch())[0]['semantics']
    assert out.shape == tuple(OCC_GRID) and out.max() <= FREE


@pytest.mark.parametrize('density', [False, True])
def test_3d_loss_on_the_prediction_grid(density):
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(
        supervision=[volume_supervision(grid_size=PRED_GRID)], density=density))
    losses = model(mode='loss', **random_batch())
    assert set(losses) == {'loss_occ3d', 'loss_sem3d'}
    sum(losses.values()).backward()
    assert model.head.semantics.weight.grad.abs().sum() > 0


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
    loss_sum(losses).backward()
    assert check_grads(model) == []


def test_semantic_lift_with_the_image_semantic_loss():
    """semantic_classes + ImageSemanticLoss: the loss is the CE of the lift's logits against the
    current frame's label maps (recomputed here from the returned logits), and every parameter
    trains; the loss without a semantic lift is a clear error."""
    torch.manual_seed(0)
    sup = [ray_supervision(), dict(type='LSSDepthLoss', loss_weight=0.5),
           dict(type='ImageSemanticLoss', class_weight=None)]
    cfg = small_model_cfg(supervision=sup)
    cfg['view_transform'] = dict(cfg['view_transform'], semantic_classes=NUM_CLASSES - 1)
    cfg['volume_encoder'] = dict(cfg['volume_encoder'], in_channels=8 + NUM_CLASSES - 1)
    model = MODELS.build(cfg)
    model.train()
    batch = random_batch()
    losses = model(mode='loss', **batch)
    loss_sum(losses).backward()
    assert check_grads(model) == []
    model.eval()
    with torch.no_grad():
        logits = model.extract(batch['img'], batch['cam2img'], batch['cam2ego']).lift_logits
        again = model(mode='loss', **batch)['loss_image_sem']
    N = batch['img'].shape[1]
    lab = batch['gt_semantics'][:, :N]
    up = F.interpolate(logits.flatten(0, 1), size=lab.shape[-2:], mode='bilinear')
    ref = F.cross_entropy(up, lab.flatten(0, 1).long(), ignore_index=255)
    assert torch.isfinite(ref) and torch.allclose(again, ref, atol=1e-5)
    plain = MODELS.build(small_model_cfg(supervision=sup))
    with pytest.raises(ValueError, match='semantic_classes'):
        plain(mode='loss', **batch)


def test_oracle_lift_reaches_the_lift_and_needs_labels():
    """oracle_lift (diagnostic): with depth labels the Gaussians change, without any label
    they equal the plain model's; a batch without gt_depth is a clear error."""
    torch.manual_seed(0)
    cfg = small_model_cfg()
    cfg['view_transform'] = dict(cfg['view_transform'], oracle_lift=True)
    model = MODELS.build(cfg).eval()
    vt = model.view_transform
    batch = random_batch()
    with torch.no_grad():
        out = model(mode='tensor', **batch)
        vt.oracle_lift = False
        plain = model(mode='tensor', **batch)
        vt.oracle_lift = True
        empty = dict(batch, gt_depth=torch.zeros_like(batch['gt_depth']))
        none = model(mode='tensor', **empty)
    assert not torch.allclose(out['opacities'], plain['opacities'])
    assert torch.equal(none['opacities'], plain['opacities'])
    batch.pop('gt_depth')
    with pytest.raises(KeyError, match='LoadLabels2D'):
        model(mode='predict', **batch)


def test_label_lift_prob_acts_in_training_only():
    """label_lift_prob: the loss at p = 1 is the oracle's (every labelled cell at its label), at
    p = 0 the plain model's; the eval-mode network never uses the labels; bad values and a
    training batch without gt_depth are clear errors."""
    torch.manual_seed(0)
    cfg = small_model_cfg()
    cfg['view_transform'] = dict(cfg['view_transform'], label_lift_prob=1.0)
    model = MODELS.build(cfg)
    vt = model.view_transform
    batch = random_batch()

    def loss(**flags):
        for k, v in flags.items():
            setattr(vt, k, v)
        torch.manual_seed(1)  # the pixel sampler's draws
        out = model(mode='loss', **batch)
        vt.oracle_lift, vt.label_lift_prob = False, 1.0
        return loss_sum(out)

    with torch.no_grad():
        taught = loss()
        oracle = loss(oracle_lift=True)
        plain = loss(label_lift_prob=0.0)
        assert torch.allclose(taught, oracle) and not torch.allclose(taught, plain)
        model.eval()
        out = model(mode='tensor', **batch)
        vt.label_lift_prob = 0.0
        assert torch.equal(out['opacities'], model(mode='tensor', **batch)['opacities'])
    bad = small_model_cfg()
    bad['view_transform'] = dict(bad['view_transform'], label_lift_prob=1.5)
    with pytest.raises(ValueError, match='label_lift_prob'):
        MODELS.build(bad)
    model.train()
    vt.label_lift_prob = 0.5
    batch.pop('gt_depth')
    with pytest.raises(KeyError, match='LoadLabels2D'):
        model(mode='loss', **batch)


def test_tensor_mode_and_bad_mode():
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg())
    out = model(mode='tensor', **random_batch())
    n = PRED_GRID[0] * PRED_GRID[1] * PRED_GRID[2]
    assert out['means'].shape == (1, n, 3) and out['features'].shape == (1, n, 17)
    density = MODELS.build(small_model_cfg(density=True))(mode='tensor', **random_batch())
    assert set(density) == {'density', 'features'}
    assert density['density'].shape == (1, *PRED_GRID)
    with pytest.raises(ValueError, match="mode must be"):
        model(mode='train', **random_batch())
    batch = random_batch()
    batch.pop('cam2ego')
    with pytest.raises(KeyError, match='cam2ego'):
        model(mode='loss', **batch)


def test_labels_outside_the_grid_do_not_affect_the_loss():
    """label_range='field' (default): changing labels whose point lies outside the field's box
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
    for label_range, same in (('field', True), (None, False)):
        model = MODELS.build(small_model_cfg(supervision=[ray_supervision(
            losses=[dict(type='SILogLoss'), dict(type='RenderedCELoss', class_weight='batch'),
                    dict(type='FreeSpaceLoss')],
            label_range=label_range, pixel_sampler=dict(type='PixelSampler', mode='dense'))]))
        model.eval()
        with torch.no_grad():
            a = model(mode='loss', **batch)
            b = model(mode='loss', **changed)
        for key in ('loss_depth', 'loss_sem'):
            assert torch.allclose(a[key], b[key]) == same, (label_range, key)
        assert not torch.allclose(a['loss_free_space'], b['loss_free_space'])


def test_label_range_bad_value():
    with pytest.raises(ValueError, match='label_range'):
        MODELS.build(ray_supervision(label_range='box'))
    with pytest.raises(ValueError, match='6 numbers'):
        MODELS.build(ray_supervision(label_range=[0, 1, 2]))


@pytest.mark.parametrize('density', [False, True])
@pytest.mark.parametrize('term', ['FreeSpaceLoss', 'SurfaceLoss'])
def test_field_point_losses_train(density, term):
    torch.manual_seed(0)
    model = MODELS.build(small_model_cfg(supervision=[ray_supervision(
        'VolumeRenderer' if density else 'TorchSplatRenderer',
        losses=[dict(type='SILogLoss'), dict(type=term)])], density=density))
    losses = model(mode='loss', **random_batch())
    keys = ['loss_free_space'] if term == 'FreeSpaceLoss' else ['loss_surface_occ',
                                                                 'loss_surface_sem']
    occupancy = model.head.density if density else model.head.opacity
    for key in keys:
        assert torch.isfinite(losses[key]) and losses[key] > 0, key
        model.zero_grad()
        losses[key].backward(retain_graph=True)
        layer = model.head.semantics if key == 'loss_surface_sem' else occupancy
        assert layer.weight.grad.abs().sum() > 0, key
