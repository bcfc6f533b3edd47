"""Seconds per training iteration of model configs, on synthetic tensors of the configs' shapes.

    python tools/benchmarks/benchmark_model.py CONFIG [CONFIG ...] \
        [--iters 10] [--warmup 2] [--threads N] [--json FILE] [--predict] [--cfg-options k=v ...]

e.g. the 2D, 3D and 2D+3D arms side by side::

    python tools/benchmarks/benchmark_model.py configs/splattingocc/splattingocc-tiny-synthetic.py \
        configs/splattingocc/splattingocc-tiny-synthetic-3d.py \
        configs/splattingocc/splattingocc-tiny-synthetic-2d3d.py --threads 1 --json out.json

The batch has the shapes the config's data pipeline produces (cameras, input size, label
resolution, adjacent frames) with the real nuScenes camera rig of the real-data fixture
(``<realdata>/nuscenes-keyframe``; a ring of 6 cameras if absent), random images, random sparse
LiDAR-like labels (20% of the label pixels, depth 2..40 m) and Occ3D labels of random columns
(``make_batch``). One iteration = forward ('loss'), backward and an AdamW step, as a training
step does (data loading excluded: see tools/benchmarks/benchmark_dataset.py). Prints the median
and a per-stage split of one extra iteration.

With several configs every model is built first, all are warmed up, and then their iterations
take turns (A, B, C, A, B, C, ...; ``splattingocc.benchmarking.time_interleaved``), so that the
load of other processes on a shared machine hits all configs alike; the table gives each config's
median and minimum wall time, median CPU time, median load and its ratio to the first config.
Then, per config, a split of one extra iteration: the forward of each stage, of each supervision
module on its own, and the backward; for a Gaussian field also the voxelizer alone (forward +
backward of ``to_grid`` onto the Occ3D grid, the 3D supervision's first step).
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from mmengine.config import DictAction

from splattingocc.benchmarking import (KEYFRAME_INFO, cpu_description, load_average,
                                       time_interleaved, timing_summary)
from splattingocc.engine.launch import atomic_write_json, load_config, run_main
from splattingocc.geometry import rigid_inverse
from splattingocc.paths import realdata_root
from splattingocc.registry import MODELS
from splattingocc.safe_pickle import load_pickle
from splattingocc.structures import NetworkOutputs
from splattingocc.voxelizer import voxelize_gaussians


def _find(pipeline, type_name):
    for t in pipeline:
        if t['type'] == type_name:
            return t
    return None


def camera_rig(camera_names, width, height):
    """(cam2img [N, 3, 3] for a width x height image cropped BEVDet-style, cam2ego [N, 4, 4])."""
    pkl = realdata_root() / KEYFRAME_INFO
    if pkl.exists():
        images = load_pickle(pkl)['data_list'][0]['images']
        Ks, T = [], []
        s = width / 1600.0
        for name in camera_names:
            K = np.array(images[name]['cam2img'], dtype=np.float64)[:3, :3] * s
            K[2, 2] = 1.0
            K[1, 2] -= 900 * s - height  # keep the bottom rows
            Ks.append(K)
            T.append(np.array(images[name]['cam2ego'], dtype=np.float64))
        return torch.tensor(np.stack(Ks)).float(), torch.tensor(np.stack(T)).float()
    n = len(camera_names)
    K = torch.tensor([[width / 2, 0, width / 2], [0, width / 2, height / 2], [0, 0, 1.0]])
    T = torch.zeros(n, 4, 4)
    for i in range(n):
        yaw = 2 * math.pi * i / n
        T[i, :3, :3] = torch.tensor([[math.sin(yaw), 0, math.cos(yaw)],
                                     [-math.cos(yaw), 0, math.sin(yaw)], [0, -1, 0.0]])
        T[i, :3, 3] = torch.tensor([0, 0, 1.5])
        T[i, 3, 3] = 1
    return K.expand(n, 3, 3).clone(), T


def make_batch(cfg, batch_size: int, generator: torch.Generator) -> dict:
    pipe = cfg.train_dataloader.dataset.pipeline
    W, H = _find(pipe, 'ResizeCropImages')['final_size']
    ds = _find(pipe, 'PackOccInputs').get('label_downsample', 1)
    h, w = H // ds, W // ds
    names = list(cfg.camera_names)
    N = len(names)
    F = 1 + 2 * int(cfg.train_dataloader.dataset.get('num_adjacent', 0))
    K, cam2ego = camera_rig(names, W, H)
    B = batch_size
    Kl = K.clone()
    Kl[:, :2] /= ds
    viewmats = rigid_inverse(cam2ego).repeat(F, 1, 1)  # adjacent frames: same pose (shape only)
    offsets = torch.tensor([0] * N + [o for k in range(1, F // 2 + 1) for o in (-k, k)
                                      for _ in range(N)])
    labelled = torch.rand(B, F * N, h, w, generator=generator) < 0.2
    num_sem = cfg.num_classes - 1  # 2D labels: the occupied classes (free is never a pixel label)
    batch = dict(
        img=torch.rand(B, N, 3, H, W, generator=generator) * 255,
        cam2img=K.expand(B, N, 3, 3).clone(),
        cam2ego=cam2ego.expand(B, N, 4, 4).clone(),
        render_viewmats=viewmats.expand(B, F * N, 4, 4).clone(),
        render_Ks=Kl.repeat(F, 1, 1).expand(B, F * N, 3, 3).clone(),
        render_frame_offset=offsets.expand(B, F * N).clone(),
        gt_depth=torch.where(labelled, 2 + 38 * torch.rand(B, F * N, h, w, generator=generator),
                             torch.zeros(B, F * N, h, w)),
        gt_semantics=torch.where(labelled, torch.randint(0, num_sem, (B, F * N, h, w),
                                                         generator=generator),
                                 torch.full((B, F * N, h, w), 255)),
        meta=dict(sample_token=['bench'] * B, scene_name=['bench'] * B),
    )
    # Occ3D labels laid out like a scene (a cost that depends on the occupied voxels, e.g. the
    # ground-truth render of RenderConsistencySupervision, sees a realistic count): each (x, y)
    # column filled from the bottom to a random height of 1..6 voxels with one random class,
    # free above (about 22 % occupied; the synthetic dataset's samples: about 26 %)
    X, Y, Z = cfg.occ_size
    height = torch.randint(1, 7, (B, X, Y, 1), generator=generator)
    column = torch.randint(0, cfg.num_classes - 1, (B, X, Y, 1), generator=generator)
    column = column + (column >= cfg.free_label).long()  # any class but free
    filled = torch.arange(Z).view(1, 1, 1, Z) < height  # [B, X, Y, Z]
    batch['voxel_semantics'] = torch.where(filled, column, torch.full_like(column, cfg.free_label)
                                           ).to(torch.uint8)
    batch['mask_camera'] = torch.ones(B, X, Y, Z, dtype=torch.uint8)
    return batch


def stage_times(model, batch) -> dict:
    """Forward time of each stage for one iteration (with autograd on, as in training)."""
    t = {}
    img = batch['img']
    B, N, _, H, W = img.shape
    t0 = time.perf_counter()
    x = (img.flatten(0, 1) - model.img_mean) / model.img_std
    feats = model.neck(model.backbone(x)).unflatten(0, (B, N))
    t['backbone+neck'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lifted = model.view_transform(feats, batch['cam2img'], batch['cam2ego'], (H, W))
    vol, depth = lifted[:2]
    t['view_transform'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    vol = model.volume_encoder(vol)
    t['volume_encoder'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    outputs = NetworkOutputs(field=model.head(vol), depth_probs=depth,
                             depth_bins=getattr(model.view_transform, 'depth_bins', None),
                             lift_logits=lifted[2] if len(lifted) > 2 else None)
    t['head'] = time.perf_counter() - t0
    losses = {}
    for module in model.supervision:
        t0 = time.perf_counter()
        losses.update(module(outputs, batch))
        t[f'supervision:{type(module).__name__}'] = time.perf_counter() - t0
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    t0 = time.perf_counter()
    total.backward()
    t['backward'] = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    gaussians = getattr(outputs.field, 'gaussians', None)
    if gaussians is not None:  # the voxelizer alone, as the 3D supervision calls it
        leaves = [x.detach().requires_grad_(True) for x in (
            gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
            gaussians.features)]
        t0 = time.perf_counter()
        out = voxelize_gaussians(*leaves, model_pc_range(model),
                                 batch['voxel_semantics'].shape[1:],
                                 cutoff=outputs.field.cutoff, score_mode='softmax')
        density, scores = out.density, out.scores
        t['voxelizer fwd (extra)'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        (density.sum() + scores.square().sum()).backward()
        t['voxelizer bwd (extra)'] = time.perf_counter() - t0
    return t


def model_pc_range(model):
    """The grid box of the model's read-out (the Occ3D grid)."""
    return model.readout.pc_range


