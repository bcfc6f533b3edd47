"""tools/ablate.py / splattingocc/ablation.py: arms, budgets, continuation, failures, outputs.

The runner is driven with a fake command runner that writes what tools/train.py and
tools/test.py would write (timer file, checkpoint pointer, metrics.json), so these tests run no
training; the TimeBudgetHook is tested inside a real (toy) mmengine training run.
"""
import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

import pytest
from mmengine.config import Config, DictAction

from splattingocc import ablation
from splattingocc.ablation import (AblationRunner, Budget, CommandResult, TimeBudgetHook,
                                   apply_overrides, arm_changes, config_diff,
                                   iterations_for_minutes, load_base_config, parse_arms,
                                   schedule_overrides, seconds_per_iter_from_calibration)
from splattingocc.errors import UserError
from splattingocc.paths import REPO_ROOT

BASE = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')
VARIANTS = {
    'nerf': REPO_ROOT / 'configs/renderocc/renderocc-tiny-synthetic.py',
    '3d': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-3d.py',
    '2d3d': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-2d3d.py',
}


@pytest.fixture(scope='module')
def base():
    return load_base_config(BASE)


# ----------------------------------------------------------------------------------------------
# a fake tools/train.py + tools/test.py
# ----------------------------------------------------------------------------------------------

def _options(cmd):
    if '--cfg-options' not in cmd:
        return {}
    tokens = cmd[cmd.index('--cfg-options') + 1:]
    return dict(t.split('=', 1) for t in tokens)


class FakeTools:
    """Writes the files the real tools write. mIoU = MIOU[arm] + seed; class IoU = mIoU / 2.

    Calibration runs report iteration times [2, 2, 2, 0.5, 0.5, ...] (s/iter 0.5 after the
    start-up); training runs take ``secs_per_iter`` per iteration.
    """

    MIOU = {'splat': 30.0, 'nerf': 20.0, '3d': 40.0, '2d3d': 45.0, 'uni': 25.0}

    def __init__(self, fail=(), secs_per_iter=0.5):
        self.calls = []
        self.fail = set(fail)  # (arm, phase) pairs that exit with status 1
        self.secs_per_iter = secs_per_iter

    def __call__(self, cmd, log_path, env):
        assert str(REPO_ROOT) in env['PYTHONPATH'].split(os.pathsep)
        tool = Path(cmd[1]).stem
        work_dir = Path(cmd[cmd.index('--work-dir') + 1])
        opts = _options(cmd)
        self.calls.append((tool, str(work_dir), cmd))
        arm = work_dir.parent.name if tool == 'train' else work_dir.parent.parent.name
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, 'a') as f:
            f.write(f'fake {tool} of {arm}\n')
            if (arm, tool) in self.fail:
                f.write('Traceback (most recent call last):\nRuntimeError: boom in fake\n')
                return CommandResult(1, 0.1, None)
        if tool == 'train':
            n = int(opts['train_cfg.max_iters'])
            timer = dict(finished=True, data_seconds=0.1 * n, render_seconds=None,
                         stopped_by_budget=False, peak_gpu_mb=None, timeline=[])
            if opts.get('default_hooks.ablation_timer.record_iter_times') == 'True':
                times = [2.0, 2.0, 2.0] + [0.5] * (n - 3)
                timer.update(iters=n, train_seconds=sum(times), iter_times=times)
            else:
                seed = int(opts['randomness.seed'])
                interval = int(opts.get('train_cfg.val_interval', n))
                timer.update(iters=n, train_seconds=n * self.secs_per_iter, iter_times=[],
                             timeline=[dict(iter=i, train_seconds=i * self.secs_per_iter,
                                            metrics=dict(mIoU=self.MIOU[arm] * i / n + seed))
                                       for i in range(interval, n + 1, interval)])
                ckpt = work_dir / f'iter_{n}.pth'
                ckpt.write_bytes(b'weights')
                (work_dir / 'last_checkpoint').write_text(str(ckpt))
            (work_dir / 'ablation_timer.json').write_text(json.dumps(timer))
            return CommandResult(0, 1.0, 321.0)
        seed = int(work_dir.parent.name[len('seed'):])
        miou = self.MIOU[arm] + seed
        run = work_dir / f'2026010{len(self.calls) % 10}_000000'
        run.mkdir(parents=True, exist_ok=True)
        metrics = {'mIoU': miou, 'geometry_IoU': 50.0, 'car': miou / 2, 'others': 1.0,
                   'frames': 3}
        (run / 'metrics.json').write_text(json.dumps(dict(metrics=metrics)))
        return CommandResult(0, 0.5, 100.0)

    def tools(self, tool):
        return [c for c in self.calls if c[0] == tool]


