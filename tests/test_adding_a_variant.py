"""docs/adding-a-variant.md, run: a new representation (an occupancy-probability grid) and a new
ray loss term, added as registered classes and a config only, train and predict with the
unchanged network; the ablation runner accepts the term as an arm."""
import torch
from einops import rearrange
from mmengine.config import Config
from torch import nn

from small_model import (FREE, OCC_GRID, PC, PRED_GRID, check_grads, loss_sum, random_batch,
                         ray_supervision, small_model_cfg)
from splattingocc.experiments import apply_overrides, parse_arms
from splattingocc.fields import DensityGridField, SceneField
from splattingocc.geometry import labels_in_range
from splattingocc.registry import MODELS
from splattingocc.structures import Cameras, DensityGrid
from splattingocc.supervision.ray_losses import RayLoss


class OccupancyGridField(SceneField):
    """Occupancy probabilities p [B, X, Y, Z] and class logits [B, X, Y, Z, K] on a grid."""

    def __init__(self, occupancy, logits, box, edge):
        self.occupancy_probs, self.logits = occupancy, logits
        self.box, self.num_classes = tuple(box), logits.shape[-1]
        sigma = -torch.log1p(-occupancy) / edge  # 1 - exp(-sigma * edge) = p
        self.grid = DensityGridField(DensityGrid(sigma, logits, self.box), edge)

    @property
    def batch_size(self):
        return self.logits.shape[0]

    def renderable(self, with_positions=False):
        return self.grid.renderable(with_positions)

    def density_at(self, points):
        return self.grid.density_at(points)

    def fields_at(self, points):
        return self.grid.fields_at(points)

    def to_grid(self, pc_range, grid_size):
        return self.grid.to_grid(pc_range, grid_size)

    def occupancy(self, density):
        return 1 - torch.exp(-density)

    def tensors(self):
        return dict(occupancy=self.occupancy_probs, features=self.logits)


@MODELS.register_module(force=True)
class OccupancyGridHead(nn.Module):
    """Volume features [B, C, X, Y, Z] -> an OccupancyGridField on the same grid."""

    def __init__(self, in_channels, pc_range, grid_size, num_classes=17, edge=0.4):
        super().__init__()
        self.pc_range, self.edge = tuple(pc_range), edge
        self.out = nn.Conv3d(in_channels, 1 + num_classes, 1)

    def forward(self, x):
        y = self.out(x)  # [B, 1 + K, X, Y, Z]
        occupancy = torch.sigmoid(y[:, 0] - 2.0).clamp(max=1 - 1e-6)  # [B, X, Y, Z]
        logits = rearrange(y[:, 1:], 'b k x y z -> b x y z k')
        return OccupancyGridField(occupancy, logits, self.pc_range, self.edge)


@MODELS.register_module(force=True)
class RenderedOpacityLoss(RayLoss):
    """loss_alpha = loss_weight * weighted mean of -log(alpha) over rays with a depth label."""

    def __init__(self, loss_weight=0.1, eps=1e-6):
        super().__init__()
        self.loss_weight, self.eps = loss_weight, eps

    def forward(self, rays):
        w = rays.weight * (rays.depth.reshape(-1) > 0)  # [M]
        nll = -torch.log(rays.render.alpha.reshape(-1) + self.eps)  # [M]
        return dict(loss_alpha=self.loss_weight * (w * nll).sum() / w.sum().clamp_min(1e-6))


def toy_model_cfg(**ray_overrides):
    losses = [dict(type='SILogLoss'), dict(type='RenderedCELoss', class_weight='batch'),
              dict(type='FreeSpaceLoss'), dict(type='SurfaceLoss'),
              dict(type='RenderedOpacityLoss', loss_weight=0.1)]
    return small_model_cfg(
        head=dict(type='OccupancyGridHead', in_channels=8, pc_range=PC, grid_size=PRED_GRID,
                  num_classes=17, edge=0.5),
        supervision=[ray_supervision('VolumeRenderer', losses=losses, **ray_overrides),
                     dict(type='LSSDepthLoss', loss_weight=0.5)])


def test_a_new_representation_and_loss_train_and_predict_with_the_unchanged_network():
    torch.manual_seed(0)
    model = MODELS.build(toy_model_cfg())
    model.train()
    losses = model(mode='loss', **random_batch(B=2))
    assert {'loss_depth', 'loss_sem', 'loss_free_space', 'loss_surface_occ', 'loss_surface_sem',
            'loss_alpha', 'loss_lss_depth'} <= set(losses)
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    loss_sum(losses).backward()
    assert check_grads(model) == []
    model.eval()
    out = model(mode='predict', **random_batch(B=2))
    assert out[0]['semantics'].shape == tuple(OCC_GRID) and out[0]['semantics'].max() <= FREE
    assert set(model(mode='tensor', **random_batch())) == {'occupancy', 'features'}


def test_the_new_loss_term_against_a_hand_computation():
    """With a dense render (no pixel sampler, one frame: every ray weight 1), loss_alpha is the
    mean of -log(alpha) over the pixels whose depth label lies inside the field's box."""
    torch.manual_seed(0)
    model = MODELS.build(toy_model_cfg(pixel_sampler=None)).eval()
    batch = random_batch(F=1)
    with torch.no_grad():
        got = model(mode='loss', **batch)['loss_alpha']
        field = model.extract(batch['img'], batch['cam2img'], batch['cam2ego']).field
        h, w = batch['gt_depth'].shape[-2:]
        cams = Cameras(batch['render_viewmats'], batch['render_Ks'], width=w, height=h)
        alpha = model.supervision[0].render(field, cams).alpha  # [1, C, h, w]
    keep = labels_in_range(batch['gt_depth'], batch['render_viewmats'], batch['render_Ks'], PC)
    want = 0.1 * (-torch.log(alpha[keep] + 1e-6)).mean()
    assert keep.any() and torch.allclose(got, want, rtol=1e-5)


def test_the_new_loss_term_as_an_ablation_arm():
    base = Config.fromfile('configs/splattingocc/splattingocc-tiny-synthetic.py')
    arm, = parse_arms(['alpha=model.supervision.0.losses.3._delete_=True,'
                       'model.supervision.0.losses.3.type=RenderedOpacityLoss'], base)
    losses = apply_overrides(base, arm.overrides).model.supervision[0].losses
    assert [t['type'] for t in losses] == ['SILogLoss', 'RenderedCELoss', 'FreeSpaceLoss',
                                           'RenderedOpacityLoss']
    assert dict(losses[3]) == dict(type='RenderedOpacityLoss')
