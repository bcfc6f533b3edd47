"""Preemption: checkpoint at the next iteration boundary and stop cleanly, then resume exactly.

A cluster asks a job to stop before it is killed (Slurm: ``sbatch --signal=B:USR1@120``; the
batch script ``slurm/run_2_nodes.sh`` turns the signal into a flag file). :class:`PreemptionHook`
notices the request, has every rank agree on it, saves a checkpoint through the runner's checkpoint
machinery (``last_checkpoint`` points at it, so ``tools/train.py --resume`` finds it), writes
``WORK_DIR/.preempt-saved`` (the iteration number) and stops the train loop, so ``tools/train.py``
exits with code 0 and the batch script can requeue the job.

A request is either

* a signal (default ``SIGUSR1`` or ``SIGTERM``) delivered to a training process: the handler
  (installed from the main thread when the hook is built, again in ``before_train``, removed in
  ``after_train``) only sets a flag; or
* the file named by ``$SOCC_PREEMPT_FLAG`` (or the hook's ``flag_file``) existing; rank 0 looks.

Each checked iteration all ranks ``all_reduce`` (max) their local request: one scalar, so every
rank stops after the same iteration even when only one process got the signal.

SIGTERM: schedulers preempt by sending SIGTERM to every process of the job (and SIGKILL after a
grace time); Slurm's ``scancel`` does the same. While training runs, SIGTERM is a request like
SIGUSR1 (checkpoint at the next iteration boundary, then stop with exit code 0). Outside training
(building the runner, testing, after ``after_train``) the training process reacts to SIGTERM as
it would without the hook (the previous handler; by default it terminates); processes forked
from it (data loader workers) keep ignoring it, as they ignore SIGUSR1, and end with their
parent. ``slurm/socc_8gpu.sh`` keeps torchrun itself from acting on SIGTERM (it would kill the
workers before they save).

Loops:

* ``IterBasedTrainLoop`` (tiny configs): stops through ``stop_training``; on resume mmengine skips
  the batches already trained on by drawing them from the data loader again (so the data order
  continues exactly; ``tests/engine/test_preemption.py`` checks losses, learning rates, batches and
  final weights against an uninterrupted run).
* ``EpochBasedTrainLoop`` (real-data schedules) checks ``stop_training`` only between epochs and
  restarts a resumed epoch from its first batch, so a mid-epoch checkpoint would train part of an
  epoch twice. :class:`PreemptibleEpochBasedTrainLoop` (``train_cfg.type``) stops mid-epoch and
  resumes a mid-epoch checkpoint at the next batch of the same epoch order (batches skipped at the
  sampler level: no data is loaded for them). With mmengine's plain epoch loop the hook logs a
  warning and does not preempt (training continues until the cluster kills it).
"""
from __future__ import annotations

import os
import os.path as osp
import random
import signal
import threading
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import all_reduce, barrier, get_dist_info, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import DataLoader

from splattingocc.registry import HOOKS, LOOPS

from .checkpoint import atomic_write_text

#: environment variable naming the preemption request file (set by slurm/run_2_nodes.sh)
FLAG_ENV = 'SOCC_PREEMPT_FLAG'
#: file written into the work dir once the preemption checkpoint is complete (its iteration)
SAVED_NAME = '.preempt-saved'
#: key of the checkpoint meta marking a checkpoint written by PreemptionHook
META_KEY = 'preempted'


