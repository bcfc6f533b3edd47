"""Train the image half of a config alone on the LSS depth loss and score its depth per class.

    python tools/analysis/probe_depth.py CONFIG [--iters 1000] [--lr 1e-3] [--seed 0]
                                         [--log-every 100] [--max-val-samples N] [--save CKPT]
                                         [--json FILE] [--cfg-options k=v ...]

The backbone, neck and LSS depth net of CONFIG's model are trained alone (no lift, no 3D layers,
no rendering) on the train split's LiDAR depth labels: the LSS depth loss (``lss_depth_loss``,
weight 1) on the nearest label of every cell of the depth map (``lift_upsample`` included), with
AdamW (weight decay 0.01) and a one-cycle schedule (5% warm-up), batch 1, the config's train
pipeline. Then, on the val split, per class of each labelled cell's nearest label (classes 0-10
are the objects): the share of cells whose most probable bin is within one bin of the label's
("argmax +-1"), the probability mass within one bin ("mass +-1", tools/analysis/diagnose.py's
lift column) and the median |expected depth - label|. A few minutes on a CPU instead of a whole
training run: a quick measure of a depth net before the whole model is trained with it (the
lift's depth is what the demo's objects lack, README). ``--save`` writes the whole model's state
dict (its 3D half as initialised) for ``load_from``. One process, CPU or the first GPU.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmengine.config import DictAction

import splattingocc.engine  # noqa: F401  (allow-list for torch.load)
from splattingocc.engine.launch import atomic_write_json, load_config
from splattingocc.errors import UserError
from splattingocc.evaluation.diagnostics import lift_statistics, val_pipeline_with_labels

OBJECT_CLASSES = tuple(range(11))  # others .. truck in the Occ3D-nuScenes order


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='config file')
    p.add_argument('--iters', type=int, default=1000, help='training iterations (default 1000)')
    p.add_argument('--lr', type=float, default=1e-3, help='peak learning rate (default 1e-3)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    p.add_argument('--log-every', type=int, default=100, help='progress line every N iterations')
    p.add_argument('--max-val-samples', type=int, default=None,
                   help='score only the first N val samples (default: all)')
    p.add_argument('--save', help='write the model state dict here (atomically) after training')
    p.add_argument('--json', help='also write the scores as JSON to this file (atomically)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='config overrides, key=value')
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def depth_scores(classes: np.ndarray, argmax_near: np.ndarray, mass_near: np.ndarray,
                 error: np.ndarray, class_names: Sequence[str],
                 object_classes: Sequence[int] = OBJECT_CLASSES) -> Dict[str, dict]:
    """Per class (and 'objects', 'all'): cells, argmax_near and mass_near in percent, median
    error in metres, over the labelled cells given as arrays [M] (class, argmax within one bin
    (0/1), mass within one bin, |expected depth - label|). Classes without cells are left out."""
    classes = np.asarray(classes)
    if not (len(classes) == len(argmax_near) == len(mass_near) == len(error)):
        raise ValueError('depth_scores: the four arrays need one length, got '
                         f'{len(classes)}, {len(argmax_near)}, {len(mass_near)}, {len(error)}')
    groups = [(name, classes == k) for k, name in enumerate(class_names)]
    groups += [('objects', np.isin(classes, list(object_classes))),
               ('all', np.ones(len(classes), bool))]
    out = {}
    for name, sel in groups:
        n = int(sel.sum())
        if n:
            out[name] = dict(cells=n, argmax_near=100.0 * float(np.mean(argmax_near[sel])),
                             mass_near=100.0 * float(np.mean(mass_near[sel])),
                             median_error=float(np.median(error[sel])))
    return out


def depth_of(model, data: dict) -> torch.Tensor:
    """The depth probabilities [B, N, D, h, w] of the model's LSS depth net for a batch."""
    img = data['img']
    B, N, _, H, W = img.shape
    x = (img.flatten(0, 1).float() - model.img_mean) / model.img_std
    feats = model.neck(model.backbone(x)).unflatten(0, (B, N))
    return model.view_transform.depth_outputs(feats, data['cam2img'], data['cam2ego'], (H, W))[0]


