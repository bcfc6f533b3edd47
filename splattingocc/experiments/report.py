"""The reports of an ablation: the results table, ``results.md`` and the experiment-log entry.

All of them are built from the summary that :meth:`AblationRunner.summarize
<splattingocc.experiments.runner.AblationRunner.summarize>` returns (also written as
``results.json``). Metrics are in % as tools/test.py reports them.

Experiment log (``tools/ablate.py --log-file PATH``; nothing is written without it): an entry is
``E<n>  <YYYY-MM-DD>  <title>`` at column 0, then its body indented by 2 spaces; entries are
separated by one blank line, and ``#`` lines at the top of the file are its header. A new entry
gets the ID ``E<n+1>``, ``n`` the largest ID that starts a line of the file (E1 in a file
without entries).
"""
from __future__ import annotations

import fcntl
import os
import os.path as osp
import re
from typing import List, NamedTuple, Optional, Sequence

from splattingocc.engine.checkpoint import atomic_write_text

from .stats import MIN_SEEDS_FOR_CLAIM

#: an entry ID starting a line of the experiment log: ``E<n>`` then whitespace or the line end
LOG_ENTRY_ID = re.compile(r'^E(\d+)(?=\s|$)', re.MULTILINE)


def fmt(v, digits: int = 2, suffix: str = '') -> str:
    """``v`` with ``digits`` decimals (and ``suffix``); ``n/a`` for None."""
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


def interval_text(iv: Optional[dict], digits: int = 2) -> str:
    """``mean [low, high]`` of a :func:`~splattingocc.experiments.stats.t_interval`;
    ``mean (1 seed)`` with one value, ``n/a`` with none."""
    if not iv or iv.get('mean') is None:
        return 'n/a'
    if iv.get('low') is None:
        return f'{iv["mean"]:.{digits}f} (1 seed)'
    return f'{iv["mean"]:.{digits}f} [{iv["low"]:.{digits}f}, {iv["high"]:.{digits}f}]'


def _split(arm: dict) -> str:
    splits = [s for s in arm.get('splits') or [] if s != 'None']
    return '/'.join(splits) if splits else 'n/a'


def _readout(arm: dict) -> str:
    kinds = arm.get('readout_kinds') or []
    if kinds == ['argmax']:
        return 'argmax'
    t = arm.get('threshold') or {}
    if t.get('mean') is None:
        return 'n/a'
    return f'{t["mean"]:.3g}' + (f' ± {t["std"]:.2g}' if t.get('std') is not None else '')


