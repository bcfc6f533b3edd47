"""Benchmark the renderers on a real Occ3D frame seen by the real nuScenes camera rig.

Scene: the Occ3D-nuScenes ground truth ``<realdata>/occ3d/29796060110c4163b07f06eff4af0753.labels
.npz``; every occupied voxel (~39k) becomes one Gaussian at its centre (isotropic scale of half a
voxel, opacity 0.9, identity rotation, one-hot semantics over the K dataset classes). The volume
renderer gets the same grid as a density (``-ln(1 - 0.9) / voxel``: alpha 0.9 per voxel
crossed) with one-hot features. Cameras: the six cameras of
``<realdata>/nuscenes-keyframe/...pkl`` (intrinsics scaled from 1600x900; viewmat = inverse of
cam2ego, so the world is the ego frame of the grid; the keyframe is another scene than the Occ3D
frame, which does not matter for timing).

Cases: ``dense-400x225`` (1600x900 scaled by 0.25), ``dense-704x256`` (scaled by 0.44 to 704x396,
then the bottom 256 rows kept, as BEVDet's crop: cy -= 140), ``sampled-38400`` (38,400 pixels,
6,400 per camera, uniform without replacement at 704x256, fixed seed).

Backends: ``torch`` (TorchSplatRenderer), ``volume`` (VolumeRenderer), ``gsplat``
(GsplatRenderer, its channel chunks chosen so that nothing is padded: 18 classes + depth = 17 + 2)
and ``gsplat-pad32`` (GsplatRenderer with gsplat's default chunk of 32: the 19 channels padded to
32), both CUDA only.

Per row: the median wall time of ``--repeats`` calls after one warm-up, forward alone (inputs do not
require grad) and forward + backward (loss = depth.sum() + features.sum(), gradients w.r.t. all
Gaussian parameters / density and features); the scene tensors are built before the clock starts.
The two modes run in two blocks, one after the other: on a CPU that other jobs share, run with
--threads 1 (with torch's default of one thread per core every parallel operation waits for its
threads to get a core, which can cost several times the work and changes with the other jobs'
load from second to second, so one block can come out many times slower than the other; see
benchmark_voxelizer.py's docstring, whose timings interleave the modes).
Peak memory: one forward + backward call measured on its own, above the memory before it. CPU: in
a fresh process (``--memory-probe``) whose glibc serves every allocation above 64 KiB with mmap,
so that the resident set size, sampled every 0.5 ms from /proc/self/statm in a thread, follows the
live memory (the timed calls run with glibc's usual settings: with 64 KiB mmaps every temporary
tensor costs page faults, which slowed the torch renderer about 3x; and a process that has run
with the usual settings reuses freed heap pages, which hides allocations from the RSS). CUDA:
torch.cuda.max_memory_allocated in the same process. Gaussian-pixel intersections or composited
volume samples;
and the median absolute depth error against an exact ray cast of the same voxel grid
(``splattingocc.evaluation.functional.ray_casting.first_hit``: depth = camera z of the point where
the pixel ray enters its first occupied voxel; pixels whose ray hits nothing are left out).

The volume renderer's backward keeps every chunk's activations (~130 bytes per composited sample,
~7 GB at 400x225); where that would exceed ``--volume-mem-gb`` (default 8) it is run with its
``checkpoint=True`` option (each chunk recomputed in the backward pass: less memory, one more
forward), which the table notes.

Usage::

    python tools/benchmarks/benchmark_render.py [--json FILE] [--repeats 3]
        [--backends torch,volume,gsplat,gsplat-pad32]
        [--cases dense-400x225,dense-704x256,sampled-38400] [--device cpu|cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from splattingocc.benchmarking import (KEYFRAME_INFO, OCC3D_FRAME, cpu_description,
                                       realdata_file, rss_bytes)
from splattingocc.engine.launch import atomic_write_json, run_main
from splattingocc.geometry import rigid_inverse
from splattingocc.paths import DATASET_CONFIG
from splattingocc.safe_pickle import load_pickle
from splattingocc.structures import Cameras, DensityGrid, Gaussians

CASES = ('dense-400x225', 'dense-704x256', 'sampled-38400')
BACKENDS = ('torch', 'volume', 'gsplat', 'gsplat-pad32')
FULL_W, FULL_H = 1600, 900


def load_dataset_config() -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(str(DATASET_CONFIG))
    return dict(pc_range=list(cfg.point_cloud_range), voxel_size=list(cfg.voxel_size),
                occ_size=list(cfg.occ_size), num_classes=int(cfg.num_classes),
                free_label=int(cfg.free_label), camera_names=list(cfg.camera_names))


def load_occupancy(ds: dict) -> np.ndarray:
    path = realdata_file(OCC3D_FRAME, 'benchmark_render')
    sem = np.load(path)['semantics']
    if list(sem.shape) != ds['occ_size']:
        raise SystemExit(f'benchmark_render: {path} has a grid of {sem.shape}, the dataset config '
                         f'{DATASET_CONFIG} says occ_size={ds["occ_size"]}')
    return sem  # [X, Y, Z] uint8 class per voxel


def load_rig(ds: dict):
    """cam2img [C, 3, 3] at 1600x900 and cam2ego [C, 4, 4] in the config's camera order."""
    path = realdata_file(KEYFRAME_INFO, 'benchmark_render')
    info = load_pickle(path)['data_list'][0]
    K = np.stack([np.asarray(info['images'][n]['cam2img'], dtype=np.float64)[:3, :3]
                  for n in ds['camera_names']])
    c2e = np.stack([np.asarray(info['images'][n]['cam2ego'], dtype=np.float64)
                    for n in ds['camera_names']])
    return K, c2e


