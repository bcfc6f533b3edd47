"""Training and test hooks of SplattingOcc (registered in ``splattingocc.registry.HOOKS``).

* :class:`FiniteLossHook`: stops training with a clear error as soon as a loss term is NaN/inf.
* :class:`TrainingSummaryHook`: one final log line (iterations, time, last losses, checkpoint).
* :class:`RandomStateHook`: saves the RNG states in each checkpoint and restores them when training
  resumes, so a resumed run draws the same random numbers (pixel sampling, dropout) as an
  uninterrupted one.
* :class:`DumpPredictionHook`: writes every test prediction to ``DIR/<scene>/<token>/pred.npz``.
"""
from __future__ import annotations

import math
import os.path as osp
import random
import time
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, get_dist_info
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop

from splattingocc.errors import TrainingDivergedError
from splattingocc.registry import HOOKS


def _as_float(value) -> Optional[float]:
    """A loss value (tensor, list of tensors, number) as one float; None if it is not numeric."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:
            return None
        value = value.detach()
        if not torch.isfinite(value).all():
            bad = value[~torch.isfinite(value)].flatten()[0]
            return float(bad)
        return float(value.float().mean())
    if isinstance(value, (list, tuple)):
        parts = [_as_float(v) for v in value]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None
    if isinstance(value, (int, float, np.floating, np.integer)):
        return float(value)
    return None


def _epoch_based(runner) -> bool:
    return isinstance(runner.train_loop, EpochBasedTrainLoop)


def _sample_tokens(data_batch) -> list:
    """Sample tokens of a collated batch (``meta['sample_token']``), if there are any."""
    if isinstance(data_batch, dict):
        meta = data_batch.get('meta')
        if isinstance(meta, dict) and 'sample_token' in meta:
            tokens = meta['sample_token']
            return [str(t) for t in (tokens if isinstance(tokens, (list, tuple)) else [tokens])]
        if isinstance(meta, (list, tuple)):
            return [str(m['sample_token']) for m in meta
                    if isinstance(m, dict) and 'sample_token' in m]
    return []


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise after a training iteration whose loss terms or model tensors are not all finite.

    Every key of the model's output that starts with ``'loss'`` is checked (the total ``loss`` last,
    so the message names the term that went bad), then every parameter and floating-point buffer
    of the model (``check_weights``): a BatchNorm ``running_var`` can overflow while the losses
    stay finite. The error (:class:`~splattingocc.errors.TrainingDivergedError`, one line through
    the tools) names the term or tensor, the value, the iteration (1-based, as the log prints it),
    the samples of the batch, the last checkpoint (only checkpoints whose tensors are all finite
    are written, ``AtomicCheckpointHook``) and what to try. The hook runs before the checkpoint
    and logger hooks, so non-finite weights are never saved.

    Args:
        interval: check every ``interval`` iterations (1 = every iteration; the check is a few
            scalar reads and one reduction over the model's tensors).
        check_weights: also check the model's parameters and buffers.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, interval: int = 1, check_weights: bool = True):
        assert interval >= 1, f'FiniteLossHook interval must be >= 1, got {interval}'
        self.interval = interval
        self.check_weights = check_weights

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if outputs is None or not self.every_n_train_iters(runner, self.interval):
            return
        keys = [k for k in outputs if isinstance(k, str) and k.startswith('loss')]
        keys = sorted(keys, key=lambda k: k == 'loss')  # individual terms first, the total last
        bad = None
        for key in keys:
            value = _as_float(outputs[key])
            if value is not None and not math.isfinite(value):
                bad = (key, value)
                break
        tensor = None
        if bad is None and self.check_weights and getattr(runner, 'model', None) is not None:
            from .checkpoint import first_non_finite
            tensor = first_non_finite(runner.model)
        where = f'iteration {runner.iter + 1}'
        if _epoch_based(runner):
            where += f' (epoch {runner.epoch + 1})'
        _, world_size = get_dist_info()
        if world_size > 1:
            # every rank stops together (a rank raising alone would leave the others waiting in
            # the next collective until the timeout)
            # [a loss term is bad, a tensor is bad]: a NaN loss on one rank reaches the weights
            # of every rank through the gradient all-reduce, so a rank with finite losses names
            # the other rank's loss, not its own weights
            flags = torch.tensor([float(bad is not None), float(tensor is not None)])
            all_reduce(flags, op='sum')
            if bad is None and (float(flags[0]) > 0 or (tensor is None and float(flags[1]) > 0)):
                what = 'a loss term' if float(flags[0]) > 0 else 'a weight'
                raise TrainingDivergedError(
                    f'{what} became non-finite on another process at {where}; see the error of '
                    'that rank (its log) for the term and what to try')
        if bad is None and tensor is None:
            return
        if bad is not None:
            key, value = bad
            what = f'{key} became {"nan" if math.isnan(value) else value} at {where}'
        else:
            what = f'the model {tensor} after {where} (the losses were finite)'
        tokens = _sample_tokens(data_batch)
        batch = f' The batch held samples {", ".join(tokens)}.' if tokens else ''
        last = runner.message_hub.get_info('last_ckpt')
        resume = (f' The last complete checkpoint is {last} (resume with --resume).'
                  if last else ' No checkpoint was saved yet.')
        raise TrainingDivergedError(
            f'{what}; training stopped before saving these weights.{batch}{resume} What to try: '
            'lower the learning rate (optim_wrapper.optimizer.lr) or add/tighten gradient '
            'clipping (optim_wrapper.clip_grad=dict(max_norm=35, norm_type=2)); check the labels '
            'of these samples (depth must be > 0 where labelled, classes 0..16 or 255); if it '
            'happens with --amp, train without it.')


@HOOKS.register_module()
class TrainingSummaryHook(Hook):
    """Log one final line when training ends: iterations, wall time, last losses, checkpoint."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        self._start_time = time.perf_counter()
        self._start_iter = runner.iter
        self._val_seconds = 0.0

    def before_val(self, runner) -> None:
        self._val_start = time.perf_counter()

    def after_val(self, runner) -> None:
        if getattr(self, '_val_start', None) is not None:
            self._val_seconds = getattr(self, '_val_seconds', 0.0) + (
                time.perf_counter() - self._val_start)
            self._val_start = None

    def after_train(self, runner) -> None:
        total = time.perf_counter() - getattr(self, '_start_time', time.perf_counter())
        val_seconds = getattr(self, '_val_seconds', 0.0)
        seconds = total - val_seconds  # training only
        done = runner.iter - getattr(self, '_start_iter', 0)
        losses = []
        for name, buffer in runner.message_hub.log_scalars.items():
            if name.startswith('train/loss'):
                losses.append(f'{name[len("train/"):]}={buffer.current():.4f}')
        last = runner.message_hub.get_info('last_ckpt')
        per_iter = f' ({seconds / done:.3f} s/iter)' if done > 0 else ''
        val = f' + validation {val_seconds:.1f} s' if val_seconds > 0 else ''
        epoch = f', epoch {runner.epoch}/{runner.max_epochs}' if _epoch_based(runner) else ''
        runner.logger.info(
            f'Training finished: iteration {runner.iter}/{runner.max_iters}{epoch}; '
            f'{done} iterations in {seconds:.1f} s{per_iter}{val}; last losses: '
            f'{", ".join(losses) if losses else "none logged"}; last checkpoint: {last or "none"}')


