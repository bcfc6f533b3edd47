"""The procedural nuScenes / lidarseg / Occ3D generator (splattingocc.datasets.synthetic).

A tiny dataset (2 scenes x 2 keyframes, 160 x 90 images) is generated once per module; the checks
load it with nuscenes-devkit and compare geometry against brute-force references.
"""
import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from splattingocc.datasets.synthetic import SCENE_NAMES, load_grid_config, make_tiny_dataset
from splattingocc.datasets.synthetic import calibration as C
from splattingocc.datasets.synthetic.categories import (FINE_CATEGORIES, FINE_INDEX,
                                                        fine_to_occ_lut)
from splattingocc.datasets.synthetic.geometry import (matrix_to_quat, pose_matrix, quat_to_matrix,
                                                      rigid_inverse_np)
from splattingocc.datasets.synthetic.occupancy import traverse_visibility, voxelize
from splattingocc.datasets.synthetic.raycast import (BOX, CYLINDER, ELLIPSOID, Primitives,
                                                     inside_unit, intersect_all, intersect_one,
                                                     surface_distance)
from splattingocc.datasets.synthetic.sensors import cast_camera
from splattingocc.datasets.synthetic.world import build_scene

GRID = load_grid_config()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic') / 'data'
    summary = make_tiny_dataset(root)
    return root, summary


@pytest.fixture(scope='module')
def nusc(tiny):
    from nuscenes import NuScenes
    return NuScenes(version='v1.0-mini', dataroot=str(tiny[0]), verbose=False)


def _random_prims(rng, n, kinds=(BOX, CYLINDER, ELLIPSOID)):
    """n primitives with random (not only yaw) rotations."""
    rots = []
    for _ in range(n):
        q = rng.normal(size=4)
        rots.append(quat_to_matrix(q))
    z = np.zeros(n, np.int64)
    return Primitives(kind=np.array([kinds[i % len(kinds)] for i in range(n)], np.int8),
                      center=rng.uniform(-3, 3, (n, 3)), rot=np.stack(rots),
                      half=rng.uniform(0.2, 1.5, (n, 3)), fine=z + FINE_INDEX['vehicle.car'],
                      material=z, color=np.zeros((n, 3)), color2=np.zeros((n, 3)),
                      instance=z - 1, texseed=z)


def _march(prims, i, o, d, t_max=20.0, step=1e-3):
    """First t (to the step) where the ray enters primitive i, by fine stepping; inf if never."""
    ts = np.arange(step, t_max, step)
    pts = o + ts[:, None] * d
    q = ((pts - prims.center[i]) @ prims.rot[i]) / prims.half[i]
    inside = inside_unit(int(prims.kind[i]), q)
    return ts[np.argmax(inside)] if inside.any() else np.inf


# ----------------------------------------------------------------------------- geometry kernels
def test_ray_primitive_intersection_matches_fine_stepping():
    rng = np.random.default_rng(1)
    prims = _random_prims(rng, 9)
    origin = np.array([0.0, 0.0, 8.0])
    for i in range(len(prims)):
        # rays aimed near the primitive (most hit, some graze or miss)
        local = prims.half[i] * rng.uniform(-1.3, 1.3, (40, 3))
        target = prims.center[i] + local @ prims.rot[i].T
        d = target - origin
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        t = intersect_one(prims, i, origin, d)
        ref = np.array([_march(prims, i, origin, dd) for dd in d])
        both = np.isfinite(ref) & np.isfinite(t)
        assert both.sum() >= 10
        # the march finds the first inside sample: within one step after the exact entry
        assert np.all((ref[both] - t[both] >= -1e-9) & (ref[both] - t[both] <= 1e-3 + 1e-9))
        # misses agree except for rays grazing within a step of the surface
        disagree = np.isfinite(ref) != np.isfinite(t)
        assert disagree.sum() <= 1


