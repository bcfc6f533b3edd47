"""Build gsplat's CUDA extension once per machine, under a lock, with a clear error.

    python -m splattingocc.rendering.gsplat_build [--if-cuda]

gsplat 1.5.3 from the package index carries no compiled code: the first import of
``gsplat.cuda._backend`` (the first render) compiles it with nvcc (minutes, gigabytes of host
memory) into torch's extension folder, ``$TORCH_EXTENSIONS_DIR/py<ver>_cu<ver>/gsplat_cuda``
(default ``~/.cache/torch_extensions``). Its build code deletes that folder whenever the compiled
file is missing there, so processes starting together (the ranks of a job; nodes sharing a home
directory) delete each other's half-built extension; and until this module, a failed build only
made ``backend='auto'`` render with the slow torch backend.

:func:`ensure_gsplat` takes an exclusive lock (``fcntl.flock``; Linux maps it to NFS byte-range
locks, so it also holds across nodes sharing an NFS home) on ``gsplat_cuda.splattingocc.lock``
next to that folder (not inside it: gsplat deletes the folder), imports gsplat's backend, which
builds it if needed, checks that the extension loaded, and releases the lock: one process builds,
the others wait and then load the finished build. A failure is a :class:`GsplatUnavailable` (a
``UserError``: one line with the fix). Another lock file: ``$SOCC_GSPLAT_LOCK``.

Where it runs: ``tools/setup_env.sh`` when torch sees a CUDA device, ``slurm/socc_8gpu.sh`` once
per node before torchrun, and every training process through ``gsplat_available()`` (which then
finds the build and only loads it; if nothing was built it builds under the lock, with a warning).
A prebuilt gsplat (a wheel whose ``gsplat.csrc`` is compiled, from gsplat's wheel index or
``pip install --no-build-isolation`` of its source) is found by the same import and needs no
build. ``--if-cuda``: exit 0 with a note where torch sees no CUDA device (CPU machines).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from ..errors import UserError

__all__ = ['GsplatUnavailable', 'ensure_gsplat', 'gsplat_build_dir', 'gsplat_is_built',
           'gsplat_lock_path', 'exclusive_lock', 'main']

EXTENSION = 'gsplat_cuda'  # gsplat 1.5.3, cuda/_backend.py: the JIT extension's name
LOCK_ENV = 'SOCC_GSPLAT_LOCK'  # optional: another lock file (e.g. on a filesystem with locks)
FIX = ("install the CUDA toolkit that matches torch's CUDA (nvcc on PATH or CUDA_HOME) and run "
       "`python -m splattingocc.rendering.gsplat_build`, or install a prebuilt gsplat (README: "
       "'Prebuilt gsplat'), or render with the torch backend: --cfg-options "
       "model.supervision.0.renderer.backend=torch")


class GsplatUnavailable(UserError, RuntimeError):
    """gsplat's CUDA rasterizer cannot be used here (the message says why and how); a
    ``RuntimeError`` too, the type the renderers raised for it before."""


def gsplat_build_dir() -> Path:
    """The folder gsplat's JIT build writes to (torch's extension folder for ``gsplat_cuda``)."""
    from torch.utils import cpp_extension
    try:
        return Path(cpp_extension._get_build_directory(EXTENSION, verbose=False))
    except Exception:  # a torch without the private helper: its documented root
        return Path(cpp_extension.get_default_build_root()) / EXTENSION


def gsplat_lock_path() -> Path:
    """The lock file: ``$SOCC_GSPLAT_LOCK``, else ``gsplat_cuda.splattingocc.lock`` beside the
    build folder."""
    if os.environ.get(LOCK_ENV):
        return Path(os.environ[LOCK_ENV])
    build_dir = gsplat_build_dir()
    return build_dir.parent / f'{EXTENSION}.splattingocc.lock'


def gsplat_is_built() -> bool:
    """Whether a compiled gsplat is there to load: a prebuilt ``gsplat.csrc`` or a JIT build."""
    try:
        if importlib.util.find_spec('gsplat.csrc') is not None:
            return True
    except (ImportError, ValueError):
        pass
    build_dir = gsplat_build_dir()
    return any((build_dir / f'{EXTENSION}{ext}').exists() for ext in ('.so', '.lib', '.pyd'))


@contextlib.contextmanager
def exclusive_lock(path, log: Callable[[str], None] = print,
                   what: str = "gsplat's CUDA build") -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` lock on ``path`` (created if missing) for the block; a
    process that has to wait says for whom (the holder writes ``host pid`` into the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ''
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 200, 0).decode(errors='replace').strip()
            log(f'waiting for {what} of {holder or "another process"} (lock {path})')
            t0 = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            log(f'lock {path} acquired after {time.monotonic() - t0:.0f} s')
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{socket.gethostname()} pid {os.getpid()}\n'.encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'.rstrip(': ')


def _load_gsplat_extension() -> str:
    """Import gsplat's compiled backend (building it if needed); its description."""
    if not torch.cuda.is_available():
        raise GsplatUnavailable('gsplat needs CUDA and torch reports no CUDA device '
                                f'(torch {torch.__version__}, CUDA {torch.version.cuda}); {FIX}')
    prebuilt = importlib.util.find_spec('gsplat') is not None and gsplat_is_built()
    try:
        from gsplat.cuda._backend import _C
    except Exception as err:
        raise GsplatUnavailable(f"building or loading gsplat's CUDA extension failed "
                                f'({_first_line(err)}; build folder {gsplat_build_dir()}); '
                                f'{FIX}') from err
    if _C is None:
        raise GsplatUnavailable("gsplat found no CUDA toolkit (nvcc) to build its CUDA extension "
                                f'and no prebuilt one; {FIX}')
    where = getattr(_C, '__file__', None) or 'gsplat.csrc'
    return f"gsplat's CUDA extension {'loaded' if prebuilt else 'built'}: {where}"


def ensure_gsplat(lock_path=None, build: Optional[Callable[[], str]] = None,
                  log: Callable[[str], None] = print) -> str:
    """Build or load gsplat's CUDA extension with at most one process of the machine (of every
    machine sharing the lock file) at a time; returns what was done.

    Args:
        lock_path: the lock file (default :func:`gsplat_lock_path`).
        build: what runs under the lock (default: import gsplat's backend); tests pass a
            stand-in.
        log: where progress lines go.

    Raises:
        GsplatUnavailable: no CUDA, no toolkit, or the build failed (the message has the fix).
    """
    lock_path = Path(lock_path) if lock_path is not None else gsplat_lock_path()
    with exclusive_lock(lock_path, log):
        return (build or _load_gsplat_extension)()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m splattingocc.rendering.gsplat_build',
        description="Build gsplat's CUDA extension once, under a lock (module docstring).")
    parser.add_argument('--if-cuda', action='store_true',
                        help='do nothing (exit 0) where torch sees no CUDA device')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def log(msg: str) -> None:
        print(f'[gsplat_build] {msg}', flush=True)

    if args.if_cuda and not torch.cuda.is_available():
        log('torch sees no CUDA device: nothing to build (the torch renderer runs on CPUs)')
        return 0
    t0 = time.monotonic()
    try:
        done = ensure_gsplat(log=log)
    except GsplatUnavailable as err:
        print(f'[gsplat_build] ERROR: {err}', file=sys.stderr, flush=True)
        return 1
    log(f'{done} ({time.monotonic() - t0:.0f} s; lock {gsplat_lock_path()})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
