"""Occ3DMetric: mmengine batches (default_collate), real frames, ray origins, errors."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate

from splattingocc.evaluation.functional.occ_miou import confusion_matrix, miou_from_confusion
from splattingocc.evaluation.metrics import Occ3DMetric
from splattingocc.evaluation.ray_origins import pad_ray_origins
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import METRICS

FILES = ['29796060110c4163b07f06eff4af0753.labels.npz', 'occupancy-vis-demo.labels.npz']


@pytest.fixture(scope='module')
def ds_cfg():
    return Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))


def _metric(ds_cfg, **kw):
    return METRICS.build(dict(type='Occ3DMetric', class_names=ds_cfg.class_names,
                              num_classes=ds_cfg.num_classes, free_label=ds_cfg.free_label,
                              pc_range=ds_cfg.point_cloud_range, voxel_size=ds_cfg.voxel_size,
                              **kw))


def _origins(k):
    xs = np.linspace(-15, 15, k)
    return np.stack([xs, 0.2 * xs, np.full(k, 1.84)], 1)


def _samples(realdata, with_origins=True):
    out = []
    for i, f in enumerate(FILES):
        d = np.load(realdata / 'occ3d' / f)
        meta = dict(sample_token=f'tok{i}', scene_name='scene-x', timestamp=i,
                    occ_path=str(realdata / 'occ3d' / f), lidar2ego=np.eye(4),
                    ego2global=np.eye(4), sample_idx=i)
        if with_origins:
            meta['ray_origins'] = pad_ray_origins(_origins(3 + i))
        out.append(dict(voxel_semantics=torch.from_numpy(d['semantics']),
                        mask_camera=torch.from_numpy(d['mask_camera']),
                        mask_lidar=torch.from_numpy(d['mask_lidar']), meta=meta))
    return out


def _perturb(gt, seed):
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, 1, axis=1)
    flip = rng.random(gt.shape) < 0.03
    pred[flip] = rng.integers(0, 18, flip.sum())
    return pred


def test_ground_truth_against_itself_gives_100(realdata, ds_cfg):
    metric = _metric(ds_cfg, metrics=['miou', 'ray'])
    batch = default_collate(_samples(realdata))
    assert batch['meta']['ray_origins'].shape == (2, 8, 3)  # collated, NaN-padded
    outputs = [dict(semantics=batch['voxel_semantics'][i].numpy(), sample_token=f'tok{i}',
                    scene_name='scene-x') for i in range(2)]
    metric.process(batch, outputs)
    assert len(metric.results) == 2
    res = metric.evaluate(size=2)
    assert res['mIoU'] == pytest.approx(100.0)
    assert res['geometry_IoU'] == pytest.approx(100.0)
    assert res['mIoU_no_mask'] == pytest.approx(100.0)
    for key in ('RayIoU', 'RayIoU@1', 'RayIoU@2', 'RayIoU@4'):
        assert res[key] == pytest.approx(100.0)
    assert res['frames'] == 2
    assert 'free' not in res and 'others' in res


def test_perturbed_scores_equal_functional_sums(realdata, ds_cfg):
    metric = _metric(ds_cfg, metrics=['miou'])
    samples = _samples(realdata)
    hist = np.zeros((18, 18), np.int64)
    hist_nm = np.zeros((18, 18), np.int64)
    for i, s in enumerate(samples):  # batches of one, pseudo-collated list form
        pred = _perturb(s['voxel_semantics'].numpy(), i)
        metric.process([s], [dict(semantics=pred, sample_token=f'tok{i}')])
        hist += confusion_matrix(pred, s['voxel_semantics'].numpy(), s['mask_camera'].numpy())
        hist_nm += confusion_matrix(pred, s['voxel_semantics'].numpy(), None)
    res = metric.evaluate(size=2)
    assert res['mIoU'] == pytest.approx(100 * miou_from_confusion(hist, 17), abs=1e-3)
    assert res['mIoU_no_mask'] == pytest.approx(100 * miou_from_confusion(hist_nm, 17), abs=1e-3)
    assert res['mIoU'] < 90
    assert 'RayIoU' not in res


def test_origins_from_ann_file_and_gt_from_occ_path(realdata, ds_cfg, tmp_path):
    # infos: frame i's lidar 1.84 m above ego; two frames 6 m apart in one scene
    infos = []
    for i in range(2):
        l2e = np.eye(4)
        l2e[:3, 3] = [0.9, 0.0, 1.84]
        e2g = np.eye(4)
        e2g[:3, 3] = [500.0 + 6.0 * i, 20.0, 0.0]
        infos.append(dict(token=f'tok{i}', scene_name='scene-x', timestamp=i, lidar2ego=l2e,
                          ego2global=e2g))
    ann = tmp_path / 'infos.pkl'
    with open(ann, 'wb') as f:
        pickle.dump({'metadata': {}, 'infos': infos}, f)
    metric = _metric(ds_cfg, metrics=['miou', 'ray'], ann_file=str(ann))
    samples = _samples(realdata, with_origins=False)
    for s in samples:  # the pipeline did not load the gt: the metric reads meta['occ_path']
        del s['voxel_semantics'], s['mask_camera'], s['mask_lidar']
    batch = default_collate(samples)
    preds = [np.load(realdata / 'occ3d' / f)['semantics'] for f in FILES]
    metric.process(batch, [dict(semantics=preds[i], sample_token=f'tok{i}') for i in range(2)])
    res = metric.evaluate(size=2)
    assert res['mIoU'] == pytest.approx(100.0) and res['RayIoU'] == pytest.approx(100.0)


def test_errors(realdata, ds_cfg):
    with pytest.raises(ValueError, match='pc_range'):
        Occ3DMetric(ds_cfg.class_names, 18, 17, metrics=['ray'])
    with pytest.raises(ValueError, match='unknown metrics'):
        _metric(ds_cfg, metrics=['bogus'])
    metric = _metric(ds_cfg, metrics=['miou', 'ray'])
    batch = default_collate(_samples(realdata, with_origins=False))
    gt0 = batch['voxel_semantics'][0].numpy()
    with pytest.raises(KeyError, match='ray origins'):
        metric.process(batch, [dict(semantics=gt0, sample_token='tok0')] * 2)
    metric = _metric(ds_cfg)
    with pytest.raises(ValueError, match='tok9.*tok0'):
        metric.process(batch, [dict(semantics=gt0, sample_token='tok9')] * 2)
    bad = gt0.copy()
    bad[0, 0, 0] = 30
    with pytest.raises(ValueError, match=r'sample tok0.*out of range \[30\]'):
        metric.process(batch, [dict(semantics=bad, sample_token='tok0')])
    with pytest.raises(KeyError, match="'semantics'"):
        metric.process(batch, [dict(pred=gt0)])
