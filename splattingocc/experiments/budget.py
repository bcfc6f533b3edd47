"""The training budget that every arm gets, and the hook that measures and enforces it.

* ``--iters N`` (:class:`Budget` ``iters``): N training iterations; the loop length and the end
  of the schedulers that ended at the base's last iteration (the cosine decay) become N
  (:func:`schedule_overrides`).
* ``--budget-minutes M`` (:class:`Budget` ``minutes``): a short timing run per arm measures
  its seconds per iteration (:func:`seconds_per_iter_from_timing`); the arm then trains
  ``N_arm = floor(60 M / s_per_iter)`` iterations (:func:`iterations_for_minutes`, its schedule
  fitted to them), and :class:`TimeBudgetHook` stops it when the training clock reaches M minutes
  anyway. The training clock is the sum of the iteration times (data loading, forward, backward,
  step, checkpoints): start-up and the intermediate evaluations are not counted.

:class:`TimeBudgetHook` (registered in ``HOOKS``, added to every training run as
``default_hooks.ablation_timer``, its module :data:`HOOK_MODULE` in ``custom_imports``) records
the training clock, the data-loading and rendering time (the model's ``time_render`` log value,
when it logs one) and the metrics of the intermediate evaluations (mmengine's val loop, ``--evals``
times per run) into ``<work_dir>/ablation_timer.json``.
"""
from __future__ import annotations

import copy
import json
import math
import os.path as osp
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np
from mmengine.config import Config
from mmengine.hooks import Hook

from splattingocc.engine.checkpoint import atomic_write_text
from splattingocc.errors import UserError
from splattingocc.registry import HOOKS

from .records import TIMER_FILE, is_number, read_json

#: name of the hook entry in ``default_hooks`` (and of its state in checkpoint ``meta``)
TIMER_HOOK_NAME = 'ablation_timer'
#: module imported by the training subprocess (``custom_imports``) so the hook is registered
HOOK_MODULE = __name__  # 'splattingocc.experiments.budget'
#: the model's rendering time per iteration in its loss dict (seconds), when it reports one
RENDER_TIME_KEYS = ('train/time_render',)


# ----------------------------------------------------------------------------------------------
# iterations and schedule
# ----------------------------------------------------------------------------------------------

@dataclass
class Budget:
    """The training budget of every arm: ``iters`` iterations or ``minutes`` of training clock."""
    iters: Optional[int] = None
    minutes: Optional[float] = None

    def __post_init__(self):
        if (self.iters is None) == (self.minutes is None):
            raise UserError('give exactly one budget: --iters N or --budget-minutes M')
        if self.iters is not None and int(self.iters) < 1:
            raise UserError(f'--iters must be >= 1, got {self.iters}')
        if self.minutes is not None and not float(self.minutes) > 0:
            raise UserError(f'--budget-minutes must be > 0, got {self.minutes}')

    @property
    def kind(self) -> str:
        return 'iters' if self.iters is not None else 'minutes'

    @property
    def tag(self) -> str:
        """The folder of this budget's runs in the output folder: ``iters-600``, ``minutes-5``."""
        if self.iters is not None:
            return f'iters-{int(self.iters)}'
        return f'minutes-{float(self.minutes):g}'

    @property
    def title(self) -> str:
        """The table's name: 'equal iterations (600)' or 'equal wall-clock (5 min)'."""
        if self.iters is not None:
            return f'equal iterations ({int(self.iters)} per run)'
        return f'equal wall-clock ({float(self.minutes):g} min of training clock per run)'

    def describe(self) -> str:
        if self.iters is not None:
            return f'{self.iters} training iterations per run'
        return (f'{self.minutes:g} minutes of training clock per run (iterations per arm from a '
                'timing run; start-up and evaluations not counted)')

    def to_dict(self) -> dict:
        return dict(kind=self.kind, iters=self.iters, minutes=self.minutes, tag=self.tag)


def seconds_per_iter_from_timing(iter_times: Sequence[float], skip: int) -> float:
    """Mean iteration time after the first ``skip`` (start-up) iterations."""
    times = [float(t) for t in iter_times]
    if len(times) <= skip:
        raise ValueError(f'timing run: {len(times)} iteration times, need more than {skip}')
    return float(np.mean(times[skip:]))


