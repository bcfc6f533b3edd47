"""Seconds per training iteration of a model config, on synthetic tensors of the config's shapes.

    python tools/benchmarks/benchmark_model.py configs/splattingocc/splattingocc-tiny-synthetic.py \
        [--iters 10] [--warmup 2] [--threads N] [--json FILE] [--predict] [--cfg-options k=v ...]

The batch has the shapes the config's data pipeline produces (cameras, input size, label
resolution, adjacent frames) with the real nuScenes camera rig of the real-data fixture
(``<realdata>/nuscenes-keyframe``; a ring of 6 cameras if absent), random images, random sparse
LiDAR-like labels (20% of the label pixels, depth 2..40 m) and Occ3D labels of random columns
(``make_batch``). One iteration = forward ('loss'), backward and an AdamW step, as a training
step does (data loading excluded: see tools/benchmarks/benchmark_dataset.py). Prints the median
and a per-stage split of one extra iteration.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch
from mmengine.config import DictAction

from splattingocc.benchmarking import KEYFRAME_INFO, cpu_description
from splattingocc.engine.launch import atomic_write_json, load_config, run_main
from splattingocc.geometry import rigid_inverse
from splattingocc.paths import realdata_root
from splattingocc.registry import MODELS
from splattingocc.safe_pickle import load_pickle
from splattingocc.structures import NetworkOutputs


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
    num_sem = cfg.model.head.num_classes
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
    t0 = time.perf_counter()
    losses = model.loss(outputs, batch)
    t['supervision'] = time.perf_counter() - t0
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    t0 = time.perf_counter()
    total.backward()
    t['backward'] = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
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
    torch.manual_seed(0)
    cfg = load_config(args.config, args.cfg_options)
    import splattingocc.models  # noqa: F401  (registration)
    model = MODELS.build(cfg.model)
    model.train()
    bs = args.batch_size or cfg.train_dataloader.batch_size
    batch = make_batch(cfg, bs, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    times = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        losses = model(mode='loss', **batch)
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
        print(f'[benchmark_model] iteration {i + 1}/{args.warmup + args.iters}: {dt:.3f} s'
              + (' (warm-up)' if i < args.warmup else ''), flush=True)
    stages = stage_times(model, batch)
    result = dict(config=args.config, batch_size=bs, threads=torch.get_num_threads(),
                  machine=f'{cpu_description()}, torch {torch.__version__}',
                  parameters=sum(q.numel() for q in model.parameters()),
                  gaussians=int(np.prod(cfg.model.head.grid_size)),
                  rays_per_sample=next((s.get('pixel_sampler') or {} for s in cfg.model.supervision
                                        if s.get('type') == 'RaySupervision'), {}).get('num_rays'),
                  s_per_iter_median=statistics.median(times), s_per_iter_min=min(times),
                  stages_s=stages)
    if args.predict:
        model.eval()
        with torch.no_grad():
            model(mode='predict', **batch)
            t0 = time.perf_counter()
            model(mode='predict', **batch)
            result['predict_s'] = time.perf_counter() - t0
    print(f"\n{'config':<16}{args.config}")
    for k in ('batch_size', 'threads', 'parameters', 'gaussians', 'rays_per_sample'):
        print(f'{k:<16}{result[k]}')
    print(f"{'s/iter median':<16}{result['s_per_iter_median']:.3f}  (min "
          f"{result['s_per_iter_min']:.3f}, {args.iters} iterations)")
    if 'predict_s' in result:
        print(f"{'predict':<16}{result['predict_s']:.3f} s")
    print('stage split of one iteration (forward with autograd, then backward):')
    for k, v in stages.items():
        print(f'  {k:<16}{v:.3f} s')
    if args.json:
        atomic_write_json(args.json, result, sort_keys=False)
    return result


if __name__ == '__main__':
    sys.exit(run_main(main))
