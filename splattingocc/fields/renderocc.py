"""RenderOcc's density grid as a scene field (the faithful NeRF arm's representation).

The grid holds RenderOcc's *raw* density per voxel (the head's output before the renderer's
activation; >= 0 with RenderOcc's final softplus) and K class logits. Its renderer is
``RenderOccRenderer`` (``renderable()`` gives it the raw grid), which turns a raw value into a
sample's opacity ``1 - exp(-interval * softplus(raw + shift))`` with ``interval`` 0.5 for a step
of ``step_size`` 0.5 voxel.

**The field's density** (``to_grid``, ``density_at``) is the optical depth of one voxel edge on
that nominal scale (one voxel = ``1 / step_size`` steps of ``interval`` each)::

    rho = (interval / step_size) * softplus(raw + shift)        (interval / step_size = 1)

so ``occupancy(rho) = 1 - exp(-rho)`` is the opacity of one 0.4 m voxel, the scale every
representation is thresholded on; with RenderOcc's numbers it is ``sigmoid(raw + shift)``.
RenderOcc's read-out ``raw > test_threshold`` (8.5) is therefore exactly ``occupancy >
sigmoid(8.5 + shift)`` = 0.00489 (:func:`opacity_threshold`). (Upstream marches 391 steps over
78 m, 0.1995 m each, so a marched 0.4 m differs from the nominal voxel by 0.25 %.)

Values between voxel centres: raw and logits are interpolated trilinearly at voxel centres
(``min + size * (index + 0.5)``, border values held outside) and then activated, as the renderer
interpolates raw values before the activation; on the field's own grid ``to_grid`` returns the
voxels themselves (upstream's read-out). Class scores: ``softmax(logits)`` on a grid, times rho
at points (as ``DensityGridField``). The renderer's own lookup keeps upstream's
``align_corners=True`` placement (``rendering/renderocc_renderer.py``).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rendering.renderocc_renderer import RawDensityGrid, renderocc_shift
from .base import SceneField

__all__ = ['RenderOccField', 'opacity_threshold']


def opacity_threshold(test_threshold: float = 8.5, alpha_init: float = 1e-6,
                      interval: float = 0.5, step_size: float = 0.5) -> float:
    """RenderOcc's read-out threshold on the raw density, as the opacity of one voxel:
    ``1 - exp(-(interval / step_size) * softplus(test_threshold + shift))`` (0.004891 for 8.5)."""
    rho = interval / step_size * math.log1p(math.exp(test_threshold +
                                                     renderocc_shift(alpha_init)))
    return -math.expm1(-rho)


def _resample(vol: Tensor,  # [B, Ch, X, Y, Z]
              box: Sequence[float], points: Tensor,  # [B, P, 3]
              ) -> Tensor:
    """Trilinear values of a voxel-centred volume at world points -> [B, P, Ch]."""
    B, P = points.shape[:2]
    lo = points.new_tensor(box[:3])
    hi = points.new_tensor(box[3:])
    coords = ((points - lo) / (hi - lo) * 2 - 1).flip(-1).reshape(B, P, 1, 1, 3)
    out = F.grid_sample(vol.to(points), coords, mode='bilinear', padding_mode='border',
                        align_corners=False)  # [B, Ch, P, 1, 1]
    return out.reshape(B, vol.shape[1], P).transpose(1, 2)


class RenderOccField(SceneField):
    """RenderOcc's raw density and logits on a grid (module docstring).

    Args:
        raw: [B, X, Y, Z] density before the activation.
        logits: [B, X, Y, Z, K] class logits.
        box: (x0, y0, z0, x1, y1, z1) of the grid, metres.
        alpha_init: sets the shift ``log(1 / (1 - alpha_init) - 1)``.
        interval, step_size: the renderer's per-sample interval and step (voxels); their ratio
            scales the density to one voxel edge.
    """

    def __init__(self, raw: Tensor, logits: Tensor, box: Sequence[float],
                 alpha_init: float = 1e-6, interval: float = 0.5, step_size: float = 0.5):
        assert raw.dim() == 4 and logits.dim() == 5 and logits.shape[:4] == raw.shape, (
            raw.shape, logits.shape)
        self.raw, self.logits = raw, logits
        self.box = tuple(float(v) for v in box)
        assert len(self.box) == 6, self.box
        self.num_classes = logits.shape[-1]
        self.shift = renderocc_shift(alpha_init)
        self.scale = float(interval) / float(step_size)

    @property
    def batch_size(self) -> int:
        return self.raw.shape[0]

    @property
    def grid_size(self) -> Tuple[int, int, int]:
        return tuple(self.raw.shape[1:])

    def activate(self, raw: Tensor) -> Tensor:
        """raw -> rho, the optical depth of one voxel edge (module docstring)."""
        return self.scale * F.softplus(raw + self.shift)

    def renderable(self, with_positions: bool = False) -> RawDensityGrid:
        if with_positions:
            raise ValueError('RenderOccField renders with RenderOccRenderer, which gives the '
                             'distortion loss its sample weights itself: use '
                             'RenderOccDistortionLoss, not RayDistortionLoss')
        return RawDensityGrid(raw=self.raw, logits=self.logits, pc_range=self.box)

    def _at(self, points: Tensor, with_logits: bool) -> Tensor:
        vol = self.raw[:, None]
        if with_logits:
            vol = torch.cat([vol, self.logits.permute(0, 4, 1, 2, 3)], dim=1)
        return _resample(vol, self.box, points)  # [B, P, 1 (+K)]

    def density_at(self, points: Tensor,  # [B, P, 3]
                   ) -> Tensor:
        return self.activate(self._at(points, False)[..., 0])  # [B, P]

    def fields_at(self, points: Tensor,  # [B, P, 3]
                  ) -> Tuple[Tensor, Tensor]:
        v = self._at(points, True)  # [B, P, 1+K]
        rho = self.activate(v[..., 0])  # [B, P]
        return rho, v[..., 1:].softmax(-1) * rho[..., None]

    def to_grid(self, pc_range: Sequence[float], grid_size: Sequence[int],
                ) -> Tuple[Tensor, Tensor]:
        same_box = all(abs(float(a) - b) < 1e-6 for a, b in zip(pc_range, self.box))
        if same_box and tuple(int(n) for n in grid_size) == self.grid_size:
            return self.activate(self.raw), self.logits.softmax(-1)
        X, Y, Z = (int(n) for n in grid_size)
        axes = [float(pc_range[a]) + (float(pc_range[a + 3]) - float(pc_range[a])) / n *
                (torch.arange(n, device=self.raw.device, dtype=self.raw.dtype) + 0.5)
                for a, n in enumerate((X, Y, Z))]
        pts = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1).reshape(1, -1, 3)
        v = self._at(pts.expand(self.batch_size, -1, -1), True)  # [B, X*Y*Z, 1+K]
        B = self.batch_size
        return (self.activate(v[..., 0]).reshape(B, X, Y, Z),
                v[..., 1:].softmax(-1).reshape(B, X, Y, Z, self.num_classes))

    def occupancy(self, density: Tensor) -> Tensor:
        return -torch.expm1(-density)

    def tensors(self) -> Dict[str, Tensor]:
        return dict(density=self.raw, features=self.logits)
