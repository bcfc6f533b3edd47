"""The PNG plots of one budget of an ablation (matplotlib, Agg; drawn from the runner's summary).

* ``miou_vs_time.png``: the learning curves: val mIoU (%) against the training clock (minutes),
  one line per run from the evaluations during training (each point at the threshold chosen on
  val at that point, or the argmax read-out), a star per run for the final test mIoU;
* ``per_class_iou.png``: per-class test IoU (%), mean over seeds, one bar per arm and class;
* ``step_time.png``: seconds per iteration of each arm, split into data loading, rendering (the
  model's ``time_render``) and the rest of the step.
"""
from __future__ import annotations

import io
import os.path as osp
from typing import List, Sequence

import numpy as np

from splattingocc.engine.checkpoint import atomic_write_bytes

from .records import metric

#: the files :func:`write_plots` writes, in this order
PLOT_FILES = ('miou_vs_time.png', 'per_class_iou.png', 'step_time.png')


def _save_figure(fig, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
    atomic_write_bytes(path, buf.getvalue())


def write_plots(budget: dict, class_names: Sequence[str], out_dir: str) -> List[str]:
    """miou_vs_time.png, per_class_iou.png, step_time.png of one budget's arms (an entry of the
    summary's ``budgets``) in ``out_dir``; their file names."""
    from matplotlib.figure import Figure
    arms = budget['arms']
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
            final = metric(r.get('metrics'), 'mIoU')
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, '-o', color=color, ms=3, lw=1, alpha=0.8, label=label)
                label = None
            if final is not None and r.get('train_seconds') is not None:
                ax.plot([r['train_seconds'] / 60], [final], '*', color=color, ms=10, label=label)
                label = None
    ax.set_xlabel('training clock (minutes)')
    ax.set_ylabel('mIoU (%)')
    ax.set_title(f'{budget.get("title", "")}\nlines: val mIoU during training (threshold chosen '
                 'on val at each point); stars: final test mIoU', fontsize=9)
    ax.grid(alpha=0.3)
    if any(line.get_label() and not line.get_label().startswith('_') for line in ax.lines):
        ax.legend(fontsize=8)
    _save_figure(fig, osp.join(out_dir, 'miou_vs_time.png'))
    written.append('miou_vs_time.png')

    names = list(class_names)
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
    ax.set_title('per-class test IoU (mean over seeds)', fontsize=9)
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
