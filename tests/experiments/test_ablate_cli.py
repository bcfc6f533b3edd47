"""splattingocc.experiments.cli (tools/ablate.py): the command line end to end, on fake tools."""
import pytest
from fake_tools import BASE, FakeTools, options

import splattingocc.experiments.runner as runner_module
from splattingocc.experiments.cli import main


def test_cli_main_with_fake_tools(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, 'git_commit', lambda *a, **k: 'abc1234')
    fake = FakeTools()
    summary = main(['--base', BASE, '--arms', 'splat,uni=model.pixel_sampler.mode='
                             'uniform', '--seeds', '0', '--iters', '8', '--evals', '2',
                             '--out', str(tmp_path / 'o'), '--log-file', str(tmp_path / 'l.txt'),
                             '--no-plots'],
                            command_runner=fake)
    assert [a['name'] for a in summary['arms']] == ['splat', 'uni']
    assert options(fake.tools('train')[1][2])['model.pixel_sampler.mode'] == 'uniform'
    assert 'uni: model.pixel_sampler.mode=uniform' in (tmp_path / 'l.txt').read_text()
    with pytest.raises(SystemExit):
        main(['--base', BASE, '--arms', 'splat', '--iters', '8', '--budget-minutes',
                       '1'])
