"""The one colour table of the Occ3D-nuScenes classes (RGB 0..255), indexed by class id.

Colours are the ones commonly used by the Occ3D / CVPR2023 occupancy challenge visualisations
(e.g. Tsinghua-MARS-Lab/Occ3D, SurroundOcc): car blue, pedestrian red, driveable surface magenta,
vegetation green, ... Index 17 (free) is white; ``IGNORE_COLOR`` is for 255 (no label).
The class names themselves come from configs/_base_/datasets/occ3d_nuscenes.py.
"""
import numpy as np

OCC3D_COLORS = np.array([
    [0, 0, 0],  # 0 others
    [255, 120, 50],  # 1 barrier
    [255, 192, 203],  # 2 bicycle
    [255, 255, 0],  # 3 bus
    [0, 150, 245],  # 4 car
    [0, 255, 255],  # 5 construction_vehicle
    [200, 180, 0],  # 6 motorcycle
    [255, 0, 0],  # 7 pedestrian
    [255, 240, 150],  # 8 traffic_cone
    [135, 60, 0],  # 9 trailer
    [160, 32, 240],  # 10 truck
    [255, 0, 255],  # 11 driveable_surface
    [139, 137, 137],  # 12 other_flat
    [75, 0, 75],  # 13 sidewalk
    [150, 240, 80],  # 14 terrain
    [230, 230, 250],  # 15 manmade
    [0, 175, 0],  # 16 vegetation
    [255, 255, 255],  # 17 free
], dtype=np.uint8)

IGNORE_COLOR = np.array([64, 64, 64], dtype=np.uint8)


def colorize_labels(labels: np.ndarray, ignore_label: int = 255) -> np.ndarray:
    """Class ids [...] -> RGB uint8 [..., 3]; ids outside the table (e.g. 255) get IGNORE_COLOR."""
    labels = np.asarray(labels)
    out = np.empty(labels.shape + (3,), dtype=np.uint8)
    out[...] = IGNORE_COLOR
    ok = (labels >= 0) & (labels < len(OCC3D_COLORS)) & (labels != ignore_label)
    out[ok] = OCC3D_COLORS[labels[ok]]
    return out


__all__ = ['OCC3D_COLORS', 'IGNORE_COLOR', 'colorize_labels']
