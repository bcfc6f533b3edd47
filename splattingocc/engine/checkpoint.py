"""Checkpoints that torch >= 2.6 can load safely and that a kill never leaves half written.

Two problems of mmengine 0.10.7 on a modern torch, fixed here:

1. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine's checkpoints hold
   more than tensors: the message hub's ``HistoryBuffer`` objects (numpy arrays inside), numpy
   scalars, and the statistics methods of ``HistoryBuffer`` (pickled by protocol 2 as
   ``getattr(HistoryBuffer, 'mean')``). :func:`register_checkpoint_safe_globals` allow-lists exactly
   those globals (found by resuming a real run; ``tests/engine/test_checkpoint_resume.py`` checks
   that a fresh checkpoint needs nothing else). ``builtins.getattr`` is *not* allowed: a restricted
   stand-in registered under that name resolves only ``HistoryBuffer`` statistics methods.
   It runs on ``import splattingocc.engine``.

2. mmengine writes a checkpoint straight to its final name (``open(path, 'wb')``), writes the
   ``last_checkpoint`` pointer the same way, and deletes the oldest checkpoint *before* saving the
   new one. A crash in between leaves a truncated ``iter_N.pth``, an empty pointer or a pointer to a
   deleted file. Here every file goes to a hidden temporary name in the same folder and is renamed
   (``os.replace``, atomic on POSIX) once complete: :class:`AtomicLocalBackend` is a file backend
   (mmengine's extension point for where ``Runner.save_checkpoint`` writes) and
   :class:`AtomicCheckpointHook` uses it by default, writes the pointer atomically and prunes old
   checkpoints only after the new one and the pointer are in place.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import shutil
import socket
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper

from splattingocc.registry import HOOKS

from ..errors import TrainingDivergedError, UserError

#: name of the atomic local file backend (``backend_args=dict(backend=ATOMIC_BACKEND)``)
ATOMIC_BACKEND = 'atomic_local'
#: marker in temporary file names; such files never end in ``.pth``
PARTIAL_MARKER = '.partial-'


# ----------------------------------------------------------------------------------------------
# 1. torch.load(weights_only=True) allow-list
# ----------------------------------------------------------------------------------------------

# the statistics HistoryBuffer registers on its first instance (mmengine/logging/history_buffer.py)
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_attribute(owner, name):
    """Stand-in for ``builtins.getattr`` while unpickling: only ``HistoryBuffer`` statistics.

    A ``HistoryBuffer`` pickles its ``_statistics_methods`` (functions such as
    ``HistoryBuffer.mean``); pickle protocol 2 stores a method of a class as
    ``getattr(HistoryBuffer, 'mean')``. Anything else is refused.
    """
    allowed = _HISTORY_BUFFER_STATISTICS | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({owner!r}, {name!r}) while loading a checkpoint: SplattingOcc only '
        'allows the statistics methods of mmengine HistoryBuffer (see '
        'splattingocc/engine/checkpoint.py); if this file is not a SplattingOcc/mmengine '
        'checkpoint, load it yourself with weights_only=False only if you trust it')


def _numpy_safe_globals() -> list:
    """The numpy reconstruction globals exactly as this numpy version pickles them."""
    array_rebuild = np.zeros(1).__reduce__()[0]  # numpy.core.multiarray._reconstruct (1.x)
    scalar_rebuild = np.float64(0).__reduce__()[0]  # numpy.core.multiarray.scalar
    found = [array_rebuild, scalar_rebuild, np.ndarray]
    # numeric dtypes only (no object arrays): float64/int64 in HistoryBuffer, uint32 in numpy's
    # RNG state (RandomStateHook); the others for numeric dataset metainfo arrays
    for dtype in (np.bool_, np.uint8, np.int32, np.uint32, np.int64, np.float32, np.float64):
        dt = np.dtype(dtype)
        for cls in (dt.__reduce__()[0], type(dt)):  # numpy.dtype, rebuilt as e.g. Int64DType
            if cls not in found:
                found.append(cls)
    return found


def checkpoint_safe_globals() -> list:
    """Everything :func:`register_checkpoint_safe_globals` adds (objects or (object, name))."""
    return _numpy_safe_globals() + [HistoryBuffer, (_history_buffer_attribute, 'builtins.getattr')]


_REGISTERED = False


def register_checkpoint_safe_globals() -> None:
    """Allow-list the globals of mmengine checkpoints for ``torch.load(weights_only=True)``.

    Idempotent. Called on ``import splattingocc.engine``.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4
        torch.serialization.add_safe_globals(checkpoint_safe_globals())
    _REGISTERED = True