def _rng_snapshot() -> dict:
    """The global random states (python, numpy, torch CPU, CUDA if initialised)."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _rng_restore(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state:
        torch.cuda.set_rng_state_all(state['cuda'])


def _preemptible(loop) -> bool:
    """Whether ``loop`` can stop between two iterations (not only between epochs)."""
    return (not isinstance(loop, EpochBasedTrainLoop)
            or isinstance(loop, PreemptibleEpochBasedTrainLoop))


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On a preemption request: checkpoint after the current iteration, then stop training.

    Args:
        interval: look for a request every ``interval`` iterations (each look costs one scalar
            ``all_reduce``; the grace time of a preemption must cover ``interval`` iterations
            plus one checkpoint).
        flag_file: request file; default: the path in ``$SOCC_PREEMPT_FLAG`` (no file request
            when neither is set).
        signal_name: the signal(s) that request preemption: a name, a list of names (default
            ``('SIGUSR1', 'SIGTERM')``) or ``None`` (no handler: the flag file only).

    Runs after every other ``after_train_iter`` hook (priority ``LOWEST``): the parameter
    schedulers have stepped, the logger has logged and the regular checkpoint hook has saved (a
    checkpoint it wrote at this very iteration is reused, not written twice).
    """

    priority = 'LOWEST'

    def __init__(self, interval: int = 1, flag_file: Optional[str] = None,
                 signal_name: Union[None, str, Sequence[str]] = ('SIGUSR1', 'SIGTERM')):
        assert interval >= 1, f'PreemptionHook interval must be >= 1, got {interval}'
        names = () if signal_name is None else (
            (signal_name,) if isinstance(signal_name, str) else tuple(signal_name))
        for name in names:
            if not hasattr(signal, name):
                raise ValueError(f'PreemptionHook signal_name={name!r} is not a signal of this '
                                 "platform: use e.g. 'SIGUSR1', or None for the flag file only")
        self.interval = interval
        self.flag_file = flag_file
        self.signal_name = names
        self.signal_received = False
        self._owner_pid = os.getpid()  # the training process (forked children only set a flag)
        self._training = False
        self.preempted_at: Optional[int] = None  # iteration (1-based) of the preemption checkpoint
        self._previous_handler = {}  # signal number -> handler before ours
        self._handler_installed = False
        self._flag_path: Optional[str] = None
        self._ckpt_before_iter = None
        self._stale_preempt_ckpt: Optional[str] = None
        self._warned_loop = False
        # installed already here (the Runner builds hooks before the train loop): data loader
        # workers forked while the loop is built then inherit this harmless handler instead of
        # being killed by a signal that a cluster sends to every process of the job step
        self._install_handler()

    # -- request sources ---------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        # only set a flag: the work happens at the next iteration boundary
        if (signum == signal.SIGTERM and not self._training
                and os.getpid() == self._owner_pid):
            # not training (module docstring): what SIGTERM did before the hook
            previous = self._previous_handler.get(signum, signal.SIG_DFL)
            if callable(previous):
                return previous(signum, frame)
            if previous == signal.SIG_IGN:
                return None
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return None
        self.signal_received = True

    def _install_handler(self) -> None:
        """Make ``_on_signal`` the handler of ``signal_name`` (main thread only; idempotent)."""
        if not self.signal_name or threading.current_thread() is not threading.main_thread():
            return
        for name in self.signal_name:
            signum = getattr(signal, name)
            previous = signal.signal(signum, self._on_signal)
            if not self._handler_installed:
                self._previous_handler[signum] = previous
        self._handler_installed = True

    def before_train(self, runner) -> None:
        self.signal_received = False
        self.preempted_at = None
        self._training = True
        self._flag_path = self.flag_file or os.environ.get(FLAG_ENV) or None
        self._install_handler()
        sources = []
        if self._handler_installed:
            sources.extend(self.signal_name)
        if self._flag_path:
            sources.append(f'file {self._flag_path}')
        if not _preemptible(runner.train_loop):
            self._warned_loop = True
            runner.logger.warning(
                f'PreemptionHook: {type(runner.train_loop).__name__} cannot stop or resume in the '
                "middle of an epoch: preemption requests will be ignored. Set train_cfg.type="
                "'PreemptibleEpochBasedTrainLoop' (splattingocc/engine/preemption.py).")
        elif sources:
            runner.logger.info(f'PreemptionHook: checkpoint and stop on {" or ".join(sources)}')
        if self._flag_path and osp.exists(self._flag_path):
            runner.logger.warning(
                f'PreemptionHook: the request file {self._flag_path} exists already: training '
                'will checkpoint and stop after the first iteration (delete it if it is stale)')

    def after_train(self, runner) -> None:
        self._training = False
        if self._handler_installed and threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous_handler.items():
                signal.signal(signum, signal.SIG_DFL if previous is None else previous)
            self._handler_installed = False
            self._previous_handler = {}

    def _requested(self) -> bool:
        """This rank's request (signal, or on rank 0 the flag file), agreed over all ranks."""
        local = self.signal_received
        if not local and self._flag_path and is_main_process():
            local = osp.exists(self._flag_path)
        _, world_size = get_dist_info()
        if world_size == 1:
            return local
        flag = torch.tensor([1 if local else 0], dtype=torch.int32)
        all_reduce(flag, op='max')  # moved to the backend's device (CUDA for nccl) and back
        return bool(flag.item())

    # -- checkpointing -------------------------------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._ckpt_before_iter = runner.message_hub.get_info('last_ckpt')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.preempted_at is not None or not self.every_n_train_iters(runner, self.interval):
            return
        if not self._requested():
            return
        iteration = runner.iter + 1  # iterations completed, as the log and checkpoints count
        if iteration >= runner.max_iters:
            runner.logger.info('PreemptionHook: request at the last iteration: training ends now '
                               'anyway (final checkpoint by the checkpoint hook)')
            self.preempted_at = iteration
            return
        if not _preemptible(runner.train_loop):
            if self._warned_loop:
                runner.logger.error(
                    f'PreemptionHook: preemption requested at iteration {iteration}, but '
                    f'{type(runner.train_loop).__name__} cannot stop mid-epoch: not saving '
                    "(use train_cfg.type='PreemptibleEpochBasedTrainLoop')")
                self._warned_loop = False
            return
        path = self._save(runner, iteration)
        if is_main_process():
            atomic_write_text(osp.join(runner.work_dir, SAVED_NAME), f'{iteration}\n')
        barrier()  # every rank stops only once rank 0's files are complete
        self.preempted_at = iteration
        runner.train_loop.stop_training = True
        runner.logger.info(f'PreemptionHook: preemption requested: checkpoint {path} saved at '
                           f'iteration {iteration}; training stops (resume with --resume)')

    def _save(self, runner, iteration: int) -> str:
        """Checkpoint after ``iteration``; returns its path. Called on every rank."""
        last = runner.message_hub.get_info('last_ckpt')
        if last and last != self._ckpt_before_iter:
            return last  # the checkpoint hook saved this very iteration
        ckpt_hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        meta = dict(epoch=runner.epoch, iter=iteration)
        if ckpt_hook is not None and not ckpt_hook.by_epoch:
            # iteration checkpoints: the hook's own file name, pointer and pruning of old files
            meta[META_KEY] = dict(iter=iteration, prune_after_epoch=False)
            ckpt_hook._save_checkpoint_with_step(runner, iteration, meta)
            return ckpt_hook.last_ckpt
        # epoch checkpoints (or no checkpoint hook): an extra iter_N.pth, removed by this hook
        # after the resumed run saved its next epoch checkpoint
        out_dir = ckpt_hook.out_dir if ckpt_hook is not None else runner.work_dir
        backend_args = ckpt_hook.backend_args if ckpt_hook is not None else None
        filename = f'iter_{iteration}.pth'
        path = osp.join(out_dir, filename)
        meta[META_KEY] = dict(iter=iteration, prune_after_epoch=True, path=path)
        runner.save_checkpoint(out_dir, filename, meta=meta, by_epoch=False,
                               backend_args=backend_args)
        runner.message_hub.update_info('last_ckpt', path)
        # preempted at an epoch's last batch, the loop still ends the epoch: its checkpoint
        # then supersedes this one at once (after_train_epoch)
        self._stale_preempt_ckpt = path
        if is_main_process():
            atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), path)
        return path

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        info = checkpoint.get('meta', {}).get(META_KEY)
        if isinstance(info, dict) and getattr(runner, '_resume', False):
            runner.logger.info(f'PreemptionHook: resuming from the preemption checkpoint of '
                               f'iteration {info.get("iter")}')
            if info.get('prune_after_epoch'):
                self._stale_preempt_ckpt = info.get('path')

    def after_train_epoch(self, runner) -> None:
        # an epoch checkpoint now supersedes the extra mid-epoch preemption checkpoint
        stale = self._stale_preempt_ckpt
        if not stale or not is_main_process():
            return
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        current = open(pointer, encoding='utf-8').read().strip() if osp.isfile(pointer) else ''
        if current and current != stale and osp.isfile(stale):
            os.remove(stale)
            runner.logger.info(f'PreemptionHook: removed the superseded checkpoint {stale}')
            self._stale_preempt_ckpt = None


