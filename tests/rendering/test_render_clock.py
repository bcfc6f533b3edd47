"""RenderClock: the render forward is timed directly and the render backward between the marks
on its outputs and inputs; time spent outside the render is not counted."""
import time

import torch

from splattingocc.rendering.render_clock import RenderClock
from splattingocc.structures import Gaussians, RenderOutput


class _SlowSquare(torch.autograd.Function):
    """x**2 whose forward and backward sleep for known times."""
    FWD, BWD = 0.05, 0.15

    @staticmethod
    def forward(ctx, x):
        time.sleep(_SlowSquare.FWD)
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        time.sleep(_SlowSquare.BWD)
        (x,) = ctx.saved_tensors
        return 2 * x * g


def _scene():
    n = 5
    return Gaussians(means=torch.randn(1, n, 3, requires_grad=True),
                     quats=torch.randn(1, n, 4), scales=torch.rand(1, n, 3),
                     opacities=torch.rand(1, n, requires_grad=True),
                     features=torch.randn(1, n, 2))


def _render(scene):
    d = _SlowSquare.apply(scene.means[..., 2])  # [1, n] "depth"
    return RenderOutput(depth=d, features=scene.opacities[..., None].expand(1, 5, 2) * 1.0,
                        alpha=torch.ones(1, 5), intersections=5)


def test_forward_and_previous_backward_are_counted_outside_time_is_not():
    clock = RenderClock()
    scene = _scene()
    out = clock.stop(_render(clock.start(scene)))
    assert _SlowSquare.FWD <= clock.seconds() < _SlowSquare.FWD + 0.1  # no backward yet
    loss = out.depth.sum() + out.features.sum()
    t0 = time.perf_counter()
    time.sleep(0.2)  # loss-side work before the render's backward: not render time
    loss.backward()
    elapsed = time.perf_counter() - t0
    assert scene.means.grad is not None and scene.opacities.grad is not None
    # next step: its forward plus the previous step's backward (the slow 0.15 s)
    clock.stop(_render(clock.start(_scene())))
    s = clock.seconds()
    assert _SlowSquare.FWD + _SlowSquare.BWD <= s < _SlowSquare.FWD + _SlowSquare.BWD + 0.1, s
    assert s < elapsed  # the 0.2 s outside the render is not in it


def test_no_grad_render_is_not_marked_and_counts_no_backward():
    clock = RenderClock()
    with torch.no_grad():
        scene = _scene()
        marked = clock.start(scene)
        assert marked is scene
        out = clock.stop(_render(marked))
    assert not out.depth.requires_grad
    clock.stop(_render(clock.start(_scene())))
    assert _SlowSquare.FWD <= clock.seconds() < _SlowSquare.FWD + 0.1