def case_cameras(case: str, K_full: np.ndarray, cam2ego: np.ndarray, device) -> Cameras:
    K = torch.as_tensor(K_full, dtype=torch.float32).clone()  # [C, 3, 3]
    if case == 'dense-400x225':
        s, W, H, crop_top = 0.25, 400, 225, 0
    else:  # BEVDet-style: resize 1600x900 by 0.44 to 704x396, keep the bottom 256 rows
        s, W, H = 0.44, 704, 256
        crop_top = int(round(FULL_H * s)) - H  # 140
    K[:, :2, :] *= s  # continuous pixel coordinates scale with the image (centres at +0.5)
    K[:, 1, 2] -= crop_top
    viewmats = rigid_inverse(torch.as_tensor(cam2ego, dtype=torch.float32))  # [C, 4, 4]
    return Cameras(viewmats=viewmats[None].to(device), Ks=K[None].to(device), width=W, height=H)


def case_pixels(case: str, cams: Cameras, device):
    if not case.startswith('sampled'):
        return None
    from splattingocc.supervision.pixels import sample_pixels
    num = int(case.split('-')[1])
    C = cams.num_cameras
    labels = torch.zeros(1, C, cams.height, cams.width, dtype=torch.long)  # every pixel labelled
    g = torch.Generator().manual_seed(0)
    ps = sample_pixels(labels, mode='uniform', num_rays=num, generator=g)
    return ps.pixels.to(device)  # [1, C, P, 2]


def make_gaussians(sem: np.ndarray, ds: dict, device, requires_grad: bool) -> Gaussians:
    occ = torch.from_numpy(sem != ds['free_label'])
    ijk = occ.nonzero().float()  # [N, 3]
    lo = torch.tensor(ds['pc_range'][:3])
    vs = torch.tensor(ds['voxel_size'])
    means = lo + vs * (ijk + 0.5)  # [N, 3]
    N = means.shape[0]
    quats = torch.zeros(N, 4)
    quats[:, 0] = 1
    scales = (vs / 2).expand(N, 3).clone()
    opac = torch.full((N,), 0.9)
    feats = torch.nn.functional.one_hot(torch.from_numpy(sem[occ.numpy()]).long(),
                                        ds['num_classes']).float()  # [N, K]
    ts = [t[None].to(device).requires_grad_(requires_grad)
          for t in (means, quats, scales, opac, feats)]
    return Gaussians(*ts)


def make_grid(sem: np.ndarray, ds: dict, device, requires_grad: bool) -> DensityGrid:
    occ = torch.from_numpy(sem != ds['free_label'])
    sigma = -math.log(1 - 0.9) / min(ds['voxel_size'])  # alpha 0.9 per voxel crossed
    density = (occ.float() * sigma)[None]  # [1, X, Y, Z]
    feats = torch.nn.functional.one_hot(torch.from_numpy(sem.astype(np.int64)),
                                        ds['num_classes']).float()[None]  # [1, X, Y, Z, K]
    return DensityGrid(density.to(device).requires_grad_(requires_grad),
                       feats.to(device).requires_grad_(requires_grad), tuple(ds['pc_range']))


