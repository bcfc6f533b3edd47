"""Benchmark of the synthetic dataset generator: per-stage CPU time of a few frames, then the
wall time of a whole generation.

    python tools/benchmarks/benchmark_synthetic.py            # default dataset (10 x 8 frames)
    python tools/benchmarks/benchmark_synthetic.py --scenes 2 --samples-per-scene 2 --json out.json

Prints a table; ``--json`` also writes the numbers. The generated dataset goes to a temporary
folder that is removed afterwards (``--keep DIR`` keeps it there instead).
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from splattingocc.benchmarking import load_average
from splattingocc.datasets.synthetic import writer as W
from splattingocc.engine.launch import atomic_write_json, run_main

STAGES = ('cast_camera', 'shade_camera', 'cast_lidar', 'lidar_intensity', 'voxelize',
          'traverse_visibility', 'encode_jpeg', 'npz_bytes')


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the workers)."""
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def stage_times(n_frames: int, image_size, samples_per_scene: int) -> dict:
    """Mean CPU seconds per frame of each stage of ``render_frame`` over ``n_frames`` frames."""
    acc = {name: 0.0 for name in STAGES}
    originals = {name: getattr(W, name) for name in STAGES}

    def timed(name):
        fn = originals[name]

        def wrapper(*args, **kwargs):
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name] += time.process_time() - t
        return wrapper

    grid = W.load_grid_config()
    jobs = [dict(seed=0, scene_index=i % len(W.SCENE_NAMES), scene_name=W.SCENE_NAMES[i % 10],
                 n_samples=samples_per_scene, sample_index=i % samples_per_scene,
                 image_size=tuple(image_size), grid=grid,
                 camera_stride=max(1, round(image_size[0] / 133)), use_fixture=True)
            for i in range(n_frames)]
    W.render_frame(jobs[0])  # warm-up: imports, caches
    for name in STAGES:
        setattr(W, name, timed(name))
    try:
        t0 = time.process_time()
        for i, job in enumerate(jobs):
            W.render_frame(job)
            print(f'[benchmark] frame {i + 1}/{n_frames}', flush=True)
        total = time.process_time() - t0
    finally:
        for name, fn in originals.items():
            setattr(W, name, fn)
    out = {name: acc[name] / n_frames for name in STAGES}
    out['render_frame (total)'] = total / n_frames
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--scenes', type=int, default=W.DEFAULT_SCENES)
    p.add_argument('--samples-per-scene', type=int, default=W.DEFAULT_SAMPLES_PER_SCENE)
    p.add_argument('--image-size', type=int, nargs=2, default=(400, 225), metavar=('W', 'H'))
    p.add_argument('--workers', type=int, default=None)
    p.add_argument('--profile-frames', type=int, default=4)
    p.add_argument('--json', default=None, help='write the results to this file')
    p.add_argument('--keep', default=None, help='generate into this folder and keep it')
    args = p.parse_args(argv)

    stages = stage_times(args.profile_frames, args.image_size, args.samples_per_scene)
    tmp = None
    if args.keep:
        root = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix='synthetic-bench-')
        root = Path(tmp) / 'data'
    try:
        cpu0 = _cpu_seconds()
        t0 = time.time()
        summary = W.generate_synthetic_dataset(str(root), scenes=args.scenes,
                                               samples_per_scene=args.samples_per_scene,
                                               image_size=tuple(args.image_size),
                                               workers=args.workers, overwrite=bool(args.keep))
        wall = time.time() - t0
        cpu = _cpu_seconds() - cpu0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    load = load_average()

    print(f'\n{"stage":28s} {"CPU s / frame":>14s}')
    for name, sec in stages.items():
        print(f'{name:28s} {sec:14.3f}')
    frames = summary['frames']
    print(f'\ngeneration: {frames} frames ({args.scenes} scenes x {args.samples_per_scene}), '
          f'{tuple(args.image_size)} images, {wall:.1f} s wall, {frames / wall:.2f} frames/s, '
          f'{summary["bytes"] / 1e6:.1f} MB, load average {load:.1f}')
    print(f'CPU time of the generation (all processes): {cpu:.1f} s = {cpu / frames:.2f} s / frame'
          f'; on 2 idle cores about {cpu / 2:.0f} s')
    print(f'{"class":22s} {"voxels":>10s}')
    for name, count in summary['class_voxel_counts'].items():
        print(f'{name:22s} {count:10d}')
    print(f'mask_camera subset of mask_lidar: {summary["mask_camera_subset_of_mask_lidar"]} '
          f'(outside fraction {summary["mask_camera_outside_lidar_fraction"]})')
    result = dict(stages_cpu_s_per_frame=stages, wall_s=wall, cpu_s=cpu, frames=frames,
                  load_average=load, summary=summary)
    if args.json:
        atomic_write_json(args.json, result, sort_keys=False)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