def _rng_states() -> dict:
    states = dict(python=random.getstate(), numpy=np.random.get_state(),
                  torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        cuda = states['cuda']
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random number generator states with each checkpoint; restore them on resume.

    mmengine restores weights, optimizer, schedulers and the data order (the train loop skips the
    batches already seen) but not the global RNGs (python, numpy, torch CPU and CUDA), so random
    draws in the model (pixel sampling, dropout) after a resume differ from an uninterrupted run.
    This hook stores, at every save, the states of every rank (``checkpoint['rng_states']``, a list
    indexed by rank) and sets them again right before the first iteration after the resume.

    Cost: the states of the other ranks are gathered (``all_gather_object``, a collective) only
    when a checkpoint is written: the hook wraps ``runner.save_checkpoint`` for the time of
    training, and every rank calls it (mmengine's ``save_checkpoint`` writes on rank 0 only, but
    the checkpoint hooks and ``PreemptionHook`` call it on every rank), so the gather runs on all
    ranks right before the save.

    Exactness: the states are captured when the checkpoint is saved. Epoch-based loops restore
    them at the start of the next epoch (before its data iterator exists): exact. Iteration-based
    loops restore them before the next iteration's forward pass, i.e. after the loop skipped the
    batches already seen and loaded the next one: exact when loading a batch draws no random
    numbers in the main process (``num_workers > 0`` without crossing the end of the loader, e.g.
    with ``InfiniteSampler``; or transforms without global randomness). With a different world
    size the states are not restored (logged).
    """

    priority = 'VERY_HIGH'

    def __init__(self):
        self._pending = None
        self._gathered = None

    def before_train(self, runner) -> None:
        # gather the ranks' states right before each save, on every rank (class docstring)
        save = runner.save_checkpoint
        if getattr(save, '_gathers_rng_states', False):
            return

        def save_checkpoint(*args, **kwargs):
            _, world_size = get_dist_info()
            self._gathered = all_gather_object(_rng_states()) if world_size > 1 else None
            try:
                return save(*args, **kwargs)
            finally:
                self._gathered = None

        save_checkpoint._gathers_rng_states = True
        runner.save_checkpoint = save_checkpoint

    def after_train(self, runner) -> None:
        if getattr(runner.__dict__.get('save_checkpoint'), '_gathers_rng_states', False):
            del runner.save_checkpoint  # back to the Runner's own method

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        _, world_size = get_dist_info()
        states = self._gathered if (world_size > 1 and self._gathered) else [_rng_states()]
        checkpoint['rng_states'] = states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get('rng_states')
        if not states or not getattr(runner, '_resume', False):
            return  # only a resume continues the random streams (not load_from / testing)
        rank, world_size = get_dist_info()
        if len(states) != world_size:
            runner.logger.warning(
                f'checkpoint has random states of {len(states)} processes, this run has '
                f'{world_size}: not restoring them (training continues, with other random draws)')
            return
        self._pending = states[rank]

    def before_train_epoch(self, runner) -> None:
        # epoch-based loops resume at an epoch start: restore before the epoch's data iterator
        # is created (creating it draws a seed from the torch RNG)
        if self._pending is not None and _epoch_based(runner):
            self._restore()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # iteration-based loops: after the loop skipped the batches already trained on
        if self._pending is not None:
            self._restore()

    def _restore(self) -> None:
        _set_rng_states(self._pending)
        self._pending = None


def _fallback_dump_prediction(out_dir: str, scene_name: str, sample_token: str,
                              semantics: np.ndarray, **scores) -> str:
    """Atomic ``out_dir/<scene>/<token>/pred.npz`` (key 'semantics', uint8; scores float16)."""
    from .checkpoint import atomic_open
    path = osp.join(out_dir, scene_name, sample_token, 'pred.npz')
    arrays = {k: np.asarray(v, dtype=np.float16) for k, v in scores.items()}
    with atomic_open(path, 'wb') as f:
        np.savez_compressed(f, semantics=np.asarray(semantics, dtype=np.uint8), **arrays)
    return path


def _dump_function():
    try:
        from splattingocc.evaluation.dump import dump_prediction
        return dump_prediction
    except ImportError:
        return _fallback_dump_prediction


@HOOKS.register_module()
class DumpPredictionHook(Hook):
    """Write each test prediction to ``out_dir/<scene_name>/<sample_token>/pred.npz``.

    Uses ``splattingocc.evaluation.dump.dump_prediction`` (atomic, npz key ``'semantics'``, uint8
    [X, Y, Z]; with ``scores=True`` also the outputs' 'occupancy' and 'class_probs' in float16,
    about 19 MB a frame on the Occ3D grid, which tools/eval_occ.py --metric ap needs). Each rank
    writes its own samples. The model's predict output must follow the data
    contract: dicts with ``'semantics'``, ``'sample_token'``, ``'scene_name'``.
    """

    priority = 'NORMAL'

    def __init__(self, out_dir: str, scores: bool = False):
        self.out_dir = out_dir
        self.scores = bool(scores)
        self.count = 0

    def before_test(self, runner) -> None:
        self._dump = _dump_function()
        self.count = 0
        from .checkpoint import remove_stale_partials  # files of a killed earlier dump
        for path in remove_stale_partials(self.out_dir, recursive=True):
            runner.logger.info(f'removed {path}, left by a killed writer')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None,
                        outputs: Optional[Sequence[dict]] = None) -> None:
        for out in outputs or []:
            missing = [k for k in ('semantics', 'sample_token', 'scene_name') if k not in out]
            if missing:
                raise KeyError(
                    f'--dump-dir: the model output lacks {missing}; predict() must return dicts '
                    "with 'semantics', 'sample_token' and 'scene_name' (docs: data contract)")
            semantics = out['semantics']
            if isinstance(semantics, torch.Tensor):
                semantics = semantics.detach().cpu().numpy()
            scores = {}
            if self.scores:  # the continuous scores too (float16 in the file)
                scores = {k: out.get(k) for k in ('occupancy', 'class_probs')}
                if any(v is None for v in scores.values()):
                    raise KeyError("--dump-scores: the model output lacks 'occupancy' / "
                                   "'class_probs' (SplattingOcc.predict returns them)")
            self._dump(self.out_dir, str(out['scene_name']), str(out['sample_token']), semantics,
                       **scores)
            self.count += 1

    def after_test(self, runner) -> None:
        runner.logger.info(
            f'Wrote {self.count} predictions to {self.out_dir}/<scene>/<token>/pred.npz')


__all__ = ['FiniteLossHook', 'TrainingSummaryHook', 'RandomStateHook', 'DumpPredictionHook']
