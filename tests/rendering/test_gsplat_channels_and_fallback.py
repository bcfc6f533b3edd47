"""gsplat's channel chunks without padding waste, and a loud, recorded fallback (issue 25, defects
1 and 7). CPU tests: the chunk plan against gsplat 1.5.3's own table of compiled channel widths
(read from the installed source), and the 'auto' backend's announcement of a fallback on a CUDA
device (the device is only named: the tensors never leave the CPU)."""
import ast
import inspect
import re

import pytest
import torch
from mmengine.logging import MessageHub

from splattingocc.rendering import gsplat_renderer
from splattingocc.rendering.gsplat_renderer import (GSPLAT_CHANNEL_WIDTHS, GsplatRenderer,
                                                    SplatRenderer, plan_channel_chunk)


def _installed_gsplat_widths():
    """The channel counts gsplat's ``rasterize_to_pixels`` runs without padding (its source)."""
    wrapper = pytest.importorskip('gsplat.cuda._wrapper')
    src = inspect.getsource(wrapper.rasterize_to_pixels)
    match = re.search(r'if channels not in \(([^)]*)\)', src)
    assert match, 'gsplat.rasterize_to_pixels no longer lists its channel widths: check the plan'
    return tuple(ast.literal_eval(f'({match.group(1)})'))


def _chunks(channels, chunk):
    full, rest = divmod(channels, chunk)
    return [chunk] * full + ([rest] if rest else [])


def test_channel_widths_are_gsplats():
    assert GSPLAT_CHANNEL_WIDTHS == _installed_gsplat_widths()


@pytest.mark.parametrize('features', list(range(1, 70)))
def test_every_plan_pads_no_more_than_gsplats_default(features):
    channels = features + 1  # + depth ('RGB+ED')
    chunk = plan_channel_chunk(channels)
    widths = _chunks(channels, chunk)
    assert sum(widths) == channels and 1 <= chunk <= 33
    padded = sum(gsplat_renderer._padded_width(w) for w in widths)
    default = sum(gsplat_renderer._padded_width(w) for w in _chunks(channels, 32))
    assert padded <= default
    assert len(widths) <= len(_chunks(channels, 32)) + 1


def test_semantic_classes_plus_depth_are_not_padded():
    # 18 Occ3D classes + depth = 19 channels: gsplat's default pads them to 32
    assert plan_channel_chunk(19) == 17 and _chunks(19, 17) == [17, 2]
    assert all(w in GSPLAT_CHANNEL_WIDTHS for w in _chunks(19, 17))
    assert gsplat_renderer._padded_width(19) == 32
    # 18 classes + positions (3) + squared norm (1) + depth = 23: 16 + 7 (padded to 8)
    assert _chunks(23, plan_channel_chunk(23)) == [16, 7]
    # widths gsplat has kernels for are one call
    for n in (1, 5, 9, 17, 32, 33):
        assert plan_channel_chunk(n) == n
    # more than 32 channels (e.g. 40 features + depth): chunks of 32 / 33, depth last
    assert plan_channel_chunk(41) in (32, 33)


def test_renderer_chunk_choice_and_override():
    assert GsplatRenderer().chunk_for(18) == 17
    assert GsplatRenderer(channel_chunk=32).chunk_for(18) == 32
    with pytest.raises(ValueError, match='channel_chunk'):
        GsplatRenderer(channel_chunk=0)


@pytest.mark.parametrize('rank', [0, 1])
def test_auto_fallback_on_cuda_warns_on_every_rank_and_is_recorded(monkeypatch, capsys, rank):
    monkeypatch.setattr(gsplat_renderer, '_rank', lambda: rank)
    monkeypatch.setitem(gsplat_renderer._GSPLAT_STATE, 'why', 'gsplat found no CUDA toolkit')
    hub = MessageHub.get_instance(f'socc-fallback-{rank}')
    monkeypatch.setattr(MessageHub, 'get_current_instance', classmethod(lambda cls: hub))
    warnings = []
    import mmengine.logging
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda msg, logger=None, level=None: warnings.append((msg, level)))
    r = SplatRenderer(backend='auto')
    r._announce('torch', torch.device('cuda', 0))
    err = capsys.readouterr().err
    if rank == 0:
        assert warnings and warnings[0][1] == 30 and 'falls back' in warnings[0][0]  # WARNING
        assert 'no CUDA toolkit' in warnings[0][0]
    else:
        assert f'[rank {rank}] WARNING' in err and 'falls back to the torch renderer' in err
        assert 'no CUDA toolkit' in err
    assert hub.get_info('splat_backend') == 'torch'
    assert 'no CUDA toolkit' in hub.get_info('splat_backend_reason')


def test_backend_is_recorded_on_cpu_too():
    from splattingocc.structures import Cameras, Gaussians
    hub = MessageHub.get_current_instance()
    n = 50
    g = torch.Generator().manual_seed(0)
    means = torch.stack([torch.rand(1, n, generator=g) - 0.5, torch.rand(1, n, generator=g) - 0.5,
                         2 + torch.rand(1, n, generator=g)], -1)
    gs = Gaussians(means, torch.randn(1, n, 4, generator=g), 0.1 * torch.ones(1, n, 3),
                   0.5 * torch.ones(1, n), torch.randn(1, n, 3, generator=g))
    K = torch.tensor([[[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]]])
    out = SplatRenderer(backend='auto')(gs, Cameras(torch.eye(4)[None, None], K, 16, 16))
    assert out.alpha.max() > 0
    assert hub.get_info('splat_backend') == 'torch'
    assert hub.get_info('splat_backend_reason') == 'Gaussians on cpu'