def make_runner(tmp_path, base_cfg, arms='splat,nerf', seeds=(0,), fake=None, **kwargs):
    kwargs.setdefault('budget', Budget(iters=40))
    kwargs.setdefault('log_file', str(tmp_path / 'log.txt'))
    kwargs.setdefault('plots', False)  # drawing is slow; test_plots_are_written draws
    runner = AblationRunner(BASE, parse_arms([arms], base_cfg), seeds,
                            out_dir=str(tmp_path / 'out'), command_runner=fake or FakeTools(),
                            progress=lambda msg: None, **kwargs)
    return runner


# ----------------------------------------------------------------------------------------------
# arm construction
# ----------------------------------------------------------------------------------------------

def test_named_arms_change_exactly_their_keys(base):
    arms = {a.name: a for a in parse_arms(['splat,nerf,3d,2d3d'], base)}
    # splat: the base itself
    assert config_diff(base, apply_overrides(base, arms['splat'].overrides)) == {}
    # nerf: only the renderer (a splatting renderer's arguments replaced, not merged)
    nerf = config_diff(base, apply_overrides(base, arms['nerf'].overrides))
    assert set(nerf) == {'model.renderer.type', 'model.renderer.step_ratio',
                         'model.renderer.eps2d', 'model.renderer.near_plane',
                         'model.renderer.tile_size'}
    assert nerf['model.renderer.type'] == ('TorchSplatRenderer', 'VolumeRenderer')
    # 3d / 2d3d: the supervision flags and the training pipeline that loads the 3D labels
    roots = {'3d': ['model.use_2d_supervision', 'model.use_3d_supervision',
                    'model.loss_lss_depth', 'model.loss_3d_grid', 'model.use_mask_camera',
                    'train_dataloader.dataset.pipeline'],
             '2d3d': ['model.use_3d_supervision', 'train_dataloader.dataset.pipeline']}
    for name, expected in roots.items():
        diff = config_diff(base, apply_overrides(base, arms[name].overrides))
        for key in diff:
            assert any(key == r or key.startswith(r + '.') for r in expected), (name, key)
        for r in expected:
            assert any(key == r or key.startswith(r + '.') for key in diff), (name, r)
        assert arm_changes(base, arms[name])['changes'].keys() == set(expected)
        assert diff['model.use_3d_supervision'] == (False, True)
    # the same configs as the hand-written variant configs of the repository
    for name, path in VARIANTS.items():
        variant = Config.fromfile(str(path))
        assert config_diff(variant, apply_overrides(base, arms[name].overrides)) == {}, name


