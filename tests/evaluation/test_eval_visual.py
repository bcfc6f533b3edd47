"""Occupancy figures: top-down labels by hand, the camera grid."""
import numpy as np

from splattingocc.visualization.occ_figures import camera_grid, labels_to_rgba, top_down_labels


def test_top_down_takes_the_highest_occupied_voxel():
    sem = np.full((2, 2, 4), 17, np.uint8)
    sem[0, 0, 1] = 11  # road low, car above it
    sem[0, 0, 2] = 4
    sem[1, 1, 0] = 11
    mask = np.ones_like(sem)
    mask[0, 0, 2] = 0  # the car voxel is unseen
    np.testing.assert_array_equal(top_down_labels(sem, 17), [[4, 17], [17, 11]])
    np.testing.assert_array_equal(top_down_labels(sem, 17, mask), [[11, 17], [17, 11]])
    rgba = labels_to_rgba(top_down_labels(sem, 17), 17)
    assert rgba[0, 1, 3] == 0 and rgba[0, 0, 3] == 1  # free transparent


def test_camera_grid_orders_left_to_right():
    names = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
             'CAM_BACK_RIGHT']
    assert camera_grid(names) == [['CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT'],
                                  ['CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT']]
