"""The sparse Gaussian head: the encoded volume -> a budget of N Gaussians with free means, as a
``SparseGaussianField`` (issue 26; the representation of GaussianFormer, huang-yh/GaussianFormer,
and GaussianFlowOcc, boschresearch/GaussianFlowOcc: a fixed number of Gaussians whose means,
scales, rotations, opacities and semantics are all predicted, in place of one per voxel).

On the volume features ``x`` [B, C, X, Y, Z] (V = X * Y * Z cells):

1. **Per cell** a 1x1x1-conv MLP gives a hidden code ``h`` (``hidden_channels``) and from it an
   occupancy prior logit ``a``, raw scales (3), a raw rotation (4) and K class logits.
2. **Selection**: the N cells of the largest prior logits ``a`` (ties: the lower cell index first;
   a stable sort, so the choice is deterministic), kept in cell order. The choice itself carries
   no gradient, but what decides it does: ``a`` is the selected Gaussians' opacity prior (their
   opacity logit starts at ``a + logit(init_opacity)``), so the losses on the rendered and
   queried opacities train the prior of every selected cell, and through the shared conv weights
   the ranking of all cells. A cell outside the top N gets no gradient of its own.
3. **Initial Gaussians**: one per selected cell at its centre, with the cell's raw scale, rotation,
   classes and hidden code.
4. **Refinement**, ``num_refine`` steps (separate weights per step): sample the volume features
   trilinearly at the Gaussians' current means (``grid_sample``, differentiable in the means too),
   update each Gaussian's hidden code ``h += MLP([features, h, normalised mean])`` and read from
   it additive deltas of the mean (``tanh(.) * max_step`` per axis, so a step moves a mean at
   most ``max_step``), raw scale, raw rotation, opacity logit and class logits. The delta layers
   start near zero, so at initialisation the Gaussians sit at their cells' centres.
5. **Decoding** as ``GaussianHead``: scale = min + (max - min) * sigmoid(raw) per axis, rotation =
   normalise(raw + [1, 0, 0, 0]), opacity = sigmoid(opacity logit), features = the K logits.

Every parameter is learned; the budget N is a config number. The field is rendered by the same
renderers and put on grids by the same exact voxelizer as the per-voxel Gaussians (it handles any
means); its point queries (free-space and surface terms) are exact up to the ``cutoff``
truncation (``fields.sparse_gaussians``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..fields import SparseGaussianField
from ..geometry import voxel_centres
from ..registry import MODELS
from ..structures import Gaussians
from .heads import _check_grid, _per_axis

__all__ = ['SparseGaussianHead']


class _RefineStep(nn.Module):
    """One refinement step: [sampled features C, hidden H, position 3] -> hidden update and the
    deltas [3 mean, 3 scale, 4 rotation, 1 opacity, K logits]."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels + hidden + 3, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden))
        self.out = nn.Linear(hidden, 3 + 3 + 4 + 1 + num_classes)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: Tensor, hidden: Tensor, pos: Tensor):
        """feats [B, N, C], hidden [B, N, H], pos [B, N, 3] -> (hidden [B, N, H],
        deltas [B, N, 11 + K])."""
        hidden = hidden + self.mlp(torch.cat([feats, hidden, pos], -1))
        return hidden, self.out(hidden)


