"""Image transforms on hand-made inputs: resize/crop geometry, padding, photometric range."""
import numpy as np
import pytest

from splattingocc.datasets.transforms import (PackOccInputs, PhotoMetricDistortion,
                                              ResizeCropImages)


def _results(img, K):
    n = 1
    return dict(img=[img], cam2img=np.stack([K]), cam2ego=np.tile(np.eye(4), (n, 1, 1)),
                img_aug=np.tile(np.eye(3), (n, 1, 1)),
                render_views=dict(viewmats=np.tile(np.eye(4), (n, 1, 1)), Ks=np.stack([K]),
                                  offsets=np.zeros(n, np.int64), cam_index=np.zeros(n, np.int64),
                                  size=(img.shape[1], img.shape[0]),
                                  points=[dict(x=np.array([3.5]), y=np.array([2.5]),
                                               depth=np.array([7.0]), label=np.array([4]))]),
                token='t', scene_name='s', timestamp=0, occ_path='/x', lidar2ego=np.eye(4),
                ego2global=np.eye(4), sample_idx=0)


def test_resize_crop_moves_pixels_intrinsics_and_labels_together():
    img = np.zeros((4, 8, 3), np.uint8)
    img[2, 3] = 255  # the pixel of column 3, row 2: centre (3.5, 2.5)
    K = np.array([[10.0, 0, 4.0], [0, 10.0, 2.0], [0, 0, 1]])
    t = ResizeCropImages(final_size=(16, 6), interpolation='nearest')
    res = t(_results(img, K))
    # s = 16 / 8 = 2, resized 16 x 8, bottom kept: crop origin (0, 2)
    A = np.array([[2.0, 0, 0], [0, 2.0, -2.0], [0, 0, 1]])
    np.testing.assert_allclose(res['cam2img'][0], A @ K)
    np.testing.assert_allclose(res['img_aug'][0], A)
    np.testing.assert_allclose(res['render_views']['Ks'][0], A @ K)
    rows, cols = np.nonzero(res['img'][0][..., 0])
    assert sorted(set(rows.tolist())) == [2, 3] and sorted(set(cols.tolist())) == [6, 7]
    centre = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
    np.testing.assert_allclose(centre, (A @ [3.5, 2.5, 1.0])[:2])  # (7, 3)
    p = res['render_views']['points'][0]
    np.testing.assert_allclose([p['x'][0], p['y'][0]], [7.0, 3.0])
    assert res['render_views']['size'] == (16, 6)
    # packed: the label lands in the pixel (row 3, column 7), depth unchanged
    out = PackOccInputs(label_downsample=1)(res)
    assert out['gt_depth'][0, 3, 7] == 7.0 and out['gt_semantics'][0, 3, 7] == 4
    assert int((out['gt_depth'] > 0).sum()) == 1
    # label_downsample 2: pixel (row 1, column 3) of an 8 x 3 map, Ks halved
    res2 = ResizeCropImages(final_size=(16, 6), interpolation='nearest')(_results(img, K))
    out2 = PackOccInputs(label_downsample=2)(res2)
    assert out2['gt_depth'].shape == (1, 3, 8) and out2['gt_depth'][0, 1, 3] == 7.0
    np.testing.assert_allclose(out2['render_Ks'][0].numpy(), np.diag([0.5, 0.5, 1]) @ A @ K,
                               rtol=1e-6)


def test_shrinking_below_the_output_pads_with_zeros():
    img = np.full((4, 8, 3), 200, np.uint8)
    K = np.eye(3)
    t = ResizeCropImages(final_size=(8, 4), scale_range=(0.5, 0.5))
    res = t(_results(img, K))
    # resized 4 x 2, crop origin (-2, -2): the image sits at columns 2..5, rows 2..3
    out = res['img'][0][..., 0]
    assert (out[2:4, 2:6] == 200).all()
    out[2:4, 2:6] = 0
    assert (out == 0).all()
    np.testing.assert_allclose(res['cam2img'][0], [[0.5, 0, 2.0], [0, 0.5, 2.0], [0, 0, 1]])


def test_pack_rejects_a_label_downsample_that_does_not_divide():
    img = np.zeros((6, 10, 3), np.uint8)
    res = _results(img, np.eye(3))
    with pytest.raises(ValueError, match='label_downsample=4 does not divide'):
        PackOccInputs(label_downsample=4)(res)


def test_photometric_distortion_stays_in_range_and_changes_pixels():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    np.random.seed(1)
    res = PhotoMetricDistortion(prob=1.0)(dict(img=[img.copy()]))
    out = res['img'][0]
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() >= 0 and out.max() <= 255
    assert np.abs(out - img).max() > 1
    same = PhotoMetricDistortion(prob=0.0)(dict(img=[img.copy()]))['img'][0]
    np.testing.assert_array_equal(same, img.astype(np.float32))


