"""IntervalCheckpointHook: checkpoints between the epoch checkpoints of the real-data schedule, so
a job killed without warning loses ``interval`` iterations, not an epoch (issue 25, defect 4).

Toy epoch schedule (tests/engine/toy_config_epoch.py: 3 epochs x 4 batches, the real
schedule_12e.py shortened), the hook at interval 3: saves at 3, 6, 9 between the epoch
checkpoints at 4, 8, 12. A run killed (an exception) during iteration 7 resumes from iter_6.pth
and ends equal to an uninterrupted run; superseded interval checkpoints are deleted."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

import splattingocc.engine  # noqa: F401
from splattingocc.engine.interval_checkpoint import IntervalCheckpointHook
from splattingocc.paths import REPO_ROOT
from toy_components import (TOY_CONFIG, TOY_CONFIG_EPOCH, assert_same_state, losses_of,
                            model_state, toy_runner)


class _Killed(Exception):
    pass


class _KillAt(Hook):
    """Raise in iteration ``n`` (1-based), after the model step: the process dies there."""

    priority = 'HIGHEST'

    def __init__(self, n):
        self.n = n

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.n:
            raise _Killed(self.n)


class _Saves(Hook):
    def __init__(self):
        self.iters, self.files = [], []

    def before_save_checkpoint(self, runner, checkpoint):
        self.iters.append(checkpoint['meta']['iter'])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.files.append(sorted(p.name for p in runner._socc_dir.glob('iter_*.pth')))


def _runner(work_dir, *extra, interval=3, keep=2, config=TOY_CONFIG_EPOCH):
    runner = toy_runner(config, work_dir, *extra,
                        options=['train_cfg.type=PreemptibleEpochBasedTrainLoop'])
    runner.register_hook(IntervalCheckpointHook(interval=interval, max_keep_ckpts=keep))
    saves = _Saves()
    runner.register_hook(saves, priority='LOWEST')
    runner._socc_dir = work_dir
    return runner, saves


def test_interval_checkpoints_between_epochs_and_exact_resume_after_a_kill(tmp_path_factory):
    ref_dir = tmp_path_factory.mktemp('ref')
    reference, saves = _runner(ref_dir)
    reference.train()
    assert reference.iter == 12
    assert saves.iters == [3, 4, 6, 8, 9, 12]  # interval checkpoints between epoch ones
    # the interval checkpoints on disk after each iteration: each epoch checkpoint (written at
    # the epoch's end, after its last iteration) deletes those before it
    assert saves.files == [[], [], ['iter_3.pth'], ['iter_3.pth'], [], ['iter_6.pth'],
                           ['iter_6.pth'], ['iter_6.pth'], ['iter_9.pth'], ['iter_9.pth'],
                           ['iter_9.pth'], ['iter_9.pth']]
    names = sorted(p.name for p in ref_dir.glob('*.pth'))
    assert names == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'], names

    work = tmp_path_factory.mktemp('killed')
    killed, _ = _runner(work)
    killed.register_hook(_KillAt(7))
    with pytest.raises(_Killed):
        killed.train()
    assert (work / 'last_checkpoint').read_text().strip() == str(work / 'iter_6.pth')
    ckpt = torch.load(work / 'iter_6.pth')
    assert ckpt['meta']['iter'] == 6 and ckpt['meta']['epoch'] == 1
    resumed, saves = _runner(work, '--resume')
    resumed.train()
    assert resumed.iter == 12 and saves.iters == [8, 9, 12]
    np.testing.assert_array_equal(losses_of(resumed), losses_of(reference))
    assert_same_state(model_state(resumed), model_state(reference))
    names = sorted(p.name for p in work.glob('*.pth'))
    # iter_6.pth of the killed run is deleted by the resumed run's epoch checkpoint
    assert names == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'], names


def test_only_the_latest_are_kept(tmp_path):
    runner, saves = _runner(tmp_path, interval=1, keep=2)
    runner.register_hook(_KillAt(4))  # the last batch of epoch 1: before its epoch checkpoint
    with pytest.raises(_Killed):
        runner.train()
    assert saves.iters == [1, 2, 3]
    assert saves.files == [['iter_1.pth'], ['iter_1.pth', 'iter_2.pth'],
                           ['iter_2.pth', 'iter_3.pth']]


def test_iteration_based_checkpoints_make_it_a_no_op(tmp_path):
    runner = toy_runner(TOY_CONFIG, tmp_path)
    hook = IntervalCheckpointHook(interval=1)
    runner.register_hook(hook)
    saves = _Saves()
    runner.register_hook(saves)
    runner._socc_dir = tmp_path
    runner.train()
    assert not hook._active and saves.iters == [4, 8]  # the toy config's own cadence
    with pytest.raises(ValueError, match='interval'):
        IntervalCheckpointHook(interval=0)


def test_real_schedule_checkpoints_every_500_iterations_and_keeps_two():
    cfg = Config.fromfile(str(REPO_ROOT / 'configs/splattingocc/splattingocc-Nframe.py'))
    hooks = [h for h in cfg.custom_hooks if h['type'] == 'IntervalCheckpointHook']
    assert hooks == [dict(type='IntervalCheckpointHook', interval=500, max_keep_ckpts=2)]
    assert cfg.train_cfg.type == 'PreemptibleEpochBasedTrainLoop'
    assert cfg.default_hooks.checkpoint.by_epoch and cfg.default_hooks.checkpoint.interval == 1
    assert cfg.model.supervision[0].renderer.backend == 'gsplat'
