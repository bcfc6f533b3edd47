"""PreemptionHook and PreemptibleEpochBasedTrainLoop: a preempted-then-resumed run equals an
uninterrupted one (losses, learning rates, batches, final weights), on the toy model/configs.

The toy model draws random numbers in its forward pass, so equality also needs the RNG states
(RandomStateHook). The reference is always an uninterrupted run in the same process.
"""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook

import splattingocc.engine  # noqa: F401
from splattingocc.engine.preemption import (FLAG_ENV, SAVED_NAME, PreemptibleEpochBasedTrainLoop,
                                            PreemptionHook)
from toy_components import (REPO, TOY_CONFIG, TOY_CONFIG_EPOCH, assert_same_state, dist_env,
                            losses_of, model_state, toy_runner)


class _Recorder(Hook):
    """Per iteration: the sample indices of the batch and the learning rate applied."""

    priority = 'HIGHEST'

    def __init__(self):
        self.batches, self.lrs = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches.append([int(i) for i in data_batch['meta']['sample_idx']])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


class _RequestAt(Hook):
    """At the end of iteration ``n`` (1-based): SIGUSR1 to this process, or create a flag file."""

    priority = 'LOW'  # after the model step, before PreemptionHook (LOWEST)

    def __init__(self, n, flag_file=None):
        self.n = n
        self.flag_file = flag_file

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 != self.n:
            return
        if self.flag_file:
            open(self.flag_file, 'w').close()
        else:
            os.kill(os.getpid(), signal.SIGUSR1)


class _SaveCounter(Hook):
    def __init__(self):
        self.saves = []

    def before_save_checkpoint(self, runner, checkpoint):
        self.saves.append(checkpoint['meta']['iter'])


def _runner(config, work_dir, *extra, options=()):
    runner = toy_runner(config, work_dir, *extra, options=options)
    if not any(isinstance(h, PreemptionHook) for h in runner.hooks):
        runner.register_hook(PreemptionHook(), priority='LOWEST')
    recorder = _Recorder()
    runner.register_hook(recorder)
    return runner, recorder


def _preempt_hook(runner):
    return next(h for h in runner.hooks if isinstance(h, PreemptionHook))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """Uninterrupted iteration-based toy run: 8 iterations, checkpoints at 4 and 8."""
    work_dir = tmp_path_factory.mktemp('full')
    runner, rec = _runner(TOY_CONFIG, work_dir)
    runner.train()
    assert runner.iter == 8 and not (work_dir / SAVED_NAME).exists()
    return dict(state=model_state(runner), loss=losses_of(runner), lr=losses_of(runner, 'train/lr'),
                batches=rec.batches, lrs=rec.lrs)


def _check_resume_equals_reference(work_dir, stop, reference):
    resumed, rec = _runner(TOY_CONFIG, work_dir, '--resume')
    resumed.train()
    assert resumed.iter == 8
    # same data order after the resume (mmengine skipped the `stop` batches already trained on)
    assert rec.batches == reference['batches'][stop:]
    # same learning rate schedule position
    np.testing.assert_array_equal(rec.lrs, reference['lrs'][stop:])
    np.testing.assert_array_equal(losses_of(resumed, 'train/lr'), reference['lr'])
    # same losses per iteration (1..stop restored with the message hub) and same final weights
    np.testing.assert_array_equal(losses_of(resumed), reference['loss'])
    assert_same_state(model_state(resumed), reference['state'])
    assert (work_dir / 'iter_8.pth').is_file()


def test_signal_checkpoints_stops_and_resume_is_exact(reference, tmp_path):
    runner, rec = _runner(TOY_CONFIG, tmp_path)
    runner.register_hook(_RequestAt(3))
    runner.train()  # returns normally: the loop was stopped, nothing raised
    assert runner.iter == 3
    assert _preempt_hook(runner).preempted_at == 3
    assert (tmp_path / SAVED_NAME).read_text() == '3\n'
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(tmp_path / 'iter_3.pth')
    ckpt = torch.load(tmp_path / 'iter_3.pth')
    assert ckpt['meta']['iter'] == 3 and ckpt['meta']['preempted']['iter'] == 3
    assert rec.batches == reference['batches'][:3]
    # the handler is removed again after training
    assert signal.getsignal(signal.SIGUSR1) != _preempt_hook(runner)._on_signal
    _check_resume_equals_reference(tmp_path, 3, reference)


