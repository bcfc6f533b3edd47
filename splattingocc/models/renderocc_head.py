"""RenderOcc's head (pmj110119/RenderOcc, ``mmdet3d/models/detectors/render_occ.py``): the
encoded volume -> a :class:`RenderOccField` at the Occ3D resolution.

Upstream, on the 200 x 200 x 16 volume of 32 channels::

    feats   = ReLU(Conv3d 3x3x3 (C -> out_dim, bias))           (mmcv ConvModule, no norm)
    raw     = Softplus(Linear(2 out_dim -> 2)(Softplus(Linear(out_dim -> 2 out_dim)(feats))))[0]
    logits  = Linear(2 out_dim -> 17)(Softplus(Linear(out_dim -> 2 out_dim)(feats)))

(``final_softplus=True`` in ``configs/renderocc/renderocc-7frame.py``: the raw density is >= 0;
the renderer adds the shift and applies its own softplus.) Here the conv runs on the input
volume, then the features are upsampled trilinearly to ``out_grid_size`` (when it differs:
the tiny network's 50 x 50 x 8 volume to 200 x 200 x 16) and the two MLPs run per output voxel,
so the density and the classes live at RenderOcc's resolution with voxel-sharp boundaries that
a trilinear upsampling of the outputs would not have. The density MLP has one output: upstream's
second channel is read only by its optional 3D loss (``use_3d_loss``, off), so it has no
gradient under 2D supervision and no effect on the result.

Initialisation: the conv as mmcv's ``ConvModule`` does (Kaiming normal, fan-out, ReLU gain, bias
0), the linear layers torch's default (as upstream's ``nn.Linear``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..fields.renderocc import RenderOccField
from ..registry import MODELS

__all__ = ['RenderOccHead']


@MODELS.register_module()
class RenderOccHead(nn.Module):
    """Volume features [B, C, X, Y, Z] -> a ``RenderOccField`` on ``out_grid_size``.

    Args:
        in_channels: C, channels of the encoded volume.
        pc_range: the grid box (x0, y0, z0, x1, y1, z1).
        grid_size: (X, Y, Z) of the input volume.
        out_grid_size: (X', Y', Z') of the predicted grid (None: grid_size).
        num_classes: K class logits (17: the occupied classes).
        out_dim: channels of the final conv (upstream 32); the MLPs are 2 * out_dim wide.
        final_softplus: a softplus on the raw density (upstream's config: True).
        alpha_init, interval, step_size: the renderer's numbers, for the field's density scale
            (``fields/renderocc.py``).
    """

    def __init__(self, in_channels: int, pc_range: Sequence[float], grid_size: Sequence[int],
                 out_grid_size: Optional[Sequence[int]] = None, num_classes: int = 17,
                 out_dim: int = 32, final_softplus: bool = True, alpha_init: float = 1e-6,
                 interval: float = 0.5, step_size: float = 0.5):
        super().__init__()
        self.in_channels = int(in_channels)
        self.pc_range = tuple(float(v) for v in pc_range)
        self.grid_size = tuple(int(v) for v in grid_size)
        self.out_grid_size = self.grid_size if out_grid_size is None else \
            tuple(int(v) for v in out_grid_size)
        if len(self.pc_range) != 6 or len(self.grid_size) != 3 or len(self.out_grid_size) != 3:
            raise ValueError(f'RenderOccHead: pc_range needs 6 numbers, grid_size and '
                             f'out_grid_size 3, got {pc_range!r}, {grid_size!r}, '
                             f'{out_grid_size!r}')
        self.num_classes = int(num_classes)
        self.alpha_init, self.interval, self.step_size = alpha_init, interval, step_size
        self.final_conv = nn.Conv3d(in_channels, out_dim, 3, padding=1, bias=True)
        nn.init.kaiming_normal_(self.final_conv.weight, mode='fan_out', nonlinearity='relu')
        nn.init.zeros_(self.final_conv.bias)
        density = [nn.Linear(out_dim, 2 * out_dim), nn.Softplus(), nn.Linear(2 * out_dim, 1)]
        if final_softplus:
            density.append(nn.Softplus())
        self.density_mlp = nn.Sequential(*density)
        self.semantic_mlp = nn.Sequential(nn.Linear(out_dim, 2 * out_dim), nn.Softplus(),
                                          nn.Linear(2 * out_dim, num_classes))

    def forward(self, x: Tensor) -> RenderOccField:
        """x: [B, C, X, Y, Z] -> raw density [B, X', Y', Z'] and logits [B, X', Y', Z', K]."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels and \
            tuple(x.shape[2:]) == self.grid_size, (x.shape, self.in_channels, self.grid_size)
        h = F.relu(self.final_conv(x))  # [B, out_dim, X, Y, Z]
        # channels-last: the upsampling is faster and the permute below is a view
        h = h.contiguous(memory_format=torch.channels_last_3d)
        if self.out_grid_size != self.grid_size:
            h = F.interpolate(h, size=self.out_grid_size, mode='trilinear',
                              align_corners=False)  # [B, out_dim, X', Y', Z']
        h = h.permute(0, 2, 3, 4, 1)  # [B, X', Y', Z', out_dim]
        raw = self.density_mlp(h)[..., 0]  # [B, X', Y', Z']
        logits = self.semantic_mlp(h)  # [B, X', Y', Z', K]
        return RenderOccField(raw, logits, self.pc_range, self.alpha_init, self.interval,
                              self.step_size)
