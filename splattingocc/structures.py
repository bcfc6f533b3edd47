"""Small containers passed between the network, the renderers and the voxelizer.

Conventions (the same as gsplat):

* The "world" frame of a sample is the ego frame of its current keyframe, the frame of the Occ3D
  grid (x forward, y left, z up, metres).
* Cameras use OpenCV axes (x right, y down, z forward). ``viewmats`` are world-to-camera
  [B, C, 4, 4]; ``Ks`` are pinhole intrinsics [B, C, 3, 3] in pixels of the rendered image.
* Pixel (row i, column j) has its centre at continuous coordinates (u, v) = (j + 0.5, i + 0.5).
* Quaternions are [w, x, y, z] and need not be normalised (renderers normalise them).
* Depth is camera-space z (not ray length), as in gsplat's 'ED' render mode and in the LiDAR depth
  labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Optional, Tuple

from torch import Tensor


@dataclass
class Gaussians:
    """A batch of 3D Gaussians in the world (current ego) frame.

    Attributes:
        means:     [B, N, 3] centres in metres.
        quats:     [B, N, 4] rotations as quaternions (w, x, y, z), not necessarily normalised.
        scales:    [B, N, 3] standard deviations along the rotated axes, metres, > 0.
        opacities: [B, N] in [0, 1].
        features:  [B, N, K] any per-Gaussian features, e.g. semantic logits or probabilities.
    """

    means: Tensor  # [B, N, 3]
    quats: Tensor  # [B, N, 4]
    scales: Tensor  # [B, N, 3]
    opacities: Tensor  # [B, N]
    features: Tensor  # [B, N, K]

    def __post_init__(self):
        assert self.means.dim() == 3 and self.means.shape[-1] == 3, self.means.shape
        B, N = self.means.shape[:2]
        assert self.quats.shape == (B, N, 4), self.quats.shape
        assert self.scales.shape == (B, N, 3), self.scales.shape
        assert self.opacities.shape == (B, N), self.opacities.shape
        assert self.features.dim() == 3 and self.features.shape[:2] == (B, N), self.features.shape

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    @property
    def num_features(self) -> int:
        return self.features.shape[-1]

    def to(self, *args, **kwargs) -> 'Gaussians':
        return Gaussians(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def index(self, b: int) -> 'Gaussians':
        """The b-th sample as a batch of one."""
        return Gaussians(**{f.name: getattr(self, f.name)[b:b + 1] for f in fields(self)})


@dataclass
class DensityGrid:
    """A NeRF-style volume: density and K feature channels on an axis-aligned voxel grid.

    Attributes:
        density:  [B, X, Y, Z] non-negative volume density (1/m).
        features: [B, X, Y, Z, K] per-voxel features (semantic logits or probabilities).
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the grid box in metres; voxel
            (i, j, k) has its centre at ``min + voxel_size * (index + 0.5)``.
    """

    density: Tensor  # [B, X, Y, Z]
    features: Tensor  # [B, X, Y, Z, K]
    pc_range: tuple

    def __post_init__(self):
        assert self.density.dim() == 4, self.density.shape
        assert self.features.dim() == 5 and self.features.shape[:4] == self.density.shape, (
            self.features.shape, self.density.shape)
        assert len(self.pc_range) == 6, self.pc_range

    @property
    def voxel_size(self) -> tuple:
        X, Y, Z = self.density.shape[1:]
        r = self.pc_range
        return ((r[3] - r[0]) / X, (r[4] - r[1]) / Y, (r[5] - r[2]) / Z)


@dataclass
class Cameras:
    """Pinhole cameras, C per sample.

    Attributes:
        viewmats: [B, C, 4, 4] world-to-camera rigid transforms (OpenCV camera axes).
        Ks:       [B, C, 3, 3] intrinsics in pixels of a ``width`` x ``height`` image.
        width, height: image size in pixels.
    """

    viewmats: Tensor  # [B, C, 4, 4]
    Ks: Tensor  # [B, C, 3, 3]
    width: int
    height: int

    def __post_init__(self):
        assert self.viewmats.dim() == 4 and self.viewmats.shape[-2:] == (4, 4), self.viewmats.shape
        assert self.Ks.shape == self.viewmats.shape[:2] + (3, 3), (self.Ks.shape, self.viewmats.shape)
        assert int(self.width) > 0 and int(self.height) > 0, (self.width, self.height)

    @property
    def batch_size(self) -> int:
        return self.viewmats.shape[0]

    @property
    def num_cameras(self) -> int:
        return self.viewmats.shape[1]


@dataclass
class RenderOutput:
    """What every renderer returns.

    For a dense render the pixel axes are ``[H, W]``; for sampled pixels they are ``[P]``:

    Attributes:
        depth:    [B, C, H, W] or [B, C, P] expected camera-space depth, normalised by alpha
                  (gsplat 'ED'); 0 where nothing was hit. (``RenderOccRenderer``: RenderOcc's
                  unnormalised depth, documented there.)
        features: [B, C, H, W, K] or [B, C, P, K] alpha-composited features (not normalised).
        alpha:    [B, C, H, W] or [B, C, P] accumulated opacity in [0, 1].
        intersections: number of Gaussian-pixel (or sample-pixel) pairs composited, if known.
        primitives: number of Gaussians per sample the render used (after the renderer's opacity
            pruning, ``BaseSplatRenderer.prepare``); None for renderers without Gaussians.
        extras: further per-ray (or per-ray and per-sample) quantities a renderer provides by
            name, documented by that renderer (e.g. ``RenderOccRenderer``: the transmittance after
            each ray's last sample, the sample weights for a distortion loss); empty by default.
    """

    depth: Tensor
    features: Tensor
    alpha: Tensor
    intersections: Optional[int] = None
    primitives: Optional[int] = None
    extras: Dict[str, Tensor] = field(default_factory=dict)


@dataclass
class NetworkOutputs:
    """What the network predicts for a batch; the supervision modules read it.

    Attributes:
        field: the predicted scene, a ``splattingocc.fields.SceneField`` (B samples).
        depth_probs: [B, N, D, Hf, Wf] the lift's depth distribution per feature cell of the N
            input cameras (None for a lift without one).
        depth_bins: (d_min, d_max, step) metres of the D bins of ``depth_probs``
            (``geometry.depth_bin_index``).
        lift_logits: [B, N, K, Hf, Wf] the lift's per-cell class logits (None unless the lift
            predicts them).
    """

    field: Any
    depth_probs: Optional[Tensor] = None
    depth_bins: Optional[Tuple[float, float, float]] = None
    lift_logits: Optional[Tensor] = None


__all__ = ['Gaussians', 'DensityGrid', 'Cameras', 'RenderOutput', 'NetworkOutputs', 'replace']
