"""Writes the synthetic dataset in the exact nuScenes (v1.0-mini + lidarseg) and Occ3D formats.

Layout under ``root`` (what nuscenes-devkit and Occ3D loaders expect)::

    v1.0-mini/{attribute,calibrated_sensor,category,ego_pose,instance,log,map,sample,
               sample_annotation,sample_data,scene,sensor,visibility,lidarseg}.json
    v1.0-test/{...the same tables...}                     the held-out test scenes (if any)
    samples/CAM_*/<log>__<CHANNEL>__<timestamp>.jpg       ray-cast camera images
    samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin   float32 x 5 (x, y, z, intensity, ring)
    lidarseg/<version>/<lidar sample_data token>_lidarseg.bin  uint8 fine class per point
    maps/<map token>.png                                  drivable-area prior, 0.1 m / px
    gts/<scene_name>/<sample_token>/labels.npz            Occ3D semantics, mask_lidar, mask_camera
    synthetic.json                                        the generator's arguments and summary

Splits. ``v1.0-mini`` holds the train and val scenes, named after nuScenes v1.0-mini so that
devkit's ``mini_train`` / ``mini_val`` apply. ``v1.0-test`` holds ``test_scenes`` more scenes of
the same town generator, named after devkit's ``test`` split (``create_splits_scenes()['test']``)
and drawn from a random stream of their own (world index ``TEST_SCENE_INDEX0 + j`` under
``test_seed``, an index no train/val scene uses), sharing ``samples/``, ``maps/`` and ``gts/`` as
real nuScenes versions do. Unlike the real v1.0-test it carries lidarseg and Occ3D labels, so
``tools/create_data.py nuscenes --version v1.0-test`` writes ``nuscenes_infos_test.pkl``. The
train/val files do not depend on the test scenes: a dataset with test scenes has the same bytes
in ``v1.0-mini/``, the train/val ``samples/``, ``lidarseg/v1.0-mini/``, ``maps/`` and ``gts/`` as
one without.

Every file is a pure function of the arguments: the same call writes identical bytes (zip entries of
the npz files carry a fixed date). The dataset is written to a temporary sibling folder and renamed
to ``root`` only when complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import zipfile
from glob import escape as glob_escape
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from splattingocc.errors import OutputExistsError
from splattingocc.paths import REPO_ROOT
from . import calibration as C
from .categories import (ATTRIBUTES, FINE_CATEGORIES, FINE_INDEX, VISIBILITY, fine_to_occ_lut,
                         visibility_token)
from .geometry import pose_matrix, rigid_inverse_np, yaw_quat
from .occupancy import traverse_visibility, voxelize
from .sensors import GROUND, NOTHING, cast_camera, cast_lidar
from .shading import lidar_intensity, shade_camera
from .world import MAP_SIZE, build_scene

VERSION = 'v1.0-mini'
TEST_VERSION = 'v1.0-test'
# nuScenes v1.0-mini scene names, in this order (mini_val = scene-0103 and scene-0916 in
# nuscenes-devkit's nuscenes/utils/splits.py), so devkit's mini_train / mini_val splits apply
SCENE_NAMES = ['scene-0061', 'scene-0103', 'scene-0655', 'scene-0553', 'scene-0757', 'scene-0796',
               'scene-0916', 'scene-1077', 'scene-1094', 'scene-1100']
DEFAULT_SCENES = 10
DEFAULT_SAMPLES_PER_SCENE = 8
DEFAULT_TEST_SCENES = 4  # held-out scenes of v1.0-test (keyframes per scene: samples_per_scene)
TEST_SCENE_INDEX0 = 100  # world index of test scene 0 (train/val scenes use 0..9)
KEYFRAME_US = 500_000  # keyframes at 2 Hz
BASE_TIMESTAMP_US = 1532402927647951  # the real keyframe of ../shared/realdata (first scene start)
ANNOTATION_RANGE = 55.0  # metres from the ego within which objects are annotated
DATASET_CONFIG = REPO_ROOT / 'configs' / '_base_' / 'datasets' / 'occ3d_nuscenes.py'
GRID_KEYS = ('point_cloud_range', 'voxel_size', 'occ_size', 'class_names', 'free_label',
             'camera_names')


def load_grid_config(path=DATASET_CONFIG) -> dict:
    """Grid, class and camera settings from the dataset config (configs/_base_/datasets)."""
    from mmengine.config import Config
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'dataset config not found: {path}; pass occ_config=dict(...) with '
                                f'the keys {GRID_KEYS}')
    cfg = Config.fromfile(str(path))
    missing = [k for k in GRID_KEYS if k not in cfg]
    if missing:
        raise KeyError(f'{path} lacks {missing}; it must define {GRID_KEYS}')
    return {k: (list(cfg[k]) if isinstance(cfg[k], (list, tuple)) else cfg[k]) for k in GRID_KEYS}


def make_token(seed: int, *parts) -> str:
    """32 hex chars, a deterministic function of the seed and the record's identity."""
    key = '/'.join(['splattingocc-synthetic', str(int(seed))] + [str(p) for p in parts])
    return hashlib.md5(key.encode('utf-8')).hexdigest()


