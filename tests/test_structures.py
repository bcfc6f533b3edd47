"""Gaussians, Cameras and the other containers: shapes checked on construction."""
import pytest
import torch

from splattingocc.geometry import rigid_inverse
from splattingocc.structures import Cameras, Gaussians


def _random_rigid(n, generator):
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(n, 3, 3)
    T = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    T[:, :3, :3] = R
    T[:, :3, 3] = torch.randn(n, 3, generator=generator, dtype=torch.float64) * 10
    return T


def test_rigid_inverse_composes_to_identity():
    g = torch.Generator().manual_seed(0)
    T = _random_rigid(16, g)
    eye = torch.eye(4, dtype=torch.float64).expand(16, 4, 4)
    assert torch.allclose(rigid_inverse(T) @ T, eye, atol=1e-12)
    assert torch.allclose(T @ rigid_inverse(T), eye, atol=1e-12)


def test_rigid_inverse_hand_case():
    # rotation of 90 degrees about z, then translation (1, 2, 3)
    T = torch.tensor([[0., -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
    p_world = torch.tensor([1., 2, 3, 1])  # the frame's origin seen from outside
    assert torch.allclose(rigid_inverse(T) @ p_world, torch.tensor([0., 0, 0, 1]))
    assert torch.allclose(rigid_inverse(T)[:3, :3], T[:3, :3].T)


def test_gaussians_shape_checks():
    g = Gaussians(torch.zeros(2, 5, 3), torch.zeros(2, 5, 4), torch.ones(2, 5, 3),
                  torch.ones(2, 5), torch.zeros(2, 5, 18))
    assert (g.batch_size, g.num_gaussians, g.num_features) == (2, 5, 18)
    assert g.index(1).means.shape == (1, 5, 3)
    with pytest.raises(AssertionError):
        Gaussians(torch.zeros(2, 5, 3), torch.zeros(2, 4, 4), torch.ones(2, 5, 3),
                  torch.ones(2, 5), torch.zeros(2, 5, 18))


def test_cameras_shape_checks():
    cams = Cameras(torch.eye(4).expand(1, 6, 4, 4), torch.eye(3).expand(1, 6, 3, 3), 40, 30)
    assert cams.num_cameras == 6
    with pytest.raises(AssertionError):
        Cameras(torch.eye(4).expand(1, 6, 4, 4), torch.eye(3).expand(1, 5, 3, 3), 40, 30)