def test_intersect_all_takes_the_nearest_and_points_lie_on_surfaces():
    rng = np.random.default_rng(2)
    prims = _random_prims(rng, 12)
    origin = np.array([0.5, -0.2, 9.0])
    d = rng.normal(size=(500, 3)) * [0.3, 0.3, 1.0] - [0, 0, 1.5]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t, idx = intersect_all(prims, origin, d)
    hit = idx >= 0
    assert hit.sum() > 100
    every = np.stack([intersect_one(prims, i, origin, d) for i in range(len(prims))], 1)
    np.testing.assert_allclose(t[hit], every[hit].min(1))
    pts = origin + t[hit, None] * d[hit]
    assert np.abs(surface_distance(prims, idx[hit], pts)).max() < 1e-9


def test_hand_computed_box_and_cylinder():
    z = np.zeros(2, np.int64)
    prims = Primitives(kind=np.array([BOX, CYLINDER], np.int8),
                       center=np.array([[5.0, 0, 0], [0, 5.0, 0]]), rot=np.stack([np.eye(3)] * 2),
                       half=np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 1.0]]), fine=z, material=z,
                       color=np.zeros((2, 3)), color2=np.zeros((2, 3)), instance=z, texseed=z)
    o = np.zeros(3)
    d = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    assert intersect_one(prims, 0, o, d)[0] == pytest.approx(4.0)  # box face x = 4
    assert intersect_one(prims, 1, o, d)[1] == pytest.approx(4.5)  # cylinder side y = 4.5
    assert np.isinf(intersect_one(prims, 0, o, d)[2])


def test_traverse_visibility_matches_fine_stepping():
    rng = np.random.default_rng(3)
    occ = rng.uniform(size=(20, 20, 8)) < 0.04
    pcr, vs = [-4.0, -4.0, -1.0, 4.0, 4.0, 2.2], [0.4, 0.4, 0.4]
    n = 60
    o = rng.uniform([-3, -3, 0], [3, 3, 1.5], (n, 3))
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t_stop = np.where(rng.uniform(size=n) < 0.5, rng.uniform(0.5, 6, n), np.inf)
    got = traverse_visibility(occ, o, d, t_stop, pcr, vs)
    ref = np.zeros_like(occ)
    lo = np.array(pcr[:3])
    for i in range(n):
        ts = np.arange(0.0, 15.0, 2e-4)
        ts = ts[ts <= t_stop[i]]
        ix = np.floor((o[i] + ts[:, None] * d[i] - lo) / 0.4).astype(int)
        inside = np.all((ix >= 0) & (ix < occ.shape), axis=1)
        first_out = np.argmin(inside) if not inside.all() else len(ix)
        ix = ix[:first_out]
        hits = occ[tuple(ix.T)]
        end = np.argmax(hits) + 1 if hits.any() else len(ix)
        ref[tuple(ix[:end].T)] = True
    assert got.sum() > 100
    assert np.array_equal(got, ref)


def test_voxelize_big_primitive_path_equals_full_subsampling():
    """A big rotated box uses corner classification; it must equal sub-sampling every voxel."""
    pcr, vs, size = [-4.0, -4.0, -1.0, 4.0, 4.0, 2.2], [0.4, 0.4, 0.4], [20, 20, 8]
    z = np.zeros(1, np.int64)
    prims = Primitives(kind=np.array([BOX], np.int8), center=np.array([[0.3, -0.2, 0.7]]),
                       rot=quat_to_matrix([0.9, 0.1, -0.2, 0.35])[None],
                       half=np.array([[2.0, 1.3, 0.9]]), fine=z + FINE_INDEX['static.manmade'],
                       material=z, color=np.zeros((1, 3)), color2=np.zeros((1, 3)), instance=z,
                       texseed=z)
    lut = fine_to_occ_lut(GRID['class_names'])
    sem = voxelize(prims, lut, lambda xy: np.zeros(len(xy), np.int64), -10.0, pcr, vs, size, 17)
    # brute force: every voxel, 3 x 3 x 3 sub-points against the box inflated by 1/6 voxel
    lo = np.array(pcr[:3])
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing='ij'), -1).reshape(-1, 3)
    offs = (np.arange(3) + 0.5) / 3 - 0.5
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing='ij'), -1).reshape(-1, 3) * 0.4
    pts = lo + 0.4 * (idx + 0.5)
    pts = pts[:, None] + sub[None]
    q = ((pts - prims.center[0]) @ prims.rot[0]) / (prims.half[0] + 0.4 / 6)
    ref = inside_unit(BOX, q).any(1).reshape(size)
    manmade = GRID['class_names'].index('manmade')
    assert ref.sum() > 200
    assert np.array_equal(sem == manmade, ref)
    assert np.all((sem == manmade) | (sem == 17))