def npz_bytes(**arrays) -> bytes:
    """An ``np.savez_compressed``-compatible npz whose bytes depend only on the arrays."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f'{name}.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def encode_jpeg(img_rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(img_rgb[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    assert ok
    return buf.tobytes()


def devkit_test_scene_names() -> list:
    """The scene names of devkit's ``test`` split, in its order (150 names)."""
    from nuscenes.utils.splits import create_splits_scenes
    return list(create_splits_scenes()['test'])


def scene_date(scene_index: int) -> str:
    """Capture date of a scene: 2018-07-(1 + i) for the train/val scenes i < 10, from
    2018-09-01 on for the test scenes (index TEST_SCENE_INDEX0 + j)."""
    if scene_index < TEST_SCENE_INDEX0:
        return f'2018-07-{1 + scene_index:02d}'
    import datetime
    day = datetime.date(2018, 9, 1) + datetime.timedelta(days=scene_index - TEST_SCENE_INDEX0)
    return day.isoformat()


def log_name(seed: int, scene_index: int) -> str:
    return f'synth{int(seed):04d}-{scene_date(scene_index)}-00-00-00+0000'


# ------------------------------------------------------------------ one frame
@lru_cache(maxsize=4)
def _scene(seed, index, name, n_samples):
    return build_scene(seed, index, name, n_samples)


@lru_cache(maxsize=4)
def _rig(camera_names, image_size, use_fixture):
    return C.build_rig(list(camera_names), image_size, use_fixture)


def _pose(scene, t: float):
    """(translation list, rotation [w, x, y, z] list, ego2global [4, 4]) at scene time t."""
    p, yaw = scene.ego_pose(t)
    translation = [float(v) for v in p]
    rotation = [float(v) for v in yaw_quat(yaw)]
    return translation, rotation, pose_matrix(translation, rotation)


def keyframe_semantics(scene, prims, ego2global: np.ndarray, grid: dict,
                       lut: Optional[np.ndarray] = None) -> np.ndarray:
    """Occ3D semantics uint8 [X, Y, Z] of the world ``prims`` (global frame) in the ego frame
    ``ego2global`` [4, 4] (a pure yaw pose on the ground plane z = 0)."""
    assert ego2global.shape == (4, 4), ego2global.shape
    assert np.allclose(ego2global[2, :3], [0, 0, 1], atol=1e-9), 'ego pose must be a pure yaw'
    lut = fine_to_occ_lut(grid['class_names']) if lut is None else lut
    ground_z = -ego2global[2, 3]  # the ground is the plane z = 0 of the global frame

    def ground_fine(xy_ego):  # [N, 2] -> [N]
        xy_g = xy_ego @ ego2global[:2, :2].T + ego2global[:2, 3]
        return scene.ground.classify(xy_g)[0]

    return voxelize(prims.transformed(rigid_inverse_np(ego2global)), lut, ground_fine, ground_z,
                    grid['point_cloud_range'], grid['voxel_size'], grid['occ_size'],
                    grid['free_label'])


