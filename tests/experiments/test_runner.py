"""splattingocc.experiments.runner: the commands of each arm, continuation and failures.

The runner is driven with a fake command runner (fake_tools.py), so these tests run no training.
"""
import argparse
import json
from pathlib import Path

import pytest
from fake_tools import BASE, FakeTools, make_runner, options
from mmengine.config import Config, DictAction

from splattingocc.errors import UserError
from splattingocc.experiments import Budget, apply_overrides, config_diff, parse_arms


def test_arm_command_line_equals_the_merged_config(base, tmp_path):
    """What train.py builds from the arm's --cfg-options is base + overrides; an arm without a
    command-line form (a pipeline list) is written as a config file with the same content."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    arms = parse_arms(['nerf,3d,rays=model.supervision.0.pixel_sampler.num_rays=[100,200]'], base)
    runner = make_runner(tmp_path, base, arms='splat')
    for arm in arms:
        config, tokens = runner.config_for(arm)
        expected = apply_overrides(base, arm.overrides)
        if arm.name in ('nerf', '3d'):  # supervision lists: written as config files
            assert arm.cli_tokens() is None and tokens == []
            assert config == str(tmp_path / 'out' / 'configs' / f'{arm.name}.py')
            assert config_diff(expected, Config.fromfile(config)) == {}
            continue
        assert config == BASE and tokens
        cli = parser.parse_args(['--cfg-options', *tokens]).cfg_options
        got = Config.fromfile(BASE)
        got.merge_from_dict(cli)
        assert config_diff(expected, got) == {}, arm.name


def test_train_commands_differ_only_in_the_arm(base, tmp_path):
    runner = make_runner(tmp_path, base, evals=4,
                         arms='splat,rays=model.supervision.0.pixel_sampler.num_rays=512',
                         common_options=['train_dataloader.num_workers=0'])
    splat, rays = runner.arms
    a = runner.train_command(splat, 3, 'W', 40)
    b = runner.train_command(rays, 3, 'W', 40)
    ta, tb = options(a), options(b)
    arm_keys = set(rays.overrides)
    assert set(tb) - set(ta) == arm_keys and set(ta) - set(tb) == set()
    assert {k: v for k, v in tb.items() if k not in arm_keys} == ta
    assert a[:a.index('--cfg-options')] == b[:b.index('--cfg-options')]
    assert ta['randomness.seed'] == '3' and ta['train_cfg.max_iters'] == '40'
    assert ta['train_cfg.val_interval'] == '10' and ta['param_scheduler.1.end'] == '40'
    assert ta['default_hooks.ablation_timer.type'] == 'TimeBudgetHook'
    assert 'splattingocc.experiments.budget' in ta['custom_imports.imports']
    assert ta['train_dataloader.num_workers'] == '0'


def test_protocol_calibrates_on_val_and_tests_on_test(base, tmp_path):
    """A thresholded read-out is calibrated on val (tools/test.py --calibrate) and tested with
    --require-calibration; an argmax read-out is tested directly; render only where the arm
    renders; every number carries its split and the read-out it used."""
    fake = FakeTools()
    runner = make_runner(tmp_path, base, arms='splat,nerf,3d', seeds=(1,), fake=fake,
                         evals=2)
    assert {n: (i['readout'], i['renders']) for n, i in runner.arm_info.items()} == {
        'splat': ('threshold', True), 'nerf': ('threshold', True), '3d': ('argmax', False)}
    summary = runner.run()
    calibrated = [Path(c[1]).parent.parent.name for c in fake.tools('calibrate')]
    assert calibrated == ['splat', 'nerf']  # not the argmax arm
    for _, work_dir, cmd in fake.tools('test'):
        arm = Path(work_dir).parent.parent.name
        evals = cmd[cmd.index('--eval') + 1:cmd.index('--eval') + 5]
        if arm == '3d':
            assert '--require-calibration' not in cmd and 'render' not in evals
        else:
            assert '--require-calibration' in cmd and 'render' in evals
    # the learning curve asks the val evaluator for the sweep only where there is a threshold
    trains = {Path(c[1]).parent.name: options(c[2]) for c in fake.tools('train')}
    assert trains['splat']['val_evaluator.metrics'] == '[miou,sweep]'
    assert 'val_evaluator.metrics' not in trains['3d']
    runs = {a['name']: a['runs'][0] for a in summary['budgets'][0]['arms']}
    splat, threed = runs['splat'], runs['3d']
    assert splat['test']['split'] == 'test' and splat['labels'] == []
    assert splat['readout']['kind'] == 'threshold' and splat['readout']['chosen_on'] == 'val'
    assert splat['readout']['threshold'] == pytest.approx(0.31)  # the fake: 0.3 + seed / 100
    assert splat['test']['threshold'] == pytest.approx(0.31)
    assert splat['readout']['curve']['miou'] == [10.0, 33.0, 5.0]
    assert threed['readout']['kind'] == 'argmax' and threed['readout']['threshold'] is None
    assert [t['readout'] for t in splat['timeline']] == ['threshold chosen on val at this '
                                                         'point'] * 2
    assert [t['readout'] for t in threed['timeline']] == ['argmax'] * 2
    assert all(t['split'] == 'val' for t in splat['timeline'])
    assert splat['metrics']['depth_AbsRel'] == 0.1 and 'depth_AbsRel' not in threed['metrics']


def test_test_refused_without_calibration_is_a_failed_run(base, tmp_path):
    fake = FakeTools(fail={('splat', 'calibrate')})
    summary = make_runner(tmp_path, base, arms='splat', fake=fake).run()
    run = summary['budgets'][0]['arms'][0]['runs'][0]
    assert run['status'] == 'failed' and run['phase'] == 'calibrate'
    assert fake.tools('test') == []  # never tested with an uncalibrated threshold


def test_continuation_does_not_rerun_finished_runs(base, tmp_path):
    fake = FakeTools()
    make_runner(tmp_path, base, seeds=(0, 1), fake=fake).run()
    assert len(fake.tools('train')) == 4 and len(fake.tools('test')) == 4
    result = tmp_path / 'out' / 'iters-40' / 'nerf' / 'seed1' / 'result.json'
    before = result.read_text()
    again = FakeTools()
    summary = make_runner(tmp_path, base, seeds=(0, 1), fake=again).run()
    assert again.calls == []
    assert result.read_text() == before
    assert [a['mIoU_mean'] for a in summary['budgets'][0]['arms']] == [30.5, 20.5]
    # an added seed runs only the new (arm, seed) pairs
    more = FakeTools()
    make_runner(tmp_path, base, seeds=(0, 1, 2), fake=more).run()
    assert sorted(Path(c[1]).name for c in more.tools('train')) == ['seed2', 'seed2']
    # another budget goes to its own folder; other options in the same folder are refused
    other = FakeTools()
    make_runner(tmp_path, base, seeds=(0,), fake=other, budgets=Budget(iters=41)).run()
    assert {Path(c[1]).parts[-3] for c in other.tools('train')} == {'iters-41'}
    with pytest.raises(UserError, match='different setup'):
        make_runner(tmp_path, base, seeds=(0,), fake=FakeTools(),
                    common_options=['train_dataloader.num_workers=0']).run()


def test_interrupted_training_resumes(base, tmp_path):
    run_dir = tmp_path / 'out' / 'iters-40' / 'splat' / 'seed0'
    run_dir.mkdir(parents=True)
    (run_dir / 'iter_20.pth').write_bytes(b'w')
    (run_dir / 'last_checkpoint').write_text(str(run_dir / 'iter_20.pth'))
    fake = FakeTools()
    make_runner(tmp_path, base, arms='splat,nerf', fake=fake).run()
    cmds = {Path(c[1]).parent.name: c[2] for c in fake.tools('train')}
    assert '--resume' in cmds['splat'] and '--resume' not in cmds['nerf']


def test_failing_arm_is_isolated_reported_and_retried(base, tmp_path):
    fake = FakeTools(fail={('nerf', 'train')})
    summary = make_runner(tmp_path, base, arms='splat,nerf,2d3d', fake=fake).run()
    arms = summary['budgets'][0]['arms']
    status = {a['name']: [r['status'] for r in a['runs']] for a in arms}
    assert status == {'splat': ['ok'], 'nerf': ['failed'], '2d3d': ['ok']}
    nerf_dir = tmp_path / 'out' / 'iters-40' / 'nerf' / 'seed0'
    failed = json.loads((nerf_dir / 'result.json').read_text())
    assert failed['phase'] == 'train' and failed['returncode'] == 1
    assert 'boom in fake' in failed['error_tail']
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert '## Failed runs' in md and 'boom in fake' in md
    assert '| splat | 1/1 | test | 30.00 (1 seed) |' in md and '| nerf | 0/1 | n/a | n/a |' in md
    # a test-phase failure is isolated the same way
    fake2 = FakeTools(fail={('nerf', 'test')})
    make_runner(tmp_path, base, arms='splat,nerf,2d3d', fake=fake2).run()
    assert [Path(c[1]).parent.name for c in fake2.tools('train')] == ['nerf']
    assert json.loads((nerf_dir / 'result.json').read_text())['phase'] == 'test'
    # the next call retries only the failed run; after a failed test the training is resumed
    # (it is finished), after a failed training it starts from scratch
    fixed = FakeTools()
    summary = make_runner(tmp_path, base, arms='splat,nerf,2d3d', fake=fixed).run()
    assert [Path(c[1]).parent.name for c in fixed.tools('train')] == ['nerf']
    assert '--resume' in fixed.tools('train')[0][2]
    assert all(r['status'] == 'ok' for a in summary['budgets'][0]['arms'] for r in a['runs'])


def test_arm_seeds_run_more_seeds_for_some_arms(base, tmp_path):
    """5 seeds for the headline pair, 3 for the rest; pairs use the seeds both arms ran."""
    fake = FakeTools()
    summary = make_runner(tmp_path, base, arms='splat,nerf,3d', seeds=(0, 1, 2), fake=fake,
                          arm_seeds={'splat': [0, 1, 2, 3, 4], 'nerf': [0, 1, 2, 3, 4]}).run()
    trained = [(Path(c[1]).parent.name, Path(c[1]).name) for c in fake.tools('train')]
    assert trained[:3] == [('splat', 'seed0'), ('nerf', 'seed0'), ('3d', 'seed0')]
    assert trained[-2:] == [('splat', 'seed4'), ('nerf', 'seed4')] and len(trained) == 13
    arms = {a['name']: a for a in summary['budgets'][0]['arms']}
    assert arms['splat']['seeds_ok'] == [0, 1, 2, 3, 4] and arms['3d']['seeds_ok'] == [0, 1, 2]
    pairs = {(p['a'], p['b'], p['metric']): p for p in summary['budgets'][0]['pairs']}
    assert pairs[('splat', 'nerf', 'mIoU')]['seeds'] == [0, 1, 2, 3, 4]
    assert pairs[('splat', '3d', 'mIoU')]['seeds'] == [0, 1, 2]
    with pytest.raises(UserError, match='no such arm'):
        make_runner(tmp_path, base, arms='splat', arm_seeds={'nerf': [0]})


def test_an_arm_name_with_a_plus_is_its_folder(base, tmp_path):
    """'3d+render' runs in OUT/<budget>/3d+render/seed<k> (a '+' needs no quoting) and is reported by
    that name."""
    fake = FakeTools()
    summary = make_runner(tmp_path, base, arms='3d+render', fake=fake).run()
    assert (tmp_path / 'out' / 'iters-40' / '3d+render' / 'seed0' / 'result.json').exists()
    assert [Path(c[1]).parent.name for c in fake.tools('train')] == ['3d+render']
    assert [a['name'] for a in summary['budgets'][0]['arms']] == ['3d+render']
    assert summary['budgets'][0]['arms'][0]['mIoU_mean'] == FakeTools.MIOU['3d+render']