def _yawed_camera(yaw_deg=55.0):
    """cam2ego of a camera looking along ego (cos yaw, sin yaw, 0), 1.6 m up (OpenCV axes)."""
    a = np.deg2rad(yaw_deg)
    fwd, left = np.array([np.cos(a), np.sin(a), 0.0]), np.array([-np.sin(a), np.cos(a), 0.0])
    T = np.eye(4)
    T[:3, :3] = np.stack([-left, [0.0, 0.0, -1.0], fwd], axis=1)  # columns: camera x, y, z
    T[:3, 3] = [1.5, 0.5, 1.6]
    return T


def _project(K, cam2ego, p_ego):
    p_cam = np.linalg.inv(cam2ego) @ np.append(p_ego, 1.0)
    uvw = K @ p_cam[:3]
    return uvw[:2] / uvw[2], p_cam[2]


def test_mirror_scene_reflects_images_cameras_labels_and_grids(monkeypatch):
    from splattingocc.datasets import transforms as T
    K = np.array([[10.0, 0, 3.0], [0, 10.0, 2.0], [0, 0, 1]])  # cx off-centre: W - cx = 5
    cam2ego = _yawed_camera()
    p = np.array([6.0, 4.0, 0.7])  # an ego point in front of the camera
    (u, v), z = _project(K, cam2ego, p)
    img = np.zeros((4, 8, 3), np.uint8)
    img[1, 2] = 255
    res = _results(img, K)
    res['cam2ego'][0] = cam2ego
    res['render_views']['viewmats'][0] = np.linalg.inv(cam2ego)
    res['render_views']['points'][0].update(x=np.array([u]), y=np.array([v]), depth=np.array([z]))
    grid = np.arange(2 * 3 * 2).reshape(2, 3, 2).astype(np.uint8)
    res['voxel_semantics'] = grid.copy()
    out = T.RandomMirrorScene(prob=1.0)(res)
    assert out['mirrored'] is True
    K2, c2e2 = out['cam2img'][0], out['cam2ego'][0]
    np.testing.assert_allclose(K2, [[10.0, 0, 5.0], [0, 10.0, 2.0], [0, 0, 1]])
    assert np.isclose(np.linalg.det(c2e2[:3, :3]), 1.0)  # still a rotation
    # the mirrored point (y -> -y) is where the flipped image shows it, at the same depth
    (u2, v2), z2 = _project(K2, c2e2, p * [1, -1, 1])
    np.testing.assert_allclose([u2, v2, z2], [8 - u, v, z], atol=1e-9)
    views = out['render_views']
    np.testing.assert_allclose(views['Ks'][0], K2)
    np.testing.assert_allclose(views['viewmats'][0], np.linalg.inv(c2e2), atol=1e-12)
    np.testing.assert_allclose(views['points'][0]['x'], [8 - u])
    assert views['points'][0]['depth'][0] == z
    assert np.argwhere(out['img'][0][..., 0]).tolist() == [[1, 5]]  # column 2 -> 7 - 2
    np.testing.assert_array_equal(out['voxel_semantics'], grid[:, ::-1])
    # mirroring twice gives the sample back
    again = T.RandomMirrorScene(prob=1.0)(out)
    np.testing.assert_allclose(again['cam2img'][0], K)
    np.testing.assert_allclose(again['cam2ego'][0], cam2ego, atol=1e-12)
    np.testing.assert_array_equal(again['voxel_semantics'], grid)
    # Occ3D labels loaded after the mirror are mirrored when loaded
    monkeypatch.setattr(T, 'load_occ3d_labels', lambda *a: dict(
        semantics=grid.copy(), mask_lidar=grid.copy(), mask_camera=grid.copy()))
    loaded = T.LoadOcc3DLabels((2, 3, 2), 18)(dict(occ_path='x', mirrored=True))
    np.testing.assert_array_equal(loaded['mask_camera'], grid[:, ::-1])
    with pytest.raises(ValueError, match='after LoadLabels2D'):
        T.LoadLabels2D(['CAM_FRONT'])(dict(label2d_path='x', mirrored=True))


def test_mirror_scene_prob_zero_and_bad_prob():
    from splattingocc.datasets.transforms import RandomMirrorScene
    K = np.array([[10.0, 0, 3.0], [0, 10.0, 2.0], [0, 0, 1]])
    img = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
    out = RandomMirrorScene(prob=0.0)(_results(img.copy(), K))
    assert out['mirrored'] is False
    np.testing.assert_array_equal(out['img'][0], img)
    np.testing.assert_allclose(out['cam2img'][0], K)
    with pytest.raises(ValueError, match='prob'):
        RandomMirrorScene(prob=1.5)
