"""The sensor rig of the synthetic dataset: the real nuScenes calibration of one vehicle.

The numbers are read from the real keyframe fixture
``<realdata>/nuscenes-keyframe/n015-2018-07-24-11-22-45+0800.pkl`` (mmdetection3d info format,
per camera ``cam2img`` and ``cam2ego``, ``lidar_points.lidar2ego``) when it is present, else taken
from the built-in copy below (the same values rounded to 1e-6). Both paths round to 1e-6, so the
generated dataset is byte-identical with and without the fixtures.

Intrinsics are stored for the original 1600 x 900 images and scaled to the stored image size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from splattingocc.errors import UnsafePickleError
from splattingocc.paths import realdata_root
from splattingocc.safe_pickle import load_pickle
from .geometry import make_transform, matrix_to_quat, quat_to_matrix

CALIB_FILE = Path('nuscenes-keyframe') / 'n015-2018-07-24-11-22-45+0800.pkl'
ORIGINAL_IMAGE_SIZE = (1600, 900)  # (W, H) of nuScenes camera images

# Rounded copy of the calibration in CALIB_FILE (calibration constants, not data):
# channel: (fx, fy, cx, cy) at 1600 x 900, quaternion [w, x, y, z] and translation of cam -> ego.
BUILTIN_CAMERAS = {
    'CAM_FRONT': ((1266.417203, 1266.417203, 816.26702, 491.507066),
                  (0.499802, -0.503032, 0.49978, -0.497371), (1.700791, 0.015946, 1.510958)),
    'CAM_FRONT_RIGHT': ((1260.847445, 1260.847445, 807.968245, 495.334427),
                        (0.206035, -0.202694, 0.682451, -0.671361),
                        (1.550848, -0.493405, 1.495748)),
    'CAM_FRONT_LEFT': ((1272.597947, 1272.597947, 826.615493, 479.751654),
                       (0.675727, -0.673627, 0.21214, -0.211228), (1.523878, 0.494631, 1.509328)),
    'CAM_BACK': ((809.220991, 809.220991, 829.2196, 481.778424),
                 (0.503787, -0.497402, -0.494185, 0.50455), (0.028326, 0.003451, 1.579103)),
    'CAM_BACK_LEFT': ((1256.741481, 1256.741481, 792.112574, 492.775747),
                      (0.692419, -0.703162, -0.116483, 0.112033), (1.035691, 0.484795, 1.59097)),
    'CAM_BACK_RIGHT': ((1259.513741, 1259.513741, 807.252905, 501.195799),
                       (0.12281, -0.132401, -0.700431, 0.690496), (1.014878, -0.480568, 1.562395)),
}
BUILTIN_LIDAR = ((0.707796, -0.006492, 0.010646, -0.706307), (0.943713, 0.0, 1.84023))

# Camera trigger times relative to the LiDAR keyframe time, microseconds, from the same real
# keyframe (each camera fires when the spinning LiDAR sweeps across its field of view).
CAMERA_TIME_OFFSETS_US = {
    'CAM_FRONT': -35491, 'CAM_FRONT_RIGHT': -27612, 'CAM_FRONT_LEFT': -43107,
    'CAM_BACK': -10426, 'CAM_BACK_LEFT': -528, 'CAM_BACK_RIGHT': -20058,
}


@dataclass
class SensorCalib:
    """One sensor's calibration as nuScenes stores it (and the matrices derived from it)."""

    channel: str
    rotation: tuple  # [w, x, y, z] sensor -> ego, as written to calibrated_sensor.json
    translation: tuple  # [3] sensor -> ego, metres
    intrinsic: Optional[np.ndarray] = None  # [3, 3] at the stored image size (cameras only)

    @property
    def sensor2ego(self) -> np.ndarray:
        """[4, 4] sensor -> ego, rebuilt from the stored quaternion (what readers will see)."""
        return make_transform(quat_to_matrix(self.rotation), self.translation)


def _round(values, ndigits: int = 6) -> tuple:
    return tuple(round(float(v), ndigits) for v in values)


def _table_from_fixture(path: Path) -> Optional[tuple]:
    """(cameras, lidar) in the BUILTIN_* layout, read from the real info pkl; None if unreadable."""
    try:
        info = load_pickle(path)
        sample = info['data_list'][0]
        cams = {}
        for name, rec in sample['images'].items():
            K = np.asarray(rec['cam2img'], dtype=np.float64)[:3, :3]
            T = np.asarray(rec['cam2ego'], dtype=np.float64)
            cams[name] = (_round([K[0, 0], K[1, 1], K[0, 2], K[1, 2]]),
                          _round(matrix_to_quat(T[:3, :3])), _round(T[:3, 3]))
        T = np.asarray(sample['lidar_points']['lidar2ego'], dtype=np.float64)
        lidar = (_round(matrix_to_quat(T[:3, :3])), _round(T[:3, 3]))
        return cams, lidar
    except UnsafePickleError:
        raise
    except (OSError, KeyError, IndexError, TypeError, ValueError):
        return None


def calibration_table(use_fixture: bool = True) -> tuple:
    """(cameras, lidar, source): the rounded calibration, from the real fixture when present."""
    if use_fixture:
        path = realdata_root() / CALIB_FILE
        if path.is_file():
            table = _table_from_fixture(path)
            if table is not None:
                return table[0], table[1], str(path)
    return BUILTIN_CAMERAS, BUILTIN_LIDAR, 'built-in copy'


def build_rig(camera_names: Sequence[str], image_size: Sequence[int],
              use_fixture: bool = True) -> Dict[str, SensorCalib]:
    """Calibration of the 6 cameras (intrinsics scaled to ``image_size`` = (W, H)) and LIDAR_TOP."""
    W, H = int(image_size[0]), int(image_size[1])
    if W <= 0 or H <= 0:
        raise ValueError(f'image_size must be two positive integers (W, H), got {image_size}')
    cams, lidar, _ = calibration_table(use_fixture)
    sx, sy = W / ORIGINAL_IMAGE_SIZE[0], H / ORIGINAL_IMAGE_SIZE[1]
    rig = {}
    for name in camera_names:
        if name not in cams:
            raise KeyError(f'camera {name!r} (camera_names of the dataset config) has no '
                           f'calibration; known: {sorted(cams)}')
        (fx, fy, cx, cy), q, t = cams[name]
        # pixel centres at (j + 0.5, i + 0.5): a resize scales the principal point by its factor
        K = np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])
        rig[name] = SensorCalib(name, tuple(q), tuple(t), K)
    rig['LIDAR_TOP'] = SensorCalib('LIDAR_TOP', tuple(lidar[0]), tuple(lidar[1]), None)
    return rig
