"""RayIoU ray origins: SparseOcc's selection rule, real poses, the LoadRayOrigins transform."""
import pickle

import numpy as np
import pytest
from pyquaternion import Quaternion

from splattingocc.evaluation.ray_origins import (LoadRayOrigins, info_scene_name, load_infos,
                                                 pad_ray_origins, ray_origins_by_token,
                                                 scene_lidar_origins)
from splattingocc.registry import TRANSFORMS


def _pose(t, yaw=0.0):
    T = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = t
    return T


def _straight_scene(n, step=3.0, name='scene-a', start_time=0):
    """A car driving along global x, lidar 1 m ahead of and 1.8 m above the ego origin."""
    lidar2ego = _pose([1.0, 0.0, 1.8])
    return [dict(token=f'{name}-{i:02d}', scene_name=name, timestamp=start_time + i * 500000,
                 lidar2ego=lidar2ego, ego2global=_pose([100.0 + step * i, 50.0, 0.0]))
            for i in range(n)]


def test_selection_rule_on_a_straight_drive():
    infos = _straight_scene(40)
    # frame 20: others at x = 1 + 3 (j - 20); kept while |x| < 39 -> j = 7 .. 32 (26 frames)
    o = scene_lidar_origins(infos, 20)
    kept = [j for j in range(40) if abs(1 + 3 * (j - 20)) < 39]
    assert kept == list(range(7, 33))
    sel = [0, 4, 7, 11, 14, 18, 21, 25]  # round(linspace(0, 25, 8))
    expect_x = [1 + 3 * (kept[k] - 20) for k in sel]
    np.testing.assert_allclose(o[:, 0], expect_x)
    np.testing.assert_allclose(o[:, 1:], np.tile([0.0, 1.8], (8, 1)))
    # a short scene keeps every origin, the current one included, in time order
    short = _straight_scene(5, name='scene-b')
    o = scene_lidar_origins(short, 1)
    np.testing.assert_allclose(o[:, 0], [1 - 3, 1, 1 + 3, 1 + 6, 1 + 9])


def test_by_token_groups_scenes_and_sorts_by_time():
    a = _straight_scene(6, name='scene-a')
    b = _straight_scene(3, step=-2.0, name='scene-b')
    mixed = [a[3], b[2], a[0], a[5], b[0], a[1], a[2], b[1], a[4]]
    by_token = ray_origins_by_token(mixed)
    assert len(by_token) == 9
    np.testing.assert_allclose(by_token['scene-a-02'], scene_lidar_origins(a, 2))
    np.testing.assert_allclose(by_token['scene-b-00'][:, 0], [1.0, -1.0, -3.0])


def test_real_poses_match_an_independent_quaternion_computation(realdata):
    infos = load_infos(realdata / 'nuscenes-mini-val-infos.pkl')
    assert {info_scene_name(i) for i in infos} == {'scene-0103', 'scene-0916'}
    by_token = ray_origins_by_token(infos)
    scenes = {}
    for info in infos:
        scenes.setdefault(info_scene_name(info), []).append(info)
    checked = 0
    for scene_infos in scenes.values():
        scene_infos.sort(key=lambda i: i['timestamp'])
        for i in (0, len(scene_infos) // 2, len(scene_infos) - 1):
            ref = scene_infos[i]
            q_ref = Quaternion(ref['ego2global_rotation'])
            pts = []
            for other in scene_infos:
                p_ego = np.array(other['lidar2ego_translation'])
                p_glob = Quaternion(other['ego2global_rotation']).rotate(p_ego) + np.array(
                    other['ego2global_translation'])
                p_ref = q_ref.inverse.rotate(p_glob - np.array(ref['ego2global_translation']))
                if abs(p_ref[0]) < 39 and abs(p_ref[1]) < 39:
                    pts.append(p_ref)
            if len(pts) > 8:
                pts = [pts[k] for k in np.round(np.linspace(0, len(pts) - 1, 8)).astype(int)]
            np.testing.assert_allclose(by_token[ref['token']], np.array(pts), atol=1e-6)
            checked += 1
    assert checked == 6
    # the current frame's own lidar origin is the lidar2ego translation (when selected)
    first = min(scenes['scene-0103'], key=lambda i: i['timestamp'])
    np.testing.assert_allclose(by_token[first['token']][0], first['lidar2ego_translation'],
                               atol=1e-9)


def test_pad_and_transform(tmp_path):
    infos = _straight_scene(12)
    path = tmp_path / 'infos.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'metadata': {'version': 'test'}, 'infos': infos}, f)
    padded = pad_ray_origins(scene_lidar_origins(infos, 0))
    assert padded.shape == (8, 3) and padded.dtype == np.float32
    t = TRANSFORMS.build(dict(type='LoadRayOrigins', ann_file=str(path)))
    assert isinstance(t, LoadRayOrigins)
    out = t({'meta': {'sample_token': 'scene-a-03'}, 'img': None})
    o = out['meta']['ray_origins']
    assert o.shape == (8, 3)
    n = np.isfinite(o).all(1).sum()
    np.testing.assert_allclose(o[:n], scene_lidar_origins(infos, 3), rtol=1e-6)
    assert np.isnan(o[n:]).all()
    with pytest.raises(KeyError, match='not in'):
        t({'meta': {'sample_token': 'nope'}})
    with pytest.raises(FileNotFoundError, match='info file not found'):
        LoadRayOrigins(ann_file=str(tmp_path / 'missing.pkl'))
