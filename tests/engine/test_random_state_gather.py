"""RandomStateHook gathers the ranks' random states only when a checkpoint is written (issue 25,
defect 7: it used to all-gather every iteration).

A two-rank world is stood in for by patching the hook module's ``get_dist_info`` and
``all_gather_object`` (a counting stub); the real two-process runs (tests/engine/
test_ddp_equivalence.py, tests/cli/test_dist_train.py, the Slurm test) check that checkpoints
still hold both ranks' states."""
import random

import numpy as np
import torch
from mmengine.runner import Runner

import splattingocc.engine.hooks as hooks_module
from splattingocc.engine.hooks import RandomStateHook


class _Runner:
    """What the hook touches: ``save_checkpoint`` (which calls ``before_save_checkpoint`` as
    mmengine's does) and ``_resume``."""

    _resume = False

    def __init__(self, hook):
        self.hook = hook
        self.saved = []

    def save_checkpoint(self, out_dir, filename, meta=None):
        checkpoint = dict(meta=meta)
        self.hook.before_save_checkpoint(self, checkpoint)
        self.saved.append(checkpoint)


def test_states_are_gathered_at_saves_only(monkeypatch):
    gathers = []

    def fake_all_gather(obj):
        gathers.append(obj)
        other = dict(obj, python=('rank 1',))
        return [obj, other]

    monkeypatch.setattr(hooks_module, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(hooks_module, 'all_gather_object', fake_all_gather)
    hook = RandomStateHook()
    runner = _Runner(hook)
    hook.before_train(runner)
    hook.before_train(runner)  # idempotent: wrapped once
    for i in range(10):  # iterations without a checkpoint: no collective
        hook.before_train_iter(runner, i)
        random.random()
        if hasattr(hook, 'after_train_iter'):
            hook.after_train_iter(runner, i)
    assert gathers == []
    expected = random.getstate()
    runner.save_checkpoint('out', 'iter_10.pth', meta=dict(iter=10))
    assert len(gathers) == 1
    states = runner.saved[-1]['rng_states']
    assert len(states) == 2 and states[1]['python'] == ('rank 1',)
    assert states[0]['python'] == expected and np.array_equal(
        states[0]['numpy'][1], np.random.get_state()[1])
    assert torch.equal(states[0]['torch'], torch.get_rng_state())
    hook.after_train(runner)
    assert 'save_checkpoint' not in vars(runner)  # the class's method again
    runner.save_checkpoint('out', 'x.pth')
    assert len(gathers) == 1  # outside training: no gather, this rank's states only
    assert len(runner.saved[-1]['rng_states']) == 1


def test_wrapped_save_keeps_the_runners_signature_and_result():
    class _Saver(_Runner):
        def save_checkpoint(self, out_dir, filename, meta=None):
            super().save_checkpoint(out_dir, filename, meta)
            return f'{out_dir}/{filename}'

    hook = RandomStateHook()
    runner = _Saver(hook)
    hook.before_train(runner)
    assert runner.save_checkpoint('d', 'f.pth', meta=None) == 'd/f.pth'
    assert len(runner.saved[0]['rng_states']) == 1
    # mmengine's Runner has the method the hook wraps
    assert callable(getattr(Runner, 'save_checkpoint'))