# ----------------------------------------------------------------------------------------------
# 2. atomic files
# ----------------------------------------------------------------------------------------------

def partial_suffix() -> str:
    """``.partial-<pid>@<host>``: whose temporary file or folder this is (see
    :func:`remove_stale_partials`)."""
    return f'{PARTIAL_MARKER}{os.getpid()}@{socket.gethostname()}'


def partial_name(path: Union[str, Path]) -> str:
    """Hidden temporary name next to ``path``: ``dir/.name.partial-<pid>@<host>`` (never
    ``*.pth``)."""
    path = os.fspath(path)
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}{partial_suffix()}')


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or not a pid): leave its files alone
    return True


def stale_partial(name: str) -> bool:
    """Whether ``name`` is a ``.<name>.partial-<pid>[@<host>]`` entry whose writer died: written
    on this host (or without a host, as before hosts were recorded) by a process that no longer
    exists. Entries of other hosts are never stale here (their processes cannot be seen)."""
    if not name.startswith('.') or PARTIAL_MARKER not in name:
        return False
    pid, _, host = name.rsplit(PARTIAL_MARKER, 1)[1].partition('@')
    if not pid.isdigit() or (host and host != socket.gethostname()):
        return False
    return not _pid_alive(int(pid))


def remove_stale_partials(folder: Union[str, Path], recursive: bool = False) -> list:
    """Remove the temporary files and folders of killed writers (:func:`stale_partial`) in
    ``folder`` (and below it with ``recursive``); returns their paths. A hard kill during an
    atomic write leaves such an entry; a complete file or a live writer's entry is never touched.
    """
    folder = os.fspath(folder)
    removed = []
    if not osp.isdir(folder):
        return removed
    walk = os.walk(folder) if recursive else [(folder, *next(os.walk(folder))[1:])]
    for root, dirs, files in walk:
        for name in list(dirs) + list(files):
            if stale_partial(name):
                path = osp.join(root, name)
                if osp.isdir(path) and not osp.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                    if name in dirs:
                        dirs.remove(name)
                else:
                    try:
                        os.remove(path)
                    except FileNotFoundError:
                        continue
                removed.append(path)
    return removed


@contextmanager
def atomic_open(path: Union[str, Path], mode: str = 'wb', **kwargs) -> Iterator:
    """Open a temporary file that becomes ``path`` (``os.replace``) only when the block succeeds.

    The data is flushed and fsync'ed before the rename, so after a crash ``path`` is either the old
    complete file or the new complete file. On an exception the temporary file is removed; a hard
    kill can leave a hidden ``.<name>.partial-<pid>`` file, never a half ``<name>``.
    """
    assert 'w' in mode or 'x' in mode, f'atomic_open is for writing, got mode {mode!r}'
    path = os.fspath(path)
    folder = osp.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = partial_name(path)
    try:
        with open(tmp, mode.replace('x', 'w'), **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    if folder:  # make the rename itself durable
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name + rename)."""
    with atomic_open(path, 'wb') as f:
        f.write(data)


def atomic_write_text(path: Union[str, Path], text: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` atomically (temporary name + rename)."""
    with atomic_open(path, 'w', encoding=encoding) as f:
        f.write(text)


