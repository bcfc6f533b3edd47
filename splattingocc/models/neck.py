"""Neck: merges backbone stages into one feature map at the stride of the first input stage.

Every input map is resized (bilinear) to the size of the first one, the maps are concatenated and
two 3x3 conv-BN-ReLU layers reduce them to ``out_channels``. With the backbone returning layer3
and layer4 (strides 16 and 32) this is the usual LSS/BEVDet merge of the last two stages to
stride 16; returning layer2..layer4 gives stride 8.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@MODELS.register_module()
class MergeNeck(nn.Module):
    """Upsample-and-concatenate merge of several stages (FPN-like, one output level).

    Args:
        in_channels: channels of each input map, finest first (e.g. [256, 512] for ResNet-18
            layer3/layer4).
        out_channels: channels of the output map.
        mid_channels: channels of the first 3x3 conv (default out_channels).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, mid_channels: int = None):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        mid = mid_channels or out_channels
        self.fuse = nn.Sequential(conv_bn_relu(sum(self.in_channels), mid),
                                  conv_bn_relu(mid, out_channels))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """feats: list of [N, C_i, H_i, W_i], finest first -> [N, out_channels, H_0, W_0]."""
        assert len(feats) == len(self.in_channels), (len(feats), self.in_channels)
        for f, c in zip(feats, self.in_channels):
            assert f.dim() == 4 and f.shape[1] == c, (f.shape, c)
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [F.interpolate(f, size=size, mode='bilinear', align_corners=False)
                            for f in feats[1:]]
        return self.fuse(torch.cat(ups, dim=1))  # [N, out, H_0, W_0]
