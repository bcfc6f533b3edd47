"""Speed of the Occ3D evaluation on the CPU: mIoU accumulation and RayIoU, frames per second.

    python tools/benchmarks/benchmark_eval.py [--frames N] [--ray-frames M] [--json FILE]

Frames are perturbed copies of the real Occ3D frames in <realdata>/occ3d/ (200 x 200 x 16): the
ground truth shifted by one voxel with 5 % of the voxels relabelled at random. RayIoU uses 8
origins per frame (SparseOcc's maximum) spread along the road, 14,040 rays each, cast through
the ground truth and the prediction. Targets: >= 200 frames/s (mIoU), >= 2 frames/s (RayIoU).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from splattingocc.benchmarking import Stopwatch, cpu_description, load_average
from splattingocc.engine.launch import atomic_write_json, run_main
from splattingocc.evaluation.functional.occ_miou import confusion_matrix, confusion_matrix_pair
from splattingocc.evaluation.functional.ray_iou import lidar_ray_directions, rayiou_frame_stats
from splattingocc.paths import DATASET_CONFIG, realdata_root


def _frames(n, seed=0):
    files = sorted((realdata_root() / 'occ3d').glob('*.labels.npz'))
    if not files:
        raise SystemExit(f'no real Occ3D frames in {realdata_root() / "occ3d"}; set '
                         'SPLATTINGOCC_REALDATA')
    base = [dict(np.load(f)) for f in files]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = base[i % len(base)]
        gt = b['semantics']
        pred = np.roll(gt, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
        flip = rng.random(gt.shape) < 0.05
        pred[flip] = rng.integers(0, 18, int(flip.sum()))
        out.append((pred, gt, b['mask_camera']))
    return out


def _origins(k=8):
    xs = np.linspace(-30, 30, k)
    return np.stack([xs + 0.94, 0.1 * xs, np.full(k, 1.84)], 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=200, help='frames for the mIoU timing')
    parser.add_argument('--ray-frames', type=int, default=8, help='frames for the RayIoU timing')
    parser.add_argument('--json', default=None, help='write the table as JSON here')
    args = parser.parse_args(argv)
    from mmengine.config import Config
    cfg = Config.fromfile(str(DATASET_CONFIG))
    pc_range, voxel_size = list(cfg.point_cloud_range), list(cfg.voxel_size)
    C = int(cfg.num_classes)

    frames = _frames(max(args.frames, args.ray_frames))
    rows = []

    # mIoU: the confusion over mask_camera alone (the Occ3D protocol), and what Occ3DMetric does
    # per frame (mask_camera and no-mask matrices in one pass)
    tasks = (('miou: confusion (mask_camera)',
              lambda p, g, m: confusion_matrix(p, g, m, C)),
             ('miou: metric per frame (camera + no mask)',
              lambda p, g, m: confusion_matrix_pair(p, g, m, C)[0]))
    for name, fn in tasks:
        fn(*frames[0])  # warm-up
        hist = np.zeros((C, C), np.int64)
        with Stopwatch() as sw:
            for i in range(args.frames):
                hist += fn(*frames[i])
                if (i + 1) % 100 == 0:
                    print(f'  {name}: {i + 1}/{args.frames}', flush=True)
        dt, cpu = sw.wall_s, sw.cpu_s
        rows.append(dict(task=name, frames=args.frames, seconds=dt, fps=args.frames / dt,
                         cpu_seconds=cpu, cpu_fps=args.frames / cpu, target_fps=200.0))

    dirs = lidar_ray_directions()
    origins = _origins(8)
    rays = 0
    with Stopwatch() as sw:
        for i in range(args.ray_frames):
            pred, gt, _ = frames[i]
            s = rayiou_frame_stats(pred, gt, origins, pc_range, voxel_size, C,
                                   int(cfg.free_label), dirs=dirs)
            rays += s['rays']
            print(f'  rayiou: {i + 1}/{args.ray_frames}', flush=True)
    dt, cpu = sw.wall_s, sw.cpu_s
    rows.append(dict(task=f'rayiou (8 origins x {len(dirs)} rays, 2 grids)',
                     frames=args.ray_frames, seconds=dt, fps=args.ray_frames / dt,
                     cpu_seconds=cpu, cpu_fps=args.ray_frames / cpu, target_fps=2.0,
                     kept_rays_per_frame=rays / args.ray_frames))

    machine, load = cpu_description(), load_average()
    print(f'\nmachine: {machine}, numpy {np.__version__}, single process, load average '
          f'{load:.1f} (wall-clock rates drop when the cores are shared; CPU-time rates do not)')
    print(f"{'task':<46}{'frames':>7}{'wall s':>9}{'frames/s':>10}{'cpu s':>8}{'cpu f/s':>9}"
          f"{'target':>8}  ok")
    for r in rows:
        print(f"{r['task']:<46}{r['frames']:>7}{r['seconds']:>9.3f}{r['fps']:>10.1f}"
              f"{r['cpu_seconds']:>8.3f}{r['cpu_fps']:>9.1f}{r['target_fps']:>8.0f}  "
              f"{'yes' if r['fps'] >= r['target_fps'] else 'NO'}")
    if args.json:
        atomic_write_json(args.json, {'rows': rows, 'machine': machine, 'load_average': load},
                          sort_keys=False)
        print(f'written {args.json}')
    return rows


if __name__ == '__main__':
    sys.exit(run_main(main))