# ----------------------------------------------------------------------------- schema and tables
def test_fine_categories_map_like_devkit(nusc):
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    mapper = LidarsegClassMapper(nusc)
    lut = fine_to_occ_lut(GRID['class_names'])
    assert len(FINE_CATEGORIES) == 32 and [c[0] for c in FINE_CATEGORIES] == list(range(32))
    # real nuScenes-lidarseg indices
    assert nusc.lidarseg_name2idx_mapping['vehicle.car'] == 17
    assert nusc.lidarseg_name2idx_mapping['flat.driveable_surface'] == 24
    assert nusc.lidarseg_name2idx_mapping['static.manmade'] == 28
    assert nusc.lidarseg_name2idx_mapping['noise'] == 0
    for idx, coarse in mapper.fine_idx_2_coarse_idx_mapping.items():
        assert lut[idx] == coarse, nusc.lidarseg_idx2name_mapping[idx]
    # devkit's coarse names equal the Occ3D class names of the config (0 = ignore = others)
    for name, i in mapper.coarse_name_2_coarse_idx_mapping.items():
        assert GRID['class_names'][i] == ('others' if name == 'ignore' else name)


def test_devkit_loads_the_tables(tiny, nusc):
    from nuscenes.utils.splits import create_splits_scenes
    root, summary = tiny
    assert [s['name'] for s in nusc.scene] == SCENE_NAMES[:2]
    assert 'scene-0103' in create_splits_scenes()['mini_val']
    assert len(nusc.sample) == 4 and len(nusc.sample_data) == 4 * 7
    assert len(nusc.lidarseg) == 4
    for scene in nusc.scene:
        s = nusc.get('sample', scene['first_sample_token'])
        count = 1
        while s['next']:
            nxt = nusc.get('sample', s['next'])
            assert nxt['prev'] == s['token'] and nxt['timestamp'] - s['timestamp'] == 500_000
            s, count = nxt, count + 1
        assert s['token'] == scene['last_sample_token'] and count == scene['nbr_samples']
    for sample in nusc.sample:
        assert set(sample['data']) == set(GRID['camera_names']) | {'LIDAR_TOP'}
        for sd_tok in sample['data'].values():
            sd = nusc.get('sample_data', sd_tok)
            assert sd['is_key_frame'] and (root / sd['filename']).is_file()
            if sd['prev']:
                assert nusc.get('sample_data', sd['prev'])['next'] == sd_tok
        assert len(sample['anns']) > 5
    for inst in nusc.instance:
        ann = nusc.get('sample_annotation', inst['first_annotation_token'])
        n = 1
        while ann['next']:
            nxt = nusc.get('sample_annotation', ann['next'])
            assert nxt['prev'] == ann['token'] and nxt['instance_token'] == inst['token']
            ann, n = nxt, n + 1
        assert ann['token'] == inst['last_annotation_token'] and n == inst['nbr_annotations']
    tokens = [r['token'] for t in nusc.table_names if t != 'visibility' for r in getattr(nusc, t)]
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)


def test_get_sample_data_camera_and_lidar(tiny, nusc):
    from nuscenes.utils.data_classes import LidarPointCloud
    root, _ = tiny
    sample = nusc.sample[1]
    path, boxes, K = nusc.get_sample_data(sample['data']['CAM_FRONT'])
    assert Path(path).is_file() and K.shape == (3, 3)
    # intrinsics scaled from 1600 x 900 to 160 x 90
    assert K[0, 0] == pytest.approx(C.BUILTIN_CAMERAS['CAM_FRONT'][0][0] / 10, rel=1e-6)
    import cv2
    img = cv2.imread(path)
    assert img.shape == (90, 160, 3) and img.std() > 10
    path, boxes, K = nusc.get_sample_data(sample['data']['LIDAR_TOP'])
    assert K is None and len(boxes) > 5
    pc = LidarPointCloud.from_file(path)
    assert pc.points.shape[0] == 4 and pc.points.shape[1] > 10000
    raw = np.fromfile(path, np.float32).reshape(-1, 5)
    assert set(np.unique(raw[:, 4]).astype(int)) <= set(range(32))
    assert raw[:, 3].min() >= 0 and raw[:, 3].max() <= 255
    assert np.linalg.norm(raw[:, :3], axis=1).max() <= 70.0 + 1e-3