def render_frame(job: dict) -> dict:
    """Everything of one keyframe: sensor files (bytes), poses, annotations, statistics.

    ``job`` holds seed, scene_index, scene_name, n_samples, sample_index, image_size, grid (the
    dataset config keys), camera_stride, use_fixture. Pure: the result depends only on ``job``.
    """
    seed, si, k = job['seed'], job['scene_index'], job['sample_index']
    grid = job['grid']
    cams = tuple(grid['camera_names'])
    W, H = job['image_size']
    scene = _scene(seed, si, job['scene_name'], job['n_samples'])
    rig = _rig(cams, (W, H), job['use_fixture'])
    lut = fine_to_occ_lut(grid['class_names'])
    t0_us = BASE_TIMESTAMP_US + si * 3_600_000_000
    ts_lidar = t0_us + k * KEYFRAME_US
    t_l = (ts_lidar - t0_us) * 1e-6
    out = {'scene_index': si, 'sample_index': k, 'timestamp': ts_lidar, 'sensors': {}}

    # ---- LiDAR at the keyframe time
    trans, rot, ego2global = _pose(scene, t_l)
    global2ego = rigid_inverse_np(ego2global)
    prims = scene.primitives_at(t_l)
    lidar2ego = rig['LIDAR_TOP'].sensor2ego
    res, dirs_l, dirs_g, origin = cast_lidar(prims, ego2global @ lidar2ego)
    B, A = res.t.shape
    ret = res.idx != NOTHING  # [B, A]
    fine = np.zeros((B, A), np.int64)
    hit = res.idx >= 0
    fine[hit] = prims.fine[res.idx[hit]]
    g = res.idx == GROUND
    if g.any():
        pts_g = origin + res.t[g][:, None] * dirs_g[g]
        fine[g] = scene.ground.classify(pts_g[:, :2])[0]
    inten = lidar_intensity(res, dirs_g, origin, prims, scene.ground,
                            np.random.default_rng([seed, si, k, 99]))
    ring = np.broadcast_to(np.arange(B)[:, None], (B, A))
    # points in the LiDAR frame, azimuth-major (firing order) like the real sweeps
    xyz = (res.t[..., None] * dirs_l).transpose(1, 0, 2)[ret.T]  # [N, 3]
    pts = np.concatenate([xyz, inten.T[ret.T][:, None], ring.T[ret.T][:, None]], 1)
    out['lidar_bin'] = pts.astype(np.float32).tobytes()
    out['lidarseg_bin'] = fine.T[ret.T].astype(np.uint8).tobytes()
    inst_of_point = np.where(hit, prims.instance[np.maximum(res.idx, 0)], -1).T[ret.T]
    out['num_points'] = int(len(pts))
    out['sensors']['LIDAR_TOP'] = dict(timestamp=ts_lidar, translation=trans, rotation=rot)

    # ---- Occ3D ground truth in the ego frame at the keyframe time
    sem = keyframe_semantics(scene, prims, ego2global, grid, lut)
    occupied = sem != grid['free_label']
    R_ge = global2ego[:3, :3]
    origin_ego = R_ge @ origin + global2ego[:3, 3]
    mask_lidar = traverse_visibility(occupied, origin_ego, dirs_g[ret] @ R_ge.T, res.t[ret],
                                     grid['point_cloud_range'], grid['voxel_size'])
    cam_rays = []  # (origins, dirs, t_stop) of the camera rays cast for mask_camera

    # ---- cameras, each at its own trigger time
    won = {}
    covered = {}
    stride = job['camera_stride']
    for ci, ch in enumerate(cams):
        ts_c = ts_lidar + C.CAMERA_TIME_OFFSETS_US.get(ch, 0)
        t_c = (ts_c - t0_us) * 1e-6
        c_trans, c_rot, c_ego2global = _pose(scene, t_c)
        prims_c = scene.primitives_at(t_c)
        cam2global = c_ego2global @ rig[ch].sensor2ego
        cres, cdirs, corigin = cast_camera(prims_c, cam2global, rig[ch].intrinsic, W, H)
        img = shade_camera(cres, cdirs, corigin, prims_c, scene.ground, scene.appearance,
                           np.random.default_rng([seed, si, k, ci, 11]))
        out['sensors'][ch] = dict(timestamp=ts_c, translation=c_trans, rotation=c_rot,
                                  jpg=encode_jpeg(img))
        vis = cres.idx[cres.idx >= 0]
        inst = prims_c.instance[vis]
        for i, n in zip(*np.unique(inst[inst >= 0], return_counts=True)):
            won[int(i)] = won.get(int(i), 0) + int(n)
        for i, n in cres.covered.items():
            covered[i] = covered.get(i, 0) + n
        sub = (slice(stride // 2, None, stride), slice(stride // 2, None, stride))
        d_sub = cdirs[sub].reshape(-1, 3) @ R_ge.T  # [n, 3] in the keyframe's ego frame
        cam_rays.append((np.broadcast_to(R_ge @ corigin + global2ego[:3, 3], d_sub.shape), d_sub,
                         cres.t[sub].ravel()))
    mask_camera = traverse_visibility(occupied, *[np.concatenate(v) for v in zip(*cam_rays)],
                                      grid['point_cloud_range'], grid['voxel_size'])
    out['labels_npz'] = npz_bytes(semantics=sem.astype(np.uint8),
                                  mask_lidar=mask_lidar.astype(np.uint8),
                                  mask_camera=mask_camera.astype(np.uint8))
    out['class_counts'] = np.bincount(sem.ravel(), minlength=len(grid['class_names']))
    out['mask_stats'] = dict(lidar=int(mask_lidar.sum()), camera=int(mask_camera.sum()),
                             camera_outside_lidar=int((mask_camera & ~mask_lidar).sum()))

    # ---- annotations at the keyframe time
    centres, yaws = scene.object_poses(t_l)
    anns = []
    counts = np.bincount(inst_of_point[inst_of_point >= 0], minlength=len(scene.objects))
    for oi, obj in enumerate(scene.objects):
        if np.hypot(*(centres[oi, :2] - ego2global[:2, 3])) > ANNOTATION_RANGE:
            continue
        frac = won.get(oi, 0) / covered[oi] if covered.get(oi, 0) else 0.0
        anns.append(dict(object=oi, category=obj.category, attribute=obj.attribute,
                         translation=[float(v) for v in centres[oi]],
                         size=[float(v) for v in obj.size],
                         rotation=[float(v) for v in yaw_quat(yaws[oi])],
                         num_lidar_pts=int(counts[oi]), visibility=visibility_token(frac)))
    out['annotations'] = anns
    return out


# ------------------------------------------------------------------ the dataset
def _map_png(scene) -> bytes:
    """Drivable-area prior of the scene's log map (nuScenes 'semantic_prior': 0.1 m / px, y up)."""
    res_coarse, up = 0.5, 5  # computed at 0.5 m, stored at 0.1 m
    n = int(MAP_SIZE / res_coarse)
    c = (np.arange(n) + 0.5) * res_coarse
    xs, ys = np.meshgrid(c, c[::-1], indexing='xy')  # image row 0 = largest y
    fine, _, _ = scene.ground.classify(np.stack([xs.ravel(), ys.ravel()], 1))
    mask = (fine == FINE_INDEX['flat.driveable_surface']).reshape(n, n).astype(np.uint8) * 255
    mask = np.repeat(np.repeat(mask, up, 0), up, 1)
    ok, buf = cv2.imencode('.png', mask)
    assert ok
    return buf.tobytes()


def _validate(scenes, samples_per_scene, image_size, test_scenes=0):
    if not isinstance(scenes, (int, np.integer)) or not 1 <= scenes <= len(SCENE_NAMES):
        raise ValueError(f'scenes (--scenes) must be an integer in 1..{len(SCENE_NAMES)} (the '
                         f'v1.0-mini scene names are reused), got {scenes}')
    n_test = len(devkit_test_scene_names())
    if not isinstance(test_scenes, (int, np.integer)) or not 0 <= test_scenes <= n_test:
        raise ValueError(f'test_scenes (--test-scenes) must be an integer in 0..{n_test} (the '
                         f"names of devkit's test split are reused; 0 = no test split), got "
                         f'{test_scenes}')
    if not isinstance(samples_per_scene, (int, np.integer)) or samples_per_scene < 1:
        raise ValueError(f'samples_per_scene (--samples-per-scene) must be a positive integer, got '
                         f'{samples_per_scene}')
    if len(image_size) != 2 or min(int(v) for v in image_size) < 16:
        raise ValueError(f'image_size (--image-size W H) must be two integers >= 16, got '
                         f'{image_size}')


def _write(path: Path, data: bytes, sizes: list):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    sizes.append(len(data))


def generate_synthetic_dataset(root: str, scenes: int = DEFAULT_SCENES,
                               samples_per_scene: int = DEFAULT_SAMPLES_PER_SCENE, seed: int = 0,
                               image_size=(400, 225), progress: bool = True,
                               workers: Optional[int] = None, overwrite: bool = False,
                               occ_config: Optional[dict] = None,
                               camera_stride: Optional[int] = None,
                               use_fixture_calibration: bool = True,
                               test_scenes: int = DEFAULT_TEST_SCENES,
                               test_seed: Optional[int] = None) -> dict:
    """Generate the procedural nuScenes / nuScenes-lidarseg / Occ3D dataset under ``root``.

    Args:
        root: output folder; must not exist unless ``overwrite``.
        scenes: number of train/val scenes (<= 10) in ``v1.0-mini``, named after the v1.0-mini
            scenes in devkit's order of mini_train / mini_val use (see SCENE_NAMES).
        samples_per_scene: keyframes per scene (2 Hz), test scenes included.
        seed: world seed; the output is a deterministic function of all arguments.
        test_scenes: held-out scenes in ``v1.0-test`` (module docstring; 0 = none), named after
            devkit's test split; they change no byte of the train/val files.
        test_seed: world seed of the test scenes (default: ``seed``; their random stream is
            separate from the train/val scenes' either way).
        image_size: (W, H) of the stored camera images; intrinsics are scaled from 1600 x 900.
        progress: show a tqdm bar over frames.
        workers: processes rendering frames in parallel (default: min(2, CPU count)); any number
            gives the same bytes.
        overwrite: replace an existing ``root``.
        occ_config: dict with GRID_KEYS (default: configs/_base_/datasets/occ3d_nuscenes.py).
        camera_stride: pixel stride of the camera rays cast for mask_camera (default: W // 133,
            about 3 at the default width).
        use_fixture_calibration: read the rig from the real-data fixture when present (rounded to
            1e-6 like the built-in copy, so the output does not depend on it).

    Returns:
        summary dict: frames, scenes, samples_per_scene, seconds, bytes, files, class_voxel_counts,
        lidar_points_per_frame, mask_camera_subset_of_mask_lidar, ... of the train/val scenes
        ('bytes' and 'files': of the whole dataset) and, with test scenes, 'test': the same
        statistics of ``v1.0-test``.
    """
    _validate(scenes, samples_per_scene, image_size, test_scenes)
    test_seed = int(seed if test_seed is None else test_seed)
    t_start = time.time()
    root = Path(root).expanduser().resolve()
    if root.exists() and not overwrite and any(root.iterdir()):
        raise OutputExistsError(f'{root} already exists and is not empty: remove it, choose '
                                'another --root, or replace it (overwrite=True; tools/'
                                'create_data.py synthetic --overwrite)')
    grid = dict(occ_config) if occ_config is not None else load_grid_config()
    missing = [k for k in GRID_KEYS if k not in grid]
    if missing:
        raise KeyError(f'occ_config lacks {missing} '
                       '(see configs/_base_/datasets/occ3d_nuscenes.py)')
    W, H = int(image_size[0]), int(image_size[1])
    stride = int(camera_stride) if camera_stride else max(1, round(W / 133))
    cams = list(grid['camera_names'])
    rig = C.build_rig(cams, (W, H), use_fixture_calibration)
    calib_source = C.calibration_table(use_fixture_calibration)[2]
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1))

    common = dict(n_samples=int(samples_per_scene), image_size=(W, H), grid=grid,
                  camera_stride=stride, use_fixture=use_fixture_calibration)
    splits = [(VERSION, int(seed), [(si, SCENE_NAMES[si]) for si in range(scenes)])]
    if test_scenes:
        splits.append((TEST_VERSION, test_seed,
                       [(TEST_SCENE_INDEX0 + j, name)
                        for j, name in enumerate(devkit_test_scene_names()[:test_scenes])]))

    from splattingocc.engine.checkpoint import partial_suffix, stale_partial
    # the folders of a killed earlier run (its pid is gone): '.<root>.partial-<pid>@<host>'
    if root.parent.is_dir():
        for old in root.parent.glob(f'.{glob_escape(root.name)}.partial-*'):
            if stale_partial(old.name):
                shutil.rmtree(old, ignore_errors=True)
    tmp = root.parent / f'.{root.name}{partial_suffix()}'
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        summaries, sizes = [], []
        for version, split_seed, scene_list in splits:
            jobs = [dict(common, seed=split_seed, scene_index=si, scene_name=name, sample_index=k)
                    for si, name in scene_list for k in range(samples_per_scene)]
            summaries.append(_generate(tmp, version, jobs, rig, cams, grid, split_seed,
                                       scene_list, samples_per_scene, (W, H), progress, workers,
                                       sizes, vocab_seed=int(seed)))
        summary = summaries[0]
        meta = dict(generator='splattingocc.datasets.synthetic', version=VERSION, summary=summary)
        if test_scenes:
            meta['test'] = dict(version=TEST_VERSION, summary=summaries[1])
        _write(tmp / 'synthetic.json', json.dumps(meta, indent=1, sort_keys=True).encode(), sizes)
        summary['files'] = len(sizes)
        summary['bytes'] = int(sum(sizes))
        if test_scenes:
            summary['test'] = summaries[1]
        summary['calibration_source'] = calib_source
        if root.exists():
            old = root.parent / f'.{root.name}.old{partial_suffix()}'
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary['root'] = str(root)
    summary['seconds'] = round(time.time() - t_start, 1)
    return summary


