"""Volume encoders: shapes, and the channels-last layout computing the same function."""
import pytest
import torch

from splattingocc.models.volume_encoder import BEVVolumeEncoder, VolumeEncoder3D


def test_volume_encoder_3d_keeps_the_grid():
    enc = VolumeEncoder3D(in_channels=6, channels=8, num_blocks=2)
    y = enc(torch.randn(2, 6, 5, 4, 3))
    assert y.shape == (2, 8, 5, 4, 3)


def test_channels_last_equals_the_default_layout():
    """Same weights, both layouts: outputs and every gradient agree to rounding, and the output
    is handed on in the default (contiguous NCDHW) layout."""
    torch.manual_seed(0)
    a = VolumeEncoder3D(in_channels=6, channels=8, num_blocks=2).train()
    b = VolumeEncoder3D(in_channels=6, channels=8, num_blocks=2, channels_last=True).train()
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
