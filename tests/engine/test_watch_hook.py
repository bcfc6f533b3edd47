"""WatchHook's parts without training: the one config key, the message without TensorBoard, the
render share, the TensorBoard backend (tag groups, resumed runs), the picture pipeline, and that
drawing keeps the random streams and the modules' modes."""
import random
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

import splattingocc.engine  # noqa: F401  (registers the hooks)
from splattingocc.cli import train as train_tool
from splattingocc.engine.launch import load_tool_config, run_main
from splattingocc.engine.watch import (TENSORBOARD_INSTALL, TensorboardBackend, WatchHook,
                                       eval_mode, random_state_kept, render_share)
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import HOOKS
from splattingocc.visualization.training_pictures import picture_pipeline

TINY = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={'scalars': 0, 'images': 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize('options, on', [([], False),
                                         (['default_hooks.watch.tensorboard=True'], True)])
def test_one_key_turns_tensorboard_on(options, on):
    """The hook the Runner builds from the config follows the one --cfg-options key, parsed as
    tools/train.py parses it."""
    args = train_tool.parse_args([TINY] + (['--cfg-options', *options] if options else []))
    cfg = load_tool_config(args.config, args.cfg_options)
    hook = HOOKS.build(cfg.default_hooks.watch)
    assert isinstance(hook, WatchHook) and hook.tensorboard is on
    assert hook.picture_interval == 100  # pictures on by default, with or without TensorBoard


def test_without_tensorboard_the_run_stops_with_one_line(monkeypatch, capsys, tmp_path):
    for name in ('tensorboard', 'torch.utils.tensorboard'):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as when not installed
    code = run_main(train_tool.main, [TINY, '--work-dir', str(tmp_path), '--cfg-options',
                                      'default_hooks.watch.tensorboard=True'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith('error: default_hooks.watch.tensorboard=True '
                                               'needs the tensorboard package'), err
    assert TENSORBOARD_INSTALL in err[0]
    assert not list(tmp_path.rglob('events.out.tfevents*'))


def test_render_share_is_the_ratio_of_window_means():
    hub = MessageHub.get_instance('watch_render_share_test')
    assert render_share(hub, 10) is None  # nothing logged (e.g. a 3D-only config)
    times = [1.0, 2.0, 4.0, 1.0]
    renders = [0.5, 0.5, 1.0, 0.25]
    for t, r in zip(times, renders):
        hub.update_scalar('train/time', t)
        hub.update_scalar('train/time_render', r)
    assert render_share(hub, 2) == pytest.approx((1.0 + 0.25) / (4.0 + 1.0))
    assert render_share(hub, 'global') == pytest.approx(sum(renders) / sum(times))


def test_backend_groups_tags_and_hides_what_a_resume_redoes(tmp_path):
    first = TensorboardBackend(str(tmp_path))
    for step in range(1, 11):
        first.add_scalars({'loss': float(step), 'lr': 0.1}, step=step)
    first.tag_prefix = 'val/'
    first.add_scalars({'mIoU': 5.0, 'occ/x': 1.0}, step=10)
    first.close()
    # a run resumed from the checkpoint of iteration 6 logs iterations 7.. again
    second = TensorboardBackend(str(tmp_path), purge_step=7)
    for step in range(7, 9):
        second.add_scalars({'loss': 100.0 + step}, step=step)
    second.close()
    acc = _events(tmp_path)
    assert set(acc.Tags()['scalars']) == {'train/loss', 'train/lr', 'val/mIoU', 'occ/x'}
    loss = [(e.step, e.value) for e in acc.Scalars('train/loss')]
    assert loss == [(s, float(s)) for s in range(1, 7)] + [(7, 107.0), (8, 108.0)]


def test_picture_pipeline_loads_the_current_frames_labels():
    cams = ['CAM_FRONT', 'CAM_BACK']
    val = [dict(type='LoadMultiViewImages', camera_names=cams),
           dict(type='ResizeCropImages', final_size=(64, 36)),
           dict(type='PackOccInputs')]
    out, has = picture_pipeline(val, cams)
    assert not has and [t['type'] for t in out] == [
        'LoadMultiViewImages', 'LoadLabels2D', 'ResizeCropImages', 'PackOccInputs']
    assert out[1] == dict(type='LoadLabels2D', camera_names=cams, load_adjacent=False)
    assert len(val) == 3  # the config's list is not changed
    out, has = picture_pipeline(out, cams)  # e.g. the oracle-depth config's val pipeline
    assert has and len(out) == 4
    with pytest.raises(ValueError, match='no LoadMultiViewImages'):
        picture_pipeline(val[1:], cams)


def test_drawing_keeps_random_streams_and_module_modes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5),
                                torch.nn.BatchNorm1d(2))
    model.train()
    model[2].eval()  # e.g. a frozen normalisation layer
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with random_state_kept(), eval_mode(model):
        assert not any(m.training for m in model.modules())
        random.random(), np.random.rand(3), torch.rand(5), model(torch.randn(4, 2))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert [m.training for m in model.modules()] == [True, True, True, False]
