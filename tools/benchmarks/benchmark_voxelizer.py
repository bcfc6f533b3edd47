"""Times the Gaussian voxelizer on the full Occ3D grid and prints a table (optionally JSON).

Cases (all voxelized onto the dataset config's grid, 200 x 200 x 16 at 0.4 m, K = 18 classes):
  gt-frame   one Gaussian per occupied voxel of the real Occ3D frame
             <realdata>/occ3d/29796060110c4163b07f06eff4af0753.labels.npz (~39k Gaussians),
             isotropic sigma = --fine-scale (0.2 m, half a voxel), one-hot logits.
  coarse     one Gaussian per voxel of a coarse grid (--coarse-size, default 50 x 50 x 8, i.e.
             1.6 x 1.6 x 0.8 m voxels over the same range), as a CPU model predicting a coarse grid
             would: random rotations, sigma = --coarse-ratio x the coarse voxel size per axis,
             random opacities and logits.
  sparse     --sparse-count (25,000) Gaussians with free means drawn uniformly in the grid box, as
             the tiny sparse head predicts them: sigma uniform in --sparse-scales (0.2 .. 1.6 m) per
             axis, random rotations, opacities uniform in [0, 1], 18 random logits.
Each case is timed forward only (no_grad, as at test time) and, with --backward, forward plus
backward (as a 3D loss on density and scores would). Columns: wall-clock median and minimum, the
median process CPU time (all threads; less sensitive to other processes on a shared machine) and
the median 1-minute load average during the case's calls.

Timing protocol (``splattingocc.benchmarking.time_interleaved``): --warmup untimed rounds of both
modes, then --repeats rounds in which the modes alternate (fwd, fwd+bwd, fwd, ...). Earlier
versions timed all forward repeats, then all forward + backward repeats, in two blocks, and single
runs showed the no-grad forward slower than forward + backward. Nothing in the no-grad path is
slow (with one thread both are steady and forward is the cheaper, see log.txt entry): the cause
is torch's default of one intra-op thread per core on a 2-core machine that other jobs share.
Every parallel operation then waits until both of its OpenMP threads get a core, which costs
several times the operation itself while the other jobs run, and how much depends on their load
from second to second; whichever block ran while the load was higher came out slower. Interleaving
exposes both modes to the same load, and the load column shows it. On a shared machine pass
--threads 1 (CPU time is then also the wall time of an idle core); compare runs only at equal
--threads.

Usage:
  python tools/benchmarks/benchmark_voxelizer.py [--backward] [--repeats 5] [--warmup 1]
      [--threads 1] [--device cpu] [--cases gt-frame coarse sparse] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from splattingocc.benchmarking import (OCC3D_FRAME, cpu_description, load_average, realdata_file,
                                       time_interleaved, timing_summary)
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


def sparse_gaussians(ds, count: int, scale_range, device, seed: int = 0) -> Gaussians:
    """``count`` Gaussians with means uniform in the grid box and per-axis sigmas uniform in
    ``scale_range`` (metres), random rotations, opacities and logits."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor(ds.point_cloud_range[:3])
    hi = torch.tensor(ds.point_cloud_range[3:])
    means = lo + (hi - lo) * torch.rand(1, count, 3, generator=g)  # [1, N, 3]
    quats = torch.randn(1, count, 4, generator=g)
    a, b = scale_range
    scales = a + (b - a) * torch.rand(1, count, 3, generator=g)
    opac = torch.rand(1, count, generator=g)
    feats = torch.randn(1, count, ds.num_classes, generator=g) * 3
    return Gaussians(means, quats, scales, opac, feats).to(device)


