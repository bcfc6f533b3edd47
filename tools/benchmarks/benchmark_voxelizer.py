"""Times the Gaussian voxelizer on the full Occ3D grid and prints a table (optionally JSON).

Cases (both voxelized onto the dataset config's grid, 200 x 200 x 16 at 0.4 m, K = 18 classes):
  gt-frame   one Gaussian per occupied voxel of the real Occ3D frame
             <realdata>/occ3d/29796060110c4163b07f06eff4af0753.labels.npz (~39k Gaussians),
             isotropic sigma = --fine-scale (0.2 m, half a voxel), one-hot logits.
  coarse     one Gaussian per voxel of a coarse grid (--coarse-size, default 50 x 50 x 8, i.e.
             1.6 x 1.6 x 0.8 m voxels over the same range), as a CPU model predicting a coarse grid
             would: random rotations, sigma = --coarse-ratio x the coarse voxel size per axis,
             random opacities and logits.
Each case is timed forward only (no_grad, as at test time) and, with --backward, forward plus
backward (as a 3D loss on density and scores would). Columns: wall-clock median and minimum, and
the median process CPU time (all threads; less sensitive to other processes on a shared machine).

Usage:
  python tools/benchmarks/benchmark_voxelizer.py [--repeats 5] [--threads 1] [--device cpu]
                                                 [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from splattingocc.benchmarking import OCC3D_FRAME, Stopwatch, realdata_file
from splattingocc.engine.launch import atomic_write_json, run_main
from splattingocc.paths import DATASET_CONFIG
from splattingocc.structures import Gaussians
from splattingocc.voxelizer import GaussianVoxelizer, gaussians_from_voxels


def gt_frame_gaussians(ds, scale: float, device) -> Gaussians:
    path = realdata_file(OCC3D_FRAME, 'benchmark_voxelizer')
    sem = torch.from_numpy(np.load(path)['semantics'])[None].to(device)  # [1, X, Y, Z]
    return gaussians_from_voxels(sem, ds.point_cloud_range, ds.free_label, ds.num_classes,
                                 scale=scale, opacity=1.0)


def coarse_gaussians(ds, size, ratio: float, device, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor(ds.point_cloud_range[:3])
    vs = (torch.tensor(ds.point_cloud_range[3:]) - lo) / torch.tensor(size, dtype=torch.float32)
    ii = torch.stack(torch.meshgrid(*[torch.arange(n) for n in size], indexing='ij'), -1)
    means = (lo + vs * (ii.reshape(-1, 3) + 0.5))[None]  # [1, N, 3]
    N = means.shape[1]
    quats = torch.randn(1, N, 4, generator=g)
    scales = (ratio * vs).expand(1, N, 3).clone()  # [1, N, 3]
    opac = torch.rand(1, N, generator=g)
    feats = torch.randn(1, N, ds.num_classes, generator=g) * 3
    return Gaussians(means, quats, scales, opac, feats).to(device)


def time_case(vox, gs: Gaussians, repeats: int, backward: bool, device) -> dict:
    def once():
        if backward:
            leaves = Gaussians(*(t.detach().clone().requires_grad_(True) for t in (
                gs.means, gs.quats, gs.scales, gs.opacities, gs.features)))
            out = vox(leaves, return_fields=True)
            (out.density.sum() + out.scores.square().sum()).backward()
        else:
            with torch.no_grad():
                out = vox(gs, return_fields=True)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return out

    out = once()  # warm-up
    times, cpu_times = [], []
    for r in range(repeats):
        with Stopwatch() as sw:
            once()
        times.append(sw.wall_s)
        cpu_times.append(sw.cpu_s)
        print(f'  repeat {r + 1}/{repeats}: {times[-1]:.3f} s wall, {cpu_times[-1]:.3f} s cpu',
              flush=True)
    occupied = int((out.semantics != vox.free_label).sum())
    return dict(gaussians=gs.num_gaussians, pairs=out.num_pairs,
                contributions=out.num_contributions, occupied_voxels=occupied,
                median_s=statistics.median(times), min_s=min(times),
                median_cpu_s=statistics.median(cpu_times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--fine-scale', type=float, default=0.2, help='sigma (m) of the gt-frame case')
    ap.add_argument('--coarse-size', type=int, nargs=3, default=[50, 50, 8])
    ap.add_argument('--coarse-ratio', type=float, default=0.5,
                    help='sigma of the coarse case as a fraction of its voxel size')
    ap.add_argument('--cutoff', type=float, default=3.0)
    ap.add_argument('--density-threshold', type=float, default=0.5)
    ap.add_argument('--max-pairs-per-chunk', type=int, default=None)
    ap.add_argument('--backward', action='store_true', help='also time forward + backward')
    ap.add_argument('--json', type=Path, default=None, help='write the results here')
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('benchmark_voxelizer: --device cuda given but CUDA is not available; '
                 'use --device cpu')
    ds = Config.fromfile(str(DATASET_CONFIG))
    vox = GaussianVoxelizer(ds.point_cloud_range, ds.occ_size, ds.num_classes, ds.free_label,
                            voxel_size=ds.voxel_size, density_threshold=args.density_threshold,
                            cutoff=args.cutoff, max_pairs_per_chunk=args.max_pairs_per_chunk)
    cases = [('gt-frame', gt_frame_gaussians(ds, args.fine_scale, device)),
             ('coarse-' + 'x'.join(map(str, args.coarse_size)),
              coarse_gaussians(ds, args.coarse_size, args.coarse_ratio, device))]
    rows = []
    for name, gs in cases:
        for backward in ([False, True] if args.backward else [False]):
            mode = 'fwd+bwd' if backward else 'fwd'
            print(f'[benchmark_voxelizer] {name} {mode}: {gs.num_gaussians} Gaussians', flush=True)
            rows.append(dict(case=name, mode=mode, **time_case(vox, gs, args.repeats, backward,
                                                                  device)))

    grid = 'x'.join(map(str, ds.occ_size))
    print(f'\ndevice={device} threads={torch.get_num_threads()} grid={grid} cutoff={args.cutoff} '
          f'repeats={args.repeats}')
    header = f'{"case":<16} {"mode":<8} {"gaussians":>10} {"pairs":>11} {"in ellipsoid":>13} ' \
             f'{"occupied":>9} {"median s":>9} {"min s":>7} {"cpu s":>7}'
    print(header)
    print('-' * len(header))
    for r in rows:
        print(f'{r["case"]:<16} {r["mode"]:<8} {r["gaussians"]:>10} {r["pairs"]:>11} '
              f'{r["contributions"]:>13} {r["occupied_voxels"]:>9} {r["median_s"]:>9.3f} '
              f'{r["min_s"]:>7.3f} {r["median_cpu_s"]:>7.3f}')
    if args.json:
        meta = dict(device=str(device), threads=torch.get_num_threads(), grid=list(ds.occ_size),
                    cutoff=args.cutoff, repeats=args.repeats, torch=torch.__version__)
        atomic_write_json(args.json, dict(meta=meta, results=rows), sort_keys=False)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    sys.exit(run_main(main))
