"""Iteration-interval checkpoints between the epoch checkpoints of an epoch-based schedule.

The real-data schedule (``configs/_base_/schedules/schedule_12e.py``) checkpoints once per epoch,
about 3,500 iterations at 8 GPUs x batch 1. ``PreemptionHook`` saves on a warning (USR1 before the
time limit, SIGTERM of a preemption with a grace time), but a job killed without one (node
failure, a preemption without grace time, srun killing its tasks) would lose up to an epoch.
:class:`IntervalCheckpointHook` writes ``iter_N.pth`` every ``interval`` iterations in between,
keeps the latest ``max_keep_ckpts`` of them, points ``last_checkpoint`` at the newest (so
``tools/train.py --resume`` and the Slurm scripts resume from it) and deletes them once an epoch
checkpoint supersedes them. Resuming one continues mid-epoch exactly: it needs
``train_cfg.type='PreemptibleEpochBasedTrainLoop'`` (the real schedules set it; with another loop
the hook logs a warning and does nothing).

With an iteration-based checkpoint hook (``default_hooks.checkpoint.by_epoch=False``, the tiny
configs) the hook does nothing: set that hook's ``interval`` instead.
"""
from __future__ import annotations

import os.path as osp
from typing import List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook

from splattingocc.registry import HOOKS

from .checkpoint import atomic_write_text
from .preemption import _preemptible

#: message hub runtime info: this hook's checkpoint files still on disk (saved in checkpoints, so
#: a resumed run deletes the files of the run before it too)
INFO_KEY = 'interval_ckpts'


@HOOKS.register_module()
class IntervalCheckpointHook(Hook):
    """Checkpoint every ``interval`` iterations between epoch checkpoints (module docstring).

    Args:
        interval: iterations between two checkpoints (the most a kill without warning loses).
        max_keep_ckpts: how many of this hook's checkpoints to keep (older ones are deleted
            after the newer one is complete).

    Priority ``VERY_LOW``, after the checkpoint hook (the same priority, registered before it as
    a default hook): an epoch checkpoint of this iteration is written first and this hook then
    skips and cleans up; ``PreemptionHook`` (``LOWEST``) reuses a checkpoint this hook wrote at
    the iteration of a preemption request.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: int = 500, max_keep_ckpts: int = 2):
        if int(interval) < 1:
            raise ValueError(f'IntervalCheckpointHook interval must be >= 1, got {interval}')
        if int(max_keep_ckpts) < 1:
            raise ValueError(f'IntervalCheckpointHook max_keep_ckpts must be >= 1, got '
                             f'{max_keep_ckpts}')
        self.interval = int(interval)
        self.max_keep_ckpts = int(max_keep_ckpts)
        self._ckpt_hook: Optional[CheckpointHook] = None
        self._active = False
        self._kept: List[str] = []

    def before_train(self, runner) -> None:
        self._ckpt_hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        self._kept = list(runner.message_hub.get_info(INFO_KEY, None) or [])
        hook = self._ckpt_hook
        if hook is None or not hook.by_epoch:
            self._active = False
            runner.logger.info('IntervalCheckpointHook: the checkpoint hook is iteration-based '
                               '(or absent): nothing to add (set default_hooks.checkpoint.'
                               'interval for the cadence)')
            return
        if not _preemptible(runner.train_loop):
            self._active = False
            runner.logger.warning(
                f'IntervalCheckpointHook: {type(runner.train_loop).__name__} cannot resume in the '
                "middle of an epoch: no interval checkpoints (set train_cfg.type="
                "'PreemptibleEpochBasedTrainLoop')")
            return
        self._active = True
        runner.logger.info(f'IntervalCheckpointHook: a checkpoint every {self.interval} '
                           f'iterations between epoch checkpoints (latest {self.max_keep_ckpts} '
                           'kept)')

    def _epoch_checkpoint_follows(self, runner, batch_idx: int) -> bool:
        """Whether this iteration ends an epoch that the checkpoint hook saves."""
        hook = self._ckpt_hook
        if not self.end_of_epoch(runner.train_dataloader, batch_idx):
            return False
        # mmengine's CheckpointHook.after_train_epoch rule
        return hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
            hook.save_last and hook.is_last_train_epoch(runner))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._active or not self.every_n_train_iters(runner, self.interval):
            return
        iteration = runner.iter + 1
        if iteration >= runner.max_iters or self._epoch_checkpoint_follows(runner, batch_idx):
            return  # the checkpoint hook saves this one
        hook = self._ckpt_hook
        filename = f'iter_{iteration}.pth'
        path = hook.file_backend.join_path(hook.out_dir, filename)
        kept = [p for p in self._kept if p != path] + [path]
        stale, kept = kept[:-self.max_keep_ckpts], kept[-self.max_keep_ckpts:]
        runner.message_hub.update_info(INFO_KEY, list(kept))  # in this checkpoint too
        runner.save_checkpoint(hook.out_dir, filename, meta=dict(epoch=runner.epoch,
                                                                 iter=iteration),
                               by_epoch=False, backend_args=hook.backend_args)
        runner.message_hub.update_info('last_ckpt', path)
        self._kept = kept
        if is_main_process():
            atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), path)
            self._remove(stale)

    def after_train_epoch(self, runner) -> None:
        """An epoch checkpoint written now supersedes this hook's checkpoints: delete them."""
        if not self._active or not self._kept:
            return
        last = runner.message_hub.get_info('last_ckpt')
        if not last or last in self._kept:
            return  # no epoch checkpoint at this epoch: keep them
        stale, self._kept = self._kept, []
        runner.message_hub.update_info(INFO_KEY, [])
        if is_main_process():
            self._remove(stale)

    def _remove(self, paths) -> None:
        backend = self._ckpt_hook.file_backend
        for path in paths:
            if backend.isfile(path):
                backend.remove(path)


__all__ = ['IntervalCheckpointHook']
