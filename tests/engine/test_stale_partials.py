"""Temporary files and folders of killed writers are cleaned up (issue 27, item 10): a
``.<name>.partial-<pid>@<host>`` entry whose process is gone is removed by the next run of the
same writer (training, the synthetic generator, the converter, a prediction dump); a live
writer's entry, another host's entry and complete files are left alone."""
import os
import socket
import subprocess
import sys

import numpy as np

import splattingocc.engine  # noqa: F401
from splattingocc.datasets.synthetic import make_tiny_dataset
from splattingocc.engine.checkpoint import (PARTIAL_MARKER, partial_name, remove_stale_partials,
                                            stale_partial)
from splattingocc.engine.hooks import DumpPredictionHook
from toy_components import TOY_CONFIG, toy_runner


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


HOST = socket.gethostname()


def test_stale_partial_names():
    dead = _dead_pid()
    assert stale_partial(f'.iter_8.pth{PARTIAL_MARKER}{dead}@{HOST}')
    assert stale_partial(f'.iter_8.pth{PARTIAL_MARKER}{dead}')  # written before hosts were kept
    assert not stale_partial(f'.iter_8.pth{PARTIAL_MARKER}{dead}@another-host')
    assert not stale_partial(f'.iter_8.pth{PARTIAL_MARKER}{os.getpid()}@{HOST}')  # alive
    assert not stale_partial(f'iter_8.pth{PARTIAL_MARKER}{dead}')  # not hidden: not ours
    assert not stale_partial('iter_8.pth')
    assert os.path.basename(partial_name('/w/iter_8.pth')) == \
        f'.iter_8.pth{PARTIAL_MARKER}{os.getpid()}@{HOST}'


def test_training_removes_a_killed_run_s_checkpoint_parts(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f'.iter_4.pth{PARTIAL_MARKER}{dead}@{HOST}'
    stale.write_bytes(b'half a checkpoint')
    other_host = tmp_path / f'.iter_4.pth{PARTIAL_MARKER}{dead}@another-host'
    other_host.write_bytes(b'maybe being written right now')
    keep = tmp_path / 'notes.txt'
    keep.write_text('mine')
    toy_runner(TOY_CONFIG, tmp_path, options=['train_cfg.max_iters=1',
                                              'param_scheduler.1.end=1']).train()
    assert not stale.exists() and other_host.exists() and keep.read_text() == 'mine'
    assert not [p for p in tmp_path.iterdir() if PARTIAL_MARKER in p.name and p != other_host]


def test_synthetic_generator_removes_a_killed_run_s_folder(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f'.data{PARTIAL_MARKER}{dead}@{HOST}'
    (stale / 'samples').mkdir(parents=True)
    (stale / 'samples' / 'x.jpg').write_bytes(b'half')
    make_tiny_dataset(tmp_path / 'data', scenes=1, samples_per_scene=1, image_size=(32, 18))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['data']


def test_dump_and_remove_in_nested_folders(tmp_path):
    dead = _dead_pid()
    token_dir = tmp_path / 'scene-a' / 'tok'
    token_dir.mkdir(parents=True)
    stale = token_dir / f'.pred.npz{PARTIAL_MARKER}{dead}@{HOST}'
    stale.write_bytes(b'half')

    class _Runner:
        class logger:  # noqa: N801
            messages = []

            @classmethod
            def info(cls, message):
                cls.messages.append(message)

    hook = DumpPredictionHook(str(tmp_path))
    hook.before_test(_Runner)
    assert not stale.exists() and 'left by a killed writer' in _Runner.logger.messages[0]
    hook.after_test_iter(_Runner, 0, outputs=[dict(semantics=np.zeros((2, 2, 2), np.uint8),
                                                   sample_token='tok', scene_name='scene-a')])
    assert [p.name for p in token_dir.iterdir()] == ['pred.npz']
    assert remove_stale_partials(tmp_path / 'missing-folder') == []
