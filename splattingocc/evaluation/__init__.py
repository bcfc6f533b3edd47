"""Occ3D evaluation: metric math, the mmengine metric, ray origins, prediction files."""
from . import functional
from .dump import dump_prediction, load_occ_gt, load_prediction, prediction_path
from .metrics import Occ3DMetric
from .ray_origins import LoadRayOrigins, load_infos, ray_origins_by_token, scene_lidar_origins

__all__ = [
    'functional', 'dump_prediction', 'load_occ_gt', 'load_prediction', 'prediction_path',
    'Occ3DMetric', 'LoadRayOrigins', 'load_infos', 'ray_origins_by_token', 'scene_lidar_origins'
]
