"""Resuming mmengine checkpoints under torch >= 2.6 (weights_only=True) with the allow-list.

The reference is an uninterrupted run: a run stopped after 4 iterations and resumed to 8 must give
the same losses and bit-identical parameters and optimizer state.
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import splattingocc.engine  # noqa: F401  (registers the allow-list)
from splattingocc.engine.checkpoint import _history_buffer_attribute, checkpoint_safe_globals
from toy_components import (REPO, TOY_CONFIG, TOY_CONFIG_EPOCH, Interrupt, StopAfter,
                            assert_same_state, losses_of, model_state, toy_runner)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """The reference: 8 iterations in one go (checkpoints at 4 and 8)."""
    work_dir = tmp_path_factory.mktemp('full')
    runner = toy_runner(TOY_CONFIG, work_dir)
    runner.train()
    return dict(runner=runner, work_dir=work_dir, state=model_state(runner),
                loss=losses_of(runner), loss_fit=losses_of(runner, 'train/loss_fit'))


def _interrupted_at_4(work_dir):
    runner = toy_runner(TOY_CONFIG, work_dir)
    runner.register_hook(StopAfter(4))
    with pytest.raises(Interrupt):
        runner.train()
    assert (work_dir / 'iter_4.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'iter_4.pth')


def test_resume_matches_uninterrupted_run(uninterrupted, tmp_path):
    _interrupted_at_4(tmp_path)
    resumed = toy_runner(TOY_CONFIG, tmp_path, '--resume')  # auto: from last_checkpoint
    resumed.train()
    assert resumed.iter == 8
    ref = uninterrupted['loss']
    got = losses_of(resumed)
    assert len(ref) == 8 and len(got) == 8
    # iterations 5..8 were computed by the resumed run; 1..4 came back with the message hub
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(losses_of(resumed, 'train/loss_fit'), uninterrupted['loss_fit'])
    assert_same_state(model_state(resumed), uninterrupted['state'])
    # optimizer moments and step counts too
    opt_a = uninterrupted['runner'].optim_wrapper.optimizer.state_dict()['state']
    opt_b = resumed.optim_wrapper.optimizer.state_dict()['state']
    for pid in opt_a:
        for k in opt_a[pid]:
            assert torch.equal(torch.as_tensor(opt_a[pid][k]), torch.as_tensor(opt_b[pid][k]))
    # the final checkpoints hold the same weights
    a = torch.load(uninterrupted['work_dir'] / 'iter_8.pth')
    b = torch.load(tmp_path / 'iter_8.pth')
    assert_same_state(a['state_dict'], b['state_dict'])


def test_resume_from_explicit_file(uninterrupted, tmp_path):
    """--resume PATH loads that file (here the uninterrupted run's iteration-4 checkpoint)."""
    resumed = toy_runner(TOY_CONFIG, tmp_path, '--resume',
                         str(uninterrupted['work_dir'] / 'iter_4.pth'))
    resumed.train()
    np.testing.assert_array_equal(losses_of(resumed), uninterrupted['loss'])
    assert_same_state(model_state(resumed), uninterrupted['state'])


def test_random_state_hook_is_what_makes_resume_exact(uninterrupted, tmp_path):
    """Control: the toy model draws random masks; without RandomStateHook a resume diverges."""
    _interrupted_at_4(tmp_path)
    resumed = toy_runner(TOY_CONFIG, tmp_path, '--resume',
                         options=['custom_hooks.1.type=TrainingSummaryHook'])
    assert not any(type(h).__name__ == 'RandomStateHook' for h in resumed.hooks)
    resumed.train()
    got, ref = losses_of(resumed), uninterrupted['loss']
    np.testing.assert_array_equal(got[:4], ref[:4])
    assert not np.array_equal(got[4:], ref[4:])


def test_epoch_schedule_resume(tmp_path):
    """The 12-epoch schedule (shortened to 3): resume from epoch 1 equals the full run."""
    full = toy_runner(TOY_CONFIG_EPOCH, tmp_path / 'full')
    full.train()
    assert sorted(p.name for p in (tmp_path / 'full').glob('*.pth')) == [
        'epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    resumed = toy_runner(TOY_CONFIG_EPOCH, tmp_path / 'resumed', '--resume',
                         str(tmp_path / 'full' / 'epoch_1.pth'))
    resumed.train()
    np.testing.assert_array_equal(losses_of(resumed), losses_of(full))
    assert_same_state(model_state(resumed), model_state(full))


def test_checkpoint_needs_nothing_beyond_the_allow_list(uninterrupted):
    """Globals a real checkpoint needs, listed by a process that never imported our allow-list."""
    path = uninterrupted['work_dir'] / 'iter_8.pth'
    code = ('import json, sys, torch; '
            'print(json.dumps(torch.serialization.get_unsafe_globals_in_checkpoint(sys.argv[1])))')
    out = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True,
                         check=True, cwd=str(REPO))
    needed = set(json.loads(out.stdout.strip().splitlines()[-1]))
    allowed = set()
    for entry in checkpoint_safe_globals():
        if isinstance(entry, tuple):
            allowed.add(entry[1])
        else:
            allowed.add(f'{entry.__module__}.{entry.__qualname__}')
    assert needed <= allowed, needed - allowed
    # the test exercises the interesting entries
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in needed
    assert 'builtins.getattr' in needed
    assert any(n.startswith('numpy') for n in needed)
    # and the default (weights_only=True) load works
    ckpt = torch.load(path)
    assert ckpt['meta']['iter'] == 8
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


def test_restricted_getattr_refuses_everything_but_history_buffer_statistics():
    assert _history_buffer_attribute(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for owner, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, 'update'), (os, 'system'),
                        (np, 'load')]:
        with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
            _history_buffer_attribute(owner, name)


def test_weights_only_load_still_refuses_arbitrary_code(tmp_path):
    """The allow-list does not open torch.load to other callables (e.g. os.system)."""

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))

    path = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
