"""RenderOccHead: shapes, upstream's layers voxel by voxel, transparent start, gradients."""
import torch
import torch.nn.functional as F

from splattingocc.fields import RenderOccField
from splattingocc.registry import MODELS

PC = (-8.0, -8.0, -1.0, 8.0, 8.0, 3.0)


def head(**kw):
    cfg = dict(type='RenderOccHead', in_channels=8, pc_range=PC, grid_size=(4, 4, 2),
               out_grid_size=(16, 16, 4), num_classes=17, out_dim=6)
    cfg.update(kw)
    return MODELS.build(cfg)


def test_shapes_and_the_layers_voxel_by_voxel():
    torch.manual_seed(0)
    h = head()
    x = torch.randn(2, 8, 4, 4, 2)
    f = h(x)
    assert isinstance(f, RenderOccField)
    assert f.raw.shape == (2, 16, 16, 4) and f.logits.shape == (2, 16, 16, 4, 17)
    assert (f.raw >= 0).all()  # final softplus
    # upstream's layers: ReLU(conv3x3x3), trilinear upsampling, two MLPs with softplus
    feats = F.interpolate(F.relu(h.final_conv(x)), size=(16, 16, 4), mode='trilinear',
                          align_corners=False)
    v = feats[1, :, 5, 9, 3]  # one output voxel's features [out_dim]
    l1, l2 = h.density_mlp[0], h.density_mlp[2]
    raw = F.softplus(l2(F.softplus(l1(v))))[0]
    s1, s2 = h.semantic_mlp[0], h.semantic_mlp[2]
    logits = s2(F.softplus(s1(v)))
    assert torch.allclose(f.raw[1, 5, 9, 3], raw, atol=1e-5)
    assert torch.allclose(f.logits[1, 5, 9, 3], logits, atol=1e-5)
    assert len(h.density_mlp) == 4 and len(head(final_softplus=False).density_mlp) == 3


def test_starts_transparent_and_every_parameter_learns():
    torch.manual_seed(0)
    h = head(out_grid_size=None)
    f = h(torch.randn(1, 8, 4, 4, 2))
    rho, _ = f.to_grid(PC, (4, 4, 2))
    assert f.occupancy(rho).max() < 1e-4  # softplus(raw) + shift ~ -13: rays start transparent
    (f.raw.sum() + f.logits.square().sum()).backward()
    for name, p in h.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
