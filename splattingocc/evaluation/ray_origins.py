"""RayIoU ray origins: the LiDAR origins of a scene's keyframes in the current ego frame.

Rule (SparseOcc, ``loaders/ego_pose_dataset.py``): for the frame at time-order position ``i`` of
its scene, take every keyframe j of the scene (including i) in time order, map frame j's LiDAR
origin into frame i's ego frame (ego_i <- global <- ego_j <- lidar_j), keep it if |x| < 39 m and
|y| < 39 m, and if more than 8 remain keep those at positions ``round(linspace(0, n - 1, 8))``
of the kept list. The current frame's own origin is therefore not always among them. When it is,
it is frame i's lidar2ego translation itself, not the round trip through the global frame (as in
SparseOcc): nuScenes' LiDAR sits at ego y = 0.0, on a voxel face, and the round trip lands it at
y = -8.8e-14, in the voxel row below (see ``functional/ray_casting.py`` for the first voxel).

Design: the evaluation needs the poses of the other keyframes of the scene, which one data sample
does not carry. Two ways provide them, both built on :func:`ray_origins_by_token`:

* ``Occ3DMetric(ann_file=...)`` reads the info pkl once and looks the origins up by sample token
  (the default; nothing in the data pipeline needs to change), and ``tools/eval_occ.py --info``
  does the same;
* the transform ``LoadRayOrigins(ann_file=...)``, placed after the packing transform, adds
  ``meta['ray_origins']``: float32 ``[8, 3]``, rows beyond the number of origins are NaN (fixed
  shape, so mmengine's ``default_collate`` stacks it to ``[B, 8, 3]``). The metric prefers this key
  when present.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

from splattingocc.errors import DataError
from splattingocc.registry import TRANSFORMS
from splattingocc.safe_pickle import load_pickle

__all__ = [
    'MAX_RAY_ORIGINS', 'RAY_ORIGIN_XY_LIMIT', 'RAY_ORIGINS_KEY', 'load_infos', 'info_lidar_pose',
    'info_scene_name', 'scene_lidar_origins', 'ray_origins_by_token', 'pad_ray_origins',
    'LoadRayOrigins'
]

MAX_RAY_ORIGINS = 8  # SparseOcc
RAY_ORIGIN_XY_LIMIT = 39.0  # metres, SparseOcc: origins with |x| or |y| >= 39 m are dropped
RAY_ORIGINS_KEY = 'ray_origins'


def load_infos(path) -> List[dict]:
    """The list of sample infos of an info pkl (``{'infos': [...]}``, ``{'data_list': [...]}``
    or a plain list), read with the restricted unpickler (:func:`splattingocc.safe_pickle.
    load_pickle`: a pickle that would run code is refused). A file of another shape raises
    :class:`~splattingocc.errors.DataError` naming it."""
    path = os.fspath(path)
    data = load_pickle(path)
    if isinstance(data, dict):
        for key in ('infos', 'data_list'):
            if key in data:
                data = data[key]
                break
        else:
            raise DataError(f'{path}: expected a dict with key "infos" (or "data_list"), got '
                            f'keys {sorted(map(str, data))[:10]}; pass an info file written by '
                            'tools/create_data.py')
    if not isinstance(data, (list, tuple)):
        raise DataError(f'{path}: expected a list of sample infos, got {type(data).__name__}; '
                        'pass an info file written by tools/create_data.py')
    bad = [i for i, info in enumerate(data) if not isinstance(info, dict)]
    if bad:
        raise DataError(f'{path}: sample info {bad[0]} is a {type(data[bad[0]]).__name__}, not '
                        'a dict; pass an info file written by tools/create_data.py')
    return list(data)


def _pose_matrix(translation, rotation_wxyz) -> np.ndarray:
    from pyquaternion import Quaternion
    T = np.eye(4)
    T[:3, :3] = Quaternion(list(rotation_wxyz)).rotation_matrix
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def info_lidar_pose(info: dict) -> Tuple[np.ndarray, np.ndarray]:
    """(lidar2ego [4, 4], ego2global [4, 4]) of a sample info.

    Reads the 4x4 matrices of this project's info pkl, or the ``*_translation`` / ``*_rotation``
    (quaternion w, x, y, z) fields of BEVDet-style infos.
    """
    out = []
    for name in ('lidar2ego', 'ego2global'):
        if name in info:
            M = np.asarray(info[name], dtype=np.float64)
            if M.shape != (4, 4):
                raise ValueError(f"info of sample {info.get('token')}: '{name}' must be 4x4, got "
                                 f'{M.shape}')
        elif f'{name}_translation' in info and f'{name}_rotation' in info:
            M = _pose_matrix(info[f'{name}_translation'], info[f'{name}_rotation'])
        else:
            raise KeyError(f"info of sample {info.get('token')} has no '{name}' pose (needs "
                           f"'{name}' [4, 4] or '{name}_translation' + '{name}_rotation')")
        out.append(M)
    return out[0], out[1]


def info_scene_name(info: dict) -> str:
    """The scene of a sample info: 'scene_name', else the folder of 'occ_path'
    (``gts/<scene>/<token>``), else 'scene_token'."""
    if info.get('scene_name'):
        return str(info['scene_name'])
    occ_path = info.get('occ_path')
    if occ_path:
        parts = [p for p in str(occ_path).replace('\\', '/').split('/') if p]
        if parts and parts[-1].endswith('.npz'):
            parts = parts[:-1]
        if len(parts) >= 2:
            return parts[-2]
    if info.get('scene_token'):
        return str(info['scene_token'])
    raise KeyError(f"info of sample {info.get('token')} names no scene ('scene_name', 'occ_path' "
                   "or 'scene_token')")


def scene_lidar_origins(scene_infos: Sequence[dict],
                        index: int,
                        max_origins: int = MAX_RAY_ORIGINS,
                        xy_limit: float = RAY_ORIGIN_XY_LIMIT) -> np.ndarray:
    """Ray origins of frame ``index`` of a scene: ``[K, 3]`` float64 metres, K <= max_origins.

    Args:
        scene_infos: the infos of every keyframe of one scene, in time order.
        index: position of the current frame in ``scene_infos``.
    """
    assert 0 <= index < len(scene_infos), (index, len(scene_infos))
    _, ego2global_ref = info_lidar_pose(scene_infos[index])
    R = ego2global_ref[:3, :3]
    t = ego2global_ref[:3, 3]
    kept = []
    for j, info in enumerate(scene_infos):
        lidar2ego, ego2global = info_lidar_pose(info)
        if j == index:  # the current frame: exact, no round trip through the global frame
            origin = lidar2ego[:3, 3].copy()  # [3]
        else:
            lidar_global = ego2global[:3, :3] @ lidar2ego[:3, 3] + ego2global[:3, 3]  # [3]
            origin = R.T @ (lidar_global - t)  # [3] global -> current ego (R^T, -R^T t)
        if abs(origin[0]) < xy_limit and abs(origin[1]) < xy_limit:
            kept.append(origin)
    if not kept:
        return np.zeros((0, 3))
    if len(kept) > max_origins:
        sel = np.round(np.linspace(0, len(kept) - 1, max_origins)).astype(np.int64)
        kept = [kept[i] for i in sel]
    return np.stack(kept)  # [K, 3]


def ray_origins_by_token(infos: Sequence[dict],
                         max_origins: int = MAX_RAY_ORIGINS,
                         xy_limit: float = RAY_ORIGIN_XY_LIMIT) -> Dict[str, np.ndarray]:
    """``{sample token: [K, 3] origins}`` for every info; scenes grouped, ordered by timestamp."""
    scenes = defaultdict(list)
    for info in infos:
        scenes[info_scene_name(info)].append(info)
    out = {}
    for scene_infos in scenes.values():
        scene_infos = sorted(scene_infos, key=lambda i: i.get('timestamp', 0))
        for i, info in enumerate(scene_infos):
            out[info['token']] = scene_lidar_origins(scene_infos, i, max_origins, xy_limit)
    return out


def pad_ray_origins(origins: np.ndarray,  # [K, 3]
                    max_origins: int = MAX_RAY_ORIGINS) -> np.ndarray:
    """``[max_origins, 3]`` float32, rows past K filled with NaN (a fixed shape for collation)."""
    origins = np.asarray(origins, dtype=np.float32)
    assert origins.ndim == 2 and origins.shape[1] == 3 and origins.shape[0] <= max_origins, (
        origins.shape, max_origins)
    out = np.full((max_origins, 3), np.nan, dtype=np.float32)
    out[:origins.shape[0]] = origins
    return out


@TRANSFORMS.register_module()
class LoadRayOrigins:
    """Adds ``meta['ray_origins']`` (float32 [max_origins, 3], NaN-padded) for RayIoU.

    Put it after the packing transform (it writes into ``results['meta']``; without a 'meta' dict
    it writes ``results['ray_origins']``). The sample is found by ``meta['sample_token']`` or
    ``results['token']``.

    Args:
        ann_file: the info pkl holding every keyframe of the evaluated scenes (with poses).
        max_origins, xy_limit: see :func:`scene_lidar_origins`.
    """

    def __init__(self, ann_file: str, max_origins: int = MAX_RAY_ORIGINS,
                 xy_limit: float = RAY_ORIGIN_XY_LIMIT):
        self.ann_file = ann_file
        self.max_origins = max_origins
        self.origins = ray_origins_by_token(load_infos(ann_file), max_origins, xy_limit)

    def __call__(self, results: dict) -> dict:
        meta = results.get('meta') if isinstance(results.get('meta'), dict) else None
        token = None
        if meta is not None:
            token = meta.get('sample_token')
        if token is None:
            token = results.get('sample_token', results.get('token'))
        if token not in self.origins:
            raise KeyError(f'LoadRayOrigins: sample {token} is not in {self.ann_file}; use the '
                           "dataset's own info file as ann_file")
        padded = pad_ray_origins(self.origins[token], self.max_origins)
        (meta if meta is not None else results)[RAY_ORIGINS_KEY] = padded
        return results

    transform = __call__

    def __repr__(self):
        return f'{type(self).__name__}(ann_file={self.ann_file!r}, max_origins={self.max_origins})'