def results_table(budget: dict) -> List[str]:
    """The main table of one budget (Markdown lines): test metrics with 95 % t-intervals."""
    lines = ['| arm | seeds ok | split | mIoU [95% CI] | geometry IoU | RayIoU | occupancy AP | '
             'read-out (val-chosen threshold) | val mIoU at it | iterations | s/iter | '
             'rendering share | peak memory |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for a in budget['arms']:
        iv = a['intervals']
        lines.append(
            f'| {a["name"]} | {len(a["seeds_ok"])}/{len(a["runs"])} | {_split(a)} | '
            f'{interval_text(iv["mIoU"])} | {interval_text(iv["geometry_IoU"])} | '
            f'{interval_text(iv["RayIoU"])} | {interval_text(iv["occupancy_AP"])} | '
            f'{_readout(a)} | {interval_text(a["val_mIoU"])} | {fmt(a["iters_mean"], 0)} | '
            f'{fmt(a["seconds_per_iter"], 3)} | {_pct(a["render_share"])} | {_memory(a)} |')
    return lines


def render_table(budget: dict) -> List[str]:
    """Rendering metrics at the labelled test pixels (arms that render), with intervals."""
    rows = [a for a in budget['arms'] if a['intervals']['depth_AbsRel']['mean'] is not None]
    if not rows:
        return []
    lines = ['| arm | split | depth AbsRel | depth RMSE (m) | delta < 1.25 | semantics accuracy | '
             'semantics mIoU | mAP (per-class AP) |', '|---|---|---|---|---|---|---|---|']
    for a in rows:
        iv = a['intervals']
        lines.append(f'| {a["name"]} | {_split(a)} | {interval_text(iv["depth_AbsRel"], 4)} | '
                     f'{interval_text(iv["depth_RMSE"], 3)} | '
                     f'{interval_text(iv["depth_delta1"])} | '
                     f'{interval_text(iv["render_accuracy"])} | '
                     f'{interval_text(iv["render_mIoU"])} | {interval_text(iv["mAP"])} |')
    return lines


def pairs_table(budget: dict) -> List[str]:
    """Paired differences ``a - b`` by seed, with their 95 % t-interval and what it supports."""
    if not budget.get('pairs'):
        return []
    lines = ['| difference | metric (test) | seeds paired | mean [95% CI] | verdict |',
             '|---|---|---|---|---|']
    for p in budget['pairs']:
        verdict = {'a > b': f'{p["a"]} > {p["b"]}',
                   'a < b': f'{p["a"]} < {p["b"]}'}.get(p['verdict'], p['verdict'])
        lines.append(f'| {p["a"]} - {p["b"]} | {p["metric"]} | {len(p["seeds"])} | '
                     f'{interval_text(p)} | {verdict} |')
    return lines


def results_markdown(summary: dict) -> str:
    s = summary
    out = [f'# Ablation of {s["base"]}', '',
           f'- date: {s["date"]}, commit: {s["commit"]}',
           f'- protocol: {s["protocol"]}',
           f'- budgets: {"; ".join(b["text"] for b in s["budgets"])}',
           f'- seeds: {", ".join(str(x) for x in s["seeds"])}'
           + ''.join(f'; {name}: {", ".join(map(str, seeds))}'
                     for name, seeds in (s.get('arm_seeds') or {}).items())
           + f'; evaluations during training (val): {s["evals"]}; final evaluation: '
           f'tools/test.py --eval {" ".join(s["final_eval"])} (render only for arms that render)',
           ]
    if s.get('common_options'):
        out.append(f'- options for every arm: {" ".join(s["common_options"])}')
    if s.get('command'):
        out.append(f'- command: `{s["command"]}`')
    if min([len(s['seeds'])] + [len(v) for v in (s.get('arm_seeds') or {}).values()]) \
            < MIN_SEEDS_FOR_CLAIM:
        out.append(f'- fewer than {MIN_SEEDS_FOR_CLAIM} seeds: the tables describe these runs '
                   'only; they support no comparison claim')
    out.append('')
    names = s.get('class_names') or []
    for b in s['budgets']:
        out += [f'## {b["title"][0].upper()}{b["title"][1:]}', '', *results_table(b), '']
        labels = sorted({label for a in b['arms'] for r in a['runs'] if r.get('status') == 'ok'
                         for label in r.get('labels') or []})
        if labels:
            out += [f'- **caveat**: {label}' for label in labels] + ['']
        pairs = pairs_table(b)
        if pairs:
            out += ['### Paired differences by seed', '', *pairs, '']
        render = render_table(b)
        if render:
            out += ['### Rendering metrics at the labelled pixels', '', *render, '']
        if names and any(any(v is not None for v in a['per_class'].values())
                         for a in b['arms']):
            out += ['### Per-class IoU (%, test, mean over seeds)', '',
                    '| class | ' + ' | '.join(a['name'] for a in b['arms']) + ' |',
                    '|---|' + '---|' * len(b['arms'])]
            for name in names:
                out.append(f'| {name} | ' + ' | '.join(fmt(a['per_class'].get(name))
                                                       for a in b['arms']) + ' |')
            out.append('')
        if b.get('plots'):
            out += [f'![{name}]({name})' for name in b['plots']]
            out.append('')
    out += ['Metrics (%) on the split named in each row (test unless a caveat says otherwise): '
            'mean over the finished seeds with the 95 % Student-t interval over seeds (Occ3D '
            'mIoU and geometry IoU inside mask_camera, RayIoU, occupancy AP). Read-out: the '
            'occupancy threshold (the opacity of one 0.4 m voxel) chosen on val per run (mean ± '
            'std over seeds) and the val mIoU it gave, or argmax for a read-out without one. '
            'Paired differences: a - b over the seeds both arms finished; an interval that '
            'contains 0 does not separate the arms. s/iter: training clock / iterations (data '
            'loading included). Rendering share: the model\'s `time_render` over the training '
            'clock. Peak memory: resident set of the training process (and the CUDA allocator '
            'peak on a GPU). Plots: learning curves on val (each point at the threshold chosen '
            'on val at that point), stars the final test mIoU.', '']
    out += ['## Arms', '']
    for a in s['arms']:
        out.append(f'- **{a["name"]}**: {a["description"]} (read-out: {a["readout"]}; '
                   f'renders: {"yes" if a["renders"] else "no"})')
        out.append(f'  - overrides: `{a["overrides"]}`')
        if a['changes']:
            changes = '; '.join(f'{k}: {v[0]} -> {v[1]}' for k, v in a['changes'].items())
            out.append(f'  - flattened config changes: {changes}')
        else:
            out.append('  - flattened config changes: none')
    out.append('')
    runs = [(b, r) for b in s['budgets'] for a in b['arms'] for r in a['runs']]
    failed = [(b, r) for b, r in runs if r.get('status') == 'failed']
    missing = [(b, r) for b, r in runs if r.get('status') == 'missing']
    if failed or missing:
        out += ['## Failed runs', '']
        for b, r in failed:
            out += [f'- {b["tag"]} {r["arm"]} seed {r["seed"]}: {r.get("phase")} failed '
                    f'({r.get("error")}); log: {r.get("log")}', '', '```',
                    (r.get('error_tail') or '').rstrip(), '```', '']
        for b, r in missing:
            out.append(f'- {b["tag"]} {r["arm"]} seed {r["seed"]}: not run')
        out += ['', 'Run the same command again to retry them (finished runs are kept).', '']
    return '\n'.join(out)


def log_tables(summary: dict) -> List[str]:
    """The tables of every budget for the experiment-log entry (Markdown lines)."""
    lines = []
    for b in summary['budgets']:
        lines += [f'{b["title"]}:', *results_table(b), *pairs_table(b)]
    return lines


# ----------------------------------------------------------------------------------------------
# experiment log
# ----------------------------------------------------------------------------------------------

class LogEntry(NamedTuple):
    """An entry written to the experiment log: its ID (``'E11'``) and its text (ending in a
    newline, without the blank line that separates it from the entry before)."""
    id: str
    text: str


def next_entry_id(log_text: str) -> str:
    """``E<n+1>``, n the largest ``E<n>`` that starts a line of ``log_text`` (``E1`` if none)."""
    numbers = [int(m.group(1)) for m in LOG_ENTRY_ID.finditer(log_text)]
    return f'E{max(numbers, default=0) + 1}'


def log_entry_text(entry_id: str, summary: dict, table: Sequence[str]) -> str:
    """The log entry of an ablation: ``<id>  <date>  ablation of <base> (tools/ablate.py)``, then
    the commit, command, budget, arms and ``table`` (Markdown lines), indented by 2 spaces."""
    s = summary
    lines = [f'{entry_id}  {s["date"]}  ablation of {s["base"]} (tools/ablate.py)',
             f'  commit: {s["commit"]}']
    if s.get('command'):
        lines.append(f'  command: {s["command"]}')
    lines.append(f'  budgets: {"; ".join(b["text"] for b in s["budgets"])}; seeds: '
                 f'{", ".join(map(str, s["seeds"]))}')
    lines.append(f'  protocol: {s["protocol"]}')
    if s.get('common_options'):
        lines.append(f'  options for every arm: {" ".join(s["common_options"])}')
    lines.append('  arms:')
    for a in s['arms']:
        lines.append(f'    {a["name"]}: {a["overrides"]}')
    lines.append(f'  results ({osp.join(s["out_dir"], "results.md")}):')
    lines += [f'    {row}' for row in table]
    failed = [f'{b["tag"]}/{r["arm"]}/seed{r["seed"]}' for b in s['budgets'] for a in b['arms']
              for r in a['runs'] if r.get('status') == 'failed']
    if failed:
        lines.append(f'  failed: {", ".join(failed)}')
    return '\n'.join(lines) + '\n'


def append_log_entry(log_file: str, summary: dict, table: Sequence[str]) -> LogEntry:
    """Append the experiment's entry to ``log_file`` under the next free ID.

    The file is rewritten atomically (its text copied, the entry added after one blank line,
    renamed into place); a missing file is created with the entry alone. The read-append-rename
    holds an exclusive lock on the file's folder (``flock``), so two runs finishing together
    append both entries (under different IDs) instead of one replacing the other's.

    Returns:
        the ID (``'E11'``) and text of the entry.
    """
    folder = osp.dirname(osp.abspath(log_file))
    os.makedirs(folder, exist_ok=True)
    lock = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = ''
        if osp.isfile(log_file):
            with open(log_file, encoding='utf-8') as f:
                old = f.read()
        entry_id = next_entry_id(old)
        entry = log_entry_text(entry_id, summary, table)
        head = old.rstrip('\n') + '\n\n' if old.strip() else ''
        atomic_write_text(log_file, head + entry)
    finally:
        os.close(lock)  # releases the lock
    return LogEntry(entry_id, entry)
