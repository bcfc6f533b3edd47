"""What the runs leave on disk, read and written; the mean over seeds; the commit they ran at.

Per (arm, seed), in ``OUT/<arm>/seed<s>/``: :data:`RESULT_FILE` (the runner's record, written
atomically: ``status`` ``'ok'`` or ``'failed'``, the metrics, the timings), :data:`TIMER_FILE`
(written by :class:`~splattingocc.experiments.budget.TimeBudgetHook` inside the training run),
``last_checkpoint`` (mmengine's pointer to the last checkpoint) and
``test/<timestamp>/metrics.json`` (tools/test.py). Per arm, in ``OUT/<arm>/``:
:data:`TIMING_FILE` (``--budget-minutes`` only: the seconds per iteration of a short timing run).
The read-out calibration of a run (tools/test.py --calibrate) is ``<checkpoint>.calibration.json``
next to its checkpoint.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
from typing import Any, List, Optional, Sequence

import numpy as np

from splattingocc.engine.checkpoint import atomic_write_text
from splattingocc.paths import REPO_ROOT

from .stats import t_interval

#: the record of one (arm, seed) in its run folder
RESULT_FILE = 'result.json'
#: what TimeBudgetHook writes into the work dir of a training run
TIMER_FILE = 'ablation_timer.json'
#: seconds per iteration of one arm (``--budget-minutes``), in the arm's folder
TIMING_FILE = 'timing.json'


# ----------------------------------------------------------------------------------------------
# JSON files
# ----------------------------------------------------------------------------------------------

def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON (numpy scalars and arrays as numbers / lists), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + '\n')


def _json_default(v):
    if hasattr(v, 'item'):
        return v.item()
    if hasattr(v, 'tolist'):
        return v.tolist()
    return str(v)


def jsonable(obj) -> Any:
    """``obj`` as it reads back from :func:`write_json` (tuples as lists, numpy as numbers)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def read_json(path: str) -> Optional[dict]:
    """The JSON in ``path``; None if it is missing or not (yet) valid JSON."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# what tools/train.py and tools/test.py leave
# ----------------------------------------------------------------------------------------------

def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``<work_dir>/last_checkpoint`` names, if that file exists."""
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


def metrics_files(test_dir: str) -> List[str]:
    """Every ``<test_dir>/<timestamp>/metrics.json`` (one per tools/test.py call)."""
    if not osp.isdir(test_dir):
        return []
    out = []
    for name in os.listdir(test_dir):
        path = osp.join(test_dir, name, 'metrics.json')
        if osp.isfile(path):
            out.append(path)
    return out


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


# ----------------------------------------------------------------------------------------------
# metrics and their aggregation over seeds
# ----------------------------------------------------------------------------------------------

def is_number(v) -> bool:
    """A value ``float()`` accepts (numbers, 0-d arrays), but not a string."""
    if isinstance(v, (str, bytes)):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def metric(metrics: dict, name: str) -> Optional[float]:
    """``metrics[name]`` (or a ``prefix/name`` key, as mmengine's val loop logs it) as a float;
    None if absent or not a number."""
    for key, value in (metrics or {}).items():
        if (key == name or key.endswith('/' + name)) and is_number(value):
            return float(value)
    return None


#: the test metrics every arm's table reports with an interval (tools/test.py keys, in %)
REPORTED_METRICS = ('mIoU', 'geometry_IoU', 'RayIoU', 'occupancy_AP', 'mAP', 'depth_AbsRel',
                    'depth_RMSE', 'depth_delta1', 'render_accuracy', 'render_mIoU')


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def aggregate_runs(runs: Sequence[dict], class_names: Sequence[str]) -> dict:
    """Means and 95 % t-intervals over the finished seeds of one arm (under one budget).

    ``intervals[name]`` (:func:`~splattingocc.experiments.stats.t_interval`) for every metric of
    :data:`REPORTED_METRICS` on the runs' evaluation split (``splits``: the splits they were
    computed on, normally ``['test']``), ``threshold`` and ``val_mIoU`` for the read-out chosen
    on val (None for an argmax read-out), ``mIoU_mean`` / ``mIoU_std`` for short; metrics in %
    (as tools/test.py reports them), ``seconds_per_iter`` in seconds, the shares as fractions of
    the training clock, memory in MB; None where no finished run has the value.
    """
    ok = [r for r in runs if r.get('status') == 'ok']
    intervals = {name: t_interval([metric(r.get('metrics'), name) for r in ok])
                 for name in REPORTED_METRICS}
    readouts = [r.get('readout') or {} for r in ok]
    out = dict(seeds_ok=[r['seed'] for r in ok],
               seeds_failed=[r['seed'] for r in runs if r.get('status') == 'failed'],
               splits=sorted({str((r.get('test') or {}).get('split')) for r in ok}),
               readout_kinds=sorted({str(ro.get('kind')) for ro in readouts}),
               intervals=intervals,
               mIoU_mean=intervals['mIoU']['mean'], mIoU_std=intervals['mIoU']['std'],
               threshold=t_interval([ro.get('threshold') for ro in readouts]),
               val_mIoU=t_interval([ro.get('val_mIoU') for ro in readouts]),
               seconds_per_iter=_mean([r.get('seconds_per_iter') for r in ok]),
               render_share=_mean([r.get('render_share') for r in ok]),
               data_share=_mean([r.get('data_share') for r in ok]),
               peak_rss_mb=max([r['peak_rss_mb'] for r in ok if r.get('peak_rss_mb')],
                               default=None),
               peak_gpu_mb=max([r['peak_gpu_mb'] for r in ok if r.get('peak_gpu_mb')],
                               default=None),
               iters_mean=_mean([r.get('iters') for r in ok]),
               train_seconds_mean=_mean([r.get('train_seconds') for r in ok]))
    out['per_class'] = {name: _mean([metric(r.get('metrics'), name) for r in ok])
                        for name in class_names}
    return out
