"""Running tools/train.py and tools/test.py as subprocesses: exit status, wall time, peak memory.

A *command runner* is any callable ``(cmd, log_path, env) -> CommandResult``; the ablation
runner uses :func:`run_command`, tests inject a fake that writes what the tools would write.
"""
from __future__ import annotations

import os
import os.path as osp
import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional


@dataclass
class CommandResult:
    """Exit status, wall time and peak resident memory (MB, None if unknown) of a command."""
    returncode: int
    seconds: float
    peak_rss_mb: Optional[float] = None


#: ``(cmd, log_path, env) -> CommandResult``
CommandRunner = Callable[[List[str], str, Dict[str, str]], CommandResult]


def run_command(cmd: List[str], log_path: str, env: Dict[str, str],
                progress: Optional[Callable[[str], None]] = None,
                progress_every: float = 60.0) -> CommandResult:
    """Run ``cmd`` with its output in ``log_path``; peak RSS from ``wait4`` (this child and the
    children it waited for, e.g. data-loader workers)."""
    os.makedirs(osp.dirname(log_path) or '.', exist_ok=True)
    start = time.perf_counter()
    with open(log_path, 'ab') as log:
        log.write(f'$ {shlex.join(cmd)}\n'.encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        last_report = start
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.5)
                now = time.perf_counter()
                if progress is not None and now - last_report >= progress_every:
                    last_report = now
                    line = _last_progress_line(log_path)
                    progress(f'    {now - start:6.0f} s  {line}' if line else
                             f'    {now - start:6.0f} s  running')
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped by wait4 already
    # Linux reports ru_maxrss in KiB
    return CommandResult(code, time.perf_counter() - start, usage.ru_maxrss / 1024.0)


def _last_progress_line(log_path: str) -> str:
    try:
        with open(log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode(errors='replace').splitlines()
    except OSError:
        return ''
    for line in reversed(lines):
        if 'Iter(' in line or 'Epoch(' in line:
            line = line.split(' - INFO - ', 1)[-1].strip()  # drop mmengine's time stamp
            return line if len(line) <= 140 else line[:137] + '...'
    return ''


def tail(path: str, lines: int = 30) -> str:
    """The last ``lines`` lines of the log ``path`` (of its last 20 kB)."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            text = f.read().decode(errors='replace')
    except OSError:
        return f'(no log at {path})'
    return '\n'.join(text.splitlines()[-lines:])


class RunFailure(Exception):
    """A phase of one (arm, seed) that failed: which, its exit status, log and command."""

    def __init__(self, phase: str, returncode: int, log_path: str, cmd: List[str],
                 message: str = ''):
        self.phase, self.returncode, self.log_path, self.cmd = phase, returncode, log_path, cmd
        self.message = message or f'exit status {returncode}'
        super().__init__(f'{phase}: {self.message}')