def test_lidarseg_labels_map_to_occ3d_classes(tiny, nusc):
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    root, _ = tiny
    mapper = LidarsegClassMapper(nusc)
    seen = set()
    for rec in nusc.lidarseg:
        labels = np.fromfile(root / rec['filename'], np.uint8)
        pts = np.fromfile(root / nusc.get('sample_data', rec['sample_data_token'])['filename'],
                          np.float32).reshape(-1, 5)
        assert len(labels) == len(pts)
        coarse = mapper.convert_label(labels)
        assert coarse.min() >= 0 and coarse.max() <= 16
        seen |= set(np.unique(coarse).tolist())
    assert {4, 11, 13, 14, 15, 16} <= seen  # car, driveable, sidewalk, terrain, manmade, veg.


def test_labels_npz_format(tiny, nusc):
    root, _ = tiny
    for sample in nusc.sample:
        scene = nusc.get('scene', sample['scene_token'])['name']
        path = root / 'gts' / scene / sample['token'] / 'labels.npz'
        with zipfile.ZipFile(path) as zf:
            assert sorted(zf.namelist()) == ['mask_camera.npy', 'mask_lidar.npy', 'semantics.npy']
        d = np.load(path)
        for key in ('semantics', 'mask_lidar', 'mask_camera'):
            assert d[key].shape == tuple(GRID['occ_size']) and d[key].dtype == np.uint8
        assert d['semantics'].max() <= GRID['free_label']
        for key in ('mask_lidar', 'mask_camera'):
            assert set(np.unique(d[key])) <= {0, 1}
        # the ground is one layer: the voxels holding z = 0 of the ego frame
        sem = d['semantics']
        k = int(np.floor((0.0 - GRID['point_cloud_range'][2]) / GRID['voxel_size'][2]))
        ground = np.isin(sem, [11, 12, 13, 14])
        assert ground[:, :, k].mean() > 0.5 and ground.sum() - ground[:, :, k].sum() == 0


def _sample_points_ego(root, nusc, sample):
    """LiDAR points of a sample in its ego frame (from the files and the JSON calibration)."""
    sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
    cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    pts = np.fromfile(root / sd['filename'], np.float32).reshape(-1, 5)
    lidar2ego = pose_matrix(cs['translation'], cs['rotation'])
    ep = nusc.get('ego_pose', sd['ego_pose_token'])
    return pts, pts[:, :3].astype(np.float64) @ lidar2ego[:3, :3].T + lidar2ego[:3, 3], ep


def test_lidar_points_lie_on_primitive_surfaces_with_their_labels(tiny, nusc):
    """Points read back through the JSON poses lie on the analytic world, with the right class."""
    root, _ = tiny
    sample = nusc.sample[2]
    scene_rec = nusc.get('scene', sample['scene_token'])
    si = SCENE_NAMES.index(scene_rec['name'])
    k = 0 if not sample['prev'] else 1
    scene = build_scene(0, si, scene_rec['name'], scene_rec['nbr_samples'])
    prims = scene.primitives_at(0.5 * k)
    pts, pts_ego, ep = _sample_points_ego(root, nusc, sample)
    ego2global = pose_matrix(ep['translation'], ep['rotation'])
    pts_g = pts_ego @ ego2global[:3, :3].T + ego2global[:3, 3]
    labels = np.fromfile(root / nusc.get('lidarseg', sample['data']['LIDAR_TOP'])['filename'],
                         np.uint8)
    on = np.abs(pts_g[:, 2]) < 1e-4  # ground points
    fine_ground = scene.ground.classify(pts_g[on, :2])[0]
    label_ok = np.zeros(len(pts), bool)
    label_ok[on] = labels[on] == fine_ground
    radius = np.linalg.norm(prims.half, axis=1)
    for p in range(len(prims)):
        near = np.nonzero(np.linalg.norm(pts_g - prims.center[p], axis=1) <= radius[p] + 1e-3)[0]
        if not len(near):
            continue
        dist = surface_distance(prims, np.full(len(near), p), pts_g[near])
        on_p = near[dist < 2e-4]  # unit-shape coordinates; float32 points: ~5e-6 m at 70 m
        on[on_p] = True
        label_ok[on_p] |= labels[on_p] == prims.fine[p]
    assert on.mean() > 0.999
    assert label_ok[on].mean() > 0.999


