"""Ablation runner behind ``tools/ablate.py``: train every arm under one budget, evaluate, compare.

An *arm* is the base config with one thing changed, written as ``--cfg-options`` keys -> values
(the override mechanism of ``tools/train.py``). Named arms (:func:`named_arm`):

* ``splat``: the base as it is (its renderer must be a splatting renderer);
* ``nerf``: the renderer replaced by the RenderOcc-style ``VolumeRenderer`` (the key that
  ``configs/renderocc/*.py`` change; the head then outputs a density grid);
* ``3d``: Occ3D (3D) supervision only (as ``splattingocc-tiny-synthetic-3d.py``);
* ``2d3d``: 2D and 3D supervision (as ``splattingocc-tiny-synthetic-2d3d.py``).

Any other knob is an arm ``name=key=value[,key=value...]``, e.g.
``uniform=model.pixel_sampler.mode=uniform``, ``rays6k=model.pixel_sampler.num_rays=6144``,
``aux1=train_dataloader.dataset.num_adjacent=1``,
``l1=model.loss_depth._delete_=True,model.loss_depth.type=L1DepthLoss``,
``iso=model.head.isotropic=True,model.head.max_scale=0.4``.

Each (arm, seed) runs as ``python tools/train.py BASE --work-dir OUT/<arm>/seed<s> --cfg-options
<arm> randomness.seed=<s> train_cfg.max_iters=<N> ...`` and then ``python tools/test.py ...
--eval segm [ray]``. An arm whose values cannot be written on a command line (the 3D arms replace
the training pipeline, a list of dicts) is merged into the base with the same
``Config.merge_from_dict`` call that ``--cfg-options`` uses and written to ``OUT/<arm>/config.py``,
which then takes the place of BASE.

Budget (the same for every arm, stated in the results):

* ``--iters N``: N training iterations; the loop length and the end of the schedulers that ended
  at the base's last iteration (the cosine decay) become N.
* ``--budget-minutes M``: a short calibration run per arm measures its seconds per iteration;
  the arm then trains ``N_arm = floor(60 M / s_per_iter)`` iterations (its schedule fitted to
  them), and :class:`TimeBudgetHook` stops it when the training clock reaches M minutes anyway.
  The training clock is the sum of the iteration times (data loading, forward, backward, step,
  checkpoints): start-up and the intermediate evaluations are not counted.

:class:`TimeBudgetHook` (registered in ``HOOKS``, added to every training run as
``default_hooks.ablation_timer``) records the training clock, the data-loading and rendering time
(the model's ``time_render`` log value, when it logs one) and the metrics of the intermediate
evaluations (mmengine's val loop, ``--evals`` times per run) into
``<work_dir>/ablation_timer.json``.

Continuation: a finished (arm, seed) leaves ``OUT/<arm>/seed<s>/result.json`` (written
atomically) and is not rerun; a failed one leaves a result with ``status: 'failed'`` and the
error, does not stop the others, and is retried by the next call; an interrupted training resumes
from its last checkpoint. Outputs: ``OUT/results.md``, ``OUT/results.json``, plots, and an entry
appended to ``log.txt``.
"""
from __future__ import annotations

import copy
import datetime
import io
import json
import math
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook

from splattingocc.engine.checkpoint import atomic_write_bytes, atomic_write_text
from splattingocc.errors import UserError
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import HOOKS

# ----------------------------------------------------------------------------------------------
# constants
# ----------------------------------------------------------------------------------------------

#: renderer types that splat Gaussians (splattingocc/rendering)
SPLAT_RENDERERS = ('TorchSplatRenderer', 'GsplatRenderer', 'SplatRenderer')
#: the NeRF baseline's renderer, as configs/renderocc/renderocc-*.py assign it
NERF_RENDERER = dict(type='VolumeRenderer', step_ratio=0.5)
NAMED_ARMS = ('splat', 'nerf', '3d', '2d3d')
#: name of the hook entry in ``default_hooks`` and of the file it writes in the work dir
TIMER_HOOK_NAME = 'ablation_timer'
TIMER_FILE = 'ablation_timer.json'
#: module imported by the training subprocess (``custom_imports``) so the hook is registered
HOOK_MODULE = 'splattingocc.ablation'
RESULT_FILE = 'result.json'
PLOT_FILES = ('miou_vs_time.png', 'per_class_iou.png', 'step_time.png')
CALIBRATION_FILE = 'calibration.json'
#: the model's rendering time per iteration in its loss dict (seconds), when it reports one
RENDER_TIME_KEYS = ('train/time_render',)
_ARM_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]*$')
_MISSING = object()


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
    (None unless the model logs ``time_render``), ``iter_times`` (with ``record_iter_times``),
    ``timeline`` (``[{iter, train_seconds, metrics}]`` per evaluation), ``stopped_by_budget``,
    ``peak_gpu_mb`` (CUDA only), ``finished``.

    Args:
        max_seconds: training-clock budget in seconds (None: no limit).
        out_file: file name in the work dir.
        record_iter_times: keep every iteration's time (calibration runs).
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
        numeric = {k: float(v) for k, v in (metrics or {}).items() if _is_number(v)}
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


def _is_number(v) -> bool:
    """A value ``float()`` accepts (numbers, 0-d arrays), but not a string."""
    if isinstance(v, (str, bytes)):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


# ----------------------------------------------------------------------------------------------
# config helpers: overrides, command-line values, flattened diffs
# ----------------------------------------------------------------------------------------------

def load_base_config(path: str) -> Config:
    if not osp.isfile(path):
        raise UserError(f'base config {path} not found: pass e.g. --base '
                        'configs/splattingocc/splattingocc-tiny-synthetic.py')
    return Config.fromfile(path)


def apply_overrides(cfg: Config, overrides: Dict[str, Any]) -> Config:
    """A copy of ``cfg`` with ``overrides`` merged exactly as ``--cfg-options`` merges them."""
    out = copy.deepcopy(cfg)
    if overrides:
        out.merge_from_dict(copy.deepcopy(overrides))
    return out


def parse_cli_value(text: str) -> Any:
    """A ``--cfg-options`` value string as ``tools/train.py`` reads it (mmengine DictAction)."""
    return DictAction._parse_iterable(text)


def cli_value(value: Any) -> Optional[str]:
    """``value`` as a ``--cfg-options`` string that parses back to it, or None if there is none."""
    text = _format_cli(value)
    if text is None:
        return None
    try:
        back = parse_cli_value(text)
    except (AssertionError, ValueError):
        return None
    return text if _same(back, value) else None


def _format_cli(value: Any) -> Optional[str]:
    if value is None:
        return 'None'
    if isinstance(value, bool):
        return 'True' if value else 'False'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        parts = [_format_cli(v) for v in value]
        if any(p is None for p in parts):
            return None
        inner = ','.join(parts)
        return f'({inner})' if isinstance(value, tuple) else f'[{inner}]'
    return None  # dicts and other objects have no command-line form


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b and type(a) is type(b)
    return type(a) is type(b) and a == b


