"""nuScenes (+ lidarseg + Occ3D) -> info pkl files and per-sample 2D label files.

``create_nuscenes_infos(root, version, out_dir)`` reads the nuScenes tables with nuscenes-devkit and
writes

* ``<out_dir>/<prefix>_infos_train.pkl`` and ``<out_dir>/<prefix>_infos_val.pkl`` (devkit's official
  splits: 'mini_train'/'mini_val' for v1.0-mini, 'train'/'val' for v1.0-trainval), BEVDet-style,
  with the fields of the data contract (see ``sample_info`` below); for ``v1.0-test`` (devkit's
  'test' split) ``<out_dir>/<prefix>_infos_test.pkl``, which needs lidarseg and Occ3D labels: the
  synthetic dataset's v1.0-test has them, the real nuScenes v1.0-test has none;
* ``<out_dir>/labels2d/<sample_token>.npz``: for every camera ``CH`` of the sample the arrays
  ``CH_u``, ``CH_v`` (uint16 pixel column/row), ``CH_depth`` (float32 camera z, metres) and
  ``CH_label`` (uint8 Occ3D class 0..16, 255 = no class), one entry per labelled pixel at the STORED
  image resolution: the LiDAR keyframe sweep projected into the camera, the nearest point per pixel
  (``label_projection.project_points_to_image``).

Semantic classes: nuScenes-lidarseg fine classes go through devkit's ``LidarsegClassMapper`` to its
coarse classes, whose indices 1..16 are the Occ3D indices. The mapper's coarse 0 ('ignore') gathers
'noise', 'vehicle.ego' and rare classes (animal, debris, pushable_pullable, bicycle_rack,
static.other, emergency vehicles, strollers, wheelchairs, personal mobility); Occ3D calls the
latter 'others' (class 0). With ``ignored_to_others=True`` (default) those rare classes become 0
'others' (RenderOcc's 2D labels do the same) and only 'noise' and 'vehicle.ego' become 255; with
False every coarse-ignore point becomes 255.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..errors import CorruptFileError, DataError
from .label_projection import lidar_to_camera, project_points_to_image

LABELS2D_DIR = 'labels2d'
LABELS2D_FORMAT = 1  # bump when the layout of the label files changes
NO_LABEL = 255
# fine lidarseg classes that never get a class, even with ignored_to_others=True
ALWAYS_IGNORED_FINE = ('noise', 'vehicle.ego')
SPLITS = {'v1.0-mini': ('mini_train', 'mini_val'), 'v1.0-trainval': ('train', 'val'),
          'v1.0-test': ('test', )}
# the info pkl each devkit split is written to (<prefix>_infos_<name>.pkl)
SPLIT_PKL_NAMES = {'mini_train': 'train', 'mini_val': 'val', 'train': 'train', 'val': 'val',
                   'test': 'test'}


class NuScenesDataError(DataError, RuntimeError):
    """Missing or inconsistent input data for the converter (message names the file and the fix;
    a :class:`~splattingocc.errors.UserError`: the tools print it as one line)."""


# ----------------------------------------------------------------------------------------------
# small I/O helpers
# ----------------------------------------------------------------------------------------------
def _partial(path: Path) -> Path:
    """The temporary name of an atomic write (``engine.checkpoint.partial_name``: a killed
    writer's leftover is recognised and removed by the next run)."""
    from ..engine.checkpoint import partial_name
    return Path(partial_name(path))


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_pickle(obj, path) -> None:
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def atomic_savez(path, compressed: bool = True, **arrays) -> None:
    """``np.savez(_compressed)`` to a temporary name, then rename to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    try:
        with open(tmp, 'wb') as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_lidar_bin(path, num_features: int = 5) -> np.ndarray:
    """A nuScenes ``.pcd.bin`` sweep as float32 [N, num_features] (x, y, z, intensity, ring)."""
    path = Path(path)
    if not path.is_file():
        raise NuScenesDataError(f'LiDAR file not found: {path} (part of the nuScenes "samples/" '
                                'download; check the data root).')
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % num_features:
        raise NuScenesDataError(f'{path}: {raw.size} floats is not a multiple of {num_features}; '
                                'the file is truncated or not a nuScenes .pcd.bin, re-download it.')
    return raw.reshape(-1, num_features)


def _transform(translation, rotation_wxyz) -> np.ndarray:
    """4x4 float64 rigid transform from a translation and a [w, x, y, z] quaternion."""
    from pyquaternion import Quaternion
    T = np.eye(4)
    T[:3, :3] = Quaternion(list(rotation_wxyz)).rotation_matrix
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


# ----------------------------------------------------------------------------------------------
# checks with one clear message each
# ----------------------------------------------------------------------------------------------
def check_nuscenes_root(root, version: str, need_lidarseg: bool = True) -> None:
    """Raise ``NuScenesDataError`` naming what is missing under ``root`` and where to get it."""
    root = Path(root)
    if not root.is_dir():
        raise NuScenesDataError(f'nuScenes data root {root} does not exist: pass the folder that '
                                f'holds {version}/, samples/, lidarseg/ and gts/.')
    if version not in SPLITS:
        raise NuScenesDataError(f'unsupported nuScenes version {version!r}: use one of '
                                f'{sorted(SPLITS)}.')
    table_dir = root / version
    if not (table_dir / 'sample.json').is_file():
        found = sorted(p.name for p in root.glob('v1.0-*') if p.is_dir())
        raise NuScenesDataError(
            f'nuScenes tables not found: {table_dir}/sample.json is missing (version folders found '
            f'in {root}: {found or "none"}). Download nuScenes {version} from '
            'https://www.nuscenes.org/download and extract it into the data root, or pass the '
            'right --version.')
    if need_lidarseg:
        seg_dir = root / 'lidarseg' / version
        if not (table_dir / 'lidarseg.json').is_file() or not seg_dir.is_dir():
            missing = [str(p) for p in (table_dir / 'lidarseg.json', seg_dir) if not p.exists()]
            if version == 'v1.0-test':
                raise NuScenesDataError(
                    f'{root} has no labels for {version} ({", ".join(missing)} missing): the real '
                    'nuScenes v1.0-test has neither lidarseg nor Occ3D labels, so it has no info '
                    'pkl here; report on val for real data, or use a synthetic dataset made '
                    'with `tools/create_data.py synthetic --test-scenes N`, whose v1.0-test is '
                    'labelled.')
            raise NuScenesDataError(
                f'nuScenes-lidarseg not found ({", ".join(missing)} missing): '
                'nuScenes-lidarseg is a separate download (https://www.nuscenes.org/download, '
                '"nuScenes-lidarseg"); '
                f'extract it into {root} so that {version}/lidarseg.json and lidarseg/{version}/ '
                'exist (its category.json replaces the one of the base download).')


def check_occ3d_gts(root, scene_tokens: Sequence) -> None:
    """All ``<root>/gts/<scene>/<token>/labels.npz`` of ``scene_tokens`` [(scene, token)] exist."""
    gts = Path(root) / 'gts'
    how = ('Occ3D-nuScenes ground truth is a separate download '
           '(https://github.com/Tsinghua-MARS-Lab/Occ3D, "Occ3D-nuScenes" gts); extract it so that '
           f'the files are {gts}/<scene_name>/<sample_token>/labels.npz.')
    if not gts.is_dir():
        raise NuScenesDataError(f'Occ3D ground truth folder {gts} not found. {how}')
    missing = [f'{s}/{t}' for s, t in scene_tokens if not (gts / s / t / 'labels.npz').is_file()]
    if missing:
        raise NuScenesDataError(
            f'{len(missing)} of {len(scene_tokens)} Occ3D ground truth files are missing under '
            f'{gts} (first: {missing[0]}/labels.npz). {how}')


# ----------------------------------------------------------------------------------------------
# class mapping
# ----------------------------------------------------------------------------------------------
def lidarseg_to_occ3d_lut(nusc, ignored_to_others: bool = True) -> np.ndarray:
    """[256] uint8 lookup table: lidarseg fine index -> Occ3D class (0..16) or 255.

    Built from devkit's ``LidarsegClassMapper`` (its coarse indices 1..16 equal Occ3D's).
    """
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    mapper = LidarsegClassMapper(nusc)
    ignore_idx = mapper.ignore_class['index']
    lut = np.full(256, NO_LABEL, dtype=np.uint8)
    for fine_idx, coarse_idx in mapper.fine_idx_2_coarse_idx_mapping.items():
        name = nusc.lidarseg_idx2name_mapping[fine_idx]
        if coarse_idx != ignore_idx:
            lut[fine_idx] = coarse_idx
        elif ignored_to_others and name not in ALWAYS_IGNORED_FINE:
            lut[fine_idx] = 0  # Occ3D 'others'
    return lut


# ----------------------------------------------------------------------------------------------
# per-sample info and labels
# ----------------------------------------------------------------------------------------------
def _sd_pose(nusc, sd: dict):
    cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    pose = nusc.get('ego_pose', sd['ego_pose_token'])
    return cs, _transform(cs['translation'], cs['rotation']), _transform(pose['translation'],
                                                                          pose['rotation'])


def sample_info(nusc, sample: dict, scene_name: str) -> dict:
    """The info dict of one sample (fields of the data contract, without 'adjacent')."""
    lidar_sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
    _, lidar2ego, ego2global = _sd_pose(nusc, lidar_sd)
    token = sample['token']
    info = dict(
        token=token,
        scene_name=scene_name,
        scene_token=sample['scene_token'],
        timestamp=int(sample['timestamp']),
        prev=sample['prev'],
        next=sample['next'],
        lidar_path=lidar_sd['filename'],
        lidar_sample_data_token=lidar_sd['token'],
        lidar2ego=lidar2ego,
        ego2global=ego2global,
        occ_path=f'gts/{scene_name}/{token}/labels.npz',
        label2d_path=None,  # filled by the caller
        cams={},
    )
    cam_channels = sorted(ch for ch in sample['data'] if ch.startswith('CAM'))
    for ch in cam_channels:
        sd = nusc.get('sample_data', sample['data'][ch])
        cs, cam2ego, cam_ego2global = _sd_pose(nusc, sd)
        info['cams'][ch] = dict(
            data_path=sd['filename'],
            cam_intrinsic=np.asarray(cs['camera_intrinsic'], dtype=np.float64),
            sensor2ego=cam2ego,
            ego2global=cam_ego2global,
            timestamp=int(sd['timestamp']),
            sample_data_token=sd['token'],
            width=int(sd['width']),
            height=int(sd['height']),
        )
    return info


def project_sample_labels(info: dict, points: np.ndarray, labels: np.ndarray,
                          min_depth: float = 1.0) -> Dict[str, np.ndarray]:
    """The 2D label arrays of one sample (see the module docstring), per camera in ``info``.

    Args:
        info:   a ``sample_info`` dict.
        points: [N, >=3] LiDAR points in the LIDAR_TOP frame.
        labels: [N] uint8 Occ3D class per point (255 = none).
    """
    assert points.ndim == 2 and points.shape[1] >= 3, points.shape
    assert labels.shape == (points.shape[0],), (labels.shape, points.shape)
    out = {}
    for ch, cam in info['cams'].items():
        W, H = cam['width'], cam['height']
        if W > 65535 or H > 65535:
            raise NuScenesDataError(f'{cam["data_path"]}: image size {W}x{H} does not fit the '
                                    'uint16 pixel coordinates of the label files.')
        l2c = lidar_to_camera(info['lidar2ego'], info['ego2global'], cam['ego2global'],
                              cam['sensor2ego'])
        u, v, depth, idx = project_points_to_image(points[:, :3], l2c, cam['cam_intrinsic'], W, H,
                                                   min_depth=min_depth)
        out[f'{ch}_u'] = u.astype(np.uint16)
        out[f'{ch}_v'] = v.astype(np.uint16)
        out[f'{ch}_depth'] = depth.astype(np.float32)
        out[f'{ch}_label'] = labels[idx].astype(np.uint8)
    return out


def load_labels2d(path, camera_names: Sequence[str]) -> Dict[str, Dict[str, np.ndarray]]:
    """Read one ``labels2d/<token>.npz``: {camera: {'u', 'v', 'depth', 'label'}} (stored res).

    Checked: the four arrays of every camera are there, 1-D and of one length, ``u``, ``v`` and
    ``label`` integers and ``depth`` finite floats (as :func:`project_sample_labels` writes them).
    A bad file raises :class:`~splattingocc.errors.DataError` (unreadable:
    :class:`~splattingocc.errors.CorruptFileError`) naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'2D label file not found: {path}; create it with '
                                '`python tools/create_data.py nuscenes ...` (or `synthetic`).')
    redo = 'write it again with tools/create_data.py nuscenes'
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {}
            for ch in camera_names:
                keys = [f'{ch}_{k}' for k in ('u', 'v', 'depth', 'label')]
                if any(k not in npz.files for k in keys):
                    raise DataError(f'{path}: no labels for camera {ch} (arrays {keys}); the file '
                                    f'was written for other cameras, {redo}.')
                out[ch] = dict(u=npz[keys[0]], v=npz[keys[1]], depth=npz[keys[2]],
                               label=npz[keys[3]])
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptFileError(f'{path}: cannot read the 2D label file ({e}); it is corrupt or '
                               f'truncated, {redo}.') from e
    for ch, arrays in out.items():
        shapes = {k: a.shape for k, a in arrays.items()}
        if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
            raise DataError(f'{path}: the arrays of camera {ch} must be 1-D of one length '
                            f'(one entry per labelled pixel), found shapes {shapes}; {redo}.')
        for k in ('u', 'v', 'label'):
            if not np.issubdtype(arrays[k].dtype, np.integer):
                raise DataError(f'{path}: {ch}_{k} has dtype {arrays[k].dtype}, expected '
                                f'integers; {redo}.')
        depth = arrays['depth']
        if not np.issubdtype(depth.dtype, np.floating):
            raise DataError(f'{path}: {ch}_depth has dtype {depth.dtype}, expected floats; {redo}.')
        if depth.size and not np.isfinite(depth).all():
            raise DataError(f'{path}: {ch}_depth holds {int((~np.isfinite(depth)).sum())} NaN or '
                            f'infinite values; {redo}.')
    return out