def iterations_for_minutes(minutes: float, seconds_per_iter: float) -> int:
    """How many iterations fit into ``minutes`` at ``seconds_per_iter`` (at least 1)."""
    if not seconds_per_iter > 0:
        raise ValueError(f'seconds per iteration must be > 0, got {seconds_per_iter}')
    return max(1, int(math.floor(minutes * 60.0 / seconds_per_iter + 1e-9)))


def schedule_overrides(base: Config, max_iters: int, evals: int) -> Dict[str, Any]:
    """Overrides that make ``base`` train ``max_iters`` iterations with ``evals`` evaluations.

    The loop length, the evaluation interval (``evals`` evenly spaced evaluations, the last at the
    end; 0: none during training) and the ``end`` of every scheduler that ended at the base's last
    iteration (so e.g. a cosine decay still reaches its minimum).
    """
    train_cfg = base.get('train_cfg') or {}
    if train_cfg.get('type') not in ('IterBasedTrainLoop', 'mmengine.IterBasedTrainLoop'):
        raise UserError(
            f'tools/ablate.py needs an iteration-based base config (train_cfg.type='
            f"'IterBasedTrainLoop', as configs/_base_/schedules/schedule_tiny.py); "
            f'{base.filename} uses {train_cfg.get("type")}: derive an iteration-based variant')
    old = train_cfg.get('max_iters')
    out: Dict[str, Any] = {'train_cfg.max_iters': int(max_iters)}
    if evals > 0:
        out['train_cfg.val_interval'] = int(math.ceil(max_iters / evals))
    else:
        out['train_cfg.val_begin'] = int(max_iters) + 1  # no evaluation inside the run
    schedulers = base.get('param_scheduler')
    items = schedulers if isinstance(schedulers, (list, tuple)) else \
        ([schedulers] if isinstance(schedulers, dict) else [])
    for i, sched in enumerate(items):
        prefix = f'param_scheduler.{i}' if isinstance(schedulers, (list, tuple)) \
            else 'param_scheduler'
        if sched.get('by_epoch', True):
            raise UserError(f'{base.filename}: {prefix} ({sched.get("type")}) is by_epoch; an '
                            'iteration budget needs by_epoch=False schedulers')
        for key in ('end', 'T_max'):
            if old is not None and sched.get(key) == old:
                out[f'{prefix}.{key}'] = int(max_iters)
    return out


# ----------------------------------------------------------------------------------------------
# the training hook
# ----------------------------------------------------------------------------------------------

