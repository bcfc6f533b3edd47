"""LiDAR -> image projection of the 2D labels: real keyframe, real calibration, hand cases."""
import pickle

import numpy as np
import pytest

from splattingocc.datasets.label_projection import (lidar_to_camera, project_points_to_image,
                                                    rasterize_point_labels)
from splattingocc.geometry import rigid_inverse_np

W_REAL, H_REAL = 1600, 900


def _reference_projection(points, lidar2cam, K, width, height, min_depth):
    """Independent projection: 3x4 camera matrix on homogeneous points, z-buffer by
    ``np.minimum.at`` on a depth image, ties broken by the smallest index with a second pass."""
    P = K @ lidar2cam[:3, :]  # [3, 4]
    hom = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], 1)
    img = np.einsum('ij,nj->ni', P, hom)  # [N, 3] = (z*x, z*y, z)
    cam_z = np.einsum('j,nj->n', lidar2cam[2, :], hom)  # camera z straight from the 4x4
    with np.errstate(divide='ignore', invalid='ignore'):
        px = np.floor(img[:, 0] / img[:, 2])
        py = np.floor(img[:, 1] / img[:, 2])
    valid = (cam_z > min_depth) & (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
    ids = np.flatnonzero(valid)
    flat = (py[ids] * width + px[ids]).astype(np.int64)
    zbuf = np.full(width * height, np.inf)
    np.minimum.at(zbuf, flat, cam_z[ids])
    winners = ids[cam_z[ids] == zbuf[flat]]
    wflat = (py[winners] * width + px[winners]).astype(np.int64)
    best = np.full(width * height, np.iinfo(np.int64).max)
    np.minimum.at(best, wflat, winners)
    pix = np.flatnonzero(best != np.iinfo(np.int64).max)
    idx = best[pix]
    return pix % width, pix // width, cam_z[idx], idx


@pytest.fixture(scope='module')
def keyframe(realdata):
    folder = realdata / 'nuscenes-keyframe'
    with open(folder / 'n015-2018-07-24-11-22-45+0800.pkl', 'rb') as f:
        info = pickle.load(f)['data_list'][0]
    points = np.fromfile(folder / info['lidar_points']['lidar_path'],
                         dtype=np.float32).reshape(-1, 5)
    return info, points


def test_real_keyframe_matches_reference(keyframe):
    info, points = keyframe
    assert points.shape == (34688, 5)
    assert len(info['images']) == 6
    total = 0
    for ch, cam in info['images'].items():
        l2c = np.asarray(cam['lidar2cam'], dtype=np.float64)
        K = np.asarray(cam['cam2img'], dtype=np.float64)
        u, v, depth, idx = project_points_to_image(points[:, :3], l2c, K, W_REAL, H_REAL,
                                                   min_depth=1.0)
        ru, rv, rdepth, ridx = _reference_projection(points, l2c, K, W_REAL, H_REAL, 1.0)
        assert len(u) > 2500, (ch, len(u))  # thousands of labelled pixels per camera
        np.testing.assert_array_equal(u, ru)
        np.testing.assert_array_equal(v, rv)
        np.testing.assert_array_equal(idx, ridx)
        np.testing.assert_allclose(depth, rdepth, rtol=0, atol=1e-9)
        # one entry per pixel, inside the image, real depths of the street (m)
        assert len(np.unique(v * W_REAL + u)) == len(u)
        assert u.min() >= 0 and u.max() < W_REAL and v.min() >= 0 and v.max() < H_REAL
        assert depth.min() > 1.0 and depth.max() < 120.0
        total += len(u)
    assert total > 20000


def test_real_projection_depth_is_camera_z_and_pixel_contains_point(keyframe):
    info, points = keyframe
    cam = info['images']['CAM_FRONT']
    l2c = np.asarray(cam['lidar2cam'])
    K = np.asarray(cam['cam2img'])
    u, v, depth, idx = project_points_to_image(points[:, :3], l2c, K, W_REAL, H_REAL)
    # back-project the winning points: camera coords from the inverse transform of the depth
    p = points[idx, :3].astype(np.float64)
    pc = p @ l2c[:3, :3].T + l2c[:3, 3]
    np.testing.assert_allclose(depth, pc[:, 2], atol=1e-9)
    x = K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2]
    y = K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]
    assert np.all((x >= u) & (x < u + 1) & (y >= v) & (y < v + 1))


def test_lidar_to_camera_matches_real_sensor2lidar(realdata):
    """Our lidar->ego->global->ego->cam chain equals the inverse of the BEVDet-style
    sensor2lidar of 81 real frames (486 cameras), which was computed by other code."""
    from pyquaternion import Quaternion

    def T(t, q):
        M = np.eye(4)
        M[:3, :3] = Quaternion(q).rotation_matrix
        M[:3, 3] = t
        return M

    with open(realdata / 'nuscenes-mini-val-infos.pkl', 'rb') as f:
        infos = pickle.load(f)['infos']
    n = 0
    for info in infos:
        l2e = T(info['lidar2ego_translation'], info['lidar2ego_rotation'])
        e2g = T(info['ego2global_translation'], info['ego2global_rotation'])
        for cam in info['cams'].values():
            l2c = lidar_to_camera(l2e, e2g, T(cam['ego2global_translation'],
                                              cam['ego2global_rotation']),
                                  T(cam['sensor2ego_translation'], cam['sensor2ego_rotation']))
            s2l = np.eye(4)
            s2l[:3, :3] = cam['sensor2lidar_rotation']
            s2l[:3, 3] = cam['sensor2lidar_translation']
            np.testing.assert_allclose(l2c @ s2l, np.eye(4), atol=1e-9)
            n += 1
    assert n == 486