def exact_depth(sem: np.ndarray, ds: dict, cams: Cameras, pixels) -> np.ndarray:
    """Camera depth of the first occupied voxel entry along every pixel ray; nan where none.
    Returns [C, H, W] (dense) or [C, P] (sampled)."""
    from splattingocc.evaluation.functional.ray_casting import first_hit
    from splattingocc.geometry import pixel_centres, pixel_rays
    C, W, H = cams.num_cameras, cams.width, cams.height
    if pixels is None:
        px = pixel_centres(H, W, dtype=torch.float64).expand(1, C, H * W, 2)
    else:
        px = pixels.cpu().double()
    o, d = pixel_rays(cams.viewmats.cpu().double(), cams.Ks.cpu().double(), px)
    o = o[0][:, None].expand(d.shape[1:]).reshape(-1, 3).numpy()  # [R, 3]
    d = d[0].reshape(-1, 3).numpy()  # [R, 3] camera z of the direction is 1
    norm = np.linalg.norm(d, axis=1)
    _, dist = first_hit(sem != ds['free_label'], o, d / norm[:, None], ds['pc_range'],
                        ds['voxel_size'])
    z = np.where(np.isfinite(dist), dist / norm, np.nan)
    return z.reshape((C, H, W) if pixels is None else (C, -1))


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator peak, or the process RSS sampled from
    /proc/self/statm in a background thread (CPU)."""

    def __init__(self, device, enabled: bool = True):
        self.cuda = torch.device(device).type == 'cuda'
        self.enabled = enabled
        self.peak_bytes = 0

    def __enter__(self):
        if not self.enabled:
            return self
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()
            self.peak = self.base
            self.stop = False
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop = True
            self.thread.join()
            self.peak = max(self.peak, rss_bytes())
            self.peak_bytes = self.peak - self.base
        return False


def build_renderer(backend: str):
    from splattingocc.registry import MODELS
    import splattingocc.rendering  # noqa: F401  (registers the renderers)
    if backend == 'gsplat-pad32':  # gsplat's default chunk: K + 1 channels padded to 32
        return MODELS.build(dict(type='GsplatRenderer', channel_chunk=32))
    name = {'torch': 'TorchSplatRenderer', 'volume': 'VolumeRenderer',
            'gsplat': 'GsplatRenderer'}[backend]
    return MODELS.build(dict(type=name))


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def run_case(renderer, scene_fn, cams, pixels, exact, repeats, device, before_backward=None,
             memory_fn=None):
    """Time forward alone, then forward + backward (scene built outside the clock); the peak
    memory from ``memory_fn()`` (MB) if given, else from one more call measured here."""
    def fwd(scene):
        with torch.no_grad():
            return renderer(scene, cams, pixels)

    def fwd_bwd(scene):
        out = renderer(scene, cams, pixels)
        (out.depth.sum() + out.features.sum()).backward()
        return out

    times = {}
    for name, fn in (('fwd', fwd), ('fwd_bwd', fwd_bwd)):
        if name == 'fwd_bwd' and before_backward is not None:
            before_backward()
        ts = []
        for k in range(repeats + 1):  # the first call is the warm-up
            scene = scene_fn(name == 'fwd_bwd')
            sync(device)
            t0 = time.perf_counter()
            out = fn(scene)
            sync(device)
            dt = time.perf_counter() - t0
            if k:
                ts.append(dt)
            del out, scene
        times[name] = statistics.median(ts)
    scene = scene_fn(True)
    sync(device)
    with PeakMemory(device, enabled=memory_fn is None) as pm:
        out = fwd_bwd(scene)
        sync(device)
    peak = pm.peak_bytes if memory_fn is None else memory_fn() * 2 ** 20
    depth = out.depth.detach().cpu().numpy()[0]
    hit = np.isfinite(exact)
    err = float(np.median(np.abs(depth[hit] - exact[hit]))) if hit.any() else float('nan')
    return dict(fwd_s=times['fwd'], fwd_bwd_s=times['fwd_bwd'], peak_mem_mb=peak / 2 ** 20,
                intersections=None if out.intersections is None else int(out.intersections),
                depth_err_median_m=err, exact_hit_pixels=int(hit.sum()),
                alpha_mean=float(out.alpha.detach().mean()))


def _malloc_track_rss() -> None:
    """Make glibc serve every allocation above 64 KiB with mmap and give it back on free, so that
    the RSS follows the live memory (by default glibc raises that threshold after large frees).
    Only for the memory probe process: it makes every temporary tensor cost page faults."""
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD (a fixed value disables the adjustment)
        libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def memory_in_fresh_process(backend: str, case: str, volume_checkpoint: bool,
                            threads: Optional[int]) -> float:
    """Peak MB of one forward + backward of ``backend`` on ``case``, in a new process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), '--memory-probe', f'{backend},{case}',
           '--volume-checkpoint', 'on' if volume_checkpoint else 'off']
    if threads:
        cmd += ['--threads', str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r'^PEAK_MB (\S+)$', proc.stdout, re.M)
    if proc.returncode != 0 or not m:
        raise SystemExit(f'benchmark_render: memory probe {backend} {case} failed '
                         f'({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}')
    return float(m.group(1))


