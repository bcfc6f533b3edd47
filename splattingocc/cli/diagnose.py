"""Per-class diagnosis of a checkpoint: is a class lost in 2D (not recognised) or in 3D (wrong
geometry)?

    python tools/analysis/diagnose.py CONFIG CHECKPOINT [--max-samples N] [--json FILE]
                                      [--cfg-options k=v ...]

On the config's val dataset (its pipeline plus the LiDAR-projected 2D labels of the current
frame), per class: of the ground-truth voxels inside mask_camera, the share predicted occupied and
predicted right, the median read-out density there, the voxels predicted as the class and the
share whose cell of the lifted volume receives any frustum point of the LSS lift ("reach %"); of
the labelled pixels, the share whose rendered class is right, the share with no rendered surface
(alpha < 0.5) and the median |rendered depth - label|; of the labelled feature cells (the LSS depth
target: the nearest label of each cell, by that label's class), the lift's probability within one
depth bin and the median error of its expected depth (splattingocc/evaluation/diagnostics.py).
With a splatting renderer, also the Gaussians per sample the head predicts and the ones that reach
the render (after the renderer's opacity pruning).
Needs the 2D label files (tools/create_data.py nuscenes). One process, CPU or the first GPU.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Optional, Sequence

import torch
from mmengine.config import DictAction

import splattingocc.engine  # noqa: F401  (allow-list for torch.load)
from splattingocc.engine.launch import atomic_write_json, load_config
from splattingocc.errors import UserError
from splattingocc.evaluation.diagnostics import (ClassDiagnostics, cells_to_grid,
                                                 lift_statistics, val_pipeline_with_labels)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--max-samples', type=int, default=None,
                   help='only the first N val samples (default: all)')
    p.add_argument('--json', help='also write the table as JSON to this file (atomically)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='config overrides, key=value')
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@torch.no_grad()
def diagnose(model, dataset, class_names, free_label: int, max_samples=None,
             progress: bool = True) -> ClassDiagnostics:
    """Run the model on the dataset's samples and accumulate the per-class statistics."""
    from mmengine.dataset import default_collate

    from splattingocc.rendering.base import Cameras

    diag = ClassDiagnostics(class_names, free_label)
    rays = next((s for s in model.supervision if hasattr(s, 'render')), None)
    if rays is None:
        raise UserError('diagnose renders the field the way the model is trained to: the config '
                        "needs a RaySupervision in model.supervision (its renderer)")
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    for i in range(n):
        data = model.data_preprocessor(default_collate([dataset[i]]), False)
        for key in ('gt_depth', 'gt_semantics', 'voxel_semantics'):
            if key not in data:
                raise UserError(f'diagnose: sample {i} has no {key!r}; check the 2D label files '
                                '(tools/create_data.py nuscenes) and the pipeline')
        N = data['img'].shape[1]
        outputs = model.extract(data['img'], data['cam2img'], data['cam2ego'],
                                data['gt_depth'][:, :N])
        field, depth_prob = outputs.field, outputs.depth_probs
        density, _ = model.readout.fields(field)
        pred = model.readout(field)
        mask = data.get('mask_camera')
        reached = None
        vt = model.view_transform
        if depth_prob is not None and hasattr(vt, 'points_per_voxel'):
            counts = vt.points_per_voxel(data['cam2img'], data['cam2ego'], depth_prob.shape[-2:],
                                         tuple(data['img'].shape[-2:]))
            reached = cells_to_grid(counts > 0, tuple(pred.shape[1:]))
        for b in range(pred.shape[0]):
            diag.add_voxels(data['voxel_semantics'][b].cpu().numpy(), pred[b].cpu().numpy(),
                            density[b].float().cpu().numpy(),
                            None if mask is None else mask[b].cpu().numpy(),
                            None if reached is None else reached[b].cpu().numpy())
        gt_depth, gt_sem = data['gt_depth'].float(), data['gt_semantics']
        B, C, h, w = gt_depth.shape
        cams = Cameras(viewmats=data['render_viewmats'].float(), Ks=data['render_Ks'].float(),
                       width=w, height=h)
        out = rays.render(field, cams)
        if out.primitives is not None:  # a splatting renderer: how many Gaussians it used
            predicted = field.renderable(False).num_gaussians
            for _ in range(B):
                diag.add_gaussians(predicted, out.primitives)
        K = len(class_names) - 1  # rendered classes: the occupied ones
        probs = out.features.reshape(B, C, h, w, -1)[..., :K]
        rendered = probs.argmax(-1)
        rendered = torch.where(out.alpha.reshape(B, C, h, w) >= 0.5, rendered,
                               torch.full_like(rendered, -1))
        rendered = rendered + (rendered >= free_label).long()  # label ids (-1 stays: none)
        labelled = (gt_depth > 0) & (gt_sem < len(class_names)) & (gt_sem != free_label)
        diag.add_pixels(gt_sem[labelled].cpu().numpy(), gt_depth[labelled].cpu().numpy(),
                        rendered[labelled].cpu().numpy(),
                        out.depth.reshape(B, C, h, w)[labelled].float().cpu().numpy())
        if depth_prob is not None and hasattr(model.view_transform, 'depth_bin_index'):
            diag.add_lift(*lift_statistics(model.view_transform, depth_prob, gt_depth, gt_sem))
        if progress:
            print(f'[diagnose] sample {i + 1}/{n}', flush=True)
    return diag


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from splattingocc.registry import DATASETS, MODELS

    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'splattingocc'))
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f'checkpoint {args.checkpoint} not found')
    dcfg = copy.deepcopy(cfg.val_dataloader.dataset)
    dcfg.pipeline = val_pipeline_with_labels(dcfg.pipeline)
    dataset = DATASETS.build(dcfg)
    model = MODELS.build(cfg.model)
    # strict: a checkpoint of another network would otherwise load in part, without a word
    try:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True, logger='silent')
    except RuntimeError as err:
        raise UserError(f'checkpoint {args.checkpoint} does not fit the network of {args.config} '
                        f'(pass the config and --cfg-options it was trained with): {err}') from err
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    model = model.to(device).eval()
    names = list(cfg.get('class_names') or [str(c) for c in range(int(cfg.num_classes))])
    diag = diagnose(model, dataset, names, int(cfg.free_label), args.max_samples)
    print('\n'.join(diag.table()))
    summary = diag.summary()
    if args.json:
        atomic_write_json(args.json, dict(config=args.config, checkpoint=args.checkpoint,
                                          classes=summary, gaussians=diag.gaussians()))
    return summary
