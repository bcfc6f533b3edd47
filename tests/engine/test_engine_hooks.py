"""NaN/inf stop, progress and final log lines, determinism with a fixed seed, RNG hook, dumping."""
import math
import re

import numpy as np
import pytest
import torch

import splattingocc.engine  # noqa: F401
from splattingocc.engine.hooks import (DumpPredictionHook, FiniteLossHook, RandomStateHook,
                                       _as_float, _sample_tokens)
from toy_components import TOY_CONFIG, assert_same_state, losses_of, toy_runner


def _runner(work_dir, *extra, options=()):
    return toy_runner(TOY_CONFIG, work_dir, *extra, options=options)


def test_nan_loss_stops_training_with_named_term_and_iteration(tmp_path):
    runner = _runner(tmp_path, options=['model.nan_at_iter=3',
                                        'default_hooks.checkpoint.interval=3'])
    with pytest.raises(RuntimeError) as info:
        runner.train()
    message = str(info.value)
    assert message.startswith('loss_fit became nan at iteration 3;'), message
    assert 'learning rate' in message and 'clip_grad' in message
    assert re.search(r'samples token\d{4}, token\d{4}', message), message  # the batch's tokens
    # stopped at once: iteration 3 never completed, and its NaN weights were not saved
    assert runner.iter == 2
    assert not list(tmp_path.glob('*.pth'))
    logged = losses_of(runner, 'train/loss_fit')  # RuntimeInfoHook logged iteration 3 first
    assert len(logged) == 3 and np.isfinite(logged[:2]).all() and np.isnan(logged[2])


class _Runner:
    """Just what FiniteLossHook reads."""

    def __init__(self, it):
        self.iter = it
        self.max_epochs = None
        self.train_loop = None

        class _Hub:
            @staticmethod
            def get_info(key):
                return 'work/iter_4.pth' if key == 'last_ckpt' else None
        self.message_hub = _Hub()


@pytest.mark.parametrize('outputs, expected', [
    (dict(loss=torch.tensor(float('inf')), loss_depth=torch.tensor(float('inf')),
          loss_sem=torch.tensor(1.0)), 'loss_depth became inf at iteration 37'),
    (dict(loss=torch.tensor(float('nan')),
          loss_sem=[torch.tensor(1.0), torch.tensor(float('nan'))]),
     'loss_sem became nan at iteration 37'),
    (dict(loss=torch.tensor(float('nan')), acc=torch.tensor(1.0)), 'loss became nan'),
])
def test_finite_loss_hook_names_the_bad_term(outputs, expected):
    with pytest.raises(RuntimeError, match=expected) as info:
        FiniteLossHook().after_train_iter(_Runner(36), 36, data_batch=None, outputs=outputs)
    assert 'work/iter_4.pth' in str(info.value)


def test_finite_loss_hook_ignores_finite_and_non_loss_keys():
    outputs = dict(loss=torch.tensor(2.0), loss_depth=torch.tensor(1.0),
                   acc=torch.tensor(float('nan')), grad_norm=float('nan'))
    FiniteLossHook().after_train_iter(_Runner(0), 0, outputs=outputs)  # no error


def test_helpers():
    assert _as_float(torch.tensor([1.0, 3.0])) == 2.0
    assert math.isnan(_as_float(torch.tensor([1.0, float('nan')])))
    assert _as_float('text') is None
    assert _sample_tokens({'meta': {'sample_token': ['a', 'b']}}) == ['a', 'b']
    assert _sample_tokens({'meta': [{'sample_token': 'c'}]}) == ['c']
    assert _sample_tokens(None) == []


def test_two_seeded_runs_give_identical_losses_and_weights(tmp_path):
    """20 iterations twice with the same seed: identical; another seed: different."""
    opts = ['train_cfg.max_iters=20', 'train_cfg.val_interval=20', 'param_scheduler.1.end=20']
    runs = []
    for name, seed in (('a', ()), ('b', ()), ('c', ('--seed', '1'))):
        runs.append(_runner(tmp_path / name, *seed, options=opts))  # seeds the global RNGs
        runs[-1].train()
    a, b, c = (losses_of(r) for r in runs)
    assert len(a) == 20
    np.testing.assert_array_equal(a, b)
    assert_same_state(runs[0].model.state_dict(), runs[1].model.state_dict())
    assert not np.array_equal(a, c)


def test_progress_lines_and_final_line_in_log(tmp_path):
    runner = _runner(tmp_path)  # logger interval 2 in the toy config, 8 iterations
    runner.train()
    logs = list(tmp_path.glob('*/*.log'))
    assert len(logs) == 1
    text = logs[0].read_text()
    progress = re.findall(r'Iter\(train\) \[\s*(\d+)/8\].*eta: \S+.*time: \S+.*loss: \S+', text)
    assert progress == ['2', '4', '6', '8']
    final = re.findall(r'Training finished: iteration 8/8; 8 iterations in [\d.]+ s '
                       r'\([\d.]+ s/iter\)(?: \+ validation [\d.]+ s)?; last losses: '
                       r'loss=[\d.]+, loss_fit=[\d.]+, loss_reg=[\d.]+; '
                       r'last checkpoint: (\S+)', text)
    assert final == [str(tmp_path / 'iter_8.pth')]


def test_random_state_roundtrip():
    """The hook restores exactly the state it stored (python, numpy, torch)."""
    import random

    class _R:
        _resume = True

        class logger:
            @staticmethod
            def warning(msg):
                raise AssertionError(msg)
        train_loop = None

    hook, checkpoint = RandomStateHook(), {}
    hook.before_save_checkpoint(_R, checkpoint)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    hook.after_load_checkpoint(_R, checkpoint)
    hook.before_train_iter(_R, 0)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == again[0] and expected[1] == again[1]
    assert torch.equal(expected[2], again[2])


def test_dump_prediction_hook_writes_npz(tmp_path):
    hook = DumpPredictionHook(str(tmp_path))
    hook.before_test(None)
    sem = np.random.default_rng(0).integers(0, 18, size=(4, 4, 2)).astype(np.uint8)
    hook.after_test_iter(None, 0, outputs=[dict(semantics=torch.from_numpy(sem), sample_token='t0',
                                                scene_name='scene-0001')])
    with np.load(tmp_path / 'scene-0001' / 't0' / 'pred.npz') as z:
        assert z['semantics'].dtype == np.uint8
        np.testing.assert_array_equal(z['semantics'], sem)
    with pytest.raises(KeyError, match='scene_name'):
        hook.after_test_iter(None, 0, outputs=[dict(semantics=sem, sample_token='t1')])
