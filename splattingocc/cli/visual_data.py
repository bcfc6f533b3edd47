"""Draw one sample of an info pkl: the camera images with the projected LiDAR depth and semantic
labels overlaid, and the Occ3D ground truth from above (highest occupied class per column).

    python tools/visualization/visual_data.py \
        --info data/synthetic-nuscenes/synthetic_infos_val.pkl \
        --data-root data/synthetic-nuscenes --index 0 --out sample0.png

Grid, classes and cameras come from configs/_base_/datasets/occ3d_nuscenes.py (or --dataset-config).
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

from splattingocc.engine.checkpoint import atomic_open
from splattingocc.paths import DATASET_CONFIG


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--info', required=True, help='info pkl written by tools/create_data.py')
    p.add_argument('--data-root', required=True, help='folder the paths in the pkl are relative to')
    p.add_argument('--index', type=int, default=0, help='sample index in the pkl')
    p.add_argument('--out', required=True, help='output image (.png, .jpg, .pdf)')
    p.add_argument('--dataset-config', default=str(DATASET_CONFIG),
                   help='config with point_cloud_range, occ_size, class_names, camera_names')
    p.add_argument('--max-depth', type=float, default=60.0,
                   help='top of the depth colour scale (m)')
    p.add_argument('--dpi', type=int, default=110)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def top_down(semantics: np.ndarray, free_label: int) -> np.ndarray:
    """[X, Y, Z] classes -> [X, Y]: the class of the highest non-free voxel, free_label if none."""
    occupied = semantics != free_label  # [X, Y, Z]
    Z = semantics.shape[2]
    # index of the highest occupied voxel: last True along z
    top = Z - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # [X, Y]
    cls = np.take_along_axis(semantics, top[..., None], axis=2)[..., 0]
    return np.where(occupied.any(axis=2), cls, free_label)


def main(argv=None) -> int:
    """Draw the sample; returns 0."""
    args = parse_args(argv)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from mmengine.config import Config

    from splattingocc.datasets import Occ3DNuScenesDataset
    from splattingocc.visualization.palette import OCC3D_COLORS

    if not os.path.isfile(args.dataset_config):
        sys.exit(f'dataset config not found: {args.dataset_config}')
    cfg = Config.fromfile(args.dataset_config)
    cams = list(cfg.camera_names)
    classes = list(cfg.class_names)
    free = int(cfg.free_label)
    ignore = int(cfg.ignore_label)
    r = cfg.point_cloud_range

    pipeline = [dict(type='LoadMultiViewImages', camera_names=cams),
                dict(type='LoadLabels2D', camera_names=cams, load_adjacent=False),
                dict(type='LoadOcc3DLabels', occ_size=cfg.occ_size, num_classes=cfg.num_classes)]
    try:
        ds = Occ3DNuScenesDataset(ann_file=os.path.abspath(args.info), data_root=args.data_root,
                                  camera_names=cams, pipeline=pipeline, test_mode=True,
                                  serialize_data=False)
    except (FileNotFoundError, ValueError, KeyError) as e:
        sys.exit(str(e))
    if not 0 <= args.index < len(ds):
        sys.exit(f'--index {args.index} is out of range: {args.info} has {len(ds)} samples.')
    print(f'[visual_data] sample {args.index} of {len(ds)} in {args.info}')
    res = ds[args.index]
    views = res['render_views']

    n = len(cams)
    ncol = 3
    nrow_cams = (n + ncol - 1) // ncol
    fig = plt.figure(figsize=(6 * ncol + 10, 3.6 * 2 * nrow_cams))
    gs = fig.add_gridspec(2 * nrow_cams, ncol + 2, width_ratios=[1] * ncol + [0.9, 0.9])
    H0, W0 = res['img'][0].shape[:2]
    marker = 3.0 * min(1.0, 1600.0 / W0)  # points^2: small enough to show the scan lines
    for i, ch in enumerate(cams):
        p = views['points'][i]
        for block, mode in enumerate(('depth', 'semantics')):
            ax = fig.add_subplot(gs[block * nrow_cams + i // ncol, i % ncol])
            ax.imshow(res['img'][i])
            if mode == 'depth':
                sc = ax.scatter(p['x'], p['y'], c=p['depth'], s=marker, cmap='turbo', vmin=0,
                                vmax=args.max_depth, linewidths=0)
            else:
                lab = p['label']
                ok = lab != ignore
                cols = OCC3D_COLORS[np.clip(lab[ok], 0, len(OCC3D_COLORS) - 1)] / 255.0
                ax.scatter(p['x'][ok], p['y'][ok], c=cols, s=marker, linewidths=0)
            ax.set_xlim(0, W0)
            ax.set_ylim(H0, 0)
            ax.set_title(f'{ch} {mode} ({len(p["x"])} px)', fontsize=9)
            ax.axis('off')
    cax = fig.add_axes([0.012, 0.55, 0.006, 0.36])
    fig.colorbar(sc, cax=cax, label='depth (camera z, m)')
    cax.yaxis.set_label_position('left')

    bev = top_down(res['voxel_semantics'], free)  # [X, Y]
    rgb = OCC3D_COLORS[np.clip(bev, 0, len(OCC3D_COLORS) - 1)]  # [X, Y, 3]
    ax = fig.add_subplot(gs[:, ncol:])
    # rows: x from front (top) to back; columns: y from left (+y) to right (-y)
    ax.imshow(rgb[::-1, ::-1], extent=(r[4], r[1], r[0], r[3]), interpolation='nearest')
    ax.plot([0], [0], marker='^', color='k', markersize=8)
    ax.set_xlabel('y (m, left is +y)')
    ax.set_ylabel('x (m, forward)')
    ax.set_title(f'Occ3D ground truth, highest occupied class per column\n'
                 f'{res["scene_name"]} {res["token"]}', fontsize=10)
    present = sorted(set(np.unique(res['voxel_semantics']).tolist()) - {free})
    handles = [Patch(facecolor=OCC3D_COLORS[c] / 255.0, edgecolor='k',
                     label=f'{c} {classes[c]}' + ('' if c in present or c == free else ' (absent)'))
               for c in range(len(classes))]
    ax.legend(handles=handles, loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.subplots_adjust(left=0.04, right=0.9, top=0.95, bottom=0.05, wspace=0.15, hspace=0.2)

    out = Path(args.out)
    fmt = out.suffix.lstrip('.').lower() or 'png'
    with atomic_open(out, 'wb') as f:
        fig.savefig(f, dpi=args.dpi, format=fmt)
    plt.close(fig)
    print(f'[visual_data] wrote {out}')
    return 0
