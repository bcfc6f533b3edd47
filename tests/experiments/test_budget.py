"""splattingocc.experiments.budget: iteration and minute budgets, and TimeBudgetHook inside a real
(toy) mmengine training run."""
import importlib
import json
import sys
from pathlib import Path

import pytest
from fake_tools import FakeTools, make_runner, options
from mmengine.config import Config

from splattingocc.errors import UserError
from splattingocc.experiments import (HOOK_MODULE, Budget, TimeBudgetHook, apply_overrides,
                                      iterations_for_minutes, schedule_overrides,
                                      seconds_per_iter_from_timing)
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import HOOKS


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
    assert seconds_per_iter_from_timing([9, 9, 1, 2, 3], skip=2) == pytest.approx(2.0)
    with pytest.raises(UserError):
        Budget(iters=10, minutes=1.0)
    with pytest.raises(UserError):
        Budget()

    fake = FakeTools()
    runner = make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1), fake=fake,
                         budgets=Budget(minutes=2.0), timing_iters=12)
    runner.run()
    timing = [c for c in fake.tools('train') if c[1].endswith('timing')]
    assert len(timing) == 2  # once per arm, shared by the seeds
    for _, _, cmd in timing:
        opts = options(cmd)
        assert opts['train_cfg.max_iters'] == '12' and 'train_cfg.val_begin' in opts
        assert opts['default_hooks.checkpoint.save_last'] == 'False'
    # the fake timing run goes at 0.5 s/iteration after 3 start-up iterations -> 240 iterations
    trains = [c for c in fake.tools('train') if not c[1].endswith('timing')]
    assert len(trains) == 4
    for _, _, cmd in trains:
        opts = options(cmd)
        assert opts['train_cfg.max_iters'] == '240' and opts['param_scheduler.1.end'] == '240'
        assert float(opts['default_hooks.ablation_timer.max_seconds']) == 120.0
    cal = json.loads((tmp_path / 'out' / 'minutes-2' / 'splat' / 'timing.json').read_text())
    assert cal['seconds_per_iter'] == pytest.approx(0.5) and cal['iters'] == 240
    result = json.loads((tmp_path / 'out' / 'minutes-2' / 'nerf' / 'seed1' / 'result.json'
                         ).read_text())
    assert result['planned_iters'] == 240 and result['budget']['minutes'] == 2.0


def _toy_train(tmp_path, monkeypatch, extra, resume=False):
    sys.path.insert(0, str(REPO_ROOT / 'tests' / 'engine'))
    from toy_components import TOY_CONFIG, unique_name

    from splattingocc.cli import train
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(TimeBudgetHook, '_clock', staticmethod(lambda: float(next(ticks))))
    args = [TOY_CONFIG, '--work-dir', str(tmp_path)] + (['--resume'] if resume else [])
    args += ['--cfg-options', f'experiment_name={unique_name()}',
             'default_hooks.ablation_timer.type=TimeBudgetHook', *extra]
    return train.main(args)


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


def test_training_commands_import_the_module_of_the_hook():
    """custom_imports of a training command names the module that registers TimeBudgetHook."""
    assert HOOK_MODULE == 'splattingocc.experiments.budget'
    assert importlib.import_module(HOOK_MODULE).TimeBudgetHook is TimeBudgetHook
    assert HOOKS.get('TimeBudgetHook') is TimeBudgetHook
