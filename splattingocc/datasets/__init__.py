"""Occ3D-nuScenes data: info/label preparation, the dataset, its transforms.

Importing this package registers ``Occ3DNuScenesDataset`` (DATASETS) and the transforms
(TRANSFORMS). The synthetic world generator lives in ``splattingocc.datasets.synthetic``.
"""
from .label_projection import (lidar_to_camera, project_points_to_image, rasterize_point_labels,
                               zbuffer)
from .nuscenes_converter import (NuScenesDataError, create_nuscenes_infos, load_labels2d,
                                 load_lidar_bin)
from .occ3d import Occ3DFormatError, load_occ3d_labels
from .occ3d_nuscenes_dataset import Occ3DNuScenesDataset
from .transforms import (LoadLabels2D, LoadMultiViewImages, LoadOcc3DLabels, PackOccInputs,
                         PhotoMetricDistortion, ResizeCropImages)

__all__ = [
    'lidar_to_camera', 'project_points_to_image', 'rasterize_point_labels', 'zbuffer',
    'NuScenesDataError', 'create_nuscenes_infos', 'load_labels2d', 'load_lidar_bin',
    'Occ3DFormatError', 'load_occ3d_labels', 'Occ3DNuScenesDataset', 'LoadLabels2D',
    'LoadMultiViewImages', 'LoadOcc3DLabels', 'PackOccInputs', 'PhotoMetricDistortion',
    'ResizeCropImages'
]