def atomic_torch_save(obj, path: Union[str, Path]) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_open(path, 'wb') as f:
        torch.save(obj, f)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes go to a temporary name and are renamed."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_text(filepath, obj, encoding=encoding)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def _is_local(path) -> bool:
    return path is None or '://' not in os.fspath(path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose files are complete or absent, whatever moment the process dies.

    Same arguments as mmengine's ``CheckpointHook``. For a local ``out_dir`` (the default: the work
    dir) checkpoints are written through :class:`AtomicLocalBackend` unless ``backend_args`` names
    another backend. Order of a periodic save: write ``iter_N.pth`` (temp + rename), then point
    ``last_checkpoint`` at it (temp + rename), then delete checkpoints beyond ``max_keep_ckpts``.
    """

    def __init__(self, *args, backend_args: dict | None = None, **kwargs):
        out_dir = kwargs.get('out_dir')
        if backend_args is None and kwargs.get('file_client_args') is None and _is_local(out_dir):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, backend_args=backend_args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process():  # temporary files of a killed earlier run of this work dir
            for folder in {runner.work_dir, self.out_dir}:
                if _is_local(folder):
                    for path in remove_stale_partials(folder):
                        runner.logger.info(f'removed {path}, left by a killed writer')

    def _save_checkpoint_with_step(self, runner, step, meta):
        filename = self.filename_tmpl.format(step)
        # a checkpoint is only written (and becomes 'last') when every tensor is finite: a NaN
        # or inf weight or buffer (e.g. an overflowed BatchNorm running_var) would be resumed
        # from, or scored, as if it were a trained model
        bad = first_non_finite(runner.model)
        if bad is not None:
            last = runner.message_hub.get_info('last_ckpt')
            raise TrainingDivergedError(
                f'not saving {filename}: the model {bad}. The last checkpoint with finite '
                f'tensors is {last or "none (none was saved)"}. What to try: lower the learning '
                'rate (optim_wrapper.optimizer.lr) or add gradient clipping '
                '(optim_wrapper.clip_grad=dict(max_norm=35, norm_type=2)).')
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        # which older checkpoints this save makes redundant (deleted only after it succeeded)
        stale = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            ids = list(self.keep_ckpt_ids) + [step]
            stale, ids = ids[:-self.max_keep_ckpts], ids[-self.max_keep_ckpts:]
            self.keep_ckpt_ids = deque(ids, self.max_keep_ckpts)
            runner.message_hub.update_info('keep_ckpt_ids', list(ids))

        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in stale:
            old_path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(old_path):
                self.file_backend.remove(old_path)
            elif self.file_backend.isdir(old_path):  # deepspeed-style checkpoint folders
                self.file_backend.rmtree(old_path)


def resolve_resume_checkpoint(work_dir: str) -> str | None:
    """The checkpoint that ``--resume`` (auto) will load from ``work_dir``, checked.

    Returns None when the work dir has no ``last_checkpoint`` (training starts from scratch).
    Raises :class:`UserError` with a clear message when the pointer is empty or names a missing
    file.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8') as f:
        target = f.read().strip()
    if not target:
        raise UserError(
            f'{pointer} is empty: delete it to start from scratch, or resume from a file with '
            '--resume path/to/iter_N.pth')
    if _is_local(target) and not osp.isfile(target):
        raise UserError(
            f'{pointer} points to {target}, which does not exist (moved or deleted?): resume from '
            'an existing checkpoint with --resume path/to/iter_N.pth, or delete the pointer file '
            'to start from scratch')
    return target


