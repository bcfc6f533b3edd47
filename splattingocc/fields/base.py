"""The interface every scene representation implements.

A head turns the encoded volume into a *scene field*: the predicted scene of each sample in its
world (current ego) frame. Everything downstream talks to the field through the methods below,
never to its tensors directly, so a new representation is one new class (and a head that makes
it) and no change to the network, the supervision modules or the read-out:

* ``renderable()``: what a renderer of this field takes (``Gaussians`` for the splatting
  renderers, a ``DensityGrid`` for the volume renderer), with the K class probabilities
  ``softmax(logits)`` as features;
* ``density_at(points)`` / ``fields_at(points)``: the field's *density* rho at world points (and
  its class scores there). rho is dimensionless: ``q = 1 - exp(-rho)`` is the occupancy
  probability that the point losses use (``-log(1 - q) = rho`` is the free-space penalty);
* ``to_grid(pc_range, grid_size)``: density and class scores at the centres of a voxel grid
  (the Occ3D grid for the read-out and 3D supervision, or a coarser one);
* ``occupancy(density)``: the quantity the read-out compares with its threshold, on one scale
  for every representation: the opacity of one Occ3D voxel, a probability in [0, 1]
  (``opacity_of_density``: ``1 - exp(-rho)`` of ``to_grid``'s dimensionless density, for a
  density grid the optical depth ``sigma * 0.4 m`` across the voxel). A threshold calibrated for
  one representation is therefore a number of the same meaning for another;
* ``opacities()``: per-element opacities, for priors on them (fields without elements raise).

Class scores are non-negative and of any scale: every consumer normalises them (``s / sum(s)``)
or takes their argmax.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor


def opacity_of_density(density: Tensor) -> Tensor:
    """``1 - exp(-density)`` (as ``-expm1(-density)``, exact for small densities), same shape and
    dtype: the opacity of a slab of optical depth ``density``."""
    return -torch.expm1(-density)


class SceneField:
    """Base class of the scene representations (module docstring).

    Attributes:
        box: (x0, y0, z0, x1, y1, z1), metres, world frame: where the field is defined (points
            outside it carry no prediction; supervision modules skip them).
        num_classes: K, the number of class logits per element.
    """

    box: Tuple[float, float, float, float, float, float]
    num_classes: int

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    def renderable(self, with_positions: bool = False):
        """The field as its renderer takes it, the features being class probabilities [.., K].

        Args:
            with_positions: append 4 feature channels after the K probabilities: each
                element's world position (3) and its squared norm (1), so that a render
                composites their expectations along each ray (``RayDistortionLoss``).
        """
        raise NotImplementedError(f'{type(self).__name__} cannot be rendered')

    def density_at(self, points: Tensor,  # [B, P, 3]
                   ) -> Tensor:
        """Density rho [B, P] at world points [B, P, 3] (module docstring)."""
        return self.fields_at(points)[0]

    def fields_at(self, points: Tensor,  # [B, P, 3]
                  ) -> Tuple[Tensor, Tensor]:
        """(density rho [B, P], class scores [B, P, K]) at world points [B, P, 3]."""
        raise NotImplementedError(f'{type(self).__name__} has no point queries')

    def to_grid(self, pc_range: Sequence[float], grid_size: Sequence[int],
                ) -> Tuple[Tensor, Tensor]:
        """(density [B, X, Y, Z], class scores [B, X, Y, Z, K]) at the voxel centres of the grid
        ``grid_size`` = (X, Y, Z) over ``pc_range`` = (x0, y0, z0, x1, y1, z1)."""
        raise NotImplementedError(f'{type(self).__name__} cannot be put on a grid')

    def occupancy(self, density: Tensor) -> Tensor:
        """What the read-out thresholds, from ``to_grid``'s density (same shape and dtype): the
        opacity of one voxel of the grid, in [0, 1] (module docstring). The default,
        ``1 - exp(-density)``, holds for every field whose ``to_grid`` density is the optical
        depth of a voxel; a field with another density overrides it."""
        return opacity_of_density(density)

    def opacities(self) -> Tensor:
        """[B, N] opacities of the field's N elements."""
        raise NotImplementedError(
            f'{type(self).__name__} has no per-element opacities: an opacity prior '
            '(OpacitySparsityLoss, OpacityEntropyLoss) needs a Gaussian field')

    def tensors(self) -> Dict[str, Tensor]:
        """The raw predicted tensors by name (the network's ``mode='tensor'`` output)."""
        raise NotImplementedError


__all__ = ['SceneField', 'opacity_of_density']
