"""Speed of the Occ3D evaluation on the CPU: mIoU accumulation and RayIoU, frames per second.

    python tools/benchmarks/benchmark_eval.py [--frames N] [--ray-frames M] [--repeats R]
                                              [--json FILE]

Frames are perturbed copies of the real Occ3D frames in <realdata>/occ3d/ (200 x 200 x 16): the
ground truth shifted by one voxel with 5 % of the voxels relabelled at random. RayIoU uses 8
origins per frame (SparseOcc's maximum) spread along the road, 14,040 rays each, cast through
the ground truth and the prediction.

Targets (issue 28), single process:

* mIoU accumulation >= 1,000 frames/s: the confusion over mask_camera of one frame added to the
  dataset's matrix (``confusion_matrix``), and what ``Occ3DMetric`` does per frame (the
  mask_camera and no-mask matrices in one pass, ``confusion_matrix_pair``);
* RayIoU >= 5 frames/s with 8 origins x 14,040 rays per frame (``rayiou_frame_stats``).

Every task runs a warm-up (all mIoU frames; one RayIoU frame), then ``--repeats`` times; the
table gives the median rates. "ok (cpu)" compares the CPU-time rate (this process' CPU seconds)
with the target, "ok (wall)" the wall-clock rate, which drops when other processes share the
cores: the table prints the machine's 1-minute load average before and after the timings.
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


MIOU_TARGET_FPS = 1000.0  # issue 28
RAYIOU_TARGET_FPS = 5.0  # issue 28: 8 origins x 14,040 rays per frame


def _timed(fn, frames, repeats, warmup):
    """Run ``fn(i)`` for i in range(warmup) (warm-up), then for i in range(frames) ``repeats``
    times.

    Returns:
        (wall seconds, CPU seconds) lists, one entry per repeat.
    """
    for i in range(warmup):
        fn(i)
    walls, cpus = [], []
    for _ in range(repeats):
        with Stopwatch() as sw:
            for i in range(frames):
                fn(i)
        walls.append(sw.wall_s)
        cpus.append(sw.cpu_s)
    return walls, cpus


def _row(task, frames, walls, cpus, target, **extra):
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    return dict(task=task, frames=frames, repeats=len(walls), seconds=wall, fps=frames / wall,
                cpu_seconds=cpu, cpu_fps=frames / cpu, target_fps=target,
                ok=bool(frames / cpu >= target), wall_ok=bool(frames / wall >= target),
                wall_seconds_all=walls, cpu_seconds_all=cpus, **extra)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=200, help='frames for the mIoU timing')
    parser.add_argument('--ray-frames', type=int, default=8, help='frames for the RayIoU timing')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed repeats after the warm-up (median reported)')
    parser.add_argument('--json', default=None, help='write the table as JSON here')
    args = parser.parse_args(argv)
    from mmengine.config import Config
    cfg = Config.fromfile(str(DATASET_CONFIG))
    pc_range, voxel_size = list(cfg.point_cloud_range), list(cfg.voxel_size)
    C = int(cfg.num_classes)

    frames = _frames(max(args.frames, args.ray_frames))
    rows = []
    load_before = load_average()

    # mIoU: the confusion over mask_camera alone (the Occ3D protocol), and what Occ3DMetric does
    # per frame (mask_camera and no-mask matrices in one pass)
    tasks = (('miou: confusion (mask_camera)',
              lambda p, g, m: confusion_matrix(p, g, m, C)),
             ('miou: metric per frame (camera + no mask)',
              lambda p, g, m: confusion_matrix_pair(p, g, m, C)[0]))
    for name, fn in tasks:
        hist = np.zeros((C, C), np.int64)

        def accumulate(i, fn=fn, hist=hist):
            hist += fn(*frames[i])

        walls, cpus = _timed(accumulate, args.frames, args.repeats, warmup=args.frames)
        rows.append(_row(name, args.frames, walls, cpus, MIOU_TARGET_FPS))
        print(f'  {name}: done', flush=True)

    dirs = lidar_ray_directions()
    origins = _origins(8)
    rays = []

    def ray_frame(i):
        pred, gt, _ = frames[i]
        s = rayiou_frame_stats(pred, gt, origins, pc_range, voxel_size, C, int(cfg.free_label),
                               dirs=dirs)
        rays.append(s['rays'])

    walls, cpus = _timed(ray_frame, args.ray_frames, args.repeats, warmup=1)
    rows.append(_row(f'rayiou ({len(origins)} origins x {len(dirs)} rays, 2 grids)',
                     args.ray_frames, walls, cpus, RAYIOU_TARGET_FPS,
                     kept_rays_per_frame=float(np.mean(rays))))
    print('  rayiou: done', flush=True)

    machine, load = cpu_description(), load_average()
    print(f'\nmachine: {machine}, numpy {np.__version__}, single process; load average '
          f'{load_before:.2f} before, {load:.2f} after (wall-clock rates drop when the cores are '
          'shared; CPU-time rates do not)')
    print(f"{'task':<46}{'frames':>7}{'reps':>5}{'wall f/s':>10}{'cpu f/s':>9}{'target':>8}"
          f"{'ok (cpu)':>10}{'ok (wall)':>10}")
    for r in rows:
        print(f"{r['task']:<46}{r['frames']:>7}{r['repeats']:>5}{r['fps']:>10.1f}"
              f"{r['cpu_fps']:>9.1f}{r['target_fps']:>8.0f}{'yes' if r['ok'] else 'NO':>10}"
              f"{'yes' if r['wall_ok'] else 'NO':>10}")
    if args.json:
        atomic_write_json(args.json, {'rows': rows, 'machine': machine, 'numpy': np.__version__,
                                      'load_average_before': load_before,
                                      'load_average': load,
                                      'targets': {'miou_fps': MIOU_TARGET_FPS,
                                                  'rayiou_fps': RAYIOU_TARGET_FPS}},
                          sort_keys=False)
        print(f'written {args.json}')
    return rows


if __name__ == '__main__':
    sys.exit(run_main(main))
