"""PreemptionHook and SIGTERM (issue 25, defect 4): schedulers preempt with SIGTERM to every
process of the job. While training runs SIGTERM is a request like SIGUSR1 (checkpoint, stop,
resume exactly); outside training the process still terminates on it, and processes forked from
it (data loader workers) ignore it."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from mmengine.hooks import Hook

import splattingocc.engine  # noqa: F401
from splattingocc.engine.preemption import SAVED_NAME, PreemptionHook
from toy_components import REPO, TOY_CONFIG, assert_same_state, losses_of, model_state, toy_runner


class _TermAt(Hook):
    """SIGTERM to this process at the end of iteration ``n`` (1-based)."""

    priority = 'LOW'  # after the model step, before PreemptionHook (LOWEST)

    def __init__(self, n):
        self.n = n

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.n:
            os.kill(os.getpid(), signal.SIGTERM)


def _runner(work_dir, *extra):
    runner = toy_runner(TOY_CONFIG, work_dir, *extra)
    if not any(isinstance(h, PreemptionHook) for h in runner.hooks):
        runner.register_hook(PreemptionHook(), priority='LOWEST')
    return runner


def test_sigterm_during_training_checkpoints_stops_and_resumes_exactly(tmp_path_factory):
    ref_dir, work_dir = tmp_path_factory.mktemp('ref'), tmp_path_factory.mktemp('term')
    reference = _runner(ref_dir)
    reference.train()
    before = signal.getsignal(signal.SIGTERM)
    runner = _runner(work_dir)
    runner.register_hook(_TermAt(3))
    runner.train()  # returns normally: SIGTERM was a request, not the end of the process
    hook = next(h for h in runner.hooks if isinstance(h, PreemptionHook))
    assert runner.iter == 3 and hook.preempted_at == 3
    assert (work_dir / SAVED_NAME).read_text() == '3\n'
    assert signal.getsignal(signal.SIGTERM) == before  # handler removed after training
    resumed = _runner(work_dir, '--resume')
    resumed.train()
    assert resumed.iter == 8
    np.testing.assert_array_equal(losses_of(resumed), losses_of(reference))
    assert_same_state(model_state(resumed), model_state(reference))


_OUTSIDE = r'''
import os, signal, sys, time
from splattingocc.engine.preemption import PreemptionHook
hook = PreemptionHook()  # installs its handler, as a Runner building its hooks does
assert signal.getsignal(signal.SIGTERM) == hook._on_signal
pid = os.fork()
if pid == 0:  # a forked child (a data loader worker): SIGTERM sets a flag, nothing more
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    os._exit(0 if hook.signal_received else 3)
_, status = os.waitpid(pid, 0)
print('child', os.waitstatus_to_exitcode(status), flush=True)
os.kill(os.getpid(), signal.SIGTERM)  # not training: terminates as without the hook
time.sleep(5)
print('survived', flush=True)
'''


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_sigterm_outside_training_terminates_and_forked_children_ignore_it():
    env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    proc = subprocess.run([sys.executable, '-c', _OUTSIDE], capture_output=True, text=True,
                          timeout=120, env=env, cwd=str(REPO))
    assert 'child 0' in proc.stdout, proc.stdout + proc.stderr
    assert 'survived' not in proc.stdout
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stderr[-2000:])


def test_signal_names_are_checked_and_none_installs_nothing():
    with pytest.raises(ValueError, match='SIGNOPE'):
        PreemptionHook(signal_name=['SIGUSR1', 'SIGNOPE'])
    before = signal.getsignal(signal.SIGTERM)
    hook = PreemptionHook(signal_name=None)
    assert hook.signal_name == () and signal.getsignal(signal.SIGTERM) == before
    hook = PreemptionHook(signal_name='SIGUSR2')
    try:
        assert signal.getsignal(signal.SIGUSR2) == hook._on_signal
        assert signal.getsignal(signal.SIGTERM) == before
    finally:
        hook.after_train(None)
    assert signal.getsignal(signal.SIGUSR2) != hook._on_signal
