"""End to end: create_nuscenes_infos on a tiny synthetic nuScenes, the dataset built from a config
dict, the per-sample dict of the data contract, geometry of the labels after resize/crop, adjacent
frames; and the same pipeline on the real keyframe (real images and LiDAR)."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from splattingocc.cli import visual_data
from splattingocc.datasets.label_projection import lidar_to_camera, project_points_to_image
from splattingocc.datasets.nuscenes_converter import (NuScenesDataError, atomic_savez,
                                                      create_nuscenes_infos, load_lidar_bin,
                                                      project_sample_labels)
from splattingocc.geometry import rigid_inverse_np
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import DATASETS

DCFG = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))
CAMS = list(DCFG.camera_names)
OCC_SIZE = tuple(DCFG.occ_size)


def _pipeline(size, label_downsample, occ=True, aug=False):
    p = [dict(type='LoadMultiViewImages', camera_names=CAMS),
         dict(type='LoadLabels2D', camera_names=CAMS),
         dict(type='ResizeCropImages', final_size=size,
              scale_range=(0.9, 1.15) if aug else (1.0, 1.0),
              crop_x_range=(-1.0, 1.0) if aug else (0.0, 0.0),
              crop_bottom_range=(0.0, 0.05) if aug else (0.0, 0.0))]
    if aug:
        p.append(dict(type='PhotoMetricDistortion'))
    if occ:
        p.append(dict(type='LoadOcc3DLabels', occ_size=DCFG.occ_size, num_classes=DCFG.num_classes))
    p.append(dict(type='PackOccInputs', label_downsample=label_downsample,
                  ignore_label=DCFG.ignore_label))
    return p


def check_contract(out, n_frames, size, label_downsample, occ=True):
    W, H = size
    h, w = H // label_downsample, W // label_downsample
    V = n_frames * len(CAMS)
    expected = {
        'img': ((len(CAMS), 3, H, W), torch.float32),
        'cam2img': ((len(CAMS), 3, 3), torch.float32),
        'cam2ego': ((len(CAMS), 4, 4), torch.float32),
        'render_viewmats': ((V, 4, 4), torch.float32),
        'render_Ks': ((V, 3, 3), torch.float32),
        'render_frame_offset': ((V,), torch.int64),
        'gt_depth': ((V, h, w), torch.float32),
        'gt_semantics': ((V, h, w), torch.int64),
    }
    if occ:
        for k in ('voxel_semantics', 'mask_camera', 'mask_lidar'):
            expected[k] = (OCC_SIZE, torch.uint8)
    assert set(out) == set(expected) | {'meta'}
    for k, (shape, dtype) in expected.items():
        assert tuple(out[k].shape) == shape and out[k].dtype == dtype, (k, out[k].shape,
                                                                        out[k].dtype)
    assert set(out['meta']) == {'sample_token', 'scene_name', 'timestamp', 'occ_path', 'lidar2ego',
                                'ego2global', 'sample_idx'}
    assert out['meta']['lidar2ego'].shape == (4, 4) and out['meta']['ego2global'].shape == (4, 4)
    assert Path(out['meta']['occ_path']).is_absolute()
    assert 0 <= float(out['img'].min()) and float(out['img'].max()) <= 255
    sem = out['gt_semantics']
    labelled = out['gt_depth'] > 0
    assert bool(((sem == 255) | ((sem >= 0) & (sem <= 16))).all())
    assert bool((sem[~labelled] == 255).all())  # no class without depth
    assert bool((out['render_frame_offset'][:len(CAMS)] == 0).all())
    # viewmats are rigid
    R = out['render_viewmats'][:, :3, :3].double()
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(R),
                          atol=1e-5)
    # current-frame viewmats are the inverse of cam2ego, Ks the input intrinsics / downsample
    eye = torch.eye(4).expand(len(CAMS), 4, 4)
    assert torch.allclose(out['render_viewmats'][:len(CAMS)] @ out['cam2ego'], eye, atol=1e-4)
    Ks = out['cam2img'].clone()
    Ks[:, :2] /= label_downsample
    assert torch.allclose(out['render_Ks'][:len(CAMS)], Ks, rtol=1e-6, atol=1e-4)


def check_label_geometry(points_ego, labels, viewmat, K, depth_map, sem_map, tol_px,
                         max_pixels=400, candidates=None):
    """Every labelled pixel's depth is the camera z of a LiDAR point (given in the current ego
    frame) that projects into that pixel, within ``tol_px`` of the pixel centre, and the pixel's
    class is that point's class. ``candidates`` (bool [N]) restricts the points searched, e.g. to
    those stored in the label file (several points can share a depth to 1 mm).

    Returns the number of labelled pixels checked.
    """
    if candidates is not None:
        points_ego, labels = points_ego[candidates], labels[candidates]
    pc = points_ego @ viewmat[:3, :3].T + viewmat[:3, 3]  # [N, 3] camera frame
    z = pc[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        x = K[0, 0] * pc[:, 0] / z + K[0, 1] * pc[:, 1] / z + K[0, 2]
        y = K[1, 1] * pc[:, 1] / z + K[1, 2]
    rows, cols = np.nonzero(depth_map)
    sel = np.linspace(0, len(rows) - 1, min(max_pixels, len(rows))).astype(int)
    order = np.argsort(z)
    zs = z[order]
    for r, c in zip(rows[sel], cols[sel]):
        d = float(depth_map[r, c])
        lo, hi = np.searchsorted(zs, [d - 2e-3, d + 2e-3])
        cand = order[lo:hi]  # points with this camera depth (float32 labels)
        assert len(cand) > 0, f'no LiDAR point at depth {d} for pixel ({r}, {c})'
        dist = np.maximum(np.abs(x[cand] - (c + 0.5)), np.abs(y[cand] - (r + 0.5)))
        j = cand[np.argmin(dist)]
        assert dist.min() <= tol_px, (r, c, d, dist.min())
        assert sem_map[r, c] == labels[j], (r, c, sem_map[r, c], labels[j])
    return len(sel)


# ------------------------------------------------------------------------------------------
# real keyframe: info built from the real calibration, labels from the real LiDAR sweep
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def real_sample(realdata, tmp_path_factory):
    out = tmp_path_factory.mktemp('realpkl')
    folder = realdata / 'nuscenes-keyframe'
    with open(folder / 'n015-2018-07-24-11-22-45+0800.pkl', 'rb') as f:
        d = pickle.load(f)['data_list'][0]
    l2e = np.asarray(d['lidar_points']['lidar2ego'], dtype=np.float64)
    e2g = np.asarray(d['ego2global'], dtype=np.float64)
    cams = {}
    for ch, c in d['images'].items():
        c2e = np.asarray(c['cam2ego'], dtype=np.float64)
        l2c = np.asarray(c['lidar2cam'], dtype=np.float64)
        # lidar2cam = cam2ego^-1 ego2global_cam^-1 ego2global lidar2ego: solve for ego2global_cam
        global2egocam = c2e @ l2c @ rigid_inverse_np(l2e) @ rigid_inverse_np(e2g)
        cams[ch] = dict(data_path=str(folder / c['img_path']),
                        cam_intrinsic=np.asarray(c['cam2img'], dtype=np.float64),
                        sensor2ego=c2e, ego2global=rigid_inverse_np(global2egocam),
                        timestamp=int(round(c['timestamp'] * 1e6)),
                        sample_data_token=c['sample_data_token'], width=1600, height=900)
    info = dict(token=d['token'], scene_name='scene-0061', scene_token='', prev='', next='',
                timestamp=int(round(d['timestamp'] * 1e6)),
                lidar_path=str(folder / d['lidar_points']['lidar_path']), lidar2ego=l2e,
                ego2global=e2g,
                occ_path=str(realdata / 'occ3d/29796060110c4163b07f06eff4af0753.labels.npz'),
                label2d_path=f'labels2d/{d["token"]}.npz', cams=cams)
    points = load_lidar_bin(info['lidar_path'])
    labels = (points[:, 4].astype(np.int64) % 17).astype(np.uint8)  # stand-in classes: the ring
    atomic_savez(out / info['label2d_path'], **project_sample_labels(info, points, labels))
    with open(out / 'real_infos.pkl', 'wb') as f:
        pickle.dump(dict(metadata=dict(version='v1.0-mini', dataset='nuscenes', labels2d_format=1),
                         infos=[info]), f)
    return out, info, points, labels


def test_real_keyframe_pipeline_geometry(real_sample):
    root, info, points, labels = real_sample
    size, ds_factor = (704, 256), 2
    ds = DATASETS.build(dict(type='Occ3DNuScenesDataset', ann_file='real_infos.pkl',
                             data_root=str(root), camera_names=CAMS, num_adjacent=0,
                             pipeline=_pipeline(size, ds_factor, aug=True)))
    np.random.seed(3)
    out = ds[0]
    check_contract(out, 1, size, ds_factor)
    pts_ego = _to_ego(points, info['lidar2ego'])
    checked = 0
    for v in range(len(CAMS)):
        cam = info['cams'][CAMS[v]]
        l2c = lidar_to_camera(info['lidar2ego'], info['ego2global'], cam['ego2global'],
                              cam['sensor2ego'])
        stored = np.zeros(len(points), bool)  # points that won a pixel of the stored labels
        stored[project_points_to_image(points, l2c, cam['cam_intrinsic'], 1600, 900)[3]] = True
        K = out['render_Ks'][v].double().numpy()
        # stored labels are pixel centres of the 1600x900 image: +-0.5 stored px after scaling
        scale = K[0, 0] / cam['cam_intrinsic'][0, 0]
        assert (out['gt_depth'][v] > 0).sum() > 1000  # thousands of labels per camera
        checked += check_label_geometry(
            pts_ego, labels, out['render_viewmats'][v].double().numpy(), K,
            out['gt_depth'][v].numpy(), out['gt_semantics'][v].numpy(),
            tol_px=0.5 + 0.5 * scale + 1e-3, candidates=stored)
    assert checked == 6 * 400


# ------------------------------------------------------------------------------------------
# tiny synthetic nuScenes through create_nuscenes_infos
# ------------------------------------------------------------------------------------------
SWEEPS = 1


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    from splattingocc.datasets.synthetic import make_tiny_dataset
    root = tmp_path_factory.mktemp('synth') / 'data'
    # 2 scenes (scene-0061: mini_train, scene-0103: mini_val) x 3 keyframes at 96 x 54
    make_tiny_dataset(root, scenes=2, samples_per_scene=3, image_size=(96, 54))
    summary = create_nuscenes_infos(root, 'v1.0-mini', out_dir=root, sweeps=SWEEPS, progress=False,
                                    prefix='synthetic', dataset='synthetic')
    return root, summary


def _load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _to_ego(points, lidar2ego):
    """[N, >=3] LiDAR points -> [N, 3] float64 in the ego frame."""
    return points[:, :3].astype(np.float64) @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]


def _mat(nusc, table, token):
    """4x4 transform of a devkit calibrated_sensor / ego_pose record."""
    from pyquaternion import Quaternion
    rec = nusc.get(table, token)
    M = np.eye(4)
    M[:3, :3] = Quaternion(rec['rotation']).rotation_matrix
    M[:3, 3] = rec['translation']
    return M


def _sensor2ego(nusc, sd):
    return _mat(nusc, 'calibrated_sensor', sd['calibrated_sensor_token'])


def _ego2global(nusc, sd):
    return _mat(nusc, 'ego_pose', sd['ego_pose_token'])


def test_infos_fields_and_splits(synthetic):
    from nuscenes.utils.splits import create_splits_scenes
    root, summary = synthetic
    splits = create_splits_scenes()
    for split, devkit in (('train', 'mini_train'), ('val', 'mini_val')):
        data = _load(root / f'synthetic_infos_{split}.pkl')
        assert data['metadata']['version'] == 'v1.0-mini'
        assert data['metadata']['dataset'] == 'synthetic'
        infos = data['infos']
        assert summary['splits'][split]['samples'] == len(infos)
        keys = [(i['scene_name'], i['timestamp']) for i in infos]
        assert keys == sorted(keys)
        for i, info in enumerate(infos):
            assert info['scene_name'] in splits[devkit]
            for k in ('lidar2ego', 'ego2global'):
                assert info[k].shape == (4, 4) and info[k].dtype == np.float64
            assert info['occ_path'] == f'gts/{info["scene_name"]}/{info["token"]}/labels.npz'
            assert (root / info['occ_path']).is_file() and (root / info['label2d_path']).is_file()
            assert (root / info['lidar_path']).is_file()
            assert set(info['cams']) >= set(CAMS)
            for cam in info['cams'].values():
                assert (root / cam['data_path']).is_file()
                assert cam['cam_intrinsic'].shape == (3, 3)
                assert cam['sensor2ego'].shape == cam['ego2global'].shape == (4, 4)
            # adjacent keyframes: up to SWEEPS on each side within the scene, t-k .. t+k
            same = [j for j, o in enumerate(infos) if o['scene_name'] == info['scene_name']]
            t = same.index(i)
            window = range(max(0, t - SWEEPS), min(len(same), t + SWEEPS + 1))
            exp = [infos[same[j]]['token'] for j in window if j != t]
            assert info['adjacent'] == exp
            assert info['prev'] == (infos[same[t - 1]]['token'] if t > 0 else '')


def test_label_files_match_devkit_projection(synthetic):
    """The stored labels equal a projection of the LiDAR sweep whose classes come straight from
    devkit's LidarsegClassMapper (for the common classes) and whose calibration comes from the
    devkit tables."""
    from nuscenes import NuScenes
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper

    root, _ = synthetic
    nusc = NuScenes('v1.0-mini', str(root), verbose=False)
    mapper = LidarsegClassMapper(nusc)
    info = _load(root / 'synthetic_infos_val.pkl')['infos'][0]
    sample = nusc.get('sample', info['token'])
    lsd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
    points = load_lidar_bin(root / lsd['filename'])
    fine = np.fromfile(root / nusc.get('lidarseg', lsd['token'])['filename'], dtype=np.uint8)
    coarse = np.array([mapper.fine_idx_2_coarse_idx_mapping[int(f)] for f in fine])
    # coarse 0 ('ignore'): 'noise' and 'vehicle.ego' get no label, the rare classes are 'others'
    names = nusc.lidarseg_idx2name_mapping
    expected = np.where(coarse != 0, coarse,
                        [255 if names[int(f)] in ('noise', 'vehicle.ego') else 0 for f in fine])
    stored = np.load(root / info['label2d_path'])
    n_checked = 0
    for ch in CAMS:
        sd = nusc.get('sample_data', sample['data'][ch])
        cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        lidar2cam = (rigid_inverse_np(_sensor2ego(nusc, sd))
                     @ rigid_inverse_np(_ego2global(nusc, sd))
                     @ _ego2global(nusc, lsd) @ _sensor2ego(nusc, lsd))
        u, v, depth, idx = project_points_to_image(points, lidar2cam,
                                                   np.asarray(cs['camera_intrinsic']),
                                                   sd['width'], sd['height'])
        np.testing.assert_array_equal(stored[f'{ch}_u'], u)
        np.testing.assert_array_equal(stored[f'{ch}_v'], v)
        np.testing.assert_allclose(stored[f'{ch}_depth'], depth, rtol=1e-6)
        lab = stored[f'{ch}_label']
        assert stored[f'{ch}_u'].dtype == np.uint16 and lab.dtype == np.uint8
        np.testing.assert_array_equal(lab, expected[idx])  # 1..16 are devkit's coarse ids
        n_checked += len(u)
    assert n_checked > 0


def _dataset(root, split, size, label_downsample, num_adjacent, aug=False, occ=True):
    cfg = dict(type='Occ3DNuScenesDataset', ann_file=f'synthetic_infos_{split}.pkl',
               data_root=str(root), camera_names=CAMS, num_adjacent=num_adjacent,
               pipeline=_pipeline(size, label_downsample, occ=occ, aug=aug))
    return DATASETS.build(cfg)


def test_dataset_contract_and_geometry(synthetic):
    root, _ = synthetic
    size, ds_factor = (64, 32), 2  # shrink (x 2/3 +- jitter), crop, labels at 32 x 16
    ds = _dataset(root, 'train', size, ds_factor, num_adjacent=SWEEPS, aug=True)
    assert len(ds) == len(_load(root / 'synthetic_infos_train.pkl')['infos'])
    np.random.seed(0)
    out = ds[1]
    check_contract(out, 1 + 2 * SWEEPS, size, ds_factor)
    info = ds.get_data_info(1)
    points = load_lidar_bin(info['lidar_path'])
    label_file = np.load(info['label2d_path'])
    assert out['meta']['sample_token'] == info['token']
    pts_ego = _to_ego(points, info['lidar2ego'])
    # the class of every stored LiDAR point, from the label file of the current frame
    n = 0
    for v, ch in enumerate(CAMS):
        cam = info['cams'][ch]
        l2c = lidar_to_camera(info['lidar2ego'], info['ego2global'], cam['ego2global'],
                              cam['sensor2ego'])
        _, _, _, idx = project_points_to_image(points, l2c, cam['cam2img'], cam['width'],
                                               cam['height'])
        labels = np.full(len(points), -1, np.int64)
        labels[idx] = label_file[f'{ch}_label']
        K = out['render_Ks'][v].double().numpy()
        scale = K[0, 0] / cam['cam2img'][0, 0]
        n += check_label_geometry(pts_ego, labels, out['render_viewmats'][v].double().numpy(), K,
                                  out['gt_depth'][v].numpy(), out['gt_semantics'][v].numpy(),
                                  tol_px=0.5 + 0.5 * scale + 1e-3, candidates=labels >= 0)
    assert n > 300


def test_adjacent_frames_viewmats_and_labels(synthetic):
    """Adjacent views: the viewmat is current ego -> global -> adjacent ego (camera time) ->
    camera, from the devkit tables; the adjacent frame's own LiDAR points, moved into the current
    ego frame through the global frame, land on its labelled pixels with their depths."""
    from nuscenes import NuScenes

    root, _ = synthetic
    nusc = NuScenes('v1.0-mini', str(root), verbose=False)
    size = (128, 48)  # enlarge 96 x 54 -> 128 x 72, crop the top 24 rows
    ds = _dataset(root, 'train', size, 1, num_adjacent=SWEEPS, occ=False)
    infos = _load(root / 'synthetic_infos_train.pkl')['infos']
    assert len(infos) == 3
    # slot order t-1, t+1; a missing side is filled from the other side (dataset docstring)
    expected_offsets = {0: [1, 1], 1: [-1, 1], 2: [-1, -1]}
    for i in (0, 1, 2):
        out = ds[i]
        cur = nusc.get('sample', infos[i]['token'])
        cur_lidar = nusc.get('sample_data', cur['data']['LIDAR_TOP'])
        ego_cur2global = _ego2global(nusc, cur_lidar)
        offsets = out['render_frame_offset'].tolist()
        assert offsets == [0] * len(CAMS) + sum([[o] * len(CAMS) for o in expected_offsets[i]], [])
        for f in range(1, 1 + 2 * SWEEPS):
            off = offsets[f * len(CAMS)]
            # walk prev/next in the devkit tables
            adj = cur
            for _ in range(abs(off)):
                adj = nusc.get('sample', adj['prev' if off < 0 else 'next'])
            adj_lidar = nusc.get('sample_data', adj['data']['LIDAR_TOP'])
            to_cur = (rigid_inverse_np(ego_cur2global) @ _ego2global(nusc, adj_lidar)
                      @ _sensor2ego(nusc, adj_lidar))  # adjacent LiDAR -> current ego
            pts_cur = _to_ego(load_lidar_bin(root / adj_lidar['filename']), to_cur)
            for c, ch in enumerate(CAMS):
                v = f * len(CAMS) + c
                sd = nusc.get('sample_data', adj['data'][ch])
                exp = (rigid_inverse_np(_sensor2ego(nusc, sd))
                       @ rigid_inverse_np(_ego2global(nusc, sd)) @ ego_cur2global)
                np.testing.assert_allclose(out['render_viewmats'][v].double().numpy(), exp,
                                           atol=2e-4 * max(1.0, np.abs(exp[:3, 3]).max()))
                K = out['render_Ks'][v].double().numpy()
                cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
                scale = K[0, 0] / cs['camera_intrinsic'][0][0]
                d = out['gt_depth'][v].numpy()
                assert (d > 0).sum() > 50, (i, f, ch)
                check_label_geometry(pts_cur, np.full(len(pts_cur), -1),
                                     out['render_viewmats'][v].double().numpy(), K, d,
                                     np.full(d.shape, -1), tol_px=0.5 + 0.5 * scale + 2e-3,
                                     max_pixels=50)


def test_collate_stacks_batch(synthetic):
    from mmengine.dataset import default_collate
    root, _ = synthetic
    ds = _dataset(root, 'val', (96, 32), 1, num_adjacent=SWEEPS)
    batch = default_collate([ds[0], ds[1]])
    assert batch['img'].shape == (2, len(CAMS), 3, 32, 96)
    assert batch['gt_depth'].shape == (2, (1 + 2 * SWEEPS) * len(CAMS), 32, 96)
    assert batch['voxel_semantics'].shape == (2,) + OCC_SIZE
    assert batch['meta']['ego2global'].shape == (2, 4, 4)
    assert list(batch['meta']['sample_token']) == [ds.get_data_info(i)['token'] for i in (0, 1)]


def _partial_root(src: Path, dst: Path, skip):
    dst.mkdir()
    for p in src.iterdir():
        if p.name not in skip:
            (dst / p.name).symlink_to(p)
    return dst


def test_converter_errors(synthetic, tmp_path):
    root, _ = synthetic
    with pytest.raises(NuScenesDataError,
                       match=r'v1\.0-trainval/sample\.json is missing.*v1\.0-mini'):
        create_nuscenes_infos(root, 'v1.0-trainval', out_dir=tmp_path, progress=False)
    no_seg = _partial_root(root, tmp_path / 'noseg', {'lidarseg'})
    with pytest.raises(NuScenesDataError, match='nuScenes-lidarseg is a separate download'):
        create_nuscenes_infos(no_seg, 'v1.0-mini', out_dir=tmp_path, progress=False)
    no_gts = _partial_root(root, tmp_path / 'nogts', {'gts'})
    with pytest.raises(NuScenesDataError,
                       match=r'Occ3D-nuScenes ground truth is a separate download.*'
                             r'gts/<scene_name>/<sample_token>/labels\.npz'):
        create_nuscenes_infos(no_gts, 'v1.0-mini', out_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob('*.pkl'))  # nothing half-written


def test_missing_image_is_a_clear_error(synthetic, tmp_path):
    root, _ = synthetic
    data = _load(root / 'synthetic_infos_val.pkl')
    data['infos'][0]['cams'][CAMS[0]]['data_path'] = 'samples/nope.jpg'
    bad = tmp_path / 'bad_infos.pkl'
    with open(bad, 'wb') as f:
        pickle.dump(data, f)
    ds = DATASETS.build(dict(type='Occ3DNuScenesDataset', ann_file=str(bad), data_root=str(root),
                             camera_names=CAMS, pipeline=_pipeline((96, 32), 1), test_mode=True))
    with pytest.raises(FileNotFoundError, match='camera image not found: .*samples/nope.jpg'):
        ds[0]
    corrupt = tmp_path / 'corrupt.jpg'
    corrupt.write_bytes(b'\xff\xd8 not really a jpeg')
    data['infos'][0]['cams'][CAMS[0]]['data_path'] = str(corrupt)
    with open(bad, 'wb') as f:
        pickle.dump(data, f)
    ds = DATASETS.build(dict(type='Occ3DNuScenesDataset', ann_file=str(bad), data_root=str(root),
                             camera_names=CAMS, pipeline=_pipeline((96, 32), 1), test_mode=True))
    with pytest.raises(OSError, match='corrupt.jpg cannot be decoded'):
        ds[0]


def test_top_down_highest_class():
    top_down = visual_data.top_down
    sem = np.full((2, 3, 4), 17, np.uint8)
    sem[0, 0, 0] = 11  # road at the bottom, car above it: the car is seen from above
    sem[0, 0, 2] = 4
    sem[1, 2, 3] = 16  # only the top voxel
    sem[1, 1, 0] = 13
    exp = np.array([[4, 17, 17], [17, 13, 16]])
    np.testing.assert_array_equal(top_down(sem, 17), exp)


def test_visual_data_tool_writes_png(synthetic, tmp_path):
    from PIL import Image
    root, _ = synthetic
    out = tmp_path / 'vis' / 'sample.png'
    rc = visual_data.main(['--info', str(root / 'synthetic_infos_val.pkl'),
                           '--data-root', str(root), '--index', '1', '--out', str(out),
                           '--dpi', '40'])
    assert rc == 0
    with Image.open(out) as im:
        assert im.format == 'PNG' and im.size[0] > 500 and im.size[1] > 300
    assert [p.name for p in out.parent.iterdir()] == ['sample.png']  # no temporary left
