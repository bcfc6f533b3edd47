"""Draw the predictions of one scene, one PNG per frame.

    python tools/visualization/visual.py PRED_DIR/scene-0103 [--out OUT] [--data-root DATA]
        [--info PKL] [--max-frames N] [--no-3d]

PRED_DIR/scene-xxxx/<token>/pred.npz are the files of ``tools/test.py --dump-dir`` (key
'semantics', or 'pred'). Each PNG (OUT/<token>.png, default OUT = PRED_DIR/scene-xxxx_vis) shows
the six camera images (with --data-root and an info pkl that lists the sample: --info, else the
*.pkl files at the top of DATA are searched), the prediction and the ground truth from above
(DATA/gts/<scene>/<token>/labels.npz; free is transparent), the ground truth inside mask_camera
(unseen columns grey), a 3D view of the predicted voxels and a legend of the classes present.
Classes, range and cameras come from --dataset-config (configs/_base_/datasets/occ3d_nuscenes.py).
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from splattingocc.engine.checkpoint import atomic_open
from splattingocc.paths import DATASET_CONFIG


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('scene_dir', help='PRED_DIR/<scene_name> holding <token>/pred.npz')
    p.add_argument('--out', default=None, help='output folder (default: <scene_dir>_vis)')
    p.add_argument('--data-root', default=None, help='dataset root (gts/, camera images)')
    p.add_argument('--info', default=None, help='info pkl listing the samples (camera paths)')
    p.add_argument('--dataset-config', default=str(DATASET_CONFIG))
    p.add_argument('--max-frames', type=int, default=None, help='draw at most this many frames')
    p.add_argument('--no-3d', action='store_true', help='skip the (slower) 3D view')
    p.add_argument('--image-width', type=int, default=480, help='camera thumbnails width (px)')
    p.add_argument('--dpi', type=int, default=90)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _infos_by_token(info_path, data_root):
    """{token: info} from --info, or from the info pkls at the top of the data root."""
    from splattingocc.evaluation.ray_origins import load_infos
    paths = [Path(info_path)] if info_path else sorted(Path(data_root).glob('*.pkl'))
    out = {}
    for path in paths:
        try:
            infos = load_infos(path)
        except (ValueError, pickle.UnpicklingError, EOFError) as e:
            if info_path:
                raise SystemExit(f'visual: cannot read --info {path}: {e}')
            continue
        for info in infos:
            if isinstance(info, dict) and 'token' in info:
                out[info['token']] = info
    return out


def _load_images(info, data_root, camera_names, width):
    from PIL import Image
    images = {}
    for cam in camera_names:
        entry = (info.get('cams') or {}).get(cam)
        if not entry or 'data_path' not in entry:
            continue
        path = Path(str(entry['data_path']).replace('\\', '/'))
        if not path.is_absolute():
            path = Path(data_root) / path
        if not path.is_file():
            continue
        try:
            with Image.open(path) as im:
                im = im.convert('RGB')
                h = max(1, round(im.height * width / im.width))
                images[cam] = np.asarray(im.resize((width, h), Image.BILINEAR))
        except OSError as e:
            print(f'[visual] warning: cannot read {path}: {e}')
    return images


def main(argv=None) -> list:
    """Draw the frames; returns the PNG paths written."""
    args = parse_args(argv)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mmengine.config import Config
    from tqdm import tqdm

    from splattingocc.evaluation.dump import PRED_FILENAME, load_occ_gt, load_prediction
    from splattingocc.visualization.occ_figures import occ_frame_figure

    scene_dir = Path(args.scene_dir)
    if not scene_dir.is_dir():
        raise SystemExit(f'visual: {scene_dir} is not a folder (expected PRED_DIR/<scene_name>)')
    if not Path(args.dataset_config).is_file():
        raise SystemExit(f'visual: --dataset-config {args.dataset_config} does not exist')
    cfg = Config.fromfile(args.dataset_config)
    scene = scene_dir.name
    preds = sorted(scene_dir.glob(f'*/{PRED_FILENAME}'))
    if not preds:
        raise SystemExit(f'visual: no <token>/{PRED_FILENAME} in {scene_dir}')
    if args.max_frames:
        preds = preds[:args.max_frames]
    out_dir = Path(args.out) if args.out else scene_dir.parent / f'{scene}_vis'
    infos = _infos_by_token(args.info, args.data_root) if (args.info or args.data_root) else {}
    written = []
    for pred_path in tqdm(preds, desc=f'visual {scene}', unit='frame'):
        token = pred_path.parent.name
        try:
            pred = load_prediction(pred_path)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f'visual: {e}')
        occ_size = tuple(cfg.occ_size)
        if pred.ndim == 1 and pred.size == int(np.prod(occ_size)):
            pred = pred.reshape(occ_size)
        if pred.shape != occ_size:
            raise SystemExit(f'visual: {pred_path}: shape {pred.shape}, expected {occ_size}')
        gt = mask = None
        images = {}
        if args.data_root:
            gt_path = Path(args.data_root) / 'gts' / scene / token / 'labels.npz'
            if gt_path.is_file():
                g = load_occ_gt(gt_path)
                gt, mask = g['semantics'], g['mask_camera']
            if token in infos:
                images = _load_images(infos[token], args.data_root, cfg.camera_names,
                                      args.image_width)
        fig = occ_frame_figure(pred, list(cfg.class_names), list(cfg.point_cloud_range),
                               list(cfg.voxel_size), int(cfg.free_label), gt=gt,
                               mask_camera=mask, images=images,
                               camera_names=list(cfg.camera_names),
                               title=f'{scene}  {token}', draw_3d=not args.no_3d)
        path = out_dir / f'{token}.png'
        with atomic_open(path, 'wb') as f:
            fig.savefig(f, dpi=args.dpi, format='png')
        plt.close(fig)
        written.append(path)
    print(f'[visual] {len(written)} figures written to {out_dir}')
    return written