@LOOPS.register_module()
class PreemptibleEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that can stop, and resume, in the middle of an epoch.

    Same arguments and, without preemption, the same iterations, hooks and data as the parent.

    * Stop: when ``stop_training`` is set during an iteration that is not the epoch's last, the
      loop returns after that iteration without ending the epoch (no ``after_train_epoch`` hooks:
      no epoch checkpoint, no epoch-based scheduler step, no validation).
    * Resume: a checkpoint with ``iter`` beyond the start of its ``epoch`` (``iter - epoch *
      len(dataloader)`` batches of that epoch done) continues that epoch at the next batch. The
      epoch's batch order is recomputed from the batch sampler (after ``DistSamplerSeedHook`` set
      the epoch), the done batches are dropped without loading them, and a data loader with the
      same settings (non-persistent workers) serves the rest. Creating that loader draws no
      number from the global random generators, so a random state restored by
      ``RandomStateHook`` continues exactly. Random augmentations inside data loader workers
      restart from the workers' seeds (as after any restart of the workers).
    """

    def run(self) -> torch.nn.Module:
        self.runner.call_hook('before_train')
        self._stopped_mid_epoch = False
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            if self._stopped_mid_epoch:
                break
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._epoch >= self.val_begin
                    and (self._epoch % self.val_interval == 0
                         or self._epoch == self._max_epochs)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        num_batches = len(self.dataloader)
        done = self._iter - self._epoch * num_batches
        if done < 0 or done > num_batches:
            raise RuntimeError(
                f'resumed at iteration {self._iter} of epoch {self._epoch}, but an epoch has '
                f'{num_batches} batches: the checkpoint belongs to a run with another data set '
                'or batch size; resume from an epoch checkpoint or start a new work dir')
        batches = self._remaining_batches(done) if done > 0 else iter(self.dataloader)
        self._stopped_mid_epoch = False
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
            if self.stop_training and idx + 1 < num_batches:
                self._stopped_mid_epoch = True
                return
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def _remaining_batches(self, done: int):
        """An iterator over the batches of the current epoch after the first ``done``."""
        loader = self.dataloader
        rng = _rng_snapshot()
        order = [list(indices) for indices in loader.batch_sampler]  # this epoch's batches
        remaining = order[done:]
        self.runner.logger.info(
            f'Resuming epoch {self._epoch + 1} at batch {done + 1}/{len(order)} (the first {done} '
            'batches are skipped without loading them)')
        tail = DataLoader(
            loader.dataset, batch_sampler=remaining, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
            prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
            persistent_workers=False, pin_memory_device=loader.pin_memory_device)
        iterator = iter(tail)  # draws its base seed from the torch generator: put it back
        _rng_restore(rng)
        return iterator


__all__ = ['FLAG_ENV', 'SAVED_NAME', 'PreemptionHook', 'PreemptibleEpochBasedTrainLoop']