# ----------------------------------------------------------------------------------------------
# the converter
# ----------------------------------------------------------------------------------------------
def create_nuscenes_infos(root,
                          version: str = 'v1.0-trainval',
                          out_dir=None,
                          sweeps: int = 0,
                          progress: bool = True,
                          prefix: str = 'nuscenes',
                          dataset: str = 'nuscenes',
                          min_depth: float = 1.0,
                          ignored_to_others: bool = True,
                          require_occ: bool = True,
                          skip_existing_labels: bool = False) -> dict:
    """Write the info pkls (train/val, or test) and the 2D label files of a nuScenes-format dataset.

    Args:
        root: data root holding ``<version>/*.json``, ``samples/``, ``lidarseg/<version>/``,
            ``maps/`` and ``gts/``.
        version: 'v1.0-mini' (splits mini_train/mini_val), 'v1.0-trainval' (train/val) or
            'v1.0-test' (test; labelled in the synthetic dataset only).
        out_dir: where the pkls and ``labels2d/`` go (default: ``root``). Paths inside the infos are
            relative to ``root`` (absolute where ``out_dir`` lies outside it).
        sweeps: K > 0 stores ``adjacent``: up to K keyframes on each side within the scene.
        progress: show a progress bar over the samples.
        prefix: file name prefix of the pkls ('nuscenes' for real data).
        dataset: the ``metadata['dataset']`` value, 'nuscenes' or 'synthetic'.
        min_depth: LiDAR points with camera z <= min_depth are not projected (nuScenes uses 1 m).
        ignored_to_others: map devkit's coarse-ignored rare classes to Occ3D 0 'others' (see the
            module docstring); 'noise' and 'vehicle.ego' are always 255.
        require_occ: fail when Occ3D ground truth files are missing.
        skip_existing_labels: keep label files that already exist (resuming a killed run).

    Returns:
        summary dict: number of samples per split, pkl paths, mean labelled pixels per camera.
    """
    from nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes
    from tqdm import tqdm

    root = Path(root).resolve()
    out_dir = Path(out_dir).resolve() if out_dir is not None else root
    check_nuscenes_root(root, version)
    if sweeps < 0:
        raise ValueError(f'sweeps must be >= 0, got {sweeps}')

    try:
        nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, FileNotFoundError) as e:
        raise NuScenesDataError(f'nuscenes-devkit could not load {root / version}: {e}. Check '
                                'that the nuScenes download (tables, maps/, samples/) and '
                                'nuScenes-lidarseg are complete.') from e
    if not hasattr(nusc, 'lidarseg'):
        raise NuScenesDataError(f'{root / version}/lidarseg.json was not loaded: nuScenes-lidarseg '
                                'is a separate download (https://www.nuscenes.org/download).')
    lut = lidarseg_to_occ3d_lut(nusc, ignored_to_others=ignored_to_others)
    seg_file = {rec['sample_data_token']: rec['filename'] for rec in nusc.lidarseg}

    split_names = SPLITS[version]
    split_scenes = create_splits_scenes()
    scene_by_name = {s['name']: s for s in nusc.scene}
    per_split: Dict[str, List[tuple]] = {}
    for split in split_names:
        wanted = set(split_scenes[split])
        per_split[split] = sorted(name for name in scene_by_name if name in wanted)
    if not any(per_split.values()):
        raise NuScenesDataError(f'no scene of {root / version} belongs to the official splits '
                                f'{split_names} of nuscenes-devkit; scene names found: '
                                f'{sorted(scene_by_name)[:5]}...')

    # samples of every scene in time order
    samples_of_scene = {}
    for names in per_split.values():
        for name in names:
            scene = scene_by_name[name]
            recs, tok = [], scene['first_sample_token']
            while tok:
                rec = nusc.get('sample', tok)
                recs.append(rec)
                tok = rec['next']
            samples_of_scene[name] = sorted(recs, key=lambda r: r['timestamp'])
    if require_occ:
        try:
            check_occ3d_gts(root, [(n, r['token']) for n, recs in samples_of_scene.items()
                                   for r in recs])
        except NuScenesDataError as e:
            if version != 'v1.0-test':
                raise
            raise NuScenesDataError(f'{e} Note: Occ3D publishes no ground truth for the nuScenes '
                                    'test split; only a synthetic v1.0-test is labelled.') from e

    labels_dir = out_dir / LABELS2D_DIR
    from ..engine.checkpoint import remove_stale_partials
    for folder in (out_dir, labels_dir):  # temporary files of a killed earlier run
        remove_stale_partials(folder)

    def rel(p: Path) -> str:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    total = sum(len(v) for v in samples_of_scene.values())
    bar = tqdm(total=total, desc=f'{prefix} infos + 2D labels', disable=not progress,
               dynamic_ncols=True)
    summary = dict(version=version, dataset=dataset, splits={}, labels_dir=str(labels_dir))
    pix_counts = []
    for devkit_split in split_names:
        split = SPLIT_PKL_NAMES[devkit_split]
        scene_names = per_split[devkit_split]
        infos = []
        for name in scene_names:
            recs = samples_of_scene[name]
            scene_infos = []
            for rec in recs:
                info = sample_info(nusc, rec, name)
                label_path = labels_dir / f'{rec["token"]}.npz'
                info['label2d_path'] = rel(label_path)
                if not (skip_existing_labels and label_path.is_file()):
                    points = load_lidar_bin(root / info['lidar_path'])
                    seg_rel = seg_file.get(info['lidar_sample_data_token'])
                    if seg_rel is None:
                        raise NuScenesDataError(
                            'no lidarseg record for LiDAR sample_data '
                            f'{info["lidar_sample_data_token"]} of sample {rec["token"]} in '
                            f'{root / version}/lidarseg.json.')
                    seg = np.fromfile(root / seg_rel, dtype=np.uint8)
                    if seg.shape[0] != points.shape[0]:
                        raise NuScenesDataError(
                            f'{root / seg_rel}: {seg.shape[0]} labels for {points.shape[0]} points '
                            f'of {root / info["lidar_path"]}; re-download nuScenes-lidarseg.')
                    arrays = project_sample_labels(info, points, lut[seg], min_depth=min_depth)
                    pix_counts.append(np.mean([a.shape[0] for k, a in arrays.items()
                                               if k.endswith('_u')]))
                    atomic_savez(label_path, **arrays)
                scene_infos.append(info)
                bar.update(1)
            if sweeps > 0:
                tokens = [i['token'] for i in scene_infos]
                for t, info in enumerate(scene_infos):
                    lo, hi = max(0, t - sweeps), min(len(tokens), t + sweeps + 1)
                    info['adjacent'] = tokens[lo:t] + tokens[t + 1:hi]
            infos.extend(scene_infos)
        metadata = dict(version=version, dataset=dataset, split=split,
                        devkit_split=devkit_split,
                        sweeps=int(sweeps), min_depth=float(min_depth),
                        labels2d_format=LABELS2D_FORMAT, ignored_to_others=bool(ignored_to_others),
                        class_source='nuscenes-devkit LidarsegClassMapper (coarse = Occ3D 0..16)')
        pkl = out_dir / f'{prefix}_infos_{split}.pkl'
        atomic_pickle(dict(metadata=metadata, infos=infos), pkl)
        summary['splits'][split] = dict(samples=len(infos), scenes=len(scene_names), pkl=str(pkl))
    bar.close()
    summary['mean_labelled_pixels_per_camera'] = float(np.mean(pix_counts)) if pix_counts else 0.0
    return summary


__all__ = ['create_nuscenes_infos', 'check_nuscenes_root', 'check_occ3d_gts',
           'lidarseg_to_occ3d_lut', 'sample_info', 'project_sample_labels', 'load_labels2d',
           'load_lidar_bin', 'atomic_pickle', 'atomic_savez', 'atomic_write_bytes',
           'NuScenesDataError', 'LABELS2D_DIR', 'NO_LABEL', 'SPLITS', 'SPLIT_PKL_NAMES']