@MODELS.register_module()
class SparseGaussianHead(nn.Module):
    """Voxel features [B, C, X, Y, Z] -> N Gaussians with free means (module docstring), as a
    ``SparseGaussianField``.

    Args:
        in_channels: channels of the encoded volume.
        pc_range: box of the volume (and of the field).
        grid_size: (X, Y, Z) of the volume.
        num_gaussians: N, the budget (<= X * Y * Z).
        num_classes: K semantic logits (17 = occupied classes only, as ``GaussianHead``).
        min_scale, max_scale: scale limits in metres, a number or one per axis (x, y, z).
        hidden_channels: width of the per-cell MLP and of each Gaussian's hidden code.
        num_refine: refinement steps (0: the Gaussians stay at their cells' centres).
        max_step: the most a refinement step moves a mean, metres, a number or one per axis;
            None: one cell of the grid per axis.
        init_opacity: the opacity of a Gaussian whose prior logit is 0, at initialisation.
        cutoff: the Gaussians reach this many standard deviations on grids and in point queries.
        query_cell: the point queries' hash cell edge (metres, 3 numbers); None: from the sizes.
    """

    def __init__(self, in_channels: int, pc_range: Sequence[float], grid_size: Sequence[int],
                 num_gaussians: int, num_classes: int = 17,
                 min_scale: Union[float, Sequence[float]] = 0.05,
                 max_scale: Union[float, Sequence[float]] = 1.0, hidden_channels: int = 64,
                 num_refine: int = 2, max_step: Union[None, float, Sequence[float]] = None,
                 init_opacity: float = 0.1, cutoff: float = 3.0,
                 query_cell: Optional[Sequence[float]] = None):
        super().__init__()
        self.in_channels = in_channels
        self.pc_range, self.grid_size = _check_grid('SparseGaussianHead', pc_range, grid_size)
        V = math.prod(self.grid_size)
        if not 1 <= int(num_gaussians) <= V:
            raise ValueError(f'SparseGaussianHead: num_gaussians must be in [1, {V}] (the cells '
                             f'of grid_size {self.grid_size}), got {num_gaussians}')
        self.num_gaussians, self.num_classes = int(num_gaussians), int(num_classes)
        self.min_scale, self.max_scale = _per_axis(min_scale), _per_axis(max_scale)
        if not all(0 < a < b for a, b in zip(self.min_scale, self.max_scale)):
            raise ValueError(f'SparseGaussianHead: needs 0 < min_scale < max_scale per axis, got '
                             f'{self.min_scale}, {self.max_scale}')
        if not 0 < init_opacity < 1 or not cutoff > 0 or int(num_refine) < 0:
            raise ValueError(f'SparseGaussianHead: needs 0 < init_opacity < 1, cutoff > 0 and '
                             f'num_refine >= 0, got {init_opacity}, {cutoff}, {num_refine}')
        self.init_opacity, self.cutoff = float(init_opacity), float(cutoff)
        self.query_cell = None if query_cell is None else tuple(float(c) for c in query_cell)
        lo, hi = torch.tensor(self.pc_range[:3]), torch.tensor(self.pc_range[3:])
        cell = (hi - lo) / torch.tensor(self.grid_size, dtype=torch.float32)  # [3]
        step = cell if max_step is None else torch.tensor(_per_axis(max_step))
        if not bool((step > 0).all()):
            raise ValueError(f'SparseGaussianHead: max_step must be > 0, got {max_step}')

        K = self.num_classes
        self.mlp = nn.Sequential(nn.Conv3d(in_channels, hidden_channels, 1), nn.ReLU(inplace=True))
        # per cell: prior logit (1); raw scale (3) and rotation (4); class logits (K)
        self.prior = nn.Conv3d(hidden_channels, 1, 1)
        self.shape = nn.Conv3d(hidden_channels, 3 + 4, 1)
        self.semantics = nn.Conv3d(hidden_channels, K, 1)
        for m in (self.prior, self.shape):
            nn.init.normal_(m.weight, std=1e-3)
            nn.init.zeros_(m.bias)
        self.refine = nn.ModuleList(
            _RefineStep(in_channels, hidden_channels, K) for _ in range(int(num_refine)))
        self.register_buffer('centres', voxel_centres(self.pc_range, self.grid_size).reshape(-1, 3),
                             persistent=False)  # [V, 3]
        self.register_buffer('box_lo', lo, persistent=False)
        self.register_buffer('box_size', hi - lo, persistent=False)
        self.register_buffer('max_step', step.float(), persistent=False)
        self.register_buffer('scale_lo', torch.tensor(self.min_scale), persistent=False)
        self.register_buffer('scale_hi', torch.tensor(self.max_scale), persistent=False)

    def select(self, prior: Tensor) -> Tensor:
        """[B, V] prior logits -> [B, N] indices of the selected cells, ascending (module
        docstring; deterministic, no gradient)."""
        with torch.no_grad():
            order = torch.sort(prior, dim=1, descending=True, stable=True).indices
            return order[:, :self.num_gaussians].sort(dim=1).values  # [B, N]

    def sample(self, x: Tensor, means: Tensor) -> Tensor:
        """Trilinear samples of the volume x [B, C, X, Y, Z] at means [B, N, 3] -> [B, N, C]
        (border values outside the box)."""
        u = (means - self.box_lo) / self.box_size * 2 - 1  # [B, N, 3] in [-1, 1] across the box
        grid = u.flip(-1)[:, None, None]  # [B, 1, 1, N, 3] as (z, y, x): grid_sample's (W, H, D)
        out = F.grid_sample(x, grid.to(x.dtype), mode='bilinear', padding_mode='border',
                            align_corners=False)  # [B, C, 1, 1, N]
        return rearrange(out, 'b c 1 1 n -> b n c')

    def forward(self, x: Tensor) -> SparseGaussianField:
        """x: [B, C, X, Y, Z] -> a field of N Gaussians."""
        assert x.dim() == 5 and x.shape[1] == self.in_channels and \
            tuple(x.shape[2:]) == self.grid_size, (x.shape, self.in_channels, self.grid_size)
        h = self.mlp(x)  # [B, H, X, Y, Z]
        cell = torch.cat([self.prior(h), self.shape(h), self.semantics(h)], 1)
        cell = rearrange(cell, 'b c x y z -> b (x y z) c')  # [B, V, 8 + K]
        idx = self.select(cell[..., 0].detach())  # [B, N]
        state = cell.gather(1, idx[..., None].expand(-1, -1, cell.shape[-1]))  # [B, N, 8 + K]
        hidden = rearrange(h, 'b c x y z -> b (x y z) c')
        hidden = hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, N, H]
        means = self.centres[idx]  # [B, N, 3]
        bias = math.log(self.init_opacity / (1 - self.init_opacity))
        opacity = state[..., 0] + bias  # [B, N] logit
        scale, rotation, logits = state[..., 1:4], state[..., 4:8], state[..., 8:]
        for step in self.refine:
            pos = (means - self.box_lo) / self.box_size * 2 - 1  # [B, N, 3]
            hidden, d = step(self.sample(x, means), hidden, pos)  # [B, N, H], [B, N, 11 + K]
            means = means + torch.tanh(d[..., 0:3]) * self.max_step
            scale = scale + d[..., 3:6]
            rotation = rotation + d[..., 6:10]
            opacity = opacity + d[..., 10]
            logits = logits + d[..., 11:]
        return self.field(self.decode(means, scale, rotation, opacity, logits))

    def decode(self, means: Tensor, scale: Tensor, rotation: Tensor, opacity: Tensor,
               logits: Tensor) -> Gaussians:
        """Raw per-Gaussian values -> Gaussians (module docstring, step 5).

        Args:
            means: [B, N, 3] metres; scale: [B, N, 3]; rotation: [B, N, 4]; opacity: [B, N]
                logits; logits: [B, N, K].
        """
        scales = self.scale_lo + (self.scale_hi - self.scale_lo) * torch.sigmoid(scale)
        q = rotation + rotation.new_tensor([1.0, 0.0, 0.0, 0.0])  # [B, N, 4]
        quats = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return Gaussians(means=means, quats=quats, scales=scales,
                         opacities=torch.sigmoid(opacity), features=logits)

    def field(self, gaussians: Gaussians) -> SparseGaussianField:
        return SparseGaussianField(gaussians, self.pc_range, cutoff=self.cutoff,
                                   query_cell=self.query_cell)