def test_flag_file_request(reference, tmp_path, monkeypatch):
    flag = tmp_path / 'flag'
    monkeypatch.setenv(FLAG_ENV, str(flag))
    runner, _ = _runner(TOY_CONFIG, tmp_path)
    runner.register_hook(_RequestAt(5, flag_file=str(flag)))
    runner.train()
    assert runner.iter == 5 and (tmp_path / SAVED_NAME).read_text() == '5\n'
    # iteration checkpoints go through the checkpoint hook: pointer and max_keep_ckpts apply
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_4.pth', 'iter_5.pth']
    flag.unlink()  # the batch script removes the request before requeueing
    _check_resume_equals_reference(tmp_path, 5, reference)


def test_request_at_a_checkpoint_iteration_saves_once(tmp_path):
    runner, _ = _runner(TOY_CONFIG, tmp_path)
    counter = _SaveCounter()
    runner.register_hook(counter)
    runner.register_hook(_RequestAt(4))
    runner.train()
    assert runner.iter == 4 and counter.saves == [4]
    assert (tmp_path / SAVED_NAME).read_text() == '4\n'


def test_request_at_the_last_iteration_just_finishes(tmp_path):
    runner, _ = _runner(TOY_CONFIG, tmp_path)
    runner.register_hook(_RequestAt(8))
    runner.train()
    assert runner.iter == 8
    assert not (tmp_path / SAVED_NAME).exists()  # nothing to requeue


# ------------------------------------------------------------------------------------------
# epoch-based loops (the real-data schedules)
# ------------------------------------------------------------------------------------------
PREEMPTIBLE = ['train_cfg.type=PreemptibleEpochBasedTrainLoop']


@pytest.fixture(scope='module')
def epoch_reference(tmp_path_factory):
    """mmengine's plain EpochBasedTrainLoop: 3 epochs x 4 batches, a checkpoint per epoch."""
    work_dir = tmp_path_factory.mktemp('epoch_full')
    runner, rec = _runner(TOY_CONFIG_EPOCH, work_dir,
                          options=['train_cfg.type=EpochBasedTrainLoop'])
    assert type(runner.train_loop).__name__ == 'EpochBasedTrainLoop'
    runner.train()
    assert runner.iter == 12
    return dict(state=model_state(runner), loss=losses_of(runner), lr=losses_of(runner, 'train/lr'),
                batches=rec.batches, lrs=rec.lrs)


def test_preemptible_epoch_loop_equals_plain_loop_without_preemption(epoch_reference, tmp_path):
    runner, rec = _runner(TOY_CONFIG_EPOCH, tmp_path, options=PREEMPTIBLE)
    assert isinstance(runner.train_loop, PreemptibleEpochBasedTrainLoop)
    runner.train()
    assert rec.batches == epoch_reference['batches']
    np.testing.assert_array_equal(losses_of(runner), epoch_reference['loss'])
    assert_same_state(model_state(runner), epoch_reference['state'])