def test_lidar_hits_fall_in_occupied_and_observed_voxels(tiny, nusc):
    root, _ = tiny
    pcr, vs = np.array(GRID['point_cloud_range']), np.array(GRID['voxel_size'])
    for sample in nusc.sample:
        scene = nusc.get('scene', sample['scene_token'])['name']
        d = np.load(root / 'gts' / scene / sample['token'] / 'labels.npz')
        _, pts_ego, _ = _sample_points_ego(root, nusc, sample)
        ix = np.floor((pts_ego - pcr[:3]) / vs).astype(int)
        inside = np.all((ix >= 0) & (ix < GRID['occ_size']), axis=1)
        ix = ix[inside]
        occupied = d['semantics'][tuple(ix.T)] != GRID['free_label']
        assert inside.sum() > 10000
        assert occupied.mean() > 0.99  # surfaces lie in occupied voxels
        # a ray is observed up to the first occupied voxel, which for grazing rays (the ground
        # layer) or inflated neighbours comes a little before the hit's own voxel
        mask = d['mask_lidar'].astype(bool)
        near = binary_dilation(mask, np.ones((3, 3, 3), bool))
        assert mask[tuple(ix.T)].mean() > 0.5
        assert near[tuple(ix.T)].mean() > 0.9
        origin = np.floor((np.array(C.BUILTIN_LIDAR[1]) - pcr[:3]) / vs).astype(int)
        assert mask[tuple(origin)]


def test_occupied_voxels_inside_parked_cars_are_car(tiny, nusc):
    """Voxel centres of the GT inside each static car's annotation box carry the class car."""
    from nuscenes.utils.geometry_utils import points_in_box
    root, _ = tiny
    pcr, vs = np.array(GRID['point_cloud_range']), np.array(GRID['voxel_size'])
    car = GRID['class_names'].index('car')
    parked = nusc.field2token('attribute', 'name', 'vehicle.parked')[0]
    checked = 0
    for sample in nusc.sample[:2]:
        scene = nusc.get('scene', sample['scene_token'])['name']
        sem = np.load(root / 'gts' / scene / sample['token'] / 'labels.npz')['semantics']
        occ_idx = np.argwhere(sem != GRID['free_label'])
        centres_ego = pcr[:3] + vs * (occ_idx + 0.5)
        above_ground = centres_ego[:, 2] > 0.3  # the ground layer under a car stays ground
        occ_idx, centres_ego = occ_idx[above_ground], centres_ego[above_ground]
        sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
        ep = nusc.get('ego_pose', sd['ego_pose_token'])
        ego2global = pose_matrix(ep['translation'], ep['rotation'])
        centres_g = centres_ego @ ego2global[:3, :3].T + ego2global[:3, 3]
        for tok in sample['anns']:
            ann = nusc.get('sample_annotation', tok)
            if ann['category_name'] != 'vehicle.car' or parked not in ann['attribute_tokens']:
                continue
            global2ego = rigid_inverse_np(ego2global)
            if np.abs(global2ego[:2, :3] @ ann['translation'] + global2ego[:2, 3]).max() > 36:
                continue  # the box must lie inside the grid
            box = nusc.get_box(tok)
            inside = points_in_box(box, centres_g.T)
            if inside.sum() < 5:
                continue
            labels = sem[tuple(occ_idx[inside].T)]
            assert np.mean(labels == car) > 0.9, np.bincount(labels)
            checked += 1
    assert checked >= 3