def train_step(model, opt, batch):
    """One training iteration: forward ('loss'), backward, optimizer step."""
    def step():
        losses = model(mode='loss', **batch)
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='+', metavar='config')
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--batch-size', type=int, default=None, help='default: the config\'s')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s)')
    p.add_argument('--predict', action='store_true', help='also time predict (voxelizer)')
    p.add_argument('--json', default=None, help='write the results here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config keys (key=value), as in tools/train.py')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import splattingocc.models  # noqa: F401  (registration)
    runs = []
    for path in args.configs:
        torch.manual_seed(0)
        cfg = load_config(path, args.cfg_options)
        model = MODELS.build(cfg.model)
        model.train()
        bs = args.batch_size or cfg.train_dataloader.batch_size
        batch = make_batch(cfg, bs, torch.Generator().manual_seed(0))
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        runs.append(dict(path=path, cfg=cfg, model=model, batch=batch, bs=bs, opt=opt))
    names = [f'{i}:{r["path"]}' for i, r in enumerate(runs)]

    def progress(name, r, sw):
        print(f'[benchmark_model] {name} iteration {r + 1}/{args.iters}: {sw.wall_s:.3f} s '
              f'(cpu {sw.cpu_s:.3f} s, load {load_average():.2f})', flush=True)

    load_start = load_average()
    print(f'[benchmark_model] warm-up: {args.warmup} iteration(s) of each config', flush=True)
    recs = time_interleaved({n: train_step(r['model'], r['opt'], r['batch'])
                             for n, r in zip(names, runs)}, args.iters, args.warmup, progress)
    results = []
    for name, run in zip(names, runs):
        cfg, model, batch = run['cfg'], run['model'], run['batch']
        summ = timing_summary(recs[name])
        result = dict(config=run['path'], batch_size=run['bs'], threads=torch.get_num_threads(),
                      machine=f'{cpu_description()}, torch {torch.__version__}',
                      parameters=sum(q.numel() for q in model.parameters()),
                      gaussians=int(np.prod(cfg.model.head.grid_size)),
                      rays_per_sample=next((s.get('pixel_sampler') or {}
                                            for s in cfg.model.supervision
                                            if s.get('type') == 'RaySupervision'),
                                           {}).get('num_rays'),
                      supervision=[s['type'] for s in cfg.model.supervision],
                      s_per_iter_median=summ['median_s'], s_per_iter_min=summ['min_s'],
                      cpu_s_per_iter_median=summ['median_cpu_s'], load_median=summ['median_load'],
                      iters_s=recs[name]['wall_s'], stages_s=stage_times(model, batch))
        if args.predict:
            model.eval()
            with torch.no_grad():
                model(mode='predict', **batch)
                t0 = time.perf_counter()
                model(mode='predict', **batch)
                result['predict_s'] = time.perf_counter() - t0
            model.train()
        results.append(result)

    base = results[0]['s_per_iter_median']
    print(f'\nmachine: {results[0]["machine"]}, threads {torch.get_num_threads()}, '
          f'{args.iters} interleaved iterations after {args.warmup} warm-up, '
          f'load {load_start:.2f}->{load_average():.2f}')
    header = f'{"config":<48} {"bs":>3} {"median s/it":>11} {"min":>7} {"cpu s":>7} ' \
             f'{"load":>5} {"ratio":>6}' + (f' {"predict s":>9}' if args.predict else '')
    print(header)
    print('-' * len(header))
    for r in results:
        name = r['config'] if len(r['config']) <= 48 else '...' + r['config'][-45:]
        print(f'{name:<48} {r["batch_size"]:>3} {r["s_per_iter_median"]:>11.3f} '
              f'{r["s_per_iter_min"]:>7.3f} {r["cpu_s_per_iter_median"]:>7.3f} '
              f'{r["load_median"]:>5.2f} {r["s_per_iter_median"] / base:>6.2f}'
              + (f' {r["predict_s"]:>9.3f}' if args.predict else ''))
    print('\nstage split of one extra iteration (forward with autograd per stage, then backward; '
          '"extra": timed on its own, not part of the iteration):')
    keys = list(dict.fromkeys(k for r in results for k in r['stages_s']))
    print(f'{"stage":<36}' + ''.join(f'{i:>10}' for i in range(len(results)))
          + '   (columns: config index as in the table)')
    for k in keys:
        print(f'{k:<36}' + ''.join(
            f'{r["stages_s"][k]:>10.3f}' if k in r['stages_s'] else f'{"-":>10}'
            for r in results))
    if args.json:
        meta = dict(machine=results[0]['machine'], threads=torch.get_num_threads(),
                    iters=args.iters, warmup=args.warmup, load_start=load_start,
                    load_end=load_average(), interleaved=True)
        atomic_write_json(args.json, results[0] if len(results) == 1 else
                          dict(meta=meta, results=results), sort_keys=False)
    return results[0] if len(results) == 1 else results

if __name__ == '__main__':
    sys.exit(run_main(main))