def train_depth(model, dataset, iters: int, lr: float, seed: int, log_every: int = 100,
                num_workers: int = 0) -> list:
    """Trains backbone, neck and view transform on the LSS depth loss; returns the loss of
    every iteration."""
    from mmengine.dataset import default_collate

    from splattingocc.geometry import depth_labels_min_pool
    from splattingocc.supervision.functional import lss_depth_loss

    vt = model.view_transform
    parts = [model.backbone, model.neck, vt]
    params = [p for m in parts for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(iters, 1),
                                                pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True, generator=gen,
                                         num_workers=num_workers, collate_fn=default_collate)
    for m in parts:
        m.train()
    losses, start, it = [], time.time(), 0
    while it < iters:
        for batch in loader:
            data = model.data_preprocessor(batch, True)
            if 'gt_depth' not in data:
                raise UserError('probe_depth: the train batch has no gt_depth: add LoadLabels2D '
                                'to the train pipeline (tools/create_data.py nuscenes writes the '
                                'label files)')
            prob = depth_of(model, data)
            N = data['img'].shape[1]
            target = depth_labels_min_pool(data['gt_depth'][:, :N].float(), prob.shape[-2:])
            loss = lss_depth_loss(prob, vt.depth_bin_index(target))
            if not torch.isfinite(loss):
                raise FloatingPointError(f'probe_depth: the LSS depth loss is {loss.item()} at '
                                         f'iteration {it + 1}; lower --lr')
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            it += 1
            if log_every and (it % log_every == 0 or it == iters):
                per_it = (time.time() - start) / it
                window = losses[-log_every:]
                print(f'[probe_depth] iter {it}/{iters}  loss {np.mean(window):.4f}  '
                      f'{per_it:.3f} s/it  eta {per_it * (iters - it):.0f} s', flush=True)
            if it >= iters:
                break
    return losses


@torch.no_grad()
def score_depth(model, dataset, class_names, max_samples: Optional[int] = None):
    """Arrays [M] over the labelled cells of the dataset's samples: class, argmax within one
    bin, mass within one bin, |expected depth - label|."""
    from mmengine.dataset import default_collate
    from torch.nn import functional as F

    vt = model.view_transform
    model.eval()
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    parts = [[], [], [], []]
    for i in range(n):
        data = model.data_preprocessor(default_collate([dataset[i]]), False)
        if 'gt_depth' not in data or 'gt_semantics' not in data:
            raise UserError(f'probe_depth: val sample {i} has no 2D labels; check the label '
                            'files (tools/create_data.py nuscenes)')
        prob = depth_of(model, data)
        gt_depth, gt_sem = data['gt_depth'].float(), data['gt_semantics']
        cls, mass, err = lift_statistics(vt, prob, gt_depth, gt_sem)
        onehot = F.one_hot(prob.argmax(2), vt.num_bins).permute(0, 1, 4, 2, 3).to(prob.dtype)
        _, hit, _ = lift_statistics(vt, onehot, gt_depth, gt_sem)
        for lst, arr in zip(parts, (cls, hit, mass, err)):
            lst.append(arr)
    return tuple(np.concatenate(p) for p in parts)


def table(scores: Dict[str, dict]) -> list:
    lines = [f'{"class":22s} {"cells":>7s} {"argmax +-1 %":>13s} {"mass +-1 %":>11s} '
             f'{"med |dz| m":>11s}']
    for name, s in scores.items():
        lines.append(f'{name:22s} {s["cells"]:7d} {s["argmax_near"]:13.1f} '
                     f'{s["mass_near"]:11.1f} {s["median_error"]:11.2f}')
    return lines


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.iters < 0:
        raise UserError(f'probe_depth: --iters must be >= 0, got {args.iters}')
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UserError(f'probe_depth: --lr must be a positive number, got {args.lr}')
    from mmengine.registry import init_default_scope

    from splattingocc.engine.checkpoint import atomic_torch_save
    from splattingocc.registry import DATASETS, MODELS

    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'splattingocc'))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model = MODELS.build(cfg.model)
    if not hasattr(model.view_transform, 'depth_outputs'):
        raise UserError(f'probe_depth: {type(model.view_transform).__name__} has no LSS depth '
                        'net (depth_outputs); use a config with LSSViewTransform')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    model = model.to(device)
    train_set = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    vcfg = copy.deepcopy(cfg.val_dataloader.dataset)
    vcfg.pipeline = val_pipeline_with_labels(vcfg.pipeline, require_occ=False)
    val_set = DATASETS.build(vcfg)
    workers = int(cfg.train_dataloader.get('num_workers', 0))
    losses = train_depth(model, train_set, args.iters, args.lr, args.seed, args.log_every,
                         workers)
    if args.save:
        atomic_torch_save(dict(state_dict=model.state_dict(), meta=dict(
            probe_depth=dict(config=args.config, iters=args.iters, lr=args.lr))), args.save)
    names = list(cfg.get('class_names') or [str(c) for c in range(int(cfg.num_classes))])
    scores = depth_scores(*score_depth(model, val_set, names, args.max_val_samples), names)
    print(f'[probe_depth] {args.config}: {args.iters} iterations, val depth per class of the '
          'nearest label of each cell')
    print('\n'.join(table(scores)))
    out = dict(config=args.config, iters=args.iters, lr=args.lr, seed=args.seed,
               first_losses=losses[:10], last_losses=losses[-10:], classes=scores)
    if args.json:
        atomic_write_json(args.json, out)
    return out