def test_camera_depth_agrees_with_projected_lidar(tiny, nusc):
    """Project LiDAR points the devkit way (lidar -> ego -> global -> ego(cam time) -> camera) and
    compare with the renderer's own depth: the stored calibration and poses are what rendered."""
    root, _ = tiny
    sample = nusc.sample[1]
    scene_rec = nusc.get('scene', sample['scene_token'])
    si = SCENE_NAMES.index(scene_rec['name'])
    scene = build_scene(0, si, scene_rec['name'], scene_rec['nbr_samples'])
    pts, pts_ego, ep = _sample_points_ego(root, nusc, sample)
    labels = np.fromfile(root / nusc.get('lidarseg', sample['data']['LIDAR_TOP'])['filename'],
                         np.uint8)
    static = np.isin(labels, [FINE_INDEX[n] for n in ('flat.driveable_surface', 'flat.sidewalk',
                                                        'flat.terrain', 'static.manmade')])
    ego2global = pose_matrix(ep['translation'], ep['rotation'])
    pts_g = pts_ego[static] @ ego2global[:3, :3].T + ego2global[:3, 3]
    n_checked = 0
    for ch in ('CAM_FRONT', 'CAM_BACK'):
        sd = nusc.get('sample_data', sample['data'][ch])
        cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        cep = nusc.get('ego_pose', sd['ego_pose_token'])
        cam2global = pose_matrix(cep['translation'], cep['rotation']) @ pose_matrix(
            cs['translation'], cs['rotation'])
        K = np.array(cs['camera_intrinsic'])
        p_cam = (pts_g - cam2global[:3, 3]) @ cam2global[:3, :3]
        front = p_cam[:, 2] > 1.0
        uv = (p_cam[front] @ K.T)[:, :2] / p_cam[front, 2:3]
        col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (col >= 0) & (col < sd['width']) & (row >= 0) & (row < sd['height'])
        t0 = nusc.get('sample', scene_rec['first_sample_token'])['timestamp']
        t_cam = (sd['timestamp'] - t0) * 1e-6  # scene time of the camera's trigger
        res, dirs, _ = cast_camera(scene.primitives_at(t_cam), cam2global, K, sd['width'],
                                   sd['height'], track_instances=False)
        z_render = res.t * (dirs @ cam2global[:3, :3])[..., 2]  # camera-z depth of each pixel
        z_lidar = p_cam[front, 2][ok]
        z_pix = z_render[row[ok], col[ok]]
        rel = np.abs(z_pix - z_lidar) / z_lidar
        assert np.mean(rel < 0.05) > 0.85, np.mean(rel < 0.05)
        n_checked += ok.sum()
    assert n_checked > 500


def test_every_class_in_the_default_dataset_ground_truth():
    """The Occ3D ground truth of the default scenes (one keyframe each, in the middle of the
    scene) holds all 17 classes; each scene has at least 15 of them."""
    from splattingocc.datasets.synthetic.geometry import make_transform, yaw_matrix
    from splattingocc.datasets.synthetic.writer import DEFAULT_SAMPLES_PER_SCENE, keyframe_semantics
    seen = set()
    for si, name in enumerate(SCENE_NAMES):
        scene = build_scene(0, si, name, DEFAULT_SAMPLES_PER_SCENE)
        t = 0.5 * round(scene.duration)  # a keyframe time (multiple of 0.5 s)
        p, yaw = scene.ego_pose(t)
        sem = keyframe_semantics(scene, scene.primitives_at(t), make_transform(yaw_matrix(yaw), p),
                                 GRID)
        classes = set(np.unique(sem).tolist()) - {GRID['free_label']}
        assert len(classes) >= 15, (name, sorted(set(range(17)) - classes))
        seen |= classes
    assert seen == set(range(17))


def _footprint(centre, yaw, length, width):
    u = np.array([np.cos(yaw), np.sin(yaw)])
    v = np.array([-u[1], u[0]])
    return np.array([centre + sx * length / 2 * u + sy * width / 2 * v
                     for sx in (-1, 1) for sy in (-1, 1)])


