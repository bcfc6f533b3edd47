"""Volume encoders: refine the lifted [B, C, X, Y, Z] volume.

* ``VolumeEncoder3D``: a stem conv and residual blocks of two 3x3x3 convolutions (full 3D), or
  with ``kernel='separable'`` of two (3x3x1 then 1x1x3) pairs: the same receptive field with 12
  instead of 27 weights per channel pair. E28: a faster convolution, but a barely faster training
  step of the tiny config and less geometry IoU: an option for ablations, not the default.
* ``BEVVolumeEncoder``: folds the height axis into channels ([B, C * Z, X, Y]), runs 2D residual
  blocks (cheaper on large grids, as FlashOcc's channel-to-height trick) and unfolds back to
  [B, out_channels, X, Y, Z] with a 1x1 conv.
Both keep the grid size.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from ..registry import MODELS


def _conv3d(c: int, kernel: str) -> nn.Module:
    """A 3x3x3 convolution (``'full'``) or a 3x3x1 one followed by a 1x1x3 one (``'separable'``:
    a rank-limited 3x3x3 kernel), no bias."""
    if kernel == 'full':
        return nn.Conv3d(c, c, 3, padding=1, bias=False)
    return nn.Sequential(nn.Conv3d(c, c, (3, 3, 1), padding=(1, 1, 0), bias=False),
                         nn.Conv3d(c, c, (1, 1, 3), padding=(0, 0, 1), bias=False))


class _Res3d(nn.Module):
    def __init__(self, c: int, kernel: str = 'full'):
        super().__init__()
        self.body = nn.Sequential(
            _conv3d(c, kernel), nn.BatchNorm3d(c), nn.ReLU(inplace=True),
            _conv3d(c, kernel), nn.BatchNorm3d(c))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, X, Y, Z]
        return self.act(x + self.body(x))


class _Res2d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, X, Y]
        return self.act(x + self.body(x))


@MODELS.register_module()
class VolumeEncoder3D(nn.Module):
    """3D conv encoder.

    Args:
        in_channels: channels of the lifted volume.
        channels: channels of the residual blocks (and of the output).
        num_blocks: residual blocks of two 3x3x3 convs.
        kernel: 'full' (3x3x3 convolutions) or 'separable' (each one in the residual blocks a
            3x3x1 conv followed by a 1x1x3 conv; the stem stays 3x3x3).
        channels_last: run the convolutions on a channels-last (NDHWC) copy of the volume and
            return a contiguous (NCDHW) result: the same function, another memory layout, which
            oneDNN's CPU 3D convolutions run faster (E24); results differ from the default
            layout by rounding.
    """

    def __init__(self, in_channels: int, channels: int, num_blocks: int = 2,
                 channels_last: bool = False, kernel: str = 'full'):
        super().__init__()
        if kernel not in ('full', 'separable'):
            raise ValueError(f"VolumeEncoder3D.kernel must be 'full' or 'separable', got "
                             f'{kernel!r}')
        self.in_channels = in_channels
        self.out_channels = channels
        self.channels_last = channels_last
        self.stem = nn.Sequential(nn.Conv3d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm3d(channels), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_Res3d(channels, kernel) for _ in range(num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, Cin, X, Y, Z] -> [B, channels, X, Y, Z]."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels, x.shape
        if not self.channels_last:
            return self.blocks(self.stem(x))
        y = self.blocks(self.stem(x.contiguous(memory_format=torch.channels_last_3d)))
        return y.contiguous()


@MODELS.register_module()
class BEVVolumeEncoder(nn.Module):
    """2D encoder over the height-folded volume.

    Args:
        in_channels: channels C of the lifted volume.
        grid_z: Z (height voxels) of the volume.
        channels: channels of the 2D residual blocks.
        out_channels: channels per voxel after unfolding.
        num_blocks: residual blocks of two 3x3 convs.
    """

    def __init__(self, in_channels: int, grid_z: int, channels: int, out_channels: int,
                 num_blocks: int = 2):
        super().__init__()
        self.in_channels = in_channels
        self.grid_z = grid_z
        self.out_channels = out_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels * grid_z, channels, 3, padding=1,
                                            bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_Res2d(channels) for _ in range(num_blocks)])
        self.unfold = nn.Conv2d(channels, out_channels * grid_z, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, Cin, X, Y, Z] -> [B, out_channels, X, Y, Z]."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels and x.shape[4] == self.grid_z, \
            x.shape
        bev = rearrange(x, 'b c x y z -> b (c z) x y')  # [B, C*Z, X, Y]
        bev = self.unfold(self.blocks(self.stem(bev)))  # [B, out*Z, X, Y]
        return rearrange(bev, 'b (c z) x y -> b c x y z', z=self.grid_z)