def cli_tokens(overrides: Dict[str, Any]) -> Optional[List[str]]:
    """``key=value`` tokens for ``--cfg-options`` (None: a value has no command-line form)."""
    tokens = []
    for key, value in overrides.items():
        text = cli_value(value)
        if text is None:
            return None
        tokens.append(f'{key}={text}')
    return tokens


def short_value(value: Any, limit: int = 120) -> str:
    """A one-line, human-readable form of an override value (pipelines as their type names)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        text = '[' + ', '.join(str(v.get('type', '{...}')) for v in value) + ']'
    elif isinstance(value, dict):
        text = 'dict(' + ', '.join(f'{k}={short_value(v, limit)}' for k, v in value.items()) + ')'
    else:
        text = cli_value(value) or repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def describe_overrides(overrides: Dict[str, Any]) -> str:
    """``key=value key=value`` (empty overrides: ``(base as is)``)."""
    if not overrides:
        return '(base as is)'
    return ' '.join(f'{k}={short_value(v)}' for k, v in overrides.items())


def flatten_config(obj: Any, prefix: str = '') -> Dict[str, Any]:
    """Nested dicts (and lists of dicts, by index) -> ``{'a.b.0.c': leaf}``."""
    out: Dict[str, Any] = {}
    if isinstance(obj, Config):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        if not obj and prefix:
            out[prefix] = {}
        for k, v in obj.items():
            out.update(flatten_config(v, f'{prefix}.{k}' if prefix else str(k)))
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, dict) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten_config(v, f'{prefix}.{i}'))
    else:
        out[prefix] = obj
    return out


def config_diff(base: Any, other: Any) -> Dict[str, Tuple[Any, Any]]:
    """``{flat key: (base value, other value)}`` where they differ; ``None``-less absence is
    reported as the string ``'<absent>'``."""
    a, b = flatten_config(base), flatten_config(other)
    diff = {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va is _MISSING or vb is _MISSING or not _same(_plain(va), _plain(vb)):
            diff[key] = ('<absent>' if va is _MISSING else va,
                         '<absent>' if vb is _MISSING else vb)
    return diff


def _plain(v):
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    return v


def check_override_keys(base: Config, overrides: Dict[str, Any], what: str) -> List[str]:
    """Raise if an override's parent path is not in ``base`` (a typo); return new leaf keys."""
    root = base.to_dict()
    deleted = {k[:-len('._delete_')] for k in overrides if k.endswith('._delete_')}
    added = []
    for key in overrides:
        parts = key.split('.')
        if parts[-1] == '_delete_':
            parts = parts[:-1]
            need_leaf = True
        else:
            need_leaf = False
        node: Any = root
        for depth, part in enumerate(parts):
            path = '.'.join(parts[:depth + 1])
            parent = '.'.join(parts[:depth]) or '<top level>'
            is_leaf = depth == len(parts) - 1
            if any(path == d or path.startswith(d + '.') for d in deleted) and not need_leaf:
                break  # under a replaced dict: anything goes
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif is_leaf and not need_leaf and isinstance(node, dict):
                added.append(key)
                break
            else:
                raise UserError(
                    f'{what}: key {key!r} does not match the base config {base.filename} '
                    f'({part!r} is not in {parent}); check its spelling against the config')
    return added


# ----------------------------------------------------------------------------------------------
# arms
# ----------------------------------------------------------------------------------------------

@dataclass
class Arm:
    """One arm: a name and the ``--cfg-options`` overrides applied to the base config.

    ``raw`` keeps the value strings a user typed for custom arms (used as they are on the
    command line); ``description`` says what the arm changes.
    """
    name: str
    overrides: Dict[str, Any]
    description: str = ''
    raw: Dict[str, str] = field(default_factory=dict)

    def cli_tokens(self) -> Optional[List[str]]:
        """``key=value`` tokens, or None when some value has no command-line form."""
        tokens = []
        for key, value in self.overrides.items():
            text = self.raw.get(key)
            if text is None:
                text = cli_value(value)
            if text is None:
                return None
            tokens.append(f'{key}={text}')
        return tokens


def _renderer_type(cfg: Config) -> Optional[str]:
    renderer = (cfg.get('model') or {}).get('renderer')
    return renderer.get('type') if isinstance(renderer, dict) else None


def named_arm(name: str, base: Config) -> Arm:
    """The overrides of a named arm (``splat``, ``nerf``, ``3d``, ``2d3d``) for ``base``."""
    model = base.get('model')
    if not isinstance(model, dict):
        raise UserError(f'{base.filename}: no model=dict(...) in the base config')
    if name == 'splat':
        rtype = _renderer_type(base)
        if rtype not in SPLAT_RENDERERS:
            raise UserError(
                f'--arms splat: the base config {base.filename} renders with {rtype}, not a '
                f'splatting renderer ({", ".join(SPLAT_RENDERERS)}); use a SplattingOcc base '
                'config (e.g. configs/splattingocc/splattingocc-tiny-synthetic.py) or define the '
                'arm yourself: splat=model.renderer._delete_=True,model.renderer.type=...')
        return Arm('splat', {}, 'the base config as it is (splatting renderer '
                   f'{rtype})')
    if name == 'nerf':
        if 'renderer' not in model:
            raise UserError(f'--arms nerf: {base.filename} has no model.renderer to replace')
        overrides = {'model.renderer._delete_': True}
        overrides.update({f'model.renderer.{k}': v for k, v in NERF_RENDERER.items()})
        return Arm('nerf', overrides, 'renderer replaced by the NeRF volume renderer '
                   '(as configs/renderocc/*.py)')
    if name in ('3d', '2d3d'):
        pipeline = base.get('train_pipeline_3d')
        if pipeline is None:
            raise UserError(
                f'--arms {name}: the base config {base.filename} has no train_pipeline_3d (the '
                'training pipeline with LoadOcc3DLabels that 3D supervision needs); define it as '
                'configs/_base_/datasets/occ3d_nuscenes_data.py does')
        if model.get('loss_3d') is None:
            raise UserError(f'--arms {name}: the base config {base.filename} has model.loss_3d='
                            "None; 3D supervision needs e.g. dict(type='Occupancy3DLoss')")
        pipeline = Config(dict(p=pipeline)).to_dict()['p']  # plain lists and dicts
        if name == '3d':
            overrides = {'model.use_2d_supervision': False, 'model.use_3d_supervision': True,
                         # no LiDAR depth without 2D labels
                         'model.loss_lss_depth': None,
                         # the upper bound: the loss on the Occ3D grid, inside mask_camera
                         # (as configs/splattingocc/splattingocc-tiny-synthetic-3d.py)
                         'model.loss_3d_grid': 'occ', 'model.use_mask_camera': True,
                         'train_dataloader.dataset.pipeline': pipeline}
            return Arm('3d', overrides, 'Occ3D (3D) supervision only, no 2D labels, loss on '
                       'the Occ3D grid inside mask_camera')
        overrides = {'model.use_2d_supervision': True, 'model.use_3d_supervision': True,
                     'train_dataloader.dataset.pipeline': pipeline}
        return Arm('2d3d', overrides, '2D labels and Occ3D (3D) supervision')
    raise UserError(f'--arms: unknown arm {name!r}; named arms are {", ".join(NAMED_ARMS)}, '
                    'others are written name=key=value[,key=value...]')