def test_custom_arms_parse_and_check_keys(base):
    arms = parse_arms(['splat,uni=model.pixel_sampler.mode=uniform,'
                       'model.pixel_sampler.num_rays=512',
                       'iso=model.head.isotropic=True,model.head.max_scale=[0.4,0.4,0.4]'], base)
    assert [a.name for a in arms] == ['splat', 'uni', 'iso']
    assert arms[1].overrides == {'model.pixel_sampler.mode': 'uniform',
                                 'model.pixel_sampler.num_rays': 512}
    assert arms[2].overrides == {'model.head.isotropic': True,
                                 'model.head.max_scale': [0.4, 0.4, 0.4]}
    diff = config_diff(base, apply_overrides(base, arms[1].overrides))
    assert set(diff) == {'model.pixel_sampler.mode', 'model.pixel_sampler.num_rays'}
    with pytest.raises(UserError, match='pixel_samplr'):
        parse_arms(['typo=model.pixel_samplr.mode=uniform'], base)
    with pytest.raises(UserError, match='needs an arm name'):
        parse_arms(['model.pixel_sampler.mode=uniform'], base)
    with pytest.raises(UserError, match='unknown arm'):
        parse_arms(['splat,gaussian'], base)
    with pytest.raises(UserError, match='twice'):
        parse_arms(['nerf,nerf'], base)
    with pytest.raises(UserError, match='splatting renderer'):
        parse_arms(['splat'], Config.fromfile(str(VARIANTS['nerf'])))


