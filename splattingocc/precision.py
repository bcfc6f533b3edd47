"""Geometry that must stay in float32 under mixed precision (``--amp``).

``torch.autocast`` decides an operation's precision by the operation, not by its inputs: under
``--amp`` (float16 autocast on CUDA) every ``@`` / ``matmul`` runs in float16 even when all its
inputs are float32. For the Gaussian geometry that is wrong: a 3D covariance ``R diag(s^2) R^T``
with scales from 1 cm to metres spans more than float16's 11-bit significand, the EWA projection
``J Sigma J^T`` multiplies focal lengths (~1000 px) by depths, and the voxelizer's precision
matrices ``R diag(1/s^2) R^T`` overflow float16 (max 65504) for scales below 4 mm.

:func:`float32_math` runs a function with autocast off (on every device type where it is on) and
its half-precision tensor arguments converted to float32, so its products and its outputs are
float32. Outside autocast and with float32 / float64 inputs it changes nothing.
"""
from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ['float32_math', 'HALF_DTYPES']

HALF_DTYPES = (torch.float16, torch.bfloat16)
_DEVICE_TYPES = ('cuda', 'cpu', 'xpu', 'mps')


def _autocast_device_types() -> list:
    """The device types on which autocast is on in this thread."""
    on = []
    for device_type in _DEVICE_TYPES:
        try:
            if torch.is_autocast_enabled(device_type):
                on.append(device_type)
        except (RuntimeError, TypeError, ValueError):  # a device type this build does not know
            continue
    return on


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.dtype in HALF_DTYPES:
        return value.float()
    return value


def float32_math(fn):
    """Decorator: call ``fn`` with autocast disabled and float16 / bfloat16 tensor arguments
    (positional or keyword, not nested) converted to float32 (differentiably)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(_to_float32(a) for a in args)
        kwargs = {k: _to_float32(v) for k, v in kwargs.items()}
        device_types = _autocast_device_types()
        if not device_types:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device_type in device_types:
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            return fn(*args, **kwargs)

    return wrapper
