"""Priors on the field's elements, without labels (``loss_opacity``).

* ``OpacitySparsityLoss``: ``loss_weight * mean(opacity)``, an L1 prior towards empty space for
  the regions no ray labels (``functional`` module docstring);
* ``OpacityEntropyLoss``: ``loss_weight * opacity_entropy(opacities)``, pushing opacities to 0
  or 1.

Both need a field with per-element opacities (``SceneField.opacities``: Gaussian fields).
"""
from __future__ import annotations

from typing import Dict

from torch import Tensor

from ..registry import MODELS
from ..structures import NetworkOutputs
from .base import Supervision
from .functional import opacity_entropy


@MODELS.register_module()
class OpacitySparsityLoss(Supervision):
    """``loss_opacity = loss_weight * mean(opacities)`` (an L1 prior towards empty space)."""

    def __init__(self, loss_weight: float = 0.1):
        super().__init__()
        self.loss_weight = loss_weight

    def score(self, opacities: Tensor) -> Tensor:
        return self.loss_weight * opacities.mean()

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        return dict(loss_opacity=self.score(outputs.field.opacities()))


@MODELS.register_module()
class OpacityEntropyLoss(Supervision):
    """``loss_opacity = loss_weight * opacity_entropy(opacities)``."""

    def __init__(self, loss_weight: float = 0.01):
        super().__init__()
        self.loss_weight = loss_weight

    def score(self, opacities: Tensor) -> Tensor:
        return self.loss_weight * opacity_entropy(opacities)

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        return dict(loss_opacity=self.score(outputs.field.opacities()))


__all__ = ['OpacitySparsityLoss', 'OpacityEntropyLoss']
