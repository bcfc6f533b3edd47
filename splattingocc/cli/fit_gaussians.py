"""What can the config's Gaussian grid represent? Fit its Gaussians directly to Occ3D labels.

    python tools/analysis/fit_gaussians.py CONFIG [--frames 0,1] [--steps 300] [--lr 0.05]
                                           [--json FILE] [--cfg-options k=v ...]

No network and no images: for each chosen val frame, the raw values of one Gaussian per cell of
the head's grid (offset, scale, rotation, opacity, class logits; mapped to Gaussians exactly as the
head maps its outputs, ``GaussianHead.decode``) are optimised with Adam against the frame's own
Occ3D labels inside mask_camera (``Occupancy3DLoss``: occupancy BCE + class-balanced CE on the
field's grid), then read out by the config's read-out and scored with the Occ3D metric. The
result is a representation bound: the mIoU the prediction grid reaches when the labels are known,
so a trained model's gap to it is learning, not resolution. One process, CPU or the first GPU
(E30: 300 steps per frame of the tiny config's 20,000 Gaussians took minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.config import DictAction

from splattingocc.engine.launch import atomic_write_json, load_config
from splattingocc.errors import UserError
from splattingocc.evaluation.ray_origins import load_infos


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='config file (its model.head, model.readout and val data)')
    p.add_argument('--frames', default='0', help='comma-separated val frame indices (default 0)')
    p.add_argument('--steps', type=int, default=300, help='Adam steps per frame (default 300)')
    p.add_argument('--lr', type=float, default=0.05, help='Adam learning rate (default 0.05)')
    p.add_argument('--json', help='also write the scores as JSON to this file (atomically)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='config overrides, key=value')
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def fit_frame(head, readout, semantics: torch.Tensor, mask: Optional[torch.Tensor],
              steps: int, lr: float = 0.05, loss=None, log_every: int = 0,
              seed: int = 0) -> torch.Tensor:
    """Fit one Gaussian per head cell to one frame's labels; return the read-out labels.

    Args:
        head: a ``GaussianHead`` (its grid, bounds, mapping and field; its weights are not used).
        readout: an ``OccupancyReadout`` (the read-out grid, classes and threshold).
        semantics: [X, Y, Z] long labels on the read-out's grid (free = readout.free_label).
        mask: [X, Y, Z] bool, where the loss applies (None: everywhere).
        steps: Adam steps (0: the initial Gaussians, for comparison).
        loss: an ``Occupancy3DLoss`` (default: class-balanced, power 0.5).
    Returns:
        [X, Y, Z] labels from ``readout``.
    """
    from splattingocc.supervision import Occupancy3DLoss

    loss = loss if loss is not None else Occupancy3DLoss(class_weight='batch', power=0.5)
    gen = torch.Generator().manual_seed(seed)
    N = int(np.prod(head.grid_size))
    dev = head.centres.device
    raw = dict(offset=torch.zeros(1, N, 3), scale=torch.zeros(1, N, 1 if head.isotropic else 3),
               rotation=torch.zeros(1, N, 4), opacity=torch.zeros(1, N),
               logits=0.01 * torch.randn(1, N, head.num_classes, generator=gen))
    raw = {k: v.to(dev).requires_grad_(True) for k, v in raw.items()}
    params = [v for k, v in raw.items() if not (head.isotropic and k == 'rotation')]
    opt = torch.optim.Adam(params, lr=lr)
    sem = semantics[None].to(dev)
    msk = None if mask is None else mask[None].to(dev)
    t0 = time.time()
    for it in range(steps):
        density, scores = readout.fields(head.field(head.decode(**raw)))
        l_occ, l_sem = loss.score(density, scores, sem, readout.free_label, msk)
        total = l_occ + l_sem
        if not torch.isfinite(total):
            raise FloatingPointError(f'fit_gaussians: loss is {total.item()} at step {it}')
        opt.zero_grad()
        total.backward()
        opt.step()
        if log_every and (it % log_every == 0 or it == steps - 1):
            print(f'[fit] step {it + 1}/{steps}  occupancy {l_occ.item():.4f}  semantics '
                  f'{l_sem.item():.4f}  {time.time() - t0:.0f} s', flush=True)
    with torch.no_grad():
        return readout(head.field(head.decode(**raw)))[0]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    from mmengine.registry import init_default_scope

    from splattingocc.evaluation.dump import load_occ_gt
    from splattingocc.evaluation.metrics.occ_metric import (format_occ_table, occ_frame_result,
                                                            summarize_occ_results)
    from splattingocc.registry import MODELS

    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'splattingocc'))
    if args.steps < 0:
        raise UserError(f'--steps must be >= 0, got {args.steps}')
    try:
        frames = [int(f) for f in str(args.frames).split(',') if f.strip()]
    except ValueError as err:
        raise UserError(f'--frames: comma-separated integers expected, got {args.frames!r}') \
            from err
    head = MODELS.build(copy.deepcopy(cfg.model.head))
    if not (hasattr(head, 'decode') and hasattr(head, 'field')):
        raise UserError(f'fit_gaussians: the config\'s head ({type(head).__name__}) is not a '
                        'Gaussian head (GaussianHead): nothing to fit')
    readout = MODELS.build(cfg.model.readout)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    head, readout = head.to(device), readout.to(device)

    dcfg = cfg.val_dataloader.dataset
    ann = Path(dcfg.data_root) / dcfg.ann_file
    if not ann.is_file():
        raise UserError(f'fit_gaussians: val info file {ann} not found (tools/create_data.py '
                        'nuscenes writes it)')
    infos = load_infos(ann)
    bad = [i for i in frames if not 0 <= i < len(infos)]
    if bad:
        raise UserError(f'--frames {bad}: {ann} has {len(infos)} frames (0..{len(infos) - 1})')

    names = list(cfg.get('class_names') or [str(c) for c in range(int(cfg.num_classes))])
    free = int(cfg.free_label)
    results = []
    for n, i in enumerate(frames):
        gt = load_occ_gt(Path(dcfg.data_root) / infos[i]['occ_path'])
        sem = torch.from_numpy(gt['semantics'].astype(np.int64))
        mask = None if gt['mask_camera'] is None else \
            torch.from_numpy(gt['mask_camera'].astype(bool))
        print(f'[fit] frame {i} ({n + 1}/{len(frames)}): {int(np.prod(head.grid_size))} '
              f'Gaussians, {args.steps} steps', flush=True)
        pred = fit_frame(head, readout, sem, mask, args.steps, args.lr,
                         log_every=max(args.steps // 6, 1)).cpu().numpy()
        results.append(occ_frame_result(pred, gt['semantics'], gt['mask_camera'], len(names),
                                        free))
    summary = summarize_occ_results(results, names, free)
    print(format_occ_table(summary, names, free))
    scores = dict(config=args.config, frames=frames, steps=args.steps, lr=args.lr,
                  grid_size=list(head.grid_size), miou=100 * float(summary['miou']),
                  geometry_iou=100 * float(summary['geometry_iou']),
                  per_class={names[c]: 100 * float(summary['iou'][c])
                             for c in range(len(names)) if c != free})
    if args.json:
        atomic_write_json(args.json, scores)
    return scores