def test_rigid_inverse_np():
    rng = np.random.default_rng(0)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = [1.0, -2.0, 3.0]
    np.testing.assert_allclose(rigid_inverse_np(T) @ T, np.eye(4), atol=1e-12)


def test_hand_computed_zbuffer_and_pixel_convention():
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    ident = np.eye(4)
    pts = np.array([
        [0.0, 0.0, 5.0],  # 0: x = 50, y = 40 -> pixel (50, 40), depth 5
        [0.05, 0.05, 10.0],  # 1: x = 50.5, y = 40.5 -> same pixel, farther: loses
        [0.1, 0.0, 2.0],  # 2: x = 55 -> pixel (55, 40)
        [0.0, 0.0, -5.0],  # 3: behind the camera
        [0.0, 0.0, 0.5],  # 4: closer than min_depth = 1
        [1.0, 0.0, 1.5],  # 5: x = 116.7 -> outside a 100-wide image
        [-0.0001, 0.0, 10.001],  # 6: x = 49.9990 -> column 49 (floor), depth 10.001
        [0.2, 0.2, 4.0],  # 7: x = 55, y = 45 -> pixel (55, 45), depth 4
        [0.2, 0.2, 4.0],  # 8: identical to 7: tie -> lower index 7 wins
        [-1.0, -0.8, 2.0],  # 9: x = 0, y = 0 exactly -> pixel (0, 0)
        [0.9998, 0.7998, 2.0],  # 10: x = 99.99, y = 79.99 -> last pixel (99, 79)
        [1.0, 0.0, 2.0],  # 11: x = 100 -> outside (columns 0..99)
        [0.0, 0.0, 1.0],  # 12: depth exactly min_depth: dropped (z > min_depth, as nuScenes)
    ])
    u, v, d, idx = project_points_to_image(pts, ident, K, 100, 80, min_depth=1.0)
    got = {(int(a), int(b)): (float(c), int(i)) for a, b, c, i in zip(u, v, d, idx)}
    assert got == {
        (50, 40): (5.0, 0),
        (55, 40): (2.0, 2),
        (49, 40): (10.001, 6),
        (55, 45): (4.0, 7),
        (0, 0): (2.0, 9),
        (99, 79): (2.0, 10),
    }
    # sorted row-major
    assert list(v * 100 + u) == sorted(v * 100 + u)
    # the camera 1 m further back: every depth grows by 1; points 4 (now z = 1.5) and 12 (z = 2)
    # pass min_depth and are in front of point 0 (z = 6) in pixel (50, 40): the nearest, 4, wins
    back = np.eye(4)
    back[2, 3] = 1.0
    u2, v2, d2, idx2 = project_points_to_image(pts, back, K, 100, 80, min_depth=1.0)
    got2 = {(int(a), int(b)): (float(c), int(i)) for a, b, c, i in zip(u2, v2, d2, idx2)}
    assert got2[(50, 40)] == (1.5, 4)
    assert dict(zip(idx2.tolist(), d2.tolist()))[7] == 5.0  # pixel (54, 44) now
    assert 0 not in idx2.tolist() and 12 not in idx2.tolist()


def test_empty_and_all_behind():
    K = np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    u, v, d, i = project_points_to_image(np.zeros((0, 3)), np.eye(4), K, 10, 10)
    assert len(u) == len(v) == len(d) == len(i) == 0
    u, v, d, i = project_points_to_image(np.array([[0, 0, -1.0]]), np.eye(4), K, 10, 10)
    assert len(u) == 0


def test_rasterize_point_labels_nearest_wins():
    x = np.array([0.5, 0.9, 3.2, 3.99, -0.1, 4.0, 1.5])
    y = np.array([0.5, 0.2, 1.7, 1.0, 0.5, 0.0, 2.5])
    depth = np.array([5.0, 3.0, 7.0, 2.0, 1.0, 1.0, 0.0])
    label = np.array([1, 2, 3, 4, 5, 6, 7])
    dmap, smap = rasterize_point_labels(x, y, depth, label, width=4, height=3)
    exp_d = np.zeros((3, 4), np.float32)
    exp_s = np.full((3, 4), 255)
    exp_d[0, 0], exp_s[0, 0] = 3.0, 2  # points 0 and 1 share pixel (0, 0): depth 3 wins
    exp_d[1, 3], exp_s[1, 3] = 2.0, 4  # points 2 (y=1.7) and 3 (y=1.0) share row 1, col 3
    # point 4 (x < 0) and 5 (x = 4 = width) are outside; point 6 has no depth
    np.testing.assert_array_equal(dmap, exp_d)
    np.testing.assert_array_equal(smap, exp_s)
    assert dmap.dtype == np.float32 and smap.dtype == np.int64
