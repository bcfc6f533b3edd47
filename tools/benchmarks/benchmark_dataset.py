"""Seconds per sample of the data pipeline (one process, no workers), with a per-transform table.

    python tools/benchmarks/benchmark_dataset.py \
        --info data/synthetic-nuscenes/synthetic_infos_train.pkl \
        --data-root data/synthetic-nuscenes [--size 224 80] [--num-adjacent 1] [--train-aug] \
        [--samples 30] [--json out.json]

The default input size 224x80 is the nuScenes 704x256 input scaled by ~0.32 (a tiny CPU config's
resolution); pass --size to match a config. With --config the dataset and pipeline are taken from
that config's train_dataloader instead. Target: median < 0.2 s per sample on one CPU core.
"""
import argparse
import sys
import time

import numpy as np

from splattingocc.engine.launch import atomic_write_json, run_main
from splattingocc.paths import DATASET_CONFIG


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--info', help='info pkl (ignored with --config)')
    p.add_argument('--data-root', help='data root of the info pkl (ignored with --config)')
    p.add_argument('--config', help='take the dataset from this config\'s train_dataloader')
    p.add_argument('--size', type=int, nargs=2, default=(224, 80), metavar=('W', 'H'),
                   help='network input size (default 224 80)')
    p.add_argument('--label-downsample', type=int, default=1)
    p.add_argument('--num-adjacent', type=int, default=0)
    p.add_argument('--train-aug', action='store_true',
                   help='random scale/crop jitter and photometric distortion')
    p.add_argument('--no-occ', action='store_true', help='do not load the Occ3D ground truth')
    p.add_argument('--samples', type=int, default=30, help='samples timed (after one warm-up)')
    p.add_argument('--dataset-config', default=str(DATASET_CONFIG))
    p.add_argument('--json', help='also write the results to this JSON file')
    return p.parse_args(argv)


class Timed:
    """Wraps a transform and records its wall time per call."""

    def __init__(self, t):
        self.t = t
        self.name = type(t).__name__
        self.times = []

    def __call__(self, results):
        t0 = time.perf_counter()
        out = self.t(results)
        self.times.append(time.perf_counter() - t0)
        return out


def build_dataset(args):
    from mmengine.config import Config

    from splattingocc.registry import DATASETS
    import splattingocc.datasets  # noqa: F401  (registers the dataset and transforms)

    if args.config:
        cfg = Config.fromfile(args.config)
        ds_cfg = cfg.train_dataloader.dataset
        return DATASETS.build(ds_cfg), dict(config=args.config)
    if not args.info or not args.data_root:
        sys.exit('pass --info and --data-root (or --config)')
    dcfg = Config.fromfile(args.dataset_config)
    cams = list(dcfg.camera_names)
    W, H = args.size
    aug = args.train_aug
    pipeline = [
        dict(type='LoadMultiViewImages', camera_names=cams),
        dict(type='LoadLabels2D', camera_names=cams),
        dict(type='ResizeCropImages', final_size=(W, H),
             scale_range=(0.94, 1.11) if aug else (1.0, 1.0),
             crop_x_range=(-1.0, 1.0) if aug else (0.0, 0.0)),
    ]
    if aug:
        pipeline.append(dict(type='PhotoMetricDistortion'))
    if not args.no_occ:
        pipeline.append(dict(type='LoadOcc3DLabels', occ_size=dcfg.occ_size,
                             num_classes=dcfg.num_classes))
    pipeline.append(dict(type='PackOccInputs', label_downsample=args.label_downsample,
                         ignore_label=dcfg.ignore_label))
    ds = DATASETS.build(dict(type='Occ3DNuScenesDataset', ann_file=args.info,
                             data_root=args.data_root, camera_names=cams, pipeline=pipeline,
                             num_adjacent=args.num_adjacent))
    setting = dict(info=args.info, size=[W, H], label_downsample=args.label_downsample,
                   num_adjacent=args.num_adjacent, train_aug=aug, occ=not args.no_occ)
    return ds, setting


def main(argv=None):
    args = parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from tqdm import tqdm

    ds, setting = build_dataset(args)
    timed = [Timed(t) for t in ds.pipeline.transforms]
    ds.pipeline.transforms = timed
    # a random order, cycled when the dataset has fewer samples than --samples
    order = np.random.default_rng(0).permutation(len(ds))
    ds[int(order[0])]  # warm-up (imports, file cache)
    for t in timed:
        t.times.clear()
    per_sample = []
    for k in tqdm(range(args.samples), desc='samples'):
        t0 = time.perf_counter()
        out = ds[int(order[(k + 1) % len(ds)])]
        per_sample.append(time.perf_counter() - t0)
    shapes = {k: list(v.shape) for k, v in out.items() if hasattr(v, 'shape')}

    rows = [(t.name, 1e3 * float(np.median(t.times)), 1e3 * float(np.mean(t.times))) for t in timed]
    print(f'\n{len(per_sample)} samples timed (dataset of {len(ds)}); setting: {setting}')
    print(f'{"transform":<24}{"median ms":>12}{"mean ms":>12}')
    for name, med, mean in rows:
        print(f'{name:<24}{med:>12.1f}{mean:>12.1f}')
    med = float(np.median(per_sample))
    print(f'{"TOTAL s/sample":<24}{med:>12.4f}{float(np.mean(per_sample)):>12.4f}   '
          f'(target < 0.2 s: {"ok" if med < 0.2 else "SLOW"})')
    print('output shapes:', shapes)
    if args.json:
        res = dict(setting=setting, samples=len(per_sample), median_s=med,
                   mean_s=float(np.mean(per_sample)), p90_s=float(np.percentile(per_sample, 90)),
                   transforms={n: dict(median_ms=m, mean_ms=a) for n, m, a in rows},
                   shapes=shapes)
        atomic_write_json(args.json, res, sort_keys=False)
        print('wrote', args.json)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
