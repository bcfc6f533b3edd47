"""nuScenes schema constants of the synthetic generator (category, attribute, visibility tables).

``FINE_CATEGORIES`` holds the 32 real nuScenes-lidarseg fine categories with their real ``index``
values (category.json of nuScenes-lidarseg; the same order as nuscenes-devkit's colormap,
nuscenes/utils/color_map.py). ``FINE_TO_COARSE`` maps each fine category to the name of its coarse
lidarseg class as nuscenes-devkit's ``LidarsegClassMapper`` does (nuscenes/eval/lidarseg/utils.py),
with its 'ignore' class called 'others', the name of Occ3D class 0. The numeric Occ3D index of a
coarse name comes from the dataset config's ``class_names`` (``fine_to_occ_lut``), not from here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# (index, name, description)
FINE_CATEGORIES = [
    (0, 'noise', 'Any lidar return that does not correspond to a physical object.'),
    (1, 'animal', 'All animals, e.g. cats, rats, dogs, deer, birds.'),
    (2, 'human.pedestrian.adult', 'Adult subcategory.'),
    (3, 'human.pedestrian.child', 'Child subcategory.'),
    (4, 'human.pedestrian.construction_worker', 'Construction worker.'),
    (5, 'human.pedestrian.personal_mobility', 'A small electric or self-propelled vehicle.'),
    (6, 'human.pedestrian.police_officer', 'Police officer.'),
    (7, 'human.pedestrian.stroller', 'Strollers.'),
    (8, 'human.pedestrian.wheelchair', 'Wheelchairs.'),
    (9, 'movable_object.barrier', 'Temporary road barrier placed to redirect traffic.'),
    (10, 'movable_object.debris', 'Movable object that is left on the driveable surface.'),
    (11, 'movable_object.pushable_pullable', 'Objects a pedestrian may push or pull, e.g. bins.'),
    (12, 'movable_object.trafficcone', 'All types of traffic cones.'),
    (13, 'static_object.bicycle_rack', 'Area or device intended to park or secure bicycles.'),
    (14, 'vehicle.bicycle', 'Human or electric powered 2-wheeled vehicle.'),
    (15, 'vehicle.bus.bendy', 'Bendy bus subcategory.'),
    (16, 'vehicle.bus.rigid', 'Rigid bus subcategory.'),
    (17, 'vehicle.car', 'Vehicle designed primarily for personal use.'),
    (18, 'vehicle.construction', 'Vehicles primarily designed for construction.'),
    (19, 'vehicle.emergency.ambulance', 'All types of ambulances.'),
    (20, 'vehicle.emergency.police', 'All types of police vehicles.'),
    (21, 'vehicle.motorcycle', 'Gasoline or electric powered 2-wheeled vehicle.'),
    (22, 'vehicle.trailer', 'Any vehicle trailer.'),
    (23, 'vehicle.truck', 'Vehicles primarily designed to haul cargo.'),
    (24, 'flat.driveable_surface', 'All paved or unpaved surfaces that a car can drive on.'),
    (25, 'flat.other', 'All other forms of horizontal ground-level structures.'),
    (26, 'flat.sidewalk', 'Sidewalk, pedestrian walkways, bike paths, etc.'),
    (27, 'flat.terrain', 'Natural horizontal surfaces such as ground level grass or soil.'),
    (28, 'static.manmade', 'Man-made structures: buildings, walls, poles, signs, fences.'),
    (29, 'static.other', 'Points in the background that are not distinguishable.'),
    (30, 'static.vegetation', 'Any vegetation higher than the ground: bushes, plants, trees.'),
    (31, 'vehicle.ego', 'The vehicle on which the sensors are mounted.'),
]
FINE_INDEX = {name: idx for idx, name, _ in FINE_CATEGORIES}

FINE_TO_COARSE = {
    'noise': 'others', 'animal': 'others',
    'human.pedestrian.adult': 'pedestrian', 'human.pedestrian.child': 'pedestrian',
    'human.pedestrian.construction_worker': 'pedestrian',
    'human.pedestrian.personal_mobility': 'others', 'human.pedestrian.police_officer': 'pedestrian',
    'human.pedestrian.stroller': 'others', 'human.pedestrian.wheelchair': 'others',
    'movable_object.barrier': 'barrier', 'movable_object.debris': 'others',
    'movable_object.pushable_pullable': 'others', 'movable_object.trafficcone': 'traffic_cone',
    'static_object.bicycle_rack': 'others', 'vehicle.bicycle': 'bicycle',
    'vehicle.bus.bendy': 'bus', 'vehicle.bus.rigid': 'bus', 'vehicle.car': 'car',
    'vehicle.construction': 'construction_vehicle', 'vehicle.emergency.ambulance': 'others',
    'vehicle.emergency.police': 'others', 'vehicle.motorcycle': 'motorcycle',
    'vehicle.trailer': 'trailer', 'vehicle.truck': 'truck',
    'flat.driveable_surface': 'driveable_surface', 'flat.other': 'other_flat',
    'flat.sidewalk': 'sidewalk', 'flat.terrain': 'terrain', 'static.manmade': 'manmade',
    'static.other': 'others', 'static.vegetation': 'vegetation', 'vehicle.ego': 'others',
}

# the real nuScenes attribute table
ATTRIBUTES = [
    ('vehicle.moving', 'Vehicle is moving.'),
    ('vehicle.stopped', 'Vehicle, with a driver/rider in/on it, is currently stationary.'),
    ('vehicle.parked', 'Vehicle is stationary (usually for longer duration) with no immediate '
                       'intent to move.'),
    ('cycle.with_rider', 'There is a rider on the bicycle or motorcycle.'),
    ('cycle.without_rider', 'There is NO rider on the bicycle or motorcycle.'),
    ('pedestrian.sitting_lying_down', 'The human is sitting or lying down.'),
    ('pedestrian.standing', 'The human is standing.'),
    ('pedestrian.moving', 'The human is moving.'),
]

# the real nuScenes visibility table: token, level, description
VISIBILITY = [
    ('1', 'v0-40', 'visibility of whole object is between 0 and 40%'),
    ('2', 'v40-60', 'visibility of whole object is between 40 and 60%'),
    ('3', 'v60-80', 'visibility of whole object is between 60 and 80%'),
    ('4', 'v80-100', 'visibility of whole object is between 80 and 100%'),
]


def visibility_token(fraction: float) -> str:
    """The visibility token ('1'..'4') of a visible fraction in [0, 1]."""
    if fraction < 0.4:
        return '1'
    if fraction < 0.6:
        return '2'
    if fraction < 0.8:
        return '3'
    return '4'


def fine_to_occ_lut(class_names: Sequence[str]) -> np.ndarray:
    """[32] Occ3D class index of every fine index, from the config's ``class_names``.

    The coarse name 'others' is what lidarseg calls 'ignore' (Occ3D class 0).
    """
    lut = np.zeros(len(FINE_CATEGORIES), np.int64)
    for idx, name, _ in FINE_CATEGORIES:
        coarse = FINE_TO_COARSE[name]
        if coarse not in class_names:
            raise KeyError(f'class {coarse!r} is missing from class_names {list(class_names)} '
                           '(configs/_base_/datasets/occ3d_nuscenes.py)')
        lut[idx] = list(class_names).index(coarse)
    return lut