def build_scene(backend: str, sem: np.ndarray, ds: dict, device, requires_grad: bool):
    if backend == 'volume':
        return make_grid(sem, ds, device, requires_grad)
    return make_gaussians(sem, ds, device, requires_grad)


def memory_probe(args) -> None:
    """``--memory-probe BACKEND,CASE``: one forward + backward in this (fresh) process with the
    RSS-tracking malloc settings; prints ``PEAK_MB <value>``."""
    _malloc_track_rss()
    backend, case = args.memory_probe.split(',')
    ds = load_dataset_config()
    sem = load_occupancy(ds)
    K_full, cam2ego = load_rig(ds)
    cams = case_cameras(case, K_full, cam2ego, 'cpu')
    pixels = case_pixels(case, cams, 'cpu')
    renderer = build_renderer(backend)
    if backend == 'volume':
        renderer.checkpoint = args.volume_checkpoint == 'on'
    scene = build_scene(backend, sem, ds, 'cpu', True)
    with PeakMemory('cpu') as pm:
        out = renderer(scene, cams, pixels)
        (out.depth.sum() + out.features.sum()).backward()
    print(f'PEAK_MB {pm.peak_bytes / 2 ** 20:.1f}', flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--json', help='write the rows to this JSON file')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--backends', default='torch,volume,gsplat')
    ap.add_argument('--cases', default=','.join(CASES))
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    ap.add_argument('--volume-checkpoint', choices=('auto', 'on', 'off'), default='auto',
                    help="the volume renderer's per-chunk activation checkpointing in the backward "
                         "pass; 'auto': on where the activations would exceed --volume-mem-gb")
    ap.add_argument('--volume-mem-gb', type=float, default=8.0)
    ap.add_argument('--memory-probe', metavar='BACKEND,CASE', default=None,
                    help='internal (CPU): print the peak memory of one forward + backward')
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args)
    backends = [b for b in args.backends.split(',') if b]
    cases = [c for c in args.cases.split(',') if c]
    for b in backends:
        if b not in BACKENDS:
            raise SystemExit(f'benchmark_render: unknown backend {b!r}; choose from {BACKENDS}')
    for c in cases:
        if c not in CASES:
            raise SystemExit(f'benchmark_render: unknown case {c!r}; choose from {CASES}')
    device = torch.device(args.device)
    ds = load_dataset_config()
    sem = load_occupancy(ds)
    K_full, cam2ego = load_rig(ds)
    mem_method = ('torch.cuda.max_memory_allocated' if device.type == 'cuda' else
                  'peak RSS increase, /proc/self/statm sampled every 0.5 ms')
    machine = (f'{cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} '
               f'threads, device {device}'
               + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''))
    print(f'[benchmark_render] {machine}; memory: {mem_method}', flush=True)

    rows, notes = [], []
    for case in cases:
        cams = case_cameras(case, K_full, cam2ego, device)
        pixels = case_pixels(case, cams, device)
        n_pix = (cams.num_cameras * cams.width * cams.height if pixels is None
                 else int(pixels.shape[1] * pixels.shape[2]))
        t0 = time.perf_counter()
        exact = exact_depth(sem, ds, cams, pixels)
        print(f'[benchmark_render] {case}: {n_pix} pixels, exact ray cast '
              f'{time.perf_counter() - t0:.1f} s', flush=True)
        for backend in backends:
            if backend.startswith('gsplat') and device.type != 'cuda':
                note = f'gsplat skipped on {case}: needs CUDA (device is {device})'
                if note not in notes:
                    notes.append(note)
                    print(f'[benchmark_render] {note}', flush=True)
                continue
            renderer = build_renderer(backend).to(device)
            plain = build_scene(backend, sem, ds, device, False)
            with_grad = build_scene(backend, sem, ds, device, True)

            def scene_fn(grad, g0=plain, g1=with_grad):
                if grad:  # fresh gradients for every call
                    for t in vars(g1).values():
                        if isinstance(t, torch.Tensor):
                            t.grad = None
                return g1 if grad else g0
            before_backward, mode = None, {}
            if backend == 'volume':
                def before_backward(r=renderer, mode=mode):
                    # activation memory of a non-checkpointed backward: ~160 bytes per padded sample
                    est_gb = r.last_stats['samples_padded'] * 160 / 2 ** 30
                    if args.volume_checkpoint == 'auto':
                        r.checkpoint = est_gb > args.volume_mem_gb
                    else:
                        r.checkpoint = args.volume_checkpoint == 'on'
                    mode['volume_checkpoint'] = r.checkpoint
                    print(f'[benchmark_render] volume {case}: ~{est_gb:.1f} GB of activations '
                          f'without checkpointing -> checkpoint={r.checkpoint}', flush=True)
            memory_fn = None
            if device.type == 'cpu':
                def memory_fn(b=backend, c=case, r=renderer):
                    return memory_in_fresh_process(b, c, bool(getattr(r, 'checkpoint', False)),
                                                   args.threads)
            t0 = time.perf_counter()
            res = run_case(renderer, scene_fn, cams, pixels, exact, args.repeats, device,
                           before_backward, memory_fn)
            row = dict(backend=backend, case=case, pixels=n_pix, **res, **mode)
            rows.append(row)
            print(f'[benchmark_render] {backend:6s} {case:14s} fwd {res["fwd_s"]:.3f} s, '
                  f'fwd+bwd {res["fwd_bwd_s"]:.3f} s ({time.perf_counter() - t0:.0f} s total)',
                  flush=True)

    hdr = (f'{"backend":7s} {"case":14s} {"pixels":>8s} {"fwd_s":>8s} {"fwd_bwd_s":>9s} '
           f'{"peak_MB":>8s} {"intersections":>13s} {"depth_err_m":>11s} {"alpha_mean":>10s} '
           f'{"note":s}')
    print('\n' + hdr + '\n' + '-' * len(hdr))
    for r in rows:
        inter = '-' if r['intersections'] is None else str(r['intersections'])
        print(f'{r["backend"]:7s} {r["case"]:14s} {r["pixels"]:8d} {r["fwd_s"]:8.3f} '
              f'{r["fwd_bwd_s"]:9.3f} {r["peak_mem_mb"]:8.1f} {inter:>13s} '
              f'{r["depth_err_median_m"]:11.3f} {r["alpha_mean"]:10.3f} '
              + ('checkpointed backward' if r.get('volume_checkpoint') else ''))
    # speed-up of the splatting backend over the volume baseline, per case
    by = {(r['backend'], r['case']): r for r in rows}
    for case in cases:
        t, v = by.get(('torch', case)), by.get(('volume', case))
        if t and v:
            print(f'{case}: volume/torch fwd+bwd time {v["fwd_bwd_s"] / t["fwd_bwd_s"]:.2f}x, '
                  f'peak memory {v["peak_mem_mb"] / max(t["peak_mem_mb"], 1e-9):.2f}x')
    for n in notes:
        print('note:', n)
    print(f'memory: {mem_method}; fwd: inputs without grad; fwd_bwd: loss = depth.sum() + '
          'features.sum(); depth error: median |depth - exact first-hit depth| over pixels whose '
          'exact ray hits the grid')

    if args.json:
        out = dict(rows=[{k: r[k] for k in ('backend', 'case', 'pixels', 'fwd_s', 'fwd_bwd_s',
                                             'peak_mem_mb', 'intersections',
                                             'depth_err_median_m')}
                         | ({'volume_checkpoint': r['volume_checkpoint']}
                            if 'volume_checkpoint' in r else {}) for r in rows],
                   machine=machine, memory_method=mem_method, repeats=args.repeats, notes=notes)
        atomic_write_json(args.json, out, sort_keys=False)
        print(f'[benchmark_render] wrote {args.json}')


if __name__ == '__main__':
    sys.exit(run_main(main))