def split_top_level(text: str, sep: str = ',') -> List[str]:
    """Split at ``sep`` outside brackets: ``'a=[1,2],b'`` -> ``['a=[1,2]', 'b']``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in '([':
            depth += 1
        elif ch in ')]':
            depth -= 1
            if depth < 0:
                raise UserError(f'--arms: unbalanced brackets in {text!r}')
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise UserError(f'--arms: unbalanced brackets in {text!r}')
    parts.append(text[start:])
    return parts


def parse_arms(specs: Sequence[str], base: Config) -> List[Arm]:
    """``--arms`` values -> arms, checked against ``base``.

    Items are separated by commas (outside brackets) or given as separate arguments: a named arm
    (``nerf``), the start of a custom arm (``name=key=value``) or a further override of the custom
    arm before it (``key=value``).
    """
    arms: List[Arm] = []
    current: Optional[Arm] = None
    for spec in specs:
        for token in split_top_level(spec):
            token = token.strip()
            if not token:
                continue
            if '=' not in token:
                arms.append(named_arm(token, base))
                current = None
                continue
            head, rest = token.split('=', 1)
            if '=' in rest and _ARM_NAME.match(head) and '.' not in head:
                key, text = rest.split('=', 1)
                current = Arm(head, {}, 'custom')
                arms.append(current)
            elif current is None:
                raise UserError(f'--arms: {token!r} needs an arm name first: write '
                                f'name={token} (e.g. uniform=model.pixel_sampler.mode=uniform)')
            else:
                key, text = head, rest
            key = key.strip()
            if not key:
                raise UserError(f'--arms: empty key in {token!r}')
            current.overrides[key] = parse_cli_value(text)
            current.raw[key] = text
    if not arms:
        raise UserError('--arms: no arm given (e.g. --arms splat,nerf)')
    names = [a.name for a in arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f'--arms: arm names must be unique, {dup} given twice')
    for arm in arms:
        if not _ARM_NAME.match(arm.name):
            raise UserError(f'--arms: arm name {arm.name!r} must be letters, digits, _ or -')
        check_override_keys(base, arm.overrides, f'--arms {arm.name}')
        if arm.description == 'custom':
            arm.description = describe_overrides(arm.overrides)
    return arms


def _get_path(root: Any, key: str) -> Any:
    node = root
    for part in key.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return '<absent>'
    return node


def arm_changes(base: Config, arm: Arm) -> dict:
    """What applying ``arm`` to ``base`` changes.

    Returns ``changed_keys`` (every flattened key whose value differs) and ``changes``
    (``{override key: [base value, arm value]}`` in short form, for the override keys that change
    something; ``k._delete_`` is reported as ``k``).
    """
    cfg = apply_overrides(base, arm.overrides)
    diff = config_diff(base, cfg)
    roots = list(dict.fromkeys(k[:-len('._delete_')] if k.endswith('._delete_') else k
                               for k in arm.overrides))
    # an override replaced by a parent's _delete_ is shown under the parent
    roots = [r for r in roots if not any(r != o and r.startswith(o + '.') for o in roots)]
    before, after = base.to_dict(), cfg.to_dict()
    changes = {}
    for root in roots:
        if any(k == root or k.startswith(root + '.') for k in diff):
            changes[root] = [short_value(_get_path(before, root)),
                             short_value(_get_path(after, root))]
    return dict(changed_keys=sorted(diff), changes=changes)


def parse_cfg_options(tokens: Sequence[str]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """``key=value`` strings -> (parsed values, raw value strings)."""
    parsed, raw = {}, {}
    for token in tokens or []:
        if '=' not in token:
            raise UserError(f'--cfg-options: {token!r} is not key=value')
        key, text = token.split('=', 1)
        parsed[key] = parse_cli_value(text)
        raw[key] = text
    return parsed, raw


# ----------------------------------------------------------------------------------------------
# budget
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

    def describe(self) -> str:
        if self.iters is not None:
            return f'{self.iters} training iterations per run'
        return (f'{self.minutes:g} minutes of training clock per run (iterations per arm from a '
                'calibration run; start-up and evaluations not counted)')

    def to_dict(self) -> dict:
        return dict(kind=self.kind, iters=self.iters, minutes=self.minutes)


def seconds_per_iter_from_calibration(iter_times: Sequence[float], skip: int) -> float:
    """Mean iteration time after the first ``skip`` (start-up) iterations."""
    times = [float(t) for t in iter_times]
    if len(times) <= skip:
        raise ValueError(f'calibration: {len(times)} iteration times, need more than {skip}')
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
# running commands
# ----------------------------------------------------------------------------------------------

@dataclass
class CommandResult:
    """Exit status, wall time and peak resident memory (MB, None if unknown) of a command."""
    returncode: int
    seconds: float
    peak_rss_mb: Optional[float] = None


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
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            text = f.read().decode(errors='replace')
    except OSError:
        return f'(no log at {path})'
    return '\n'.join(text.splitlines()[-lines:])


def git_commit(repo: str = str(REPO_ROOT)) -> str:
    """Short hash of HEAD (``+dirty`` with uncommitted changes to tracked files)."""
    try:
        head = subprocess.run(['git', '-C', repo, 'rev-parse', '--short', 'HEAD'],
                              capture_output=True, text=True, timeout=20)
        if head.returncode != 0:
            return 'unknown'
        dirty = subprocess.run(['git', '-C', repo, 'status', '--porcelain',
                                '--untracked-files=no'], capture_output=True, text=True,
                               timeout=20)
        return head.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + '\n')


def _json_default(v):
    if hasattr(v, 'item'):
        return v.item()
    if hasattr(v, 'tolist'):
        return v.tolist()
    return str(v)


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# the runner
# ----------------------------------------------------------------------------------------------

SUMMARY_METRICS = ('mIoU', 'geometry_IoU', 'RayIoU')


def _metric(metrics: dict, name: str) -> Optional[float]:
    for key, value in (metrics or {}).items():
        if (key == name or key.endswith('/' + name)) and _is_number(value):
            return float(value)
    return None


class AblationRunner:
    """Train and evaluate every (arm, seed) under one budget; collect and report the results.

    Args:
        base: the base config file.
        arms: from :func:`parse_arms`.
        seeds: random seeds; each arm trains once per seed.
        budget: :class:`Budget`.
        out_dir: output folder (``<arm>/seed<s>/`` per run, results files at the top).
        common_options: ``--cfg-options`` strings applied to every arm (e.g. a data root).
        evals: evaluations during each training run (mIoU against training time); 0: none.
        ray: also RayIoU in the final evaluation (``--eval segm ray``).
        val_samples: evaluate during training on the first K val samples only (the final test
            always uses the whole split).
        calib_iters: iterations of a calibration run (``--budget-minutes``); the first quarter
            (at least 2) are start-up and not counted.
        command_runner: runs a command (tests inject a fake); ``run_command`` by default.
        python: interpreter for tools/train.py and tools/test.py.
        log_file: experiment log to append the entry to (None: none).
        plots: write the PNG plots (matplotlib).
        command_line: the ablate command, for the log entry.
        progress: where progress lines go.
    """

    def __init__(self, base: str, arms: Sequence[Arm], seeds: Sequence[int], budget: Budget,
                 out_dir: str, common_options: Sequence[str] = (), evals: int = 4,
                 ray: bool = False, val_samples: Optional[int] = None, calib_iters: int = 12,
                 command_runner: Optional[CommandRunner] = None, python: str = sys.executable,
                 log_file: Optional[str] = str(REPO_ROOT / 'log.txt'), plots: bool = True,
                 command_line: str = '', progress: Callable[[str], None] = None):
        self.base_path = osp.abspath(base)
        self.base_cfg = load_base_config(self.base_path)
        self.arms = list(arms)
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise UserError('--seeds: give at least one seed')
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f'--seeds: repeated seed in {self.seeds}')
        self.budget = budget
        self.out_dir = osp.abspath(out_dir)
        self.common_parsed, self.common_raw = parse_cfg_options(common_options)
        check_override_keys(self.base_cfg, self.common_parsed, '--cfg-options')
        if evals < 0:
            raise UserError(f'--evals must be >= 0, got {evals}')
        self.evals = int(evals)
        self.ray = bool(ray)
        self.val_samples = val_samples
        if calib_iters < 4:
            raise UserError(f'--calib-iters must be >= 4, got {calib_iters}')
        self.calib_iters = int(calib_iters)
        self.calib_skip = max(2, self.calib_iters // 4)
        self.command_runner = command_runner or self._default_runner
        self.python = python
        self.log_file = log_file
        self.plots = bool(plots)
        self._configs: Dict[str, Tuple[str, List[str]]] = {}
        self.command_line = command_line
        self.progress = progress or (lambda msg: print(msg, flush=True))
        self.ran: List[Tuple[str, int]] = []
        # fail early on a schedule that cannot take an iteration budget
        schedule_overrides(self.base_cfg, 1, self.evals)

    # -- plumbing -------------------------------------------------------------------------------
    def _default_runner(self, cmd, log_path, env):
        return run_command(cmd, log_path, env, progress=self.progress)

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        paths = [str(REPO_ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
        env['PYTHONPATH'] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def arm_dir(self, arm: Arm) -> str:
        return osp.join(self.out_dir, arm.name)

    def run_dir(self, arm: Arm, seed: int) -> str:
        return osp.join(self.out_dir, arm.name, f'seed{seed}')

    def fingerprint(self, arm: Arm) -> dict:
        """What a stored result must match to be reused (same base, arm, budget, evaluation)."""
        return dict(base=self.base_path, overrides=_jsonable(arm.overrides),
                    common_options=dict(self.common_raw), budget=self.budget.to_dict(),
                    evals=self.evals, ray=self.ray, val_samples=self.val_samples,
                    calib_iters=self.calib_iters if self.budget.minutes is not None else None)

    def config_for(self, arm: Arm) -> Tuple[str, List[str]]:
        """(config file, ``--cfg-options`` tokens of the arm) for train.py and test.py."""
        if arm.name in self._configs:
            return self._configs[arm.name]
        tokens = arm.cli_tokens()
        if tokens is not None:
            out = self.base_path, tokens
        else:
            # some value has no command-line form: merge as --cfg-options would, into a file
            cfg = apply_overrides(self.base_cfg, arm.overrides)
            path = osp.join(self.arm_dir(arm), 'config.py')
            text = (f'# {self.base_path} with the overrides of ablation arm {arm.name!r} '
                    '(written by tools/ablate.py)\n' + cfg.dump())
            atomic_write_text(path, text)
            out = path, []
        self._configs[arm.name] = out
        return out

    def _common_tokens(self) -> List[str]:
        return [f'{k}={v}' for k, v in self.common_raw.items()]

    def _hook_tokens(self, max_seconds: Optional[float], record: bool) -> List[str]:
        imports = list((self.base_cfg.get('custom_imports') or {}).get('imports') or [])
        if isinstance(imports, str):
            imports = [imports]
        if HOOK_MODULE not in imports:
            imports.append(HOOK_MODULE)
        tokens = [f'custom_imports.imports={cli_value(imports)}',
                  'custom_imports.allow_failed_imports=False',
                  f'default_hooks.{TIMER_HOOK_NAME}.type=TimeBudgetHook']
        if max_seconds is not None:
            tokens.append(f'default_hooks.{TIMER_HOOK_NAME}.max_seconds={max_seconds!r}')
        if record:
            tokens.append(f'default_hooks.{TIMER_HOOK_NAME}.record_iter_times=True')
        return tokens

    def train_command(self, arm: Arm, seed: int, work_dir: str, max_iters: int,
                      max_seconds: Optional[float] = None, resume: bool = False,
                      calibration: bool = False) -> List[str]:
        config, arm_tokens = self.config_for(arm)
        budget = {k: cli_value(v) for k, v in
                  schedule_overrides(self.base_cfg, max_iters, 0 if calibration else
                                     self.evals).items()}
        tokens = arm_tokens + self._common_tokens() + [f'randomness.seed={seed}']
        tokens += [f'{k}={v}' for k, v in budget.items()]
        if calibration:
            # no checkpoint files for a timing run
            tokens += ['default_hooks.checkpoint.interval=-1',
                       'default_hooks.checkpoint.save_last=False']
        elif self.val_samples:
            tokens.append(f'val_dataloader.dataset.indices={int(self.val_samples)}')
        tokens += self._hook_tokens(max_seconds, record=calibration)
        cmd = [self.python, str(REPO_ROOT / 'tools' / 'train.py'), config, '--work-dir', work_dir]
        if resume:
            cmd.append('--resume')
        return cmd + ['--cfg-options'] + tokens

    def test_command(self, arm: Arm, checkpoint: str, work_dir: str) -> List[str]:
        config, arm_tokens = self.config_for(arm)
        tokens = arm_tokens + self._common_tokens()
        cmd = [self.python, str(REPO_ROOT / 'tools' / 'test.py'), config, checkpoint,
               '--eval', 'segm'] + (['ray'] if self.ray else []) + ['--work-dir', work_dir]
        return cmd + (['--cfg-options'] + tokens if tokens else [])

    # -- phases ---------------------------------------------------------------------------------
    def check_stored(self) -> None:
        """Refuse to mix results of a different setup in the same output folder."""
        for arm in self.arms:
            want = self.fingerprint(arm)
            for seed in self.seeds:
                stored = read_json(osp.join(self.run_dir(arm, seed), RESULT_FILE))
                if stored and stored.get('status') == 'ok' and stored.get('fingerprint') != want:
                    raise UserError(
                        f'{self.run_dir(arm, seed)} holds a result of a different setup (base, '
                        'overrides, budget or evaluation changed); use another --out, or delete '
                        'that folder to rerun it')

    def calibrate(self, arm: Arm) -> dict:
        """Seconds per iteration of ``arm`` (stored in ``<arm>/calibration.json``) and its
        iteration budget."""
        path = osp.join(self.arm_dir(arm), CALIBRATION_FILE)
        stored = read_json(path)
        if stored and stored.get('fingerprint') == self.fingerprint(arm):
            return stored
        work_dir = osp.join(self.arm_dir(arm), 'calibration')
        cmd = self.train_command(arm, self.seeds[0], work_dir, self.calib_iters, calibration=True)
        self.progress(f'[{arm.name}] calibration: {self.calib_iters} iterations')
        res = self.command_runner(cmd, osp.join(work_dir, 'train.log'), self._env())
        if res.returncode != 0:
            raise RunFailure('calibration', res.returncode, osp.join(work_dir, 'train.log'), cmd)
        timer = read_json(osp.join(work_dir, TIMER_FILE))
        if not timer or len(timer.get('iter_times') or []) <= self.calib_skip:
            raise RunFailure('calibration', 0, osp.join(work_dir, 'train.log'), cmd,
                             f'no iteration times in {osp.join(work_dir, TIMER_FILE)}')
        spi = seconds_per_iter_from_calibration(timer['iter_times'], self.calib_skip)
        out = dict(fingerprint=self.fingerprint(arm), seconds_per_iter=spi,
                   iters=iterations_for_minutes(self.budget.minutes, spi),
                   calib_iters=self.calib_iters, skipped=self.calib_skip,
                   command=shlex.join(cmd), seconds=res.seconds)
        write_json(path, out)
        self.progress(f'[{arm.name}] calibration: {spi:.3f} s/iteration -> {out["iters"]} '
                      f'iterations in {self.budget.minutes:g} min')
        return out

    def run_one(self, arm: Arm, seed: int) -> dict:
        """Train and test one (arm, seed); returns its result (also written to result.json)."""
        run_dir = self.run_dir(arm, seed)
        result = dict(arm=arm.name, seed=seed, fingerprint=self.fingerprint(arm),
                      budget=self.budget.to_dict(), started=_now())
        calibration = None
        if self.budget.minutes is not None:
            calibration = self.calibrate(arm)
            max_iters, max_seconds = int(calibration['iters']), self.budget.minutes * 60.0
            result['calibration'] = {k: calibration[k] for k in
                                     ('seconds_per_iter', 'iters', 'calib_iters')}
        else:
            max_iters, max_seconds = int(self.budget.iters), None
        resume = osp.isfile(osp.join(run_dir, 'last_checkpoint'))
        previous = read_json(osp.join(run_dir, RESULT_FILE))
        if previous and previous.get('status') == 'failed':
            resume = False  # a failed run starts again from scratch
        cmd = self.train_command(arm, seed, run_dir, max_iters, max_seconds, resume=resume)
        result['train_command'] = shlex.join(cmd)
        result['planned_iters'] = max_iters
        self.progress(f'[{arm.name} seed {seed}] training {max_iters} iterations'
                      + (' (resuming)' if resume else ''))
        train = self.command_runner(cmd, osp.join(run_dir, 'train.log'), self._env())
        result['train_wall_seconds'] = train.seconds
        result['peak_rss_mb'] = train.peak_rss_mb
        if train.returncode != 0:
            raise RunFailure('train', train.returncode, osp.join(run_dir, 'train.log'), cmd)
        timer = read_json(osp.join(run_dir, TIMER_FILE))
        if not timer or not timer.get('finished'):
            raise RunFailure('train', 0, osp.join(run_dir, 'train.log'), cmd,
                             f'training ended without {TIMER_FILE}')
        checkpoint = _last_checkpoint(run_dir)
        if checkpoint is None:
            raise RunFailure('train', 0, osp.join(run_dir, 'train.log'), cmd,
                             f'no checkpoint in {run_dir} (last_checkpoint missing)')
        iters = int(timer['iters'])
        result.update(iters=iters, train_seconds=float(timer['train_seconds']),
                      seconds_per_iter=float(timer['train_seconds']) / max(1, iters),
                      data_share=_share(timer.get('data_seconds'), timer['train_seconds']),
                      render_share=_share(timer.get('render_seconds'), timer['train_seconds']),
                      stopped_by_budget=bool(timer.get('stopped_by_budget')),
                      peak_gpu_mb=timer.get('peak_gpu_mb'), checkpoint=checkpoint,
                      timeline=[dict(iter=t['iter'], train_seconds=t['train_seconds'],
                                     mIoU=_metric(t.get('metrics'), 'mIoU'))
                                for t in timer.get('timeline', [])])

        test_dir = osp.join(run_dir, 'test')
        before = set(_metrics_files(test_dir))
        tcmd = self.test_command(arm, checkpoint, test_dir)
        result['test_command'] = shlex.join(tcmd)
        self.progress(f'[{arm.name} seed {seed}] evaluating {osp.basename(checkpoint)}')
        test = self.command_runner(tcmd, osp.join(run_dir, 'test.log'), self._env())
        result['test_wall_seconds'] = test.seconds
        if test.returncode != 0:
            raise RunFailure('test', test.returncode, osp.join(run_dir, 'test.log'), tcmd)
        new = [p for p in _metrics_files(test_dir) if p not in before]
        if not new:
            raise RunFailure('test', 0, osp.join(run_dir, 'test.log'), tcmd,
                             f'tools/test.py wrote no {test_dir}/<timestamp>/metrics.json')
        metrics = (read_json(max(new, key=osp.getmtime)) or {}).get('metrics') or {}
        result['metrics'] = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        result.update(status='ok', finished=_now())
        return result

    def run(self) -> dict:
        """Run what is not finished yet, then write the results, plots and the log entry."""
        self.check_stored()
        os.makedirs(self.out_dir, exist_ok=True)
        total = len(self.arms) * len(self.seeds)
        done = 0
        for seed in self.seeds:  # every arm once before the next seed: comparable results early
            for arm in self.arms:
                done += 1
                path = osp.join(self.run_dir(arm, seed), RESULT_FILE)
                stored = read_json(path)
                if stored and stored.get('status') == 'ok':
                    self.progress(f'[{done}/{total}] {arm.name} seed {seed}: finished before, '
                                  'skipped')
                    continue
                self.progress(f'[{done}/{total}] {arm.name} seed {seed}')
                try:
                    result = self.run_one(arm, seed)
                except RunFailure as err:
                    result = dict(arm=arm.name, seed=seed, status='failed',
                                  fingerprint=self.fingerprint(arm), phase=err.phase,
                                  returncode=err.returncode, error=err.message,
                                  log=err.log_path, command=shlex.join(err.cmd),
                                  error_tail=tail(err.log_path), finished=_now())
                    self.progress(f'[{arm.name} seed {seed}] FAILED in {err.phase}: '
                                  f'{err.message}; log: {err.log_path}')
                except (OSError, ValueError, KeyError, TypeError) as err:
                    result = dict(arm=arm.name, seed=seed, status='failed',
                                  fingerprint=self.fingerprint(arm), phase='runner',
                                  returncode=None, error=f'{type(err).__name__}: {err}',
                                  error_tail='', finished=_now())
                    self.progress(f'[{arm.name} seed {seed}] FAILED: {result["error"]}')
                write_json(path, result)
                self.ran.append((arm.name, seed))
                if result['status'] == 'ok':
                    self.progress(f'[{arm.name} seed {seed}] mIoU '
                                  f'{_fmt(_metric(result["metrics"], "mIoU"))} after '
                                  f'{result["iters"]} iterations '
                                  f'({result["seconds_per_iter"]:.3f} s/iter)')
        summary = self.summarize()
        self.write_outputs(summary)
        if self.log_file and self.ran:
            append_log_entry(self.log_file, summary, results_table(summary))
            self.progress(f'log entry appended to {self.log_file}')
        elif self.log_file:
            self.progress(f'nothing new ran: {self.log_file} unchanged')
        return summary

    # -- results --------------------------------------------------------------------------------
    def class_names(self) -> List[str]:
        names = list(self.base_cfg.get('class_names') or [])
        free = self.base_cfg.get('free_label')
        return [n for i, n in enumerate(names) if i != free]

    def summarize(self) -> dict:
        arms = []
        for arm in self.arms:
            runs = []
            for seed in self.seeds:
                r = read_json(osp.join(self.run_dir(arm, seed), RESULT_FILE))
                runs.append(r if r else dict(arm=arm.name, seed=seed, status='missing'))
            arms.append(dict(name=arm.name, description=arm.description,
                             overrides=describe_overrides(arm.overrides),
                             cli=arm.cli_tokens(), **arm_changes(self.base_cfg, arm),
                             runs=runs, **aggregate_runs(runs, self.class_names())))
        return dict(date=datetime.date.today().isoformat(), commit=git_commit(),
                    base=osp.relpath(self.base_path) if self.base_path.startswith(os.getcwd())
                    else self.base_path,
                    budget=self.budget.to_dict(), budget_text=self.budget.describe(),
                    seeds=self.seeds, evals=self.evals, ray=self.ray,
                    common_options=self._common_tokens(), command=self.command_line,
                    out_dir=self.out_dir, class_names=self.class_names(), arms=arms)

    def write_outputs(self, summary: dict) -> None:
        if self.plots:
            summary['plots'] = write_plots(summary, self.out_dir)
        else:  # keep linking plots an earlier call drew
            summary['plots'] = [n for n in PLOT_FILES if osp.isfile(osp.join(self.out_dir, n))]
        write_json(osp.join(self.out_dir, 'results.json'), summary)
        atomic_write_text(osp.join(self.out_dir, 'results.md'), results_markdown(summary))
        self.progress(f'results: {osp.join(self.out_dir, "results.md")}')


class RunFailure(Exception):
    """A phase of one (arm, seed) that failed: which, its exit status, log and command."""

    def __init__(self, phase: str, returncode: int, log_path: str, cmd: List[str],
                 message: str = ''):
        self.phase, self.returncode, self.log_path, self.cmd = phase, returncode, log_path, cmd
        self.message = message or f'exit status {returncode}'
        super().__init__(f'{phase}: {self.message}')


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec='seconds')


def _share(part, whole) -> Optional[float]:
    if part is None or not whole:
        return None
    return float(part) / float(whole)


def _last_checkpoint(work_dir: str) -> Optional[str]:
    pointer = osp.join(work_dir, 'last_checkpoint')
    try:
        with open(pointer, encoding='utf-8') as f:
            target = f.read().strip()
    except OSError:
        return None
    if not target:
        return None
    if not osp.isabs(target):
        target = osp.join(work_dir, target)
    return target if osp.isfile(target) else None


def _metrics_files(test_dir: str) -> List[str]:
    if not osp.isdir(test_dir):
        return []
    out = []
    for name in os.listdir(test_dir):
        path = osp.join(test_dir, name, 'metrics.json')
        if osp.isfile(path):
            out.append(path)
    return out


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


# ----------------------------------------------------------------------------------------------
# aggregation and reports
# ----------------------------------------------------------------------------------------------

def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _std(values) -> Optional[float]:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    values = [v for v in values if v is not None]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def aggregate_runs(runs: Sequence[dict], class_names: Sequence[str]) -> dict:
    """Mean (and spread) over the finished seeds of one arm."""
    ok = [r for r in runs if r.get('status') == 'ok']
    m = [_metric(r.get('metrics'), 'mIoU') for r in ok]
    out = dict(seeds_ok=[r['seed'] for r in ok],
               seeds_failed=[r['seed'] for r in runs if r.get('status') == 'failed'],
               mIoU_mean=_mean(m), mIoU_std=_std(m),
               mIoU_min=min([v for v in m if v is not None], default=None),
               mIoU_max=max([v for v in m if v is not None], default=None),
               geometry_IoU_mean=_mean([_metric(r.get('metrics'), 'geometry_IoU') for r in ok]),
               RayIoU_mean=_mean([_metric(r.get('metrics'), 'RayIoU') for r in ok]),
               seconds_per_iter=_mean([r.get('seconds_per_iter') for r in ok]),
               render_share=_mean([r.get('render_share') for r in ok]),
               data_share=_mean([r.get('data_share') for r in ok]),
               peak_rss_mb=max([r['peak_rss_mb'] for r in ok if r.get('peak_rss_mb')],
                               default=None),
               peak_gpu_mb=max([r['peak_gpu_mb'] for r in ok if r.get('peak_gpu_mb')],
                               default=None),
               iters_mean=_mean([r.get('iters') for r in ok]),
               train_seconds_mean=_mean([r.get('train_seconds') for r in ok]))
    out['per_class'] = {name: _mean([_metric(r.get('metrics'), name) for r in ok])
                        for name in class_names}
    return out


def _fmt(v, digits: int = 2, suffix: str = '') -> str:
    return 'n/a' if v is None else f'{v:.{digits}f}{suffix}'


def _pct(v) -> str:
    return 'n/a' if v is None else f'{100 * v:.0f}%'


def _memory(arm: dict) -> str:
    parts = []
    if arm.get('peak_rss_mb'):
        parts.append(f'{arm["peak_rss_mb"]:.0f} MB RSS')
    if arm.get('peak_gpu_mb'):
        parts.append(f'{arm["peak_gpu_mb"]:.0f} MB GPU')
    return ', '.join(parts) or 'n/a'


def results_table(summary: dict) -> List[str]:
    """The main table (Markdown lines)."""
    lines = ['| arm | seeds ok | mIoU (mean ± std) | geometry IoU | RayIoU | iterations | '
             's/iter | rendering share | peak memory |',
             '|---|---|---|---|---|---|---|---|---|']
    for a in summary['arms']:
        n_ok, n = len(a['seeds_ok']), len(a['runs'])
        miou = _fmt(a['mIoU_mean'])
        if a['mIoU_mean'] is not None:
            miou += f' ± {_fmt(a["mIoU_std"])}' if a['mIoU_std'] is not None else ' (1 seed)'
        lines.append(
            f'| {a["name"]} | {n_ok}/{n} | {miou} | {_fmt(a["geometry_IoU_mean"])} | '
            f'{_fmt(a["RayIoU_mean"])} | {_fmt(a["iters_mean"], 0)} | '
            f'{_fmt(a["seconds_per_iter"], 3)} | {_pct(a["render_share"])} | {_memory(a)} |')
    return lines


def results_markdown(summary: dict) -> str:
    s = summary
    out = [f'# Ablation of {s["base"]}', '',
           f'- date: {s["date"]}, commit: {s["commit"]}',
           f'- budget: {s["budget_text"]}',
           f'- seeds: {", ".join(str(x) for x in s["seeds"])}; evaluations during training: '
           f'{s["evals"]}; final evaluation: tools/test.py --eval segm'
           + (' ray' if s['ray'] else '') + ' on the test split of the config',
           ]
    if s.get('common_options'):
        out.append(f'- options for every arm: {" ".join(s["common_options"])}')
    if s.get('command'):
        out.append(f'- command: `{s["command"]}`')
    out += ['', '## Results', '', *results_table(s), '',
            'mIoU, geometry IoU, RayIoU: Occ3D metrics (%) of the final checkpoint, mean over the '
            'finished seeds; ± is the sample standard deviation over seeds. s/iter: training '
            'clock / iterations (data loading included). Rendering share: the model\'s '
            '`time_render` over the training clock (n/a: the model does not log it). Peak '
            'memory: resident set of the training process (and CUDA allocator peak on a GPU).',
            '']
    names = s.get('class_names') or []
    if names and any(any(v is not None for v in a['per_class'].values()) for a in s['arms']):
        out += ['## Per-class IoU (%)', '',
                '| class | ' + ' | '.join(a['name'] for a in s['arms']) + ' |',
                '|---|' + '---|' * len(s['arms'])]
        for name in names:
            out.append(f'| {name} | ' + ' | '.join(_fmt(a['per_class'].get(name))
                                                   for a in s['arms']) + ' |')
        out.append('')
    out += ['## Arms', '']
    for a in s['arms']:
        out.append(f'- **{a["name"]}**: {a["description"]}')
        out.append(f'  - overrides: `{a["overrides"]}`')
        if a['changes']:
            changes = '; '.join(f'{k}: {v[0]} -> {v[1]}' for k, v in a['changes'].items())
            out.append(f'  - flattened config changes: {changes}')
        else:
            out.append('  - flattened config changes: none')
    out.append('')
    failed = [r for a in s['arms'] for r in a['runs'] if r.get('status') == 'failed']
    missing = [r for a in s['arms'] for r in a['runs'] if r.get('status') == 'missing']
    if failed or missing:
        out += ['## Failed runs', '']
        for r in failed:
            out += [f'- {r["arm"]} seed {r["seed"]}: {r.get("phase")} failed '
                    f'({r.get("error")}); log: {r.get("log")}', '', '```',
                    (r.get('error_tail') or '').rstrip(), '```', '']
        for r in missing:
            out.append(f'- {r["arm"]} seed {r["seed"]}: not run')
        out += ['', 'Run the same command again to retry them (finished runs are kept).', '']
    if s.get('plots'):
        out += ['## Plots', '']
        out += [f'![{name}]({name})' for name in s['plots']]
        out.append('')
    return '\n'.join(out)


def append_log_entry(log_file: str, summary: dict, table: Sequence[str]) -> str:
    """Append the experiment's entry to ``log_file`` (atomically: copy + rename)."""
    s = summary
    lines = ['', f'{s["date"]}  ablation of {s["base"]} (tools/ablate.py)',
             f'  commit: {s["commit"]}']
    if s.get('command'):
        lines.append(f'  command: {s["command"]}')
    lines.append(f'  budget: {s["budget_text"]}; seeds: {", ".join(map(str, s["seeds"]))}')
    if s.get('common_options'):
        lines.append(f'  options for every arm: {" ".join(s["common_options"])}')
    lines.append('  arms:')
    for a in s['arms']:
        lines.append(f'    {a["name"]}: {a["overrides"]}')
    lines.append(f'  results ({osp.join(s["out_dir"], "results.md")}):')
    lines += [f'    {row}' for row in table]
    failed = [f'{r["arm"]}/seed{r["seed"]}' for a in s['arms'] for r in a['runs']
              if r.get('status') == 'failed']
    if failed:
        lines.append(f'  failed: {", ".join(failed)}')
    entry = '\n'.join(lines) + '\n'
    old = ''
    if osp.isfile(log_file):
        with open(log_file, encoding='utf-8') as f:
            old = f.read()
        if old and not old.endswith('\n'):
            old += '\n'
    atomic_write_text(log_file, old + entry)
    return entry


