"""Volume encoders: shapes, the channels-last layout computing the same function, and the
separable kernel being a 3x3x3 convolution with a rank-limited kernel."""
import pytest
import torch
import torch.nn.functional as F

from splattingocc.models.volume_encoder import BEVVolumeEncoder, VolumeEncoder3D, _conv3d


def test_volume_encoder_3d_keeps_the_grid():
    enc = VolumeEncoder3D(in_channels=6, channels=8, num_blocks=2)
    y = enc(torch.randn(2, 6, 5, 4, 3))
    assert y.shape == (2, 8, 5, 4, 3)


@pytest.mark.parametrize('kernel', ['full', 'separable'])
def test_channels_last_equals_the_default_layout(kernel):
    """Same weights, both layouts: outputs and every gradient agree to rounding, and the output
    is handed on in the default (contiguous NCDHW) layout."""
    torch.manual_seed(0)
    a = VolumeEncoder3D(in_channels=6, channels=8, num_blocks=2, kernel=kernel).train()
    b = VolumeEncoder3D(in_channels=6, channels=8, num_blocks=2, channels_last=True,
                        kernel=kernel).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 6, 7, 6, 4)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    assert yb.is_contiguous()
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-5)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_bev_encoder_checks_the_height():
    enc = BEVVolumeEncoder(in_channels=4, grid_z=3, channels=8, out_channels=5)
    assert enc(torch.randn(1, 4, 6, 5, 3)).shape == (1, 5, 6, 5, 3)
    with pytest.raises(AssertionError):
        enc(torch.randn(1, 4, 6, 5, 2))


def test_separable_pair_is_a_3x3x3_conv_with_the_composed_kernel():
    """3x3x1 then 1x1x3 (zero padding each) = one zero-padded 3x3x3 conv whose kernel is
    K[o, i, a, b, c] = sum_m W2[o, m, c] W1[m, i, a, b], also at the borders of the grid."""
    torch.manual_seed(0)
    pair = _conv3d(5, 'separable')
    w1 = pair[0].weight[..., 0]  # [m, i, 3, 3]
    w2 = pair[1].weight[:, :, 0, 0]  # [o, m, 3]
    k = torch.einsum('omc,miab->oiabc', w2, w1)
    x = torch.randn(2, 5, 6, 4, 3)
    torch.testing.assert_close(pair(x), F.conv3d(x, k, padding=1), rtol=1e-5, atol=1e-5)
    full = sum(p.numel() for p in _conv3d(5, 'full').parameters())
    assert sum(p.numel() for p in pair.parameters()) == full * 12 // 27


def test_separable_encoder_keeps_the_grid_and_rejects_unknown_kernels():
    enc = VolumeEncoder3D(in_channels=6, channels=8, num_blocks=2, kernel='separable')
    assert enc(torch.randn(1, 6, 5, 4, 3)).shape == (1, 8, 5, 4, 3)
    with pytest.raises(ValueError, match="kernel must be 'full' or 'separable'"):
        VolumeEncoder3D(in_channels=6, channels=8, kernel='2d')