@pytest.mark.parametrize('stop', [6, 8])  # mid-epoch 2; the last batch of epoch 2
def test_epoch_loop_preempted_mid_epoch_resumes_exactly(epoch_reference, tmp_path, stop):
    runner, _ = _runner(TOY_CONFIG_EPOCH, tmp_path, options=PREEMPTIBLE)
    runner.register_hook(_RequestAt(stop))
    runner.train()
    assert runner.iter == stop and (tmp_path / SAVED_NAME).read_text() == f'{stop}\n'
    last = (tmp_path / 'last_checkpoint').read_text().strip()
    if stop == 6:  # no epoch checkpoint for the unfinished epoch 2: the extra iter_6.pth
        assert last == str(tmp_path / 'iter_6.pth') and runner.epoch == 1
        assert not (tmp_path / 'epoch_2.pth').exists()
    else:  # the epoch ended: its checkpoint (written after the preemption one) is the latest
        assert last == str(tmp_path / 'epoch_2.pth') and runner.epoch == 2

    resumed, rec = _runner(TOY_CONFIG_EPOCH, tmp_path, '--resume', options=PREEMPTIBLE)
    resumed.train()
    assert resumed.iter == 12 and resumed.epoch == 3
    assert rec.batches == epoch_reference['batches'][stop:]
    np.testing.assert_array_equal(rec.lrs, epoch_reference['lrs'][stop:])
    np.testing.assert_array_equal(losses_of(resumed), epoch_reference['loss'])
    assert_same_state(model_state(resumed), epoch_reference['state'])
    names = sorted(p.name for p in tmp_path.glob('*.pth'))
    # the extra mid-epoch checkpoint is removed once an epoch checkpoint supersedes it
    assert names == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'], names


def test_plain_epoch_loop_ignores_requests_with_a_warning(tmp_path):
    runner, _ = _runner(TOY_CONFIG_EPOCH, tmp_path,
                        options=['train_cfg.type=EpochBasedTrainLoop'])
    runner.register_hook(_RequestAt(6))
    runner.train()
    assert runner.iter == 12 and not (tmp_path / SAVED_NAME).exists()
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'cannot stop or resume in the middle of an epoch' in log


# ------------------------------------------------------------------------------------------
# two processes: the signal reaches one rank only, both stop after the same iteration
# ------------------------------------------------------------------------------------------
def _rank_pid(parent_pid: int, rank: int):
    """PID of the torchrun worker with RANK=rank below ``parent_pid`` (Linux /proc)."""
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/environ', 'rb') as f:
                env = dict(kv.split(b'=', 1) for kv in f.read().split(b'\0') if b'=' in kv)
            with open(f'/proc/{entry}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == parent_pid and env.get(b'RANK') == str(rank).encode():
            return int(entry)
    return None


def _preemption_hook_options() -> list:
    """cfg-options that put a PreemptionHook into the toy config (unless the runtime has one)."""
    from mmengine.config import Config
    hooks = Config.fromfile(TOY_CONFIG).custom_hooks
    if any(h['type'] == 'PreemptionHook' for h in hooks):
        return []
    summary = [i for i, h in enumerate(hooks) if h['type'] == 'TrainingSummaryHook']
    return [f'custom_hooks.{summary[0]}.type=PreemptionHook']  # replaces the summary line


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc to find rank 1')
def test_two_ranks_agree_when_only_rank_1_is_signalled(tmp_path):
    env = dist_env(OMP_NUM_THREADS='1')
    env.pop(FLAG_ENV, None)
    # long enough that the signal arrives mid-run; the logger prints every 2 iterations
    cmd = ['bash', str(REPO / 'tools' / 'dist_train.sh'), TOY_CONFIG, '2', '--work-dir',
           str(tmp_path), '--cfg-options', 'train_cfg.max_iters=100000',
           'train_cfg.val_interval=100000', 'param_scheduler.1.end=100000',
           'default_hooks.checkpoint.interval=100000', *_preemption_hook_options()]
    proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        target = None
        while time.time() < deadline and proc.poll() is None:
            logs = list(tmp_path.glob('*/*.log'))
            if logs and re.search(r'Iter\(train\) \[\s*\d+/100000\]', logs[0].read_text()):
                target = _rank_pid(proc.pid, 1)
                if target:
                    break
            time.sleep(0.2)
        assert target is not None, 'training did not start'
        os.kill(target, signal.SIGUSR1)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    stopped = int((tmp_path / SAVED_NAME).read_text())
    assert 0 < stopped < 100000
    ckpt = torch.load(tmp_path / f'iter_{stopped}.pth')
    assert ckpt['meta']['iter'] == stopped and len(ckpt['rng_states']) == 2
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert f'saved at iteration {stopped}; training stops' in log
    assert (tmp_path / 'last_checkpoint').read_text().strip().endswith(f'iter_{stopped}.pth')