# ----------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------

def _save_figure(fig, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
    atomic_write_bytes(path, buf.getvalue())


def write_plots(summary: dict, out_dir: str) -> List[str]:
    """miou_vs_time.png, per_class_iou.png, step_time.png in ``out_dir``; their file names."""
    from matplotlib.figure import Figure
    arms = summary['arms']
    colors = [f'C{i % 10}' for i in range(len(arms))]
    written = []

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for color, a in zip(colors, arms):
        label = a['name']
        for r in a['runs']:
            if r.get('status') != 'ok':
                continue
            pts = [(t['train_seconds'] / 60, t['mIoU']) for t in r.get('timeline') or []
                   if t.get('mIoU') is not None]
            final = _metric(r.get('metrics'), 'mIoU')
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, '-o', color=color, ms=3, lw=1, alpha=0.8, label=label)
                label = None
            if final is not None and r.get('train_seconds') is not None:
                ax.plot([r['train_seconds'] / 60], [final], '*', color=color, ms=10, label=label)
                label = None
    ax.set_xlabel('training clock (minutes)')
    ax.set_ylabel('mIoU (%)')
    ax.set_title('mIoU against training time (lines: evaluations during training, '
                 'stars: final test)', fontsize=9)
    ax.grid(alpha=0.3)
    if any(line.get_label() and not line.get_label().startswith('_') for line in ax.lines):
        ax.legend(fontsize=8)
    _save_figure(fig, osp.join(out_dir, 'miou_vs_time.png'))
    written.append('miou_vs_time.png')

    names = summary.get('class_names') or []
    fig = Figure(figsize=(max(7, 0.6 * len(names) + 2), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(names))
    for i, (color, a) in enumerate(zip(colors, arms)):
        vals = [a['per_class'].get(n) for n in names]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, [v if v is not None else 0 for v in vals],
               width, color=color, label=a['name'])
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha='right', fontsize=8)
    ax.set_ylabel('IoU (%)')
    ax.set_title('per-class IoU (mean over seeds)', fontsize=9)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, osp.join(out_dir, 'per_class_iou.png'))
    written.append('per_class_iou.png')

    fig = Figure(figsize=(max(5, 1.2 * len(arms) + 2), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(arms))
    spi = np.array([a['seconds_per_iter'] or 0.0 for a in arms])
    data = spi * np.array([a['data_share'] or 0.0 for a in arms])
    render = spi * np.array([a['render_share'] or 0.0 for a in arms])
    rest = np.maximum(spi - data - render, 0.0)
    ax.bar(x, data, color='C7', label='data loading')
    ax.bar(x, render, bottom=data, color='C1', label='rendering (model log)')
    ax.bar(x, rest, bottom=data + render, color='C0', label='rest of the step')
    for xi, a in zip(x, arms):
        if a['render_share'] is None and a['seconds_per_iter']:
            ax.text(xi, a['seconds_per_iter'], 'render n/a', ha='center', va='bottom',
                    fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels([a['name'] for a in arms])
    ax.set_ylabel('seconds per iteration')
    ax.set_title('step-time breakdown', fontsize=9)
    ax.legend(fontsize=8)
    _save_figure(fig, osp.join(out_dir, 'step_time.png'))
    written.append('step_time.png')
    return written


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

def build_parser():
    import argparse
    p = argparse.ArgumentParser(
        description='Train every ablation arm under the same budget, evaluate it, and report '
        '(results.md / results.json / plots in --out, an entry in log.txt).',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Named arms: splat (base as is), nerf (VolumeRenderer), 3d (3D supervision only), '
        '2d3d (2D + 3D). Other arms: name=key=value[,key=value...], e.g.\n'
        '  uniform=model.pixel_sampler.mode=uniform  rays6k=model.pixel_sampler.num_rays=6144\n'
        '  aux1=train_dataloader.dataset.num_adjacent=1\n'
        '  l1=model.loss_depth._delete_=True,model.loss_depth.type=L1DepthLoss\n'
        '  iso=model.head.isotropic=True,model.head.max_scale=0.4')
    p.add_argument('--base', required=True, help='base config (iteration-based schedule)')
    p.add_argument('--arms', nargs='+', required=True,
                   help='comma-separated arms (or several arguments), e.g. splat,nerf,3d,2d3d')
    p.add_argument('--seeds', default='0', help='comma-separated seeds (default 0)')
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--iters', type=int, help='training iterations per run')
    g.add_argument('--budget-minutes', type=float,
                   help='minutes of training clock per run (iterations from a calibration)')
    p.add_argument('--out', help='output folder (default work_dirs/ablate/<base name>)')
    p.add_argument('--evals', type=int, default=4,
                   help='evaluations during each training run, for mIoU against time (0: none)')
    p.add_argument('--val-samples', type=int, default=None,
                   help='evaluate during training on the first K val samples only')
    p.add_argument('--ray', action='store_true', help='also RayIoU in the final evaluation')
    p.add_argument('--calib-iters', type=int, default=12,
                   help='iterations of the calibration run of --budget-minutes (default 12)')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='overrides applied to every arm (the same for all)')
    p.add_argument('--log-file', default=str(REPO_ROOT / 'log.txt'),
                   help='experiment log to append to (default: the repository log.txt)')
    p.add_argument('--no-log', action='store_true', help='do not append to the log')
    p.add_argument('--no-plots', action='store_true', help='do not draw the PNG plots')
    return p


def main(argv: Optional[Sequence[str]] = None,
         command_runner: Optional[CommandRunner] = None) -> dict:
    args = build_parser().parse_args(argv)
    base = load_base_config(args.base)
    arms = parse_arms(args.arms, base)
    try:
        seeds = [int(s) for s in split_top_level(args.seeds) if s.strip()]
    except ValueError:
        raise UserError(f'--seeds: expected comma-separated integers, got {args.seeds!r}')
    budget = Budget(iters=args.iters, minutes=args.budget_minutes)
    out = args.out or osp.join('work_dirs', 'ablate',
                               osp.splitext(osp.basename(args.base))[0])
    command = 'python tools/ablate.py ' + shlex.join(list(argv if argv is not None
                                                          else sys.argv[1:]))
    runner = AblationRunner(args.base, arms, seeds, budget, out,
                            common_options=args.cfg_options, evals=args.evals, ray=args.ray,
                            val_samples=args.val_samples, calib_iters=args.calib_iters,
                            command_runner=command_runner,
                            log_file=None if args.no_log else args.log_file,
                            plots=not args.no_plots,
                            command_line=command)
    return runner.run()


__all__ = [
    'TimeBudgetHook', 'Arm', 'arm_changes', 'load_base_config', 'describe_overrides',
    'split_top_level', 'parse_cfg_options', 'Budget', 'AblationRunner', 'CommandResult',
    'RunFailure',
    'named_arm', 'parse_arms', 'apply_overrides', 'flatten_config', 'config_diff',
    'check_override_keys', 'cli_value', 'cli_tokens', 'parse_cli_value', 'schedule_overrides',
    'iterations_for_minutes', 'seconds_per_iter_from_calibration', 'aggregate_runs',
    'results_table', 'results_markdown', 'append_log_entry', 'write_plots', 'run_command',
    'git_commit', 'main', 'build_parser'
]