def test_arm_command_line_equals_the_merged_config(base, tmp_path):
    """What train.py builds from the arm's --cfg-options is base + overrides; an arm without a
    command-line form (a pipeline list) is written as a config file with the same content."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    arms = parse_arms(['nerf,3d,rays=model.pixel_sampler.num_rays=[100,200]'], base)
    runner = make_runner(tmp_path, base, arms='splat')
    for arm in arms:
        config, tokens = runner.config_for(arm)
        expected = apply_overrides(base, arm.overrides)
        if arm.name == '3d':
            assert arm.cli_tokens() is None and tokens == []
            assert config == str(tmp_path / 'out' / '3d' / 'config.py')
            assert config_diff(expected, Config.fromfile(config)) == {}
            continue
        assert config == BASE and tokens
        cli = parser.parse_args(['--cfg-options', *tokens]).cfg_options
        got = Config.fromfile(BASE)
        got.merge_from_dict(cli)
        assert config_diff(expected, got) == {}, arm.name


def test_train_commands_differ_only_in_the_arm(base, tmp_path):
    runner = make_runner(tmp_path, base, arms='splat,nerf', evals=4,
                         common_options=['train_dataloader.num_workers=0'])
    splat, nerf = runner.arms
    a = runner.train_command(splat, 3, 'W', 40)
    b = runner.train_command(nerf, 3, 'W', 40)
    ta, tb = _options(a), _options(b)
    arm_keys = set(nerf.overrides)
    assert set(tb) - set(ta) == arm_keys and set(ta) - set(tb) == set()
    assert {k: v for k, v in tb.items() if k not in arm_keys} == ta
    assert a[:a.index('--cfg-options')] == b[:b.index('--cfg-options')]
    assert ta['randomness.seed'] == '3' and ta['train_cfg.max_iters'] == '40'
    assert ta['train_cfg.val_interval'] == '10' and ta['param_scheduler.1.end'] == '40'
    assert ta['default_hooks.ablation_timer.type'] == 'TimeBudgetHook'
    assert 'splattingocc.ablation' in ta['custom_imports.imports']
    assert ta['train_dataloader.num_workers'] == '0'


# ----------------------------------------------------------------------------------------------
# budget accounting
# ----------------------------------------------------------------------------------------------

def test_iteration_budget_overrides(base):
    assert schedule_overrides(base, 120, 4) == {
        'train_cfg.max_iters': 120, 'train_cfg.val_interval': 30, 'param_scheduler.1.end': 120}
    # the warm-up (end 50) is kept; no evaluations -> the val loop never starts
    assert schedule_overrides(base, 7, 0) == {
        'train_cfg.max_iters': 7, 'train_cfg.val_begin': 8, 'param_scheduler.1.end': 7}
    cfg = apply_overrides(base, schedule_overrides(base, 120, 3))
    assert cfg.train_cfg.max_iters == 120 and cfg.train_cfg.val_interval == 40
    assert [s['end'] for s in cfg.param_scheduler] == [50, 120]
    epoch_based = Config.fromfile(str(REPO_ROOT / 'configs/splattingocc/splattingocc-Nframe.py'))
    with pytest.raises(UserError, match='iteration-based'):
        schedule_overrides(epoch_based, 100, 4)


def test_minutes_budget_accounting(base, tmp_path):
    assert iterations_for_minutes(2, 0.5) == 240
    assert iterations_for_minutes(1, 7.0) == 8  # floor(60 / 7)
    assert iterations_for_minutes(0.001, 10.0) == 1  # at least one
    assert seconds_per_iter_from_calibration([9, 9, 1, 2, 3], skip=2) == pytest.approx(2.0)
    with pytest.raises(UserError):
        Budget(iters=10, minutes=1.0)
    with pytest.raises(UserError):
        Budget()

    fake = FakeTools()
    runner = make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1), fake=fake,
                         budget=Budget(minutes=2.0), calib_iters=12)
    runner.run()
    calib = [c for c in fake.tools('train') if c[1].endswith('calibration')]
    assert len(calib) == 2  # once per arm, shared by the seeds
    for _, _, cmd in calib:
        opts = _options(cmd)
        assert opts['train_cfg.max_iters'] == '12' and 'train_cfg.val_begin' in opts
        assert opts['default_hooks.checkpoint.save_last'] == 'False'
    # the fake calibration runs at 0.5 s/iteration after 3 start-up iterations -> 240 iterations
    trains = [c for c in fake.tools('train') if not c[1].endswith('calibration')]
    assert len(trains) == 4
    for _, _, cmd in trains:
        opts = _options(cmd)
        assert opts['train_cfg.max_iters'] == '240' and opts['param_scheduler.1.end'] == '240'
        assert float(opts['default_hooks.ablation_timer.max_seconds']) == 120.0
    cal = json.loads((tmp_path / 'out' / 'splat' / 'calibration.json').read_text())
    assert cal['seconds_per_iter'] == pytest.approx(0.5) and cal['iters'] == 240
    result = json.loads((tmp_path / 'out' / 'nerf' / 'seed1' / 'result.json').read_text())
    assert result['planned_iters'] == 240 and result['budget']['minutes'] == 2.0


def _toy_train(tmp_path, monkeypatch, extra, resume=False):
    sys.path.insert(0, str(REPO_ROOT / 'tests' / 'engine'))
    from toy_components import TOY_CONFIG, load_tool, unique_name
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(TimeBudgetHook, '_clock', staticmethod(lambda: float(next(ticks))))
    args = [TOY_CONFIG, '--work-dir', str(tmp_path)] + (['--resume'] if resume else [])
    args += ['--cfg-options', f'experiment_name={unique_name()}',
             'default_hooks.ablation_timer.type=TimeBudgetHook', *extra]
    return load_tool('train').main(args)


def test_time_budget_hook_stops_with_checkpoint_and_final_eval(tmp_path, monkeypatch):
    # each iteration takes one tick of the fake clock; the budget ends during iteration 4
    runner = _toy_train(tmp_path, monkeypatch, ['default_hooks.ablation_timer.max_seconds=3.5',
                                                'train_cfg.val_interval=2'])
    assert runner.iter == 4  # of max_iters=8
    timer = json.loads((tmp_path / 'ablation_timer.json').read_text())
    assert timer['iters'] == 4 and timer['stopped_by_budget'] and timer['finished']
    assert timer['train_seconds'] == pytest.approx(4.0)
    # evaluations at 2 and at the (early) end, with the clock excluding evaluation time
    assert [t['iter'] for t in timer['timeline']] == [2, 4]
    assert [t['train_seconds'] for t in timer['timeline']] == pytest.approx([2.0, 4.0])
    assert 'mIoU' in timer['timeline'][-1]['metrics']
    assert (tmp_path / 'iter_4.pth').is_file()
    assert Path((tmp_path / 'last_checkpoint').read_text().strip()).name == 'iter_4.pth'


def test_time_budget_hook_clock_survives_resume(tmp_path, monkeypatch):
    _toy_train(tmp_path, monkeypatch, ['train_cfg.max_iters=4', 'train_cfg.val_interval=4'])
    first = json.loads((tmp_path / 'ablation_timer.json').read_text())
    assert first['iters'] == 4 and first['train_seconds'] == pytest.approx(4.0)
    runner = _toy_train(tmp_path, monkeypatch, ['train_cfg.max_iters=6',
                                                'train_cfg.val_interval=4'], resume=True)
    assert runner.iter == 6
    timer = json.loads((tmp_path / 'ablation_timer.json').read_text())
    assert timer['iters'] == 6 and timer['train_seconds'] == pytest.approx(6.0)
    assert [t['iter'] for t in timer['timeline']] == [4, 6]


# ----------------------------------------------------------------------------------------------
# continuation and failures
# ----------------------------------------------------------------------------------------------

def test_continuation_does_not_rerun_finished_runs(base, tmp_path):
    fake = FakeTools()
    make_runner(tmp_path, base, seeds=(0, 1), fake=fake).run()
    assert len(fake.tools('train')) == 4 and len(fake.tools('test')) == 4
    result = tmp_path / 'out' / 'nerf' / 'seed1' / 'result.json'
    before = result.read_text()
    again = FakeTools()
    summary = make_runner(tmp_path, base, seeds=(0, 1), fake=again).run()
    assert again.calls == []
    assert result.read_text() == before
    assert [a['mIoU_mean'] for a in summary['arms']] == [30.5, 20.5]
    # an added seed runs only the new (arm, seed) pairs
    more = FakeTools()
    make_runner(tmp_path, base, seeds=(0, 1, 2), fake=more).run()
    assert sorted(Path(c[1]).name for c in more.tools('train')) == ['seed2', 'seed2']
    # a different budget in the same folder is refused, not mixed
    with pytest.raises(UserError, match='different setup'):
        make_runner(tmp_path, base, seeds=(0,), fake=FakeTools(), budget=Budget(iters=41)).run()


def test_interrupted_training_resumes(base, tmp_path):
    run_dir = tmp_path / 'out' / 'splat' / 'seed0'
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
    status = {a['name']: [r['status'] for r in a['runs']] for a in summary['arms']}
    assert status == {'splat': ['ok'], 'nerf': ['failed'], '2d3d': ['ok']}
    failed = json.loads((tmp_path / 'out' / 'nerf' / 'seed0' / 'result.json').read_text())
    assert failed['phase'] == 'train' and failed['returncode'] == 1
    assert 'boom in fake' in failed['error_tail']
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert '## Failed runs' in md and 'boom in fake' in md
    assert '| splat | 1/1 | 30.00 (1 seed)' in md and '| nerf | 0/1 | n/a' in md
    # a test-phase failure is isolated the same way
    fake2 = FakeTools(fail={('nerf', 'test')})
    make_runner(tmp_path, base, arms='splat,nerf,2d3d', fake=fake2).run()
    assert [Path(c[1]).parent.name for c in fake2.tools('train')] == ['nerf']
    assert json.loads((tmp_path / 'out' / 'nerf' / 'seed0' / 'result.json').read_text()
                      )['phase'] == 'test'
    # the next call retries only the failed arm, from scratch (no --resume)
    fixed = FakeTools()
    summary = make_runner(tmp_path, base, arms='splat,nerf,2d3d', fake=fixed).run()
    assert [Path(c[1]).parent.name for c in fixed.tools('train')] == ['nerf']
    assert '--resume' not in fixed.tools('train')[0][2]
    assert all(r['status'] == 'ok' for a in summary['arms'] for r in a['runs'])


# ----------------------------------------------------------------------------------------------
# outputs: results.md / results.json / plots / log entry
# ----------------------------------------------------------------------------------------------

def test_results_content(base, tmp_path):
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1)).run()
    out = tmp_path / 'out'
    data = json.loads((out / 'results.json').read_text())
    splat, nerf = data['arms']
    # seeds 0 and 1 give mIoU 30 and 31: mean 30.5, sample std 1/sqrt(2)
    assert splat['mIoU_mean'] == pytest.approx(30.5)
    assert splat['mIoU_std'] == pytest.approx(1 / math.sqrt(2))
    assert (splat['mIoU_min'], splat['mIoU_max']) == (30.0, 31.0)
    assert nerf['mIoU_mean'] == pytest.approx(20.5) and nerf['geometry_IoU_mean'] == 50.0
    assert splat['per_class']['car'] == pytest.approx(15.25)
    assert splat['seconds_per_iter'] == pytest.approx(0.5) and splat['data_share'] == 0.2
    assert splat['render_share'] is None and splat['peak_rss_mb'] == 321.0
    assert data['budget'] == {'kind': 'iters', 'iters': 40, 'minutes': None}
    assert 'model.renderer' in nerf['changes'] and splat['changes'] == {}
    assert len(splat['runs'][0]['timeline']) == 4  # evals=4 during training
    md = (out / 'results.md').read_text()
    assert '| splat | 2/2 | 30.50 ± 0.71 | 50.00 | n/a | 40 | 0.500 | n/a | 321 MB RSS |' in md
    assert '| car | 15.25 | 10.25 |' in md
    assert '40 training iterations per run' in md
    names = base.class_names
    assert all(f'| {n} |' in md for n in names if n != 'free') and '| free |' not in md


def test_plots_are_written(base, tmp_path):
    summary = make_runner(tmp_path, base, arms='splat,nerf', plots=True).run()
    assert summary['plots'] == ['miou_vs_time.png', 'per_class_iou.png', 'step_time.png']
    assert '![step_time.png](step_time.png)' in (tmp_path / 'out' / 'results.md').read_text()
    for name in ('miou_vs_time.png', 'per_class_iou.png', 'step_time.png'):
        data = (tmp_path / 'out' / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 2000, name


def test_log_entry_appended(base, tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, 'git_commit', lambda *a, **k: 'abc1234')
    log = tmp_path / 'log.txt'
    log.write_text('SplattingOcc experiment log\n\n2026-01-01  project start\n')
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1), budget=Budget(iters=40),
                command_line='python tools/ablate.py --base X').run()
    text = log.read_text()
    assert text.startswith('SplattingOcc experiment log\n\n2026-01-01  project start\n')
    entry = text[len('SplattingOcc experiment log\n\n2026-01-01  project start\n'):]
    assert entry.lstrip('\n').startswith(f'{datetime.date.today().isoformat()}  ablation of ')
    assert 'splattingocc-tiny-synthetic.py' in entry
    assert 'commit: abc1234' in entry and 'command: python tools/ablate.py --base X' in entry
    assert 'budget: 40 training iterations per run; seeds: 0, 1' in entry
    assert '    splat: (base as is)' in entry
    assert ('    nerf: model.renderer._delete_=True model.renderer.type=VolumeRenderer '
            'model.renderer.step_ratio=0.5') in entry
    assert '| splat | 2/2 | 30.50 ± 0.71 |' in entry and '| nerf | 2/2 | 20.50 ± 0.71 |' in entry
    # a call with nothing left to run does not add another entry
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1)).run()
    assert log.read_text() == text


def test_cli_main_with_fake_tools(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, 'git_commit', lambda *a, **k: 'abc1234')
    fake = FakeTools()
    summary = ablation.main(['--base', BASE, '--arms', 'splat,uni=model.pixel_sampler.mode='
                             'uniform', '--seeds', '0', '--iters', '8', '--evals', '2',
                             '--out', str(tmp_path / 'o'), '--log-file', str(tmp_path / 'l.txt'),
                             '--no-plots'],
                            command_runner=fake)
    assert [a['name'] for a in summary['arms']] == ['splat', 'uni']
    assert _options(fake.tools('train')[1][2])['model.pixel_sampler.mode'] == 'uniform'
    assert 'uni: model.pixel_sampler.mode=uniform' in (tmp_path / 'l.txt').read_text()
    with pytest.raises(SystemExit):
        ablation.main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--budget-minutes',
                       '1'])
