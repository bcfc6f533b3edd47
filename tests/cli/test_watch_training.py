"""Watching a run (WatchHook, splattingocc/engine/watch.py) end to end: the tiny config trained
for 4 iterations on a tiny synthetic dataset with pictures every 2 iterations and TensorBoard
turned on by its one key. The PNGs and the TensorBoard event files (read with tensorboard's own
reader) hold what the issue asks for, and a run without the hook has the same losses, bit for
bit."""
import json
import uuid

import numpy as np
import pytest
from PIL import Image

import splattingocc.engine  # noqa: F401
from splattingocc.cli import train as train_tool
from splattingocc.engine.watch import PICTURE_TAG
from splattingocc.paths import REPO_ROOT

CONFIG = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')
ITERS = 4


def _train(work_dir, root, *extra):
    options = [
        f'experiment_name=watch_{uuid.uuid4().hex[:8]}',
        f'train_dataloader.dataset.data_root={root}/', f'val_dataloader.dataset.data_root={root}/',
        f'val_evaluator.ann_file={root}/nuscenes_infos_val.pkl',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        f'train_cfg.max_iters={ITERS}', f'param_scheduler.1.end={ITERS}',
        'default_hooks.logger.interval=2', 'default_hooks.checkpoint.interval=-1',
        'default_hooks.checkpoint.save_last=False', *extra]
    return train_tool.main([CONFIG, '--work-dir', str(work_dir), '--cfg-options', *options])


def _losses(runner):
    hub = runner.message_hub.log_scalars
    return {k: np.asarray(v.data[0]) for k, v in hub.items() if k.startswith('train/loss')}


@pytest.fixture(scope='module')
def watched(tmp_path_factory, tiny_dataset):
    work_dir = tmp_path_factory.mktemp('watched')
    runner = _train(work_dir, tiny_dataset, 'default_hooks.watch.tensorboard=True',
                    'default_hooks.watch.picture_interval=2', 'train_cfg.val_interval=4',
                    'val_dataloader.dataset.indices=1')
    return work_dir, runner


def test_pictures_are_pngs_in_the_work_dir(watched):
    work_dir, _ = watched
    pngs = sorted(p.name for p in (work_dir / 'pictures').iterdir())
    assert pngs == ['iter_000002.png', 'iter_000004.png']
    with Image.open(work_dir / 'pictures' / 'iter_000004.png') as im:
        rgb = np.asarray(im.convert('RGB'))
    assert rgb.shape[1] > 2 * rgb.shape[0] > 400  # the panels side by side
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50  # drawn, not a blank canvas


def test_tensorboard_holds_the_curves_metrics_and_pictures(watched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    work_dir, _ = watched
    assert list((work_dir / 'tensorboard').glob('events.out.tfevents*'))
    acc = EventAccumulator(str(work_dir / 'tensorboard'),
                           size_guidance={'scalars': 0, 'images': 0})
    acc.Reload()
    scalars = set(acc.Tags()['scalars'])
    # every scalar the logger writes to scalars.json is a train/ curve, every loss term among them
    (log,) = list(work_dir.glob('*/vis_data/scalars.json'))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    train_keys = {k for r in rows if 'loss' in r for k in r} - {'step', 'iter'}
    assert {'loss', 'loss_depth', 'loss_sem', 'lr', 'time', 'time_render',
            'render_share'} <= train_keys
    assert {f'train/{k}' for k in train_keys} <= scalars
    assert [e.step for e in acc.Scalars('train/loss')] == [2, 4]
    share = [e.value for e in acc.Scalars('train/render_share')]
    assert all(0.0 < s < 1.0 for s in share)
    # the evaluation at iteration 4
    assert {'val/mIoU', 'val/geometry_IoU'} <= scalars
    assert [e.step for e in acc.Scalars('val/mIoU')] == [4]
    # the pictures, the same pixels as the PNGs
    assert acc.Tags()['images'] == [PICTURE_TAG]
    images = acc.Images(PICTURE_TAG)
    assert [e.step for e in images] == [2, 4]
    with Image.open(work_dir / 'pictures' / 'iter_000004.png') as im:
        assert (images[-1].width, images[-1].height) == im.size


def test_the_hook_does_not_change_the_losses(watched, tiny_dataset, tmp_path):
    _, runner = watched
    plain = _train(tmp_path, tiny_dataset, 'default_hooks.watch.picture_interval=0',
                   'train_cfg.val_begin=1000000')
    a, b = _losses(runner), _losses(plain)
    assert set(a) == set(b) and len(a['train/loss']) == ITERS
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not (tmp_path / 'pictures').exists() and not (tmp_path / 'tensorboard').exists()
