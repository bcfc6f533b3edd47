"""tools/train.py and tools/test.py in-process on the toy model: evaluation, JSON, dumps, errors."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))  # toy_components

import splattingocc.engine  # noqa: F401,E402
from splattingocc.cli import test as test_tool  # noqa: E402
from splattingocc.cli import train as train_tool  # noqa: E402
from splattingocc.engine.launch import (evaluator_metric_cfgs, normalize_evaluators,  # noqa: E402
                                        resolve_dist_backend, run_main)
from toy_components import TOY_CONFIG, ToyOccDataset, unique_name  # noqa: E402


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('train')
    runner = train_tool.main([TOY_CONFIG, '--work-dir', str(work_dir), '--cfg-options',
                              f'experiment_name={unique_name()}'])
    return dict(work_dir=work_dir, ckpt=work_dir / 'iter_8.pth', model=runner.model)


def _test(ckpt, work_dir, *extra):
    return test_tool.main([TOY_CONFIG, str(ckpt), '--work-dir', str(work_dir), *extra,
                           '--cfg-options', f'experiment_name={unique_name()}'])


def test_test_tool_segm_ray_json_and_dump(trained, tmp_path):
    dump = tmp_path / 'dump'
    metrics = _test(trained['ckpt'], tmp_path / 'work', '--eval', 'segm', 'ray', '--dump-dir',
                    str(dump), '--gpu-collect')
    assert set(metrics) == {'mIoU', 'geometry_IoU', 'frames', 'RayIoU'}  # 'ray' reached the metric
    assert metrics['frames'] == 5
    # JSON in the run's folder of the work dir, identical numbers
    found = list((tmp_path / 'work').glob('*/metrics.json'))
    assert len(found) == 1
    saved = json.loads(found[0].read_text())
    assert saved['metrics'] == pytest.approx(dict(metrics))
    assert saved['eval'] == ['segm', 'ray'] and saved['checkpoint'] == str(trained['ckpt'])
    # one pred.npz per sample, equal to the model's own prediction
    files = sorted(dump.glob('*/*/pred.npz'))
    assert len(files) == 5
    data = ToyOccDataset(length=5, seed=1)
    model = trained['model'].eval()
    for index in range(5):
        sample = data[index]
        path = dump / sample['meta']['scene_name'] / sample['meta']['sample_token'] / 'pred.npz'
        with torch.no_grad():
            pred = model(x=sample['x'][None], mode='predict',
                         meta={k: [v] for k, v in sample['meta'].items()})[0]['semantics']
        with np.load(path) as z:
            assert z['semantics'].dtype == np.uint8 and z['semantics'].shape == (4, 4, 2)
            np.testing.assert_array_equal(z['semantics'], pred)


def test_test_tool_segm_only(trained, tmp_path):
    metrics = _test(trained['ckpt'], tmp_path)
    assert 'RayIoU' not in metrics and metrics['frames'] == 5


def test_eval_choice_mapping_and_summary():
    assert test_tool.eval_metrics(['segm']) == ['miou']
    assert test_tool.eval_metrics(['segm', 'ray']) == ['miou', 'ray']
    assert test_tool.eval_metrics(['ray']) == ['miou', 'ray']
    lines = test_tool.summary_lines({'occ/mIoU': 40.0, 'RayIoU': 30.0, 'IoU_car': 5.0})
    assert lines == ['occ/mIoU: 40.00', 'RayIoU: 30.00']


def test_evaluator_normalisation():
    """A lone metric dict with a 'metrics' key would be read by mmengine as an Evaluator."""
    from mmengine.config import Config
    cfg = Config(dict(val_evaluator=dict(type='Occ3DMetric', metrics=['miou']),
                      test_evaluator=dict(type='Evaluator', metrics=[dict(type='Occ3DMetric')])))
    normalize_evaluators(cfg)
    assert cfg.val_evaluator == [dict(type='Occ3DMetric', metrics=['miou'])]
    assert evaluator_metric_cfgs(cfg.test_evaluator) == [dict(type='Occ3DMetric')]


@pytest.mark.parametrize('cuda, expected', [(True, 'nccl'), (False, 'gloo')])
def test_dist_backend_auto(monkeypatch, cuda, expected):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='auto'))))
    assert resolve_dist_backend(cfg) == expected == cfg.env_cfg.dist_cfg.backend


@pytest.mark.parametrize('cuda', [True, False])
def test_deterministic_auto(monkeypatch, cuda):
    from mmengine.config import Config
    apply = __import__('splattingocc.engine.launch', fromlist=['x']).apply_randomness_args
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    cfg = Config(dict(randomness=dict(seed=0, deterministic='auto')))
    apply(cfg)
    assert cfg.randomness.deterministic is (not cuda)
    cfg = Config(dict(randomness=dict(seed=0, deterministic='auto')))
    apply(cfg, seed=5, deterministic=True)
    assert cfg.randomness == dict(seed=5, deterministic=True)


@pytest.mark.parametrize('tool, argv, message', [
    ('train', ['no/such/config.py'], 'config file no/such/config.py not found'),
    ('train', [TOY_CONFIG, '--resume', 'missing.pth'], '--resume missing.pth: no such checkpoint'),
    ('test', [TOY_CONFIG, 'missing.pth'], 'checkpoint missing.pth not found'),
])
def test_user_errors_are_one_clear_line(tool, argv, message, capsys, tmp_path):
    module = train_tool if tool == 'train' else test_tool
    assert run_main(module.main, argv + ['--work-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err


def test_amp_without_cuda_is_refused_clearly(capsys, tmp_path, monkeypatch):
    # CUDA hidden by patching, so the refusal is checked on every machine, GPU or not
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert run_main(train_tool.main, [TOY_CONFIG, '--amp', '--work-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert '--amp needs a CUDA GPU' in err and 'without --amp' in err


def test_amp_with_cuda_switches_to_the_amp_wrapper(monkeypatch):
    from mmengine.config import Config

    from splattingocc.engine import enable_amp
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='AdamW'))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'


def test_resume_with_dangling_pointer_is_a_clear_error(tmp_path, capsys):
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_99.pth'))
    assert run_main(train_tool.main, [TOY_CONFIG, '--resume', '--work-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'points to' in err and 'iter_99.pth' in err and 'does not exist' in err
