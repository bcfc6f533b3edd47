"""RayIoU with a ray origin on a voxel face whose voxel is occupied (issue 25, defect 8).

SparseOcc starts every ray in the voxel that contains its origin, ``int(origin)`` in voxel units,
whatever the ray's direction, and records the distance at which the ray leaves that voxel (0 for a
ray that starts on the voxel's lower face and moves down). nuScenes' LiDAR sits at ego y = 0.0, on
the face between rows 99 and 100 of the Occ3D grid, so with row 100 occupied at the origin every
ray, the ones moving in -y included, hits it at once. The current frame's origin must be exactly
the lidar2ego translation (y = 0.0), not the round trip through the global frame (y ~ -1e-13).
"""
import numpy as np
from pyquaternion import Quaternion

from splattingocc.evaluation.functional.ray_casting import first_hit, first_hits_multi
from splattingocc.evaluation.functional.ray_iou import rayiou_frame_stats
from splattingocc.evaluation.ray_origins import scene_lidar_origins

OCC3D_RANGE = [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4]

# a 4 x 4 x 1 grid of 1 m voxels; the origin (1.5, 2.0, 0.5) lies on the face between rows 1 and 2
RANGE = [0.0, 0.0, 0.0, 4.0, 4.0, 1.0]
ORIGIN = np.array([[1.5, 2.0, 0.5]])
DIRS = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])  # +x, -x, +y, -y
FREE = 3  # classes 0, 1, 2 and free = 3


def _grids():
    gt = np.full((4, 4, 1), FREE)
    gt[3, 2, 0] = 0  # +x: enters at x = 3, leaves at x = 4: exit depth 2.5
    gt[0, 2, 0] = 0  # -x: leaves at x = 0: exit depth 1.5
    gt[1, 3, 0] = 1  # +y: leaves at y = 4: exit depth 2.0
    gt[1, 0, 0] = 1  # -y: leaves at y = 0: exit depth 2.0
    pred = gt.copy()
    pred[1, 2, 0] = 2  # the voxel that contains the origin: row 2 ([2, 3) m)
    return gt, pred


def test_first_voxel_is_the_one_containing_the_origin_whatever_the_direction():
    _, pred = _grids()
    idx, t_in = first_hit(pred != FREE, np.repeat(ORIGIN, 4, 0), DIRS, RANGE, 1.0)
    _, t_out = first_hit(pred != FREE, np.repeat(ORIGIN, 4, 0), DIRS, RANGE, 1.0,
                         distance='exit')
    # every ray starts in voxel (1, 2, 0) and hits it; the -y ray leaves it at once
    np.testing.assert_array_equal(idx, [[1, 2, 0]] * 4)
    np.testing.assert_array_equal(t_in, [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(t_out, [0.5, 0.5, 1.0, 0.0])
    assert not np.signbit(t_out[3])  # 0.0, not -0.0
    # with that voxel free the -y ray walks on into row 1 (entered at 0) and hits row 0
    gt, _ = _grids()
    idx, t_in, t_out = first_hits_multi((gt != FREE).astype(np.uint8), ORIGIN, DIRS[3:], RANGE,
                                        1.0)
    np.testing.assert_array_equal(idx[0], [[1, 0, 0]])
    np.testing.assert_array_equal(t_in[0], [1.0])
    np.testing.assert_array_equal(t_out[0], [2.0])


def test_origin_on_the_grids_lower_face_starts_in_its_first_voxel():
    occ = np.zeros((4, 4, 1), bool)
    occ[0, 1, 0] = True
    idx, t_out = first_hit(occ, np.array([[0.0, 1.5, 0.5]]), np.array([[-1.0, 0, 0]]), RANGE, 1.0,
                           distance='exit')
    np.testing.assert_array_equal(idx, [[0, 1, 0]])
    np.testing.assert_array_equal(t_out, [0.0])


def test_rayiou_counts_with_an_occupied_origin_voxel_match_the_hand_count():
    gt, pred = _grids()
    s = rayiou_frame_stats(pred, gt, ORIGIN, RANGE, 1.0, num_classes=4, free_label=FREE,
                           dirs=DIRS)
    # hand count: the gt hits are 0, 0, 1, 1 (all four rays kept); the prediction's first hit is
    # the origin voxel (class 2) on all four rays, the -y ray included (starting in row 1 instead,
    # as before the fix, it would hit (1, 0, 0), class 1 at depth 2.0: one true positive)
    np.testing.assert_array_equal(s['gt_count'], [2, 2, 0, 0])
    np.testing.assert_array_equal(s['pred_count'], [0, 0, 4, 0])
    np.testing.assert_array_equal(s['tp'], np.zeros((3, 4), np.int64))
    assert s['rays'] == 4
    # the prediction without the origin voxel scores every ray
    s = rayiou_frame_stats(gt, gt, ORIGIN, RANGE, 1.0, num_classes=4, free_label=FREE, dirs=DIRS)
    np.testing.assert_array_equal(s['tp'], [[2, 2, 0, 0]] * 3)


def test_nuscenes_lidar_origin_on_the_row_100_face_hits_row_100():
    # the LiDAR at ego (0.98, 0.0, 1.84): voxel x 102, z 7; y = 0.0 is the face of rows 99 / 100
    occ = np.zeros((200, 200, 16), bool)
    occ[102, 100, 7] = True
    dirs = np.array([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.6, -0.8, 0.0]])
    idx, t_out = first_hit(occ, np.repeat([[0.98, 0.0, 1.84]], 3, 0), dirs, OCC3D_RANGE, 0.4,
                           distance='exit')
    np.testing.assert_array_equal(idx, [[102, 100, 7]] * 3)
    np.testing.assert_allclose(t_out, [0.0, 0.4, 0.0], atol=1e-12)


def test_current_frame_origin_is_the_lidar2ego_translation_exactly():
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = [0.943713, 0.0, 1.84023]  # nuScenes LIDAR_TOP: y exactly 0
    infos = []
    for i in range(3):
        ego2global = np.eye(4)
        ego2global[:3, :3] = Quaternion(axis=[0.01, 0.02, 1.0], angle=0.3 + 0.7 * i).rotation_matrix
        ego2global[:3, 3] = [411.3 + 5 * i, 1180.8 - 3 * i, 0.2]
        infos.append(dict(token=f't{i}', lidar2ego=lidar2ego, ego2global=ego2global))
    origins = scene_lidar_origins(infos, 1)
    assert origins.shape == (3, 3)
    assert np.array_equal(origins[1], lidar2ego[:3, 3])  # bit for bit: y == 0.0
    # the round trip through the global frame is not exact (what the fix avoids)
    R, t = infos[1]['ego2global'][:3, :3], infos[1]['ego2global'][:3, 3]
    round_trip = R.T @ (R @ lidar2ego[:3, 3] + t - t)
    assert not np.array_equal(round_trip, lidar2ego[:3, 3])
    np.testing.assert_allclose(origins[[0, 2]],
                               [R.T @ (inf['ego2global'][:3, :3] @ lidar2ego[:3, 3]
                                       + inf['ego2global'][:3, 3] - t)
                                for inf in (infos[0], infos[2])], atol=1e-12)
