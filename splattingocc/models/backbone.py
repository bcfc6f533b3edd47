"""ResNet image backbone (BasicBlock / Bottleneck), parameter names compatible with torchvision.

The module tree mirrors torchvision's ``resnet{18,34,50,101}`` (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, blocks with ``conv1``/``bn1``/``conv2``/``bn2``[/``conv3``/``bn3``] and a
``downsample`` Sequential of a 1x1 conv and a BatchNorm), so a torchvision state dict saved to a
local file loads with ``pretrained='path.pth'``. Nothing is ever downloaded. The classifier
(``fc``) is not built; its keys in a pretrained file are ignored.

A ``'tiny'`` depth builds a narrow BasicBlock network (configurable stage widths and blocks) for
CPU experiments; its names follow the same scheme, so a tiny checkpoint of our own loads too.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..registry import MODELS


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # x: [N, C, H, W]
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, 'ResNet v1.5' as torchvision), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # x: [N, C, H, W]
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block type, blocks per stage), the standard ResNet table (He et al. 2016)
ARCH_SETTINGS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    'tiny': (BasicBlock, (1, 1, 1, 1)),
}


@MODELS.register_module()
class ResNet(nn.Module):
    """ResNet returning the feature maps of selected stages.

    Args:
        depth: 18, 34, 50, 101 or 'tiny'.
        widths: base width of each of the 4 stages (default torchvision's 64, 128, 256, 512;
            a Bottleneck stage outputs 4x its width).
        stem_channels: channels of the 7x7 stride-2 stem convolution (64 in torchvision).
        stage_blocks: blocks per stage, overriding the depth's table (e.g. (1, 1, 1, 1)).
        out_indices: which stages to return (0..3 = layer1..layer4, strides 4, 8, 16, 32).
        frozen_stages: -1 trains everything; 0 freezes the stem; k >= 1 freezes the stem and
            layer1..layer{k} (parameters get requires_grad=False and their BatchNorms stay in eval).
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) while training.
        pretrained: optional path of a local torchvision-format state dict (``.pth``); the ``fc``
            keys are ignored, every other key must match.
        zero_init_residual: zero the last BatchNorm weight of each block (torchvision option).
    """

    def __init__(self,
                 depth: Union[int, str] = 50,
                 widths: Sequence[int] = (64, 128, 256, 512),
                 stem_channels: int = 64,
                 stage_blocks: Optional[Sequence[int]] = None,
                 out_indices: Sequence[int] = (2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 pretrained: Optional[str] = None,
                 zero_init_residual: bool = False):
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise KeyError(f'ResNet: depth={depth!r} is not supported; use one of '
                           f'{list(ARCH_SETTINGS)} (backbone.depth in the config)')
        block, blocks = ARCH_SETTINGS[depth]
        if stage_blocks is not None:
            blocks = tuple(stage_blocks)
        assert len(widths) == 4 and len(blocks) == 4, (widths, blocks)
        assert all(0 <= i <= 3 for i in out_indices), out_indices
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        cin = stem_channels
        self.out_channels = []
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if s != 1 or cin != width * block.expansion:
                    down = nn.Sequential(_conv1x1(cin, width * block.expansion, s),
                                         nn.BatchNorm2d(width * block.expansion))
                layers.append(block(cin, width, s, down))
                cin = width * block.expansion
            self.add_module(f'layer{i + 1}', nn.Sequential(*layers))
            self.out_channels.append(cin)
        self.out_channels = [self.out_channels[i] for i in self.out_indices]

        self._init_weights(zero_init_residual)
        if pretrained is not None:
            self.load_pretrained(pretrained)
        self._freeze_stages()

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def load_pretrained(self, path: str) -> None:
        """Loads a local torchvision-format state dict (optionally under a 'state_dict' key)."""
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'ResNet pretrained weights not found: {path}. Put a torchvision ResNet state dict '
                f'there (nothing is downloaded), or set model.backbone.pretrained=None.')
        state = torch.load(path, map_location='cpu', weights_only=True)
        if isinstance(state, dict) and 'state_dict' in state:
            state = state['state_dict']
        state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith('fc.')}
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or bad_shape:
            raise ValueError(
                f'ResNet pretrained file {path} does not match depth={self.depth!r}: '
                f'{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected '
                f'(e.g. {unexpected[:3]}), {len(bad_shape)} with another shape (e.g. '
                f'{bad_shape[:3]}). Use the torchvision resnet{self.depth} weights for this depth.')
        self.load_state_dict(state, strict=True)

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.conv1
            yield self.bn1
        for i in range(1, self.frozen_stages + 1):
            yield getattr(self, f'layer{i}')

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'ResNet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> list:
        """x: [N, 3, H, W] normalised images -> list of [N, C_i, H / s_i, W / s_i] per out index."""
        assert x.dim() == 4 and x.shape[1] == 3, x.shape
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [N, C0, H/4, W/4]
        outs = []
        for i in range(max(self.out_indices) + 1):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