def _overlap(a, b):
    """Separating-axis test of two rectangles given by 4 corners [4, 2]."""
    for poly in (a, b):
        for i, j in ((0, 1), (0, 2)):
            edge = poly[j] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def test_no_collisions_in_the_default_scenes():
    """The ego (4.8 x 2.0 m, centre 1.4 m ahead of the rear axle) never overlaps an object, and
    moving objects never overlap each other or parked ones."""
    for si, name in enumerate(SCENE_NAMES):
        scene = build_scene(0, si, name, 8)
        for t in np.linspace(-0.05, scene.duration, 8):
            p, yaw = scene.ego_pose(t)
            ego = _footprint(p[:2] + 1.4 * np.array([np.cos(yaw), np.sin(yaw)]), yaw, 4.8, 2.0)
            centres, yaws = scene.object_poses(t)
            boxes = [_footprint(c[:2], y, o.size[1], o.size[0])
                     for o, c, y in zip(scene.objects, centres, yaws)]
            near_ego = np.linalg.norm(centres[:, :2] - p[:2], axis=1) < 15
            for i in np.nonzero(near_ego)[0]:
                assert not _overlap(ego, boxes[i]), (name, t, scene.objects[i].category)
            for i, obj in enumerate(scene.objects):
                if obj.speed == 0:
                    continue
                close = np.linalg.norm(centres[:, :2] - centres[i, :2], axis=1) < 15
                for j in np.nonzero(close)[0]:
                    if j != i:
                        assert not _overlap(boxes[i], boxes[j]), (name, t, obj.category,
                                                                  scene.objects[j].category)


def test_summary_reports_classes_and_masks(tiny):
    root, summary = tiny
    assert summary['frames'] == 4 and summary['scenes'] == 2
    counts = summary['class_voxel_counts']
    assert list(counts) == GRID['class_names']
    for name in ('car', 'driveable_surface', 'sidewalk', 'terrain', 'manmade', 'vegetation',
                 'pedestrian', 'others'):
        assert counts[name] > 0, name
    assert isinstance(summary['mask_camera_subset_of_mask_lidar'], bool)
    meta = json.loads((root / 'synthetic.json').read_text())
    assert meta['summary']['frames'] == 4


# ----------------------------------------------------------------------------- determinism etc.
def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_arguments_give_identical_bytes(tmp_path):
    # a coarser grid keeps this fast; determinism does not depend on the grid
    coarse = dict(GRID, voxel_size=[0.8, 0.8, 0.8], occ_size=[100, 100, 8])
    kw = dict(scenes=1, samples_per_scene=2, image_size=(96, 54), seed=5, occ_config=coarse)
    a = make_tiny_dataset(tmp_path / 'a', workers=1, **kw)
    b = make_tiny_dataset(tmp_path / 'b', workers=2, **kw)  # parallel = serial
    ha, hb = _hashes(tmp_path / 'a'), _hashes(tmp_path / 'b')
    assert len(ha) > 20 and ha == hb
    assert a['class_voxel_counts'] == b['class_voxel_counts']
    labels = next((tmp_path / 'a' / 'gts').rglob('labels.npz'))
    assert np.load(labels)['semantics'].shape == (100, 100, 8)


def test_seed_changes_the_world():
    a, b = build_scene(5, 0, 'scene-0061', 2), build_scene(6, 0, 'scene-0061', 2)
    assert a.ego_speed != b.ego_speed
    assert len(a.static) != len(b.static) or not np.allclose(a.static.center, b.static.center)


def test_refuses_bad_arguments_and_existing_root(tmp_path):
    with pytest.raises(ValueError, match='scenes'):
        make_tiny_dataset(tmp_path / 'x', scenes=11)
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'f').write_text('x')
    with pytest.raises(FileExistsError, match='overwrite'):
        make_tiny_dataset(tmp_path / 'full')
    assert not any(p.name.startswith('.') for p in tmp_path.iterdir())  # no half-written root


def test_quaternion_round_trip():
    rng = np.random.default_rng(4)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = -q if q[0] < 0 else q
        np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-12)


def test_builtin_calibration_equals_the_real_fixture(realdata):
    path = realdata / C.CALIB_FILE
    cams, lidar = C._table_from_fixture(path)
    assert cams == C.BUILTIN_CAMERAS
    assert lidar == C.BUILTIN_LIDAR
    with open(path, 'rb') as f:
        info = pickle.load(f)['data_list'][0]
    for ch, rec in info['images'].items():
        T = np.asarray(rec['cam2ego'])
        q, t = C.BUILTIN_CAMERAS[ch][1], C.BUILTIN_CAMERAS[ch][2]
        np.testing.assert_allclose(pose_matrix(t, q), T, atol=1e-5)
