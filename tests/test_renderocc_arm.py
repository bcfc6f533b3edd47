"""The faithful RenderOcc arm end to end: a small network with RenderOcc's head, renderer and
loss set trains a step (every parameter gets a gradient) and predicts; the tiny config's model
does the same at its real sizes (the Occ3D-resolution head, 200 x 200 x 16)."""
import pytest
import torch
from mmengine.config import Config

from small_model import OCC_GRID, PC, PRED_GRID, check_grads, loss_sum, random_batch, \
    small_model_cfg

from splattingocc.fields import opacity_threshold
from splattingocc.registry import MODELS

LOSSES = ['RenderOccSemanticLoss', 'RenderOccDepthLoss', 'RenderOccEntropyLoss',
          'RenderOccDistortionLoss']
KEYS = {'loss_render_semantic', 'loss_render_depth', 'loss_sdf_entropy', 'loss_sdf_distortion',
        'loss_lss_depth'}


def small_renderocc_cfg():
    # the small test box is 16 m wide: radius 7 m leaves a 1 m background shell, as 39 in 80
    cfg = small_model_cfg(
        head=dict(type='RenderOccHead', in_channels=8, pc_range=PC, grid_size=PRED_GRID,
                  out_grid_size=OCC_GRID, num_classes=17, out_dim=8),
        supervision=[
            dict(type='RaySupervision', renderer=dict(type='RenderOccRenderer', radius=7.0),
                 pixel_sampler=dict(type='PixelSampler', mode='class_weighted', num_rays=96,
                                    num_classes=17, require_depth=True),
                 label_range=None, aux_weight=0.3, dynamic_classes=[2, 3, 4],
                 losses=[dict(type=t) for t in LOSSES]),
            dict(type='LSSDepthLoss', loss_weight=0.2)])
    cfg['readout']['threshold'] = opacity_threshold(8.5)
    return cfg


def test_small_renderocc_model_trains_a_step_and_predicts():
    torch.manual_seed(0)
    model = MODELS.build(small_renderocc_cfg())
    model.train()
    losses = model(mode='loss', **random_batch(B=2))
    assert KEYS <= set(losses)
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    assert losses['loss_render_semantic'] > 1  # uniform logits at the start: about log(17)
    loss_sum(losses).backward()
    assert check_grads(model) == []
    model.eval()
    out = model(mode='predict', **random_batch(B=2))
    assert out[0]['semantics'].shape == tuple(OCC_GRID)
    # a transparent start: every voxel below RenderOcc's threshold reads out free
    assert (out[0]['semantics'] == 17).all()
    assert set(model(mode='tensor', **random_batch())) == {'density', 'features'}


@pytest.mark.slow
def test_tiny_config_model_trains_a_step_and_predicts():
    cfg = Config.fromfile('configs/renderocc/renderocc-tiny-synthetic.py')
    cfg.model.supervision[0].pixel_sampler.num_rays = 384  # fewer rays: the sizes are the point
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert model.readout.threshold == pytest.approx(opacity_threshold(8.5), rel=1e-6)
    model.train()
    batch = random_batch(B=1, N=6, F=1, H=144, W=256, ds=2)
    losses = model(mode='loss', **batch)
    assert KEYS <= set(losses)
    loss_sum(losses).backward()
    assert check_grads(model) == []
    model.eval()
    with torch.no_grad():
        field = model.extract(batch['img'], batch['cam2img'], batch['cam2ego']).field
        assert field.raw.shape == (1, 200, 200, 16)
        out = model.predict(model.extract(batch['img'], batch['cam2img'], batch['cam2ego']),
                            batch)
    assert out[0]['semantics'].shape == (200, 200, 16)
