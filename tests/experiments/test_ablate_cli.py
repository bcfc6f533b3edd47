"""splattingocc.experiments.cli (tools/ablate.py): the command line end to end, on fake tools."""
import ast
import inspect
from pathlib import Path

import pytest
from fake_tools import BASE, FakeTools, options

import splattingocc.experiments.runner as runner_module
from splattingocc.experiments import AblationRunner
from splattingocc.errors import UserError
from splattingocc.experiments.cli import main
from splattingocc.paths import REPO_ROOT


def test_cli_main_with_fake_tools(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, 'git_commit', lambda *a, **k: 'abc1234')
    fake = FakeTools()
    summary = main(['--base', BASE, '--arms', 'splat,uni=model.supervision.0.pixel_sampler.mode='
                    'uniform', '--seeds', '0', '--iters', '8', '--budget-minutes', '1',
                    '--evals', '2', '--eval', 'segm', 'ap', '--pairs', 'uni:splat',
                    '--out', str(tmp_path / 'o'), '--log-file', str(tmp_path / 'l.txt'),
                    '--no-plots'],
                   command_runner=fake)
    assert [a['name'] for a in summary['arms']] == ['splat', 'uni']
    # both budgets from one call: an equal-iterations and an equal-wall-clock table
    assert [b['tag'] for b in summary['budgets']] == ['iters-8', 'minutes-1']
    assert [b['title'] for b in summary['budgets']] == [
        'equal iterations (8 per run)', 'equal wall-clock (1 min of training clock per run)']
    trains = [c for c in fake.tools('train') if not c[1].endswith('timing')]
    assert options(trains[2][2])['model.supervision.0.pixel_sampler.mode'] == 'uniform'
    # the runs interleave: per seed every arm, and per arm the two budgets back to back
    assert [(Path(c[1]).parts[-3], Path(c[1]).parts[-2]) for c in trains] == [
        ('iters-8', 'splat'), ('minutes-1', 'splat'), ('iters-8', 'uni'), ('minutes-1', 'uni')]
    tests = fake.tools('test')
    assert all(c[2][c[2].index('--eval') + 1:c[2].index('--eval') + 3] == ['segm', 'ap']
               for c in tests)
    assert [(p['a'], p['b'], p['metric']) for p in summary['budgets'][0]['pairs']] == [
        ('uni', 'splat', 'mIoU'), ('uni', 'splat', 'occupancy_AP')]
    log = (tmp_path / 'l.txt').read_text()
    assert 'uni: model.supervision.0.pixel_sampler.mode=uniform' in log
    assert log.startswith('E1  ') and 'equal wall-clock (1 min' in log
    with pytest.raises(UserError, match='give a budget'):
        main(['--base', BASE, '--arms', 'splat'])
    with pytest.raises(UserError, match="no arm 'nerf'"):
        main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--pairs', 'splat:nerf'],
             command_runner=fake)
    with pytest.raises(UserError, match='expected A:B'):
        main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--pairs', 'splat'],
             command_runner=fake)


def test_no_log_without_log_file(tmp_path, monkeypatch, capsys):
    """Writing an experiment-log entry is opt-in (--log-file PATH); --no-log is gone."""
    monkeypatch.setattr(runner_module, 'git_commit', lambda *a, **k: 'abc1234')
    monkeypatch.chdir(tmp_path)
    repo_log = REPO_ROOT / 'log.txt'
    before = repo_log.read_bytes() if repo_log.is_file() else None
    summary = main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--evals', '0',
                    '--seeds', '0', '--out', 'o', '--no-plots'], command_runner=FakeTools())
    assert [r['status'] for r in summary['budgets'][0]['arms'][0]['runs']] == ['ok']
    assert (repo_log.read_bytes() if repo_log.is_file() else None) == before
    assert [p.name for p in tmp_path.iterdir()] == ['o']
    assert not list(tmp_path.rglob('*.txt')) and 'log entry' not in capsys.readouterr().out
    assert inspect.signature(AblationRunner).parameters['log_file'].default is None
    with pytest.raises(SystemExit):
        main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--out', 'o', '--no-log'])


def test_tools_ablate_is_the_cli():
    tree = ast.parse((REPO_ROOT / 'tools' / 'ablate.py').read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.module == 'splattingocc.experiments.cli'
               and [a.name for a in n.names] == ['main'] for n in tree.body)