@HOOKS.register_module()
class TimeBudgetHook(Hook):
    """Measure the training clock, record evaluations, stop training at a time budget.

    The training clock adds up the wall time of every training iteration (from the end of the
    previous one, so data loading, hooks and checkpoint saving count; start-up and validation do
    not). When it reaches ``max_seconds`` the loop is shortened to end after the current
    iteration, so the usual end-of-training behaviour follows: the last checkpoint
    (``save_last``) and the final evaluation. The state is saved in checkpoints and restored on
    resume, so a resumed run continues the same clock.

    Written to ``<work_dir>/<out_file>`` (JSON, atomic) after every evaluation and at the end:
    ``iters`` (done), ``max_iters``, ``train_seconds``, ``data_seconds``, ``render_seconds``
    (None unless the model logs ``time_render``), ``iter_times`` (with ``record_iter_times``:
    timing runs),
    ``timeline`` (``[{iter, train_seconds, metrics}]`` per evaluation), ``stopped_by_budget``,
    ``peak_gpu_mb`` (CUDA only), ``finished``.

    Args:
        max_seconds: training-clock budget in seconds (None: no limit).
        out_file: file name in the work dir.
        record_iter_times: keep every iteration's time (timing runs).
    """

    priority = 'LOW'  # after IterTimerHook / RuntimeInfoHook, before the CheckpointHook
    _clock = staticmethod(time.perf_counter)

    def __init__(self, max_seconds: Optional[float] = None, out_file: str = TIMER_FILE,
                 record_iter_times: bool = False):
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f'TimeBudgetHook: max_seconds must be > 0, got {max_seconds}')
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.out_file = out_file
        self.record_iter_times = bool(record_iter_times)
        self.state = self._fresh_state()
        self._mark = None

    @staticmethod
    def _fresh_state() -> dict:
        return dict(iters=0, train_seconds=0.0, data_seconds=0.0, render_seconds=None,
                    iter_times=[], timeline=[], stopped_by_budget=False)

    # -- clock ----------------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if not hasattr(loop, '_max_iters'):
            raise UserError(
                f'TimeBudgetHook needs an iteration-based training loop (IterBasedTrainLoop); '
                f'this run uses {type(loop).__name__}')
        self._mark = self._clock()
        if self.max_seconds is not None and self.state['train_seconds'] >= self.max_seconds:
            loop._max_iters = runner.iter  # budget already spent before the resume
            self.state['stopped_by_budget'] = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        now = self._clock()
        dt = now - (self._mark if self._mark is not None else now)
        self._mark = now
        st = self.state
        st['iters'] = runner.iter + 1
        st['train_seconds'] += dt
        if self.record_iter_times:
            st['iter_times'].append(dt)
        hub = runner.message_hub
        data_time = _hub_current(hub, 'train/data_time')
        if data_time is not None:
            st['data_seconds'] += data_time
        render = None
        for key in RENDER_TIME_KEYS:
            render = _hub_current(hub, key)
            if render is not None:
                break
        if render is not None:
            st['render_seconds'] = (st['render_seconds'] or 0.0) + render
        stop = self.max_seconds is not None and st['train_seconds'] >= self.max_seconds
        stop = _broadcast_flag(stop)
        if stop and runner.iter + 1 < runner.train_loop._max_iters:
            # IterBasedTrainLoop has no public way to end early *with* its end-of-training
            # evaluation and last checkpoint; shortening the loop gives both
            runner.train_loop._max_iters = runner.iter + 1
            st['stopped_by_budget'] = True
            runner.logger.info(
                f'TimeBudgetHook: training clock {st["train_seconds"]:.1f} s reached the budget '
                f'of {self.max_seconds:.1f} s; training ends after iteration {runner.iter + 1}')

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        numeric = {k: float(v) for k, v in (metrics or {}).items() if is_number(v)}
        self.state['timeline'].append(dict(iter=int(runner.iter),
                                           train_seconds=float(self.state['train_seconds']),
                                           metrics=numeric))
        self._mark = self._clock()  # the evaluation is not training time
        self._write(runner, finished=False)

    def after_train(self, runner) -> None:
        self._write(runner, finished=True)

    # -- checkpoints ----------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[TIMER_HOOK_NAME] = copy.deepcopy(self.state)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = (checkpoint.get('meta') or {}).get(TIMER_HOOK_NAME)
        if saved and getattr(runner, '_resume', False):
            state = self._fresh_state()
            state.update(saved)
            # an evaluation right after the checkpoint's iteration is not in the checkpoint (it is
            # saved first); take such points from the file the interrupted run left
            previous = read_json(osp.join(runner.work_dir, self.out_file)) or {}
            have = {t['iter'] for t in state['timeline']}
            extra = [t for t in previous.get('timeline') or []
                     if t.get('iter') not in have and t.get('iter', 1e18) <= state['iters']]
            state['timeline'] = sorted(state['timeline'] + extra, key=lambda t: t['iter'])
            self.state = state

    # -- output ---------------------------------------------------------------------------------
    def _write(self, runner, finished: bool) -> None:
        from mmengine.dist import is_main_process
        if not is_main_process():
            return
        out = dict(self.state, max_iters=int(runner.max_iters), finished=bool(finished),
                   max_seconds=self.max_seconds, peak_gpu_mb=_peak_gpu_mb())
        atomic_write_text(osp.join(runner.work_dir, self.out_file),
                          json.dumps(out, indent=1, sort_keys=True) + '\n')


def _hub_current(hub, key: str) -> Optional[float]:
    buffers = hub.log_scalars
    if key not in buffers:
        return None
    try:
        return float(buffers[key].current())
    except (ValueError, IndexError, TypeError):
        return None


def _broadcast_flag(flag: bool) -> bool:
    """Rank 0's decision on every rank, so all processes stop at the same iteration."""
    from mmengine.dist import broadcast, get_world_size
    if get_world_size() <= 1:
        return flag
    import torch
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    broadcast(t, 0)
    return bool(t.item())


def _peak_gpu_mb() -> Optional[float]:
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return float(torch.cuda.max_memory_allocated()) / 2 ** 20
    return None
