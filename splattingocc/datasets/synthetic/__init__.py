"""Procedural synthetic nuScenes / nuScenes-lidarseg / Occ3D dataset generator.

``generate_synthetic_dataset(root, ...)`` ray casts an analytic town (roads, sidewalks, buildings,
vegetation and annotated objects of every Occ3D class) into the six nuScenes cameras and a 32-beam
LiDAR with the real nuScenes calibration, and writes the nuScenes tables, sensor files, lidarseg
labels and Occ3D ground truth in their real formats (see writer.py): train/val scenes in
``v1.0-mini`` and held-out test scenes in ``v1.0-test``. ``make_tiny_dataset`` makes a small one
for tests.
"""
from .writer import (DEFAULT_SAMPLES_PER_SCENE, DEFAULT_SCENES, DEFAULT_TEST_SCENES, SCENE_NAMES,
                     TEST_VERSION, generate_synthetic_dataset, load_grid_config, make_tiny_dataset,
                     make_token, render_frame, devkit_test_scene_names)

__all__ = ['generate_synthetic_dataset', 'make_tiny_dataset', 'render_frame', 'load_grid_config',
           'make_token', 'SCENE_NAMES', 'DEFAULT_SCENES', 'DEFAULT_SAMPLES_PER_SCENE',
           'DEFAULT_TEST_SCENES', 'TEST_VERSION', 'devkit_test_scene_names']
