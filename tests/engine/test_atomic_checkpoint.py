"""Checkpoints and the last_checkpoint pointer are complete or absent, whenever the process dies.

The crash tests run tools/train.py in a subprocess whose ``open`` is patched: the first write to a
file whose name contains ``iter_8`` writes half the bytes and kills the process with ``os._exit``
(no cleanup, like SIGKILL). mmengine's own CheckpointHook is run the same way as a control, to
show what the test catches. An in-process test checks that no final name (checkpoint or
``last_checkpoint`` pointer) is ever opened for writing.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import splattingocc.engine  # noqa: F401
from splattingocc.cli import train
from splattingocc.engine.checkpoint import (PARTIAL_MARKER, atomic_open, atomic_write_text,
                                            partial_name)
from toy_components import HERE, REPO, TOY_CONFIG, losses_of, unique_name

CRASH_SCRIPT = textwrap.dedent('''
    import builtins, os, runpy, sys
    target, occurrence = sys.argv[1], int(sys.argv[2])
    real_open = builtins.open
    seen = [0]

    class HalfThenDie:
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(data[: max(1, len(data) // 2)])
            self.f.flush()
            os._exit(17)  # killed mid-write: no cleanup, no rename
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)
        def __getattr__(self, name):
            return getattr(self.f, name)

    def crashing_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if ('w' in mode) and target in os.path.basename(str(file)):
            seen[0] += 1
            if seen[0] == occurrence:
                return HalfThenDie(f)
        return f

    builtins.open = crashing_open
    sys.argv = ['train.py'] + sys.argv[3:]
    runpy.run_path(sys.argv[0] if os.path.exists(sys.argv[0]) else %r, run_name='__main__')
''' % str(REPO / 'tools' / 'train.py'))


def _start_crash_run(tmp_path, target, occurrence, hook_type):
    """Start tools/train.py in a subprocess that dies in the middle of writing ``target``."""
    work_dir = tmp_path / 'work'
    script = tmp_path / 'crash.py'
    script.write_text(CRASH_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f'{HERE}{os.pathsep}{REPO}')
    cmd = [sys.executable, str(script), target, str(occurrence), TOY_CONFIG, '--work-dir',
           str(work_dir), '--cfg-options', f'default_hooks.checkpoint.type={hook_type}']
    proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    return proc, work_dir


@pytest.fixture(scope='module')
def crashed(tmp_path_factory):
    """Both crash runs (atomic hook, mmengine's hook as control) started side by side."""
    runs = {hook: _start_crash_run(tmp_path_factory.mktemp(hook), 'iter_8', 1, hook)
            for hook in ('AtomicCheckpointHook', 'CheckpointHook')}
    out = {}
    for hook, (proc, work_dir) in runs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 17, err[-3000:]  # it really died inside the patched write
        out[hook] = work_dir
    return out


def _complete(path):
    try:
        torch.load(path)
        return True
    except Exception:
        return False


def test_kill_while_writing_checkpoint_leaves_no_half_checkpoint(crashed):
    work_dir = crashed['AtomicCheckpointHook']
    checkpoints = sorted(p.name for p in work_dir.glob('*.pth'))
    assert checkpoints == ['iter_4.pth']  # the half iter_8 never got a checkpoint name
    assert all(_complete(p) for p in work_dir.glob('*.pth'))
    partial = [p.name for p in work_dir.iterdir() if PARTIAL_MARKER in p.name]
    assert len(partial) == 1 and partial[0].startswith('.iter_8.pth') and \
        not partial[0].endswith('.pth')
    pointer = (work_dir / 'last_checkpoint').read_text().strip()
    assert pointer == str(work_dir / 'iter_4.pth') and _complete(pointer)

    # and training resumes from there to the end
    runner = train.build_runner(train.parse_args(
        [TOY_CONFIG, '--work-dir', str(work_dir), '--resume',
         '--cfg-options', f'experiment_name={unique_name()}']))
    runner.train()
    assert runner.iter == 8 and _complete(work_dir / 'iter_8.pth')
    assert len(losses_of(runner)) == 8


def test_control_mmengine_hook_leaves_a_truncated_checkpoint(crashed):
    """What the atomic hook prevents: mmengine's CheckpointHook leaves a half iter_8.pth."""
    work_dir = crashed['CheckpointHook']
    assert (work_dir / 'iter_8.pth').is_file()
    assert not _complete(work_dir / 'iter_8.pth')


def test_final_names_are_never_opened_for_writing(tmp_path, monkeypatch):
    """Every checkpoint and pointer write goes through a temporary name (in-process check)."""
    import builtins
    real_open = builtins.open
    written = []

    def recording_open(file, mode='r', *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and ('w' in mode or 'x' in mode or 'a' in mode):
            written.append(os.path.basename(os.fspath(file)))
        return real_open(file, mode, *args, **kwargs)

    runner = train.build_runner(train.parse_args(
        [TOY_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
         f'experiment_name={unique_name()}']))
    monkeypatch.setattr(builtins, 'open', recording_open)
    runner.train()
    monkeypatch.setattr(builtins, 'open', real_open)
    final_names = {'iter_4.pth', 'iter_8.pth', 'last_checkpoint'}
    assert not final_names & set(written), written
    partial = [n for n in written if PARTIAL_MARKER in n]
    assert {n.split(PARTIAL_MARKER)[0] for n in partial} == {'.' + n for n in final_names}
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(tmp_path / 'iter_8.pth')
    assert not [p for p in tmp_path.iterdir() if PARTIAL_MARKER in p.name]


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    path = tmp_path / 'data.bin'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with atomic_open(path, 'wb') as f:
            f.write(b'new but incomplete')
            raise RuntimeError('boom')
    assert path.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['data.bin']  # temp file removed
    atomic_write_text(tmp_path / 'sub' / 'x.txt', 'hello')
    assert (tmp_path / 'sub' / 'x.txt').read_text() == 'hello'
    name = os.path.basename(partial_name(tmp_path / 'iter_8.pth'))
    assert name.startswith('.') and not name.endswith('.pth')


def test_old_checkpoints_pruned_after_new_one(tmp_path):
    """max_keep_ckpts=1 keeps only the newest; the pointer always names an existing file."""
    runner = train.build_runner(train.parse_args(
        [TOY_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
         f'experiment_name={unique_name()}', 'default_hooks.checkpoint.interval=2',
         'default_hooks.checkpoint.max_keep_ckpts=1']))
    runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_8.pth']
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(tmp_path / 'iter_8.pth')
    ckpt = torch.load(tmp_path / 'iter_8.pth')
    assert ckpt['message_hub']['runtime_info']['keep_ckpt_ids'] == [8]
