"""The interface of a supervision module and the helpers they share.

A model is trained against the list ``model.supervision`` of its config. Each entry is a module
registered in ``MODELS`` whose ``forward(outputs, batch)`` takes the network's predictions
(``structures.NetworkOutputs``: the scene field and the lift's intermediate outputs) and the
data batch, and returns a dict of named terms. Keys that contain ``'loss'`` are summed into the
training loss by mmengine; other keys are detached statistics that are logged. A supervision
module owns everything it needs to compute its terms (samplers, a renderer, loss functions), so
adding one never changes the network.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..structures import NetworkOutputs


class Supervision(nn.Module):
    """Base class of the supervision modules (module docstring)."""

    def forward(self, outputs: NetworkOutputs, batch: dict) -> Dict[str, Tensor]:
        raise NotImplementedError


def require_keys(owner: str, batch: dict, keys: Sequence[str], hint: str) -> None:
    """A clear error when the batch lacks keys a supervision module needs."""
    for key in keys:
        if key not in batch:
            raise KeyError(f'{owner} needs {key!r} in the batch (keys: {sorted(batch)}); {hint}')


def merge_terms(out: Dict[str, Tensor], terms: Dict[str, Tensor], owner: str) -> None:
    """Add ``terms`` to ``out``; two terms of the same name are a configuration error."""
    for key, value in terms.items():
        if key in out:
            raise ValueError(f'{owner}: two supervision terms are both named {key!r}; each loss '
                             'term may appear once in model.supervision')
        out[key] = value


def class_weight_setting(owner: str, class_weight: Union[None, str, Sequence[float]],
                         ) -> Tuple[Optional[str], Optional[Tensor]]:
    """(mode, fixed weights) of a ``class_weight`` setting: None, 'batch' or a list of numbers."""
    if isinstance(class_weight, str):
        if class_weight != 'batch':
            raise ValueError(f"{owner}.class_weight must be None, 'batch' or a list, got "
                             f'{class_weight!r}')
        return class_weight, None
    if class_weight is None:
        return None, None
    return None, torch.tensor([float(c) for c in class_weight])


__all__ = ['Supervision', 'require_keys', 'merge_terms', 'class_weight_setting']
