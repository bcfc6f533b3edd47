"""splattingocc.experiments.cli (tools/ablate.py): the command line end to end, on fake tools."""
import ast
import inspect

import pytest
from fake_tools import BASE, FakeTools, options

import splattingocc.experiments.runner as runner_module
from splattingocc.experiments import AblationRunner
from splattingocc.experiments.cli import main
from splattingocc.paths import REPO_ROOT


def test_cli_main_with_fake_tools(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, 'git_commit', lambda *a, **k: 'abc1234')
    fake = FakeTools()
    summary = main(['--base', BASE, '--arms', 'splat,uni=model.supervision.0.pixel_sampler.mode='
                    'uniform', '--seeds', '0', '--iters', '8', '--evals', '2',
                    '--out', str(tmp_path / 'o'), '--log-file', str(tmp_path / 'l.txt'),
                    '--no-plots'],
                   command_runner=fake)
    assert [a['name'] for a in summary['arms']] == ['splat', 'uni']
    assert options(fake.tools('train')[1][2])['model.supervision.0.pixel_sampler.mode'] == 'uniform'
    assert 'uni: model.supervision.0.pixel_sampler.mode=uniform' in (tmp_path / 'l.txt').read_text()
    assert (tmp_path / 'l.txt').read_text().startswith('E1  ')
    with pytest.raises(SystemExit):
        main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--budget-minutes',
              '1'])


def test_no_log_without_log_file(tmp_path, monkeypatch, capsys):
    """Writing an experiment-log entry is opt-in (--log-file PATH); --no-log is gone."""
    monkeypatch.setattr(runner_module, 'git_commit', lambda *a, **k: 'abc1234')
    monkeypatch.chdir(tmp_path)
    repo_log = REPO_ROOT / 'log.txt'
    before = repo_log.read_bytes() if repo_log.is_file() else None
    summary = main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--evals', '0',
                    '--out', 'o', '--no-plots'], command_runner=FakeTools())
    assert [r['status'] for r in summary['arms'][0]['runs']] == ['ok']
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
