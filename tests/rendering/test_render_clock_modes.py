"""The render clock does not synchronise a CUDA device unless timing is asked for (issue 25,
defect 7): ``time_render='auto'`` times renders on CPUs only, True everywhere, False never.

CUDA is stood in for by the ``device`` argument (the clock synchronises the device it is given)
and a counting ``torch.cuda.synchronize``; the tensors stay on the CPU."""
import pytest
import torch

import splattingocc.models  # noqa: F401  (registers the supervision modules)
from small_model import random_batch, ray_supervision, small_model_cfg
from splattingocc.registry import MODELS
from splattingocc.rendering.render_clock import RenderClock
from splattingocc.structures import Gaussians, RenderOutput

CUDA = torch.device('cuda')


@pytest.fixture
def syncs(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: calls.append(device))
    return calls


def _scene():
    n = 4
    return Gaussians(means=torch.randn(1, n, 3, requires_grad=True), quats=torch.randn(1, n, 4),
                     scales=torch.rand(1, n, 3), opacities=torch.rand(1, n, requires_grad=True),
                     features=torch.randn(1, n, 2))


def _render(scene):
    return RenderOutput(depth=scene.means[..., 2] * 2.0,
                        features=scene.opacities[..., None].expand(1, 4, 2) * 1.0,
                        alpha=torch.ones(1, 4), intersections=4)


def test_auto_does_nothing_on_cuda(syncs):
    clock = RenderClock('auto')
    scene = _scene()
    marked = clock.start(scene, CUDA)
    assert marked is scene  # no autograd marks: nothing runs inside the backward either
    out = _render(marked)
    assert clock.stop(out, CUDA) is out
    out.depth.sum().backward()
    assert clock.seconds() is None and syncs == []


def test_enabled_clock_synchronises_cuda_and_auto_times_cpu(syncs):
    clock = RenderClock(True)
    out = clock.stop(_render(clock.start(_scene(), CUDA)), CUDA)
    assert len(syncs) == 2 and clock.seconds() is not None and clock.seconds() >= 0
    out.depth.sum().backward()
    syncs.clear()
    cpu_clock = RenderClock('auto')
    scene = _scene()
    assert cpu_clock.start(scene, torch.device('cpu')) is not scene  # marked: timed
    assert syncs == []
    never = RenderClock(False)
    scene = _scene()
    assert never.start(scene, torch.device('cpu')) is scene and never.seconds() is None
    with pytest.raises(ValueError, match='time_render'):
        RenderClock('sometimes')


def test_ray_supervision_without_timing_logs_no_time_render_and_the_same_losses():
    losses = {}
    for mode in ('auto', False):
        torch.manual_seed(0)
        sup = ray_supervision()
        sup['time_render'] = mode
        model = MODELS.build(small_model_cfg(supervision=[sup]))
        model.train()
        torch.manual_seed(1)
        losses[mode] = model(mode='loss', **random_batch(B=1))
    assert 'time_render' in losses['auto'] and 'time_render' not in losses[False]
    assert set(losses['auto']) - {'time_render'} == set(losses[False])
    for key, value in losses[False].items():
        assert torch.equal(value, losses['auto'][key]), key
