"""Wall-clock time spent rendering in a training step, forward and backward.

The forward is timed directly. The backward runs later, inside ``loss.backward()``: identity
autograd marks on the renderer's outputs and on its differentiable inputs record when gradients
reach the outputs (the render's backward starts) and when they have passed through to the inputs
(it ends). The model logs ``time_render`` = this step's forward + the previous step's backward
(the backward of the current step has not run when the losses are logged), so that the sum over a
run misses only the last backward.

When it runs (``mode``): a CUDA clock has to synchronise the device at every mark (about ten
times per training step, some inside the backward, where it stalls DDP's overlap of gradient
communication with computation), so by default (``'auto'``) the clock runs only where that costs
nothing, on CPU tensors; on CUDA it does nothing (no marks, no synchronisation, no ``time_render``
log value) unless asked for with ``mode=True`` (config: ``model.supervision[i].time_render=True``
of the ray supervision, e.g. for a rendering-share measurement). ``mode=False``: never.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional, Union

import torch
from torch import Tensor


class _Mark(torch.autograd.Function):
    """Identity; its backward tells the clock that a gradient passed (``kind``: 'out' | 'in')."""

    @staticmethod
    def forward(ctx, clock: 'RenderClock', kind: str, x: Tensor) -> Tensor:
        ctx.clock, ctx.kind = clock, kind
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        ctx.clock._backward_mark(ctx.kind, grad.device)
        return None, None, grad


def _now(device: Optional[torch.device] = None) -> float:
    if device is not None and device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter()


class RenderClock:
    """Times one render per training step (see the module docstring).

    Use: ``scene = clock.start(scene, device)``, render, ``out = clock.stop(out, device)``; then
    ``clock.seconds()`` is this forward plus the last completed backward (None where the clock
    does not run on ``device``).

    Args:
        mode: ``'auto'`` (time renders on CPU devices only: there it needs no synchronisation),
            ``True`` (also on CUDA, synchronising the device at each mark) or ``False`` (never).
    """

    MODES = ('auto', True, False)

    def __init__(self, mode: Union[str, bool] = 'auto'):
        if mode not in self.MODES:
            raise ValueError(f"time_render must be 'auto', True or False, got {mode!r}")
        self.mode = mode
        self._active = False
        self._t0: Optional[float] = None
        self._forward = 0.0
        self._bwd_start: Optional[float] = None
        self._bwd_end: Optional[float] = None
        self._last_backward = 0.0

    def _backward_mark(self, kind: str, device: torch.device) -> None:
        t = _now(device)
        if kind == 'out':
            self._bwd_start = t if self._bwd_start is None else min(self._bwd_start, t)
        else:
            self._bwd_end = t if self._bwd_end is None else max(self._bwd_end, t)

    def _close_backward(self) -> None:
        if self._bwd_start is not None and self._bwd_end is not None:
            self._last_backward = max(0.0, self._bwd_end - self._bwd_start)
        else:
            self._last_backward = 0.0
        self._bwd_start = self._bwd_end = None

    def _mark_fields(self, obj, kind: str):
        """The dataclass ``obj`` with every tensor field that requires grad passed through a
        mark."""
        changes = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, Tensor) and v.requires_grad:
                changes[f.name] = _Mark.apply(self, kind, v)
        return dataclasses.replace(obj, **changes) if changes else obj

    def runs_on(self, device: Optional[torch.device]) -> bool:
        """Whether the clock times renders on ``device`` (``mode``; None = the CPU)."""
        if self.mode == 'auto':
            return device is None or torch.device(device).type == 'cpu'
        return bool(self.mode)

    def start(self, scene, device: Optional[torch.device] = None):
        """Begin timing a render of ``scene`` (Gaussians or DensityGrid); returns it marked (or
        unchanged where the clock does not run on ``device``)."""
        self._active = self.runs_on(device)
        if not self._active:
            return scene
        self._close_backward()  # the previous step's backward is complete by now
        self._t0 = _now(device)
        return self._mark_fields(scene, 'in') if torch.is_grad_enabled() else scene

    def stop(self, out, device: Optional[torch.device] = None):
        """End the forward timing; returns the render output (a RenderOutput) marked."""
        if not self._active:
            return out
        assert self._t0 is not None, 'RenderClock.stop() without start()'
        self._forward = _now(device) - self._t0
        self._t0 = None
        return self._mark_fields(out, 'out') if torch.is_grad_enabled() else out

    def seconds(self) -> Optional[float]:
        """This step's render forward + the previous step's render backward; None when the last
        render was not timed (``runs_on``)."""
        if not self._active:
            return None
        return self._forward + self._last_backward