def first_non_finite(model) -> str | None:
    """'parameter NAME holds N NaN/inf values' for the first parameter or floating-point buffer
    (BatchNorm ``running_var``...) of ``model`` (unwrapped from DDP) that is not all finite;
    None when every tensor is finite. One device synchronisation when all are finite."""
    module = model.module if is_model_wrapper(model) else model
    tensors = [(f'parameter {n}', t) for n, t in module.named_parameters()]
    tensors += [(f'buffer {n}', t) for n, t in module.named_buffers()]
    tensors = [(n, t.detach()) for n, t in tensors if t.is_floating_point() or t.is_complex()]
    if not tensors:
        return None
    try:
        finite = torch.stack([torch.isfinite(t).all() for _, t in tensors]).cpu()
    except RuntimeError:  # tensors on several devices
        finite = torch.tensor([bool(torch.isfinite(t).all()) for _, t in tensors])
    if bool(finite.all()):
        return None
    name, t = tensors[int((~finite).nonzero()[0])]
    return (f'{name} holds {int((~torch.isfinite(t)).sum())} of {t.numel()} values NaN/inf '
            f'({int(torch.isnan(t).sum())} NaN)')


def _listed(keys, n: int = 4, universe=None) -> str:
    """Up to ``n`` of ``keys``; a top-level module all of whose keys (in ``universe``) are among
    them is written once as ``module.* (N keys)``."""
    keys = list(keys)
    if universe is not None:
        groups: dict = {}
        for k in universe:
            groups.setdefault(k.split('.', 1)[0], []).append(k)
        chosen = set(keys)
        whole = [g for g, members in groups.items()
                 if len(members) > 1 and all(m in chosen for m in members)]
        parts = [f'{g}.* ({len(groups[g])} keys)' for g in whole]
        parts += [k for k in keys if k.split('.', 1)[0] not in whole]
        keys = parts
    return ', '.join(keys[:n]) + (f' and {len(keys) - n} more' if len(keys) > n else '')


def check_checkpoint_fits(model, filename: str, what: str = 'checkpoint') -> None:
    """Raise :class:`UserError` unless the weights of ``filename`` fit ``model`` exactly.

    mmengine loads ``load_from`` and ``--resume`` checkpoints non-strictly (a missing,
    unexpected or reshaped tensor is one warning among hundreds of log lines), so a checkpoint
    of another model would be tested or trained on with some weights at their initial values.
    Here the keys (after mmengine's ``module.`` prefix removal) and shapes of the checkpoint's
    ``state_dict`` are compared with ``model.state_dict()`` (unwrapped from DDP) and every
    difference is named in one line. Remote checkpoints (``s3://`` ...) are not checked.
    """
    if '://' in str(filename):
        return
    try:
        checkpoint = torch.load(filename, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f'{what} {filename} cannot be loaded ({str(err).splitlines()[0]}); pass '
                        'a complete checkpoint written by tools/train.py') from err
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f'{what} {filename} holds no state_dict; pass a checkpoint written by '
                        'tools/train.py')
    state = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}
    module = model.module if is_model_wrapper(model) else model
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f'{k} (checkpoint {list(state[k].shape)}, model {list(expected[k].shape)})'
                for k in expected if k in state and hasattr(state[k], 'shape')
                and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    for name, keys, universe in (('missing', missing, expected), ('unexpected', unexpected, state),
                                 ('of another shape', reshaped, None)):
        if keys:
            problems.append(f'{len(keys)} {name}: {_listed(keys, universe=universe)}')
    if problems:
        raise UserError(f'{what} {filename} does not fit the model of this config '
                        f'({"; ".join(problems)}); pass the checkpoint trained with this config, '
                        'or the config it was trained with')


__all__ = [
    'check_checkpoint_fits', 'first_non_finite', 'ATOMIC_BACKEND', 'AtomicCheckpointHook',
    'AtomicLocalBackend', 'atomic_open',
    'atomic_torch_save', 'atomic_write_bytes', 'atomic_write_text', 'checkpoint_safe_globals',
    'partial_name', 'partial_suffix', 'register_checkpoint_safe_globals',
    'remove_stale_partials', 'resolve_resume_checkpoint', 'stale_partial'
]