def _frames(jobs, workers, progress):
    """Rendered frames in job order (in parallel with ``workers`` > 1)."""
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc='synthetic frames', unit='frame', disable=not progress)
    try:
        if workers > 1 and len(jobs) > 1:
            from ...parallel import process_pool
            with process_pool(workers) as pool:
                for fr in pool.imap(render_frame, jobs, chunksize=1):
                    bar.update(1)
                    yield fr
        else:
            for job in jobs:
                fr = render_frame(job)
                bar.update(1)
                yield fr
    finally:
        bar.close()


def _generate(out: Path, version: str, jobs, rig, cams, grid, seed, scene_list, n_samples,
              image_size, progress, workers, sizes: list, vocab_seed: int) -> dict:
    """Write one devkit version folder (its tables, sensor files, lidarseg and gts) of the scenes
    ``scene_list`` [(world index, name)]; returns its summary (the file sizes go to ``sizes``).
    Tokens of the shared vocabulary (category, attribute, sensor) come from ``vocab_seed``, the
    others from ``seed`` and the scene's world index."""
    W, H = image_size
    tok = lambda *p: make_token(seed, *p)  # noqa: E731
    vtok = lambda *p: make_token(vocab_seed, *p)  # noqa: E731
    n_sizes = len(sizes)
    name_of = dict(scene_list)
    n_scenes = len(scene_list)
    channels = cams + ['LIDAR_TOP']
    tables = {name: [] for name in ('attribute', 'calibrated_sensor', 'category', 'ego_pose',
                                    'instance', 'log', 'map', 'sample', 'sample_annotation',
                                    'sample_data', 'scene', 'sensor', 'visibility', 'lidarseg')}
    tables['category'] = [dict(token=vtok('category', name), name=name, description=desc,
                               index=idx) for idx, name, desc in FINE_CATEGORIES]
    tables['attribute'] = [dict(token=vtok('attribute', name), name=name, description=desc)
                           for name, desc in ATTRIBUTES]
    tables['visibility'] = [dict(description=desc, token=t, level=level)
                            for t, level, desc in VISIBILITY]
    tables['sensor'] = [dict(token=vtok('sensor', ch), channel=ch,
                             modality='lidar' if ch == 'LIDAR_TOP' else 'camera')
                        for ch in channels]
    cat_token = {name: vtok('category', name) for _, name, _ in FINE_CATEGORIES}
    attr_token = {name: vtok('attribute', name) for name, _ in ATTRIBUTES}

    class_counts = np.zeros(len(grid['class_names']), np.int64)
    n_points, mask_lidar_total, mask_cam_total, cam_outside = [], 0, 0, 0
    scenes = {}
    for si, scene_name in scene_list:
        scene = _scene(seed, si, scene_name, n_samples)
        scenes[si] = scene
        log_tok, map_tok, scene_tok = tok('log', si), tok('map', si), tok('scene', si)
        tables['log'].append(dict(token=log_tok, logfile=log_name(seed, si), vehicle='synthetic',
                                  date_captured=scene_date(si),
                                  location='synthetic-town'))
        map_file = f'maps/{map_tok}.png'
        _write(out / map_file, _map_png(scene), sizes)
        tables['map'].append(dict(category='semantic_prior', token=map_tok, filename=map_file,
                                  log_tokens=[log_tok]))
        tables['scene'].append(dict(
            token=scene_tok, log_token=log_tok, nbr_samples=n_samples,
            first_sample_token=tok('sample', si, 0),
            last_sample_token=tok('sample', si, n_samples - 1),
            name=scene_name,
            description=f'synthetic town, ego {scene.ego_mode} at {scene.ego_speed:.1f} m/s'))
        for ch in channels:
            calib = rig[ch]
            tables['calibrated_sensor'].append(dict(
                token=tok('calibrated_sensor', si, ch), sensor_token=vtok('sensor', ch),
                translation=[float(v) for v in calib.translation],
                rotation=[float(v) for v in calib.rotation],
                camera_intrinsic=[] if calib.intrinsic is None else calib.intrinsic.tolist()))

    inst_anns = {}  # (scene, object) -> list of annotation tokens in time order
    for fr in _frames(jobs, workers, progress):
        si, k = fr['scene_index'], fr['sample_index']
        sample_tok = tok('sample', si, k)
        tables['sample'].append(dict(
            token=sample_tok, timestamp=fr['timestamp'],
            prev=tok('sample', si, k - 1) if k > 0 else '',
            next=tok('sample', si, k + 1) if k < n_samples - 1 else '',
            scene_token=tok('scene', si)))
        lname = log_name(seed, si)
        for ch in channels:
            s = fr['sensors'][ch]
            sd_tok = tok('sample_data', si, k, ch)
            ep_tok = tok('ego_pose', si, k, ch)
            tables['ego_pose'].append(dict(token=ep_tok, timestamp=s['timestamp'],
                                           rotation=s['rotation'], translation=s['translation']))
            if ch == 'LIDAR_TOP':
                fname = f'samples/LIDAR_TOP/{lname}__LIDAR_TOP__{s["timestamp"]}.pcd.bin'
                _write(out / fname, fr['lidar_bin'], sizes)
                seg = f'lidarseg/{version}/{sd_tok}_lidarseg.bin'
                _write(out / seg, fr['lidarseg_bin'], sizes)
                tables['lidarseg'].append(dict(token=sd_tok, sample_data_token=sd_tok,
                                               filename=seg))
                fmt, w, h = 'pcd', 0, 0
            else:
                fname = f'samples/{ch}/{lname}__{ch}__{s["timestamp"]}.jpg'
                _write(out / fname, s['jpg'], sizes)
                fmt, w, h = 'jpg', W, H
            tables['sample_data'].append(dict(
                token=sd_tok, sample_token=sample_tok, ego_pose_token=ep_tok,
                calibrated_sensor_token=tok('calibrated_sensor', si, ch), timestamp=s['timestamp'],
                fileformat=fmt, is_key_frame=True, height=h, width=w, filename=fname,
                prev=tok('sample_data', si, k - 1, ch) if k > 0 else '',
                next=tok('sample_data', si, k + 1, ch) if k < n_samples - 1 else ''))
        _write(out / 'gts' / name_of[si] / sample_tok / 'labels.npz', fr['labels_npz'], sizes)
        for a in fr['annotations']:
            key = (si, a['object'])
            ann_tok = tok('sample_annotation', si, k, a['object'])
            inst_anns.setdefault(key, []).append(ann_tok)
            tables['sample_annotation'].append(dict(
                token=ann_tok, sample_token=sample_tok, instance_token=tok('instance', *key),
                visibility_token=a['visibility'],
                attribute_tokens=[attr_token[a['attribute']]] if a['attribute'] else [],
                translation=a['translation'], size=a['size'], rotation=a['rotation'],
                prev='', next='', num_lidar_pts=a['num_lidar_pts'], num_radar_pts=0,
                category=a['category']))
        class_counts += fr['class_counts']
        n_points.append(fr['num_points'])
        ms = fr['mask_stats']
        mask_lidar_total += ms['lidar']
        mask_cam_total += ms['camera']
        cam_outside += ms['camera_outside_lidar']

    # prev / next chains of each instance and the instance table
    by_token = {a['token']: a for a in tables['sample_annotation']}
    for (si, oi), toks in sorted(inst_anns.items()):
        for j, t in enumerate(toks):
            by_token[t]['prev'] = toks[j - 1] if j > 0 else ''
            by_token[t]['next'] = toks[j + 1] if j + 1 < len(toks) else ''
        category = by_token[toks[0]]['category']
        tables['instance'].append(dict(token=tok('instance', si, oi),
                                       category_token=cat_token[category],
                                       nbr_annotations=len(toks), first_annotation_token=toks[0],
                                       last_annotation_token=toks[-1]))
    for a in tables['sample_annotation']:
        del a['category']

    for name, table in tables.items():
        data = json.dumps(table, indent=0).encode('utf-8')
        _write(out / version / f'{name}.json', data, sizes)

    class_names = list(grid['class_names'])
    summary = dict(
        frames=len(jobs), scenes=n_scenes, samples_per_scene=n_samples, seed=seed,
        image_size=[W, H], files=len(sizes), bytes=int(sum(sizes)),
        class_voxel_counts={class_names[i]: int(class_counts[i]) for i in range(len(class_names))},
        lidar_points_per_frame=int(np.mean(n_points)) if n_points else 0,
        annotations=len(tables['sample_annotation']), instances=len(tables['instance']),
        mask_lidar_voxels_per_frame=int(mask_lidar_total / max(len(jobs), 1)),
        mask_camera_voxels_per_frame=int(mask_cam_total / max(len(jobs), 1)),
        mask_camera_subset_of_mask_lidar=bool(cam_outside == 0),
        mask_camera_outside_lidar_fraction=round(cam_outside / max(mask_cam_total, 1), 4),
        ego_modes=[scenes[si].ego_mode for si, _ in scene_list])
    if version != VERSION:
        summary['scene_names'] = [name for _, name in scene_list]
    summary['files'] = len(sizes) - n_sizes
    summary['bytes'] = int(sum(sizes[n_sizes:]))
    return summary


def make_tiny_dataset(root, scenes: int = 2, samples_per_scene: int = 2, seed: int = 0,
                      image_size: Sequence[int] = (160, 90), workers: int = 1,
                      progress: bool = False, camera_stride: int = 2, test_scenes: int = 0,
                      **kwargs) -> dict:
    """A small dataset for tests: 2 scenes (one of mini_train, one of mini_val) x 2 keyframes at
    160 x 90 by default, mask_camera from every second pixel, no test scenes unless
    ``test_scenes`` > 0 (``v1.0-test``); a few seconds."""
    return generate_synthetic_dataset(str(root), scenes=scenes, samples_per_scene=samples_per_scene,
                                      seed=seed, image_size=tuple(image_size), progress=progress,
                                      workers=workers, camera_stride=camera_stride,
                                      test_scenes=test_scenes, **kwargs)
