"""Occ3DMetric under a real 2-process (gloo, CPU) evaluation with an uneven split.

5 samples over 2 ranks: mmengine's DefaultSampler pads rank 1 with sample 0 again and
collect_results drops the padding; the collected scores must equal the single-process ones.
"""
import json

import numpy as np
import torch
import torch.multiprocessing as mp
from mmengine.config import Config

from splattingocc.paths import REPO_ROOT

N_SAMPLES = 5
SHAPE = (10, 10, 4)
PC_RANGE = [0.0, 0.0, 0.0, 4.0, 4.0, 1.6]


def _cfg():
    return Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))


def _sample(i):
    """A distinct small frame per index (gt, masks, prediction, ray origins)."""
    rng = np.random.default_rng(100 + i)
    gt = np.where(rng.random(SHAPE) < 0.3, rng.integers(0, 17, SHAPE), 17).astype(np.uint8)
    pred = np.where(rng.random(SHAPE) < 0.7, gt, rng.integers(0, 18, SHAPE)).astype(np.uint8)
    mask = (rng.random(SHAPE) < 0.6).astype(np.uint8)
    origins = np.full((8, 3), np.nan, np.float32)
    origins[:2] = [[2.0, 2.0, 0.8], [1.0 + 0.3 * i, 3.0, 0.5]]
    return pred, dict(voxel_semantics=torch.from_numpy(gt), mask_camera=torch.from_numpy(mask),
                      mask_lidar=torch.from_numpy(np.ones_like(mask)),
                      meta=dict(sample_token=f'tok{i}', scene_name='s', ray_origins=origins))


def _build_metric(collect_dir=None):
    from splattingocc.evaluation.metrics import Occ3DMetric
    cfg = _cfg()
    return Occ3DMetric(cfg.class_names, cfg.num_classes, cfg.free_label, pc_range=PC_RANGE,
                       voxel_size=cfg.voxel_size, metrics=['miou', 'ray'],
                       collect_dir=collect_dir)


def _run(metric, indices, batch_size=2):
    from mmengine.dataset import default_collate
    for s in range(0, len(indices), batch_size):
        items = [_sample(i) for i in indices[s:s + batch_size]]
        batch = default_collate([it[1] for it in items])
        metric.process(batch, [dict(semantics=p, sample_token=f'tok{i}')
                               for (p, _), i in zip(items, indices[s:s + batch_size])])


def _worker(rank, world_size, tmpdir):
    import torch.distributed as dist
    from mmengine.dataset import DefaultSampler
    dist.init_process_group('gloo', init_method=f'file://{tmpdir}/rendezvous', rank=rank,
                            world_size=world_size)
    try:
        sampler = DefaultSampler(list(range(N_SAMPLES)), shuffle=False, round_up=True)
        indices = list(iter(sampler))
        metric = _build_metric(collect_dir=f'{tmpdir}/collect')
        _run(metric, indices)
        res = metric.evaluate(size=N_SAMPLES)
        with open(f'{tmpdir}/rank{rank}.json', 'w') as f:
            json.dump({'indices': indices, 'metrics': res}, f)
    finally:
        dist.destroy_process_group()


def test_two_process_uneven_split_counts_every_sample_once(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / 'rank0.json').read_text())
    r1 = json.loads((tmp_path / 'rank1.json').read_text())
    assert r0['indices'] == [0, 2, 4] and r1['indices'] == [1, 3, 0]  # rank 1 padded with 0
    single = _build_metric()
    _run(single, list(range(N_SAMPLES)))
    expected = single.evaluate(size=N_SAMPLES)
    assert r0['metrics']['frames'] == N_SAMPLES
    for key, value in expected.items():
        assert np.isclose(r0['metrics'][key], value, equal_nan=True), key
    # and counting the padded sample twice would have changed the score
    twice = _build_metric()
    _run(twice, list(range(N_SAMPLES)) + [0])
    doubled = twice.evaluate(size=N_SAMPLES + 1)
    assert doubled['mIoU'] != expected['mIoU']
    assert 0 < expected['RayIoU'] < 100