def time_case(vox, gs: Gaussians, repeats: int, warmup: int, modes, device) -> dict:
    """mode -> timing summary and pair counts; the modes' calls interleaved."""
    def call(backward: bool):
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
        return once

    def progress(name, r, sw):
        print(f'  {name} repeat {r + 1}/{repeats}: {sw.wall_s:.3f} s wall, {sw.cpu_s:.3f} s cpu, '
              f'load {load_average():.2f}', flush=True)

    recs = time_interleaved({m: call(m == 'fwd+bwd') for m in modes}, repeats, warmup, progress)
    rows = {}
    for mode, rec in recs.items():
        out = rec['result']
        rows[mode] = dict(gaussians=gs.num_gaussians, pairs=out.num_pairs,
                          contributions=out.num_contributions,
                          occupied_voxels=int((out.semantics != vox.free_label).sum()),
                          **timing_summary(rec))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1, help='untimed rounds before the timed ones')
    ap.add_argument('--threads', type=int, default=None,
                    help='torch CPU threads (default: torch\'s, one per core; 1 on a shared '
                         'machine, see above)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--cases', nargs='+', default=['gt-frame', 'coarse', 'sparse'],
                    choices=['gt-frame', 'coarse', 'sparse'])
    ap.add_argument('--fine-scale', type=float, default=0.2, help='sigma (m) of the gt-frame case')
    ap.add_argument('--coarse-size', type=int, nargs=3, default=[50, 50, 8])
    ap.add_argument('--coarse-ratio', type=float, default=0.5,
                    help='sigma of the coarse case as a fraction of its voxel size')
    ap.add_argument('--sparse-count', type=int, default=25000)
    ap.add_argument('--sparse-scales', type=float, nargs=2, default=[0.2, 1.6],
                    help='range of the sparse case\'s per-axis sigmas (m)')
    ap.add_argument('--cutoff', type=float, default=3.0)
    ap.add_argument('--density-threshold', type=float, default=0.5)
    ap.add_argument('--max-pairs-per-chunk', type=int, default=None)
    ap.add_argument('--no-cache-pairs', action='store_true',
                    help='recompute the pairs in the backward (memory-bounded) instead of keeping '
                         'them from the forward')
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
                            cutoff=args.cutoff, max_pairs_per_chunk=args.max_pairs_per_chunk,
                            cache_pairs=not args.no_cache_pairs)
    builders = {
        'gt-frame': lambda: ('gt-frame', gt_frame_gaussians(ds, args.fine_scale, device)),
        'coarse': lambda: ('coarse-' + 'x'.join(map(str, args.coarse_size)),
                           coarse_gaussians(ds, args.coarse_size, args.coarse_ratio, device)),
        'sparse': lambda: (f'sparse-{args.sparse_count}',
                           sparse_gaussians(ds, args.sparse_count, args.sparse_scales, device)),
    }
    modes = ['fwd', 'fwd+bwd'] if args.backward else ['fwd']
    load_start = load_average()
    rows = []
    for key in args.cases:
        name, gs = builders[key]()
        print(f'[benchmark_voxelizer] {name}: {gs.num_gaussians} Gaussians, modes {modes} '
              f'interleaved', flush=True)
        for mode, res in time_case(vox, gs, args.repeats, args.warmup, modes, device).items():
            rows.append(dict(case=name, mode=mode, **res))

    grid = 'x'.join(map(str, ds.occ_size))
    threads = torch.get_num_threads()
    print(f'\ndevice={device} cpu="{cpu_description()}" threads={threads} grid={grid} '
          f'cutoff={args.cutoff} repeats={args.repeats} warmup={args.warmup} '
          f'load={load_start:.2f}->{load_average():.2f}')
    header = f'{"case":<16} {"mode":<8} {"gaussians":>10} {"pairs":>11} {"in ellipsoid":>13} ' \
             f'{"occupied":>9} {"median s":>9} {"min s":>7} {"cpu s":>7} {"load":>5}'
    print(header)
    print('-' * len(header))
    for r in rows:
        print(f'{r["case"]:<16} {r["mode"]:<8} {r["gaussians"]:>10} {r["pairs"]:>11} '
              f'{r["contributions"]:>13} {r["occupied_voxels"]:>9} {r["median_s"]:>9.3f} '
              f'{r["min_s"]:>7.3f} {r["median_cpu_s"]:>7.3f} {r["median_load"]:>5.2f}')
    if args.json:
        meta = dict(device=str(device), cpu=cpu_description(), threads=threads,
                    grid=list(ds.occ_size), cutoff=args.cutoff, repeats=args.repeats,
                    warmup=args.warmup, cache_pairs=not args.no_cache_pairs,
                    load_start=load_start, load_end=load_average(), torch=torch.__version__)
        atomic_write_json(args.json, dict(meta=meta, results=rows), sort_keys=False)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    sys.exit(run_main(main))
