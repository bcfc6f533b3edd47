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
from typing import List, NamedTuple, Sequence

from splattingocc.engine.checkpoint import atomic_write_text

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


def results_table(summary: dict) -> List[str]:
    """The main table (Markdown lines)."""
    lines = ['| arm | seeds ok | mIoU (mean ± std) | geometry IoU | RayIoU | iterations | '
             's/iter | rendering share | peak memory |',
             '|---|---|---|---|---|---|---|---|---|']
    for a in summary['arms']:
        n_ok, n = len(a['seeds_ok']), len(a['runs'])
        miou = fmt(a['mIoU_mean'])
        if a['mIoU_mean'] is not None:
            miou += f' ± {fmt(a["mIoU_std"])}' if a['mIoU_std'] is not None else ' (1 seed)'
        lines.append(
            f'| {a["name"]} | {n_ok}/{n} | {miou} | {fmt(a["geometry_IoU_mean"])} | '
            f'{fmt(a["RayIoU_mean"])} | {fmt(a["iters_mean"], 0)} | '
            f'{fmt(a["seconds_per_iter"], 3)} | {_pct(a["render_share"])} | {_memory(a)} |')
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
            out.append(f'| {name} | ' + ' | '.join(fmt(a['per_class'].get(name))
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
