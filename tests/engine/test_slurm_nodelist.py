"""No shell string is built from environment values (issue 27, item 6): SLURM_NODELIST reaches
``scontrol`` as one argument, and a node list with a shell metacharacter is refused with one line
before anything runs."""
import os
import re
import stat

import pytest

from splattingocc.engine.launch import first_slurm_host, init_cpu_distributed, run_main
from splattingocc.errors import UserError
from splattingocc.paths import REPO_ROOT


@pytest.fixture()
def fake_scontrol(tmp_path, monkeypatch):
    """An ``scontrol`` first on PATH that logs its arguments (one per line) and prints hosts."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    log = tmp_path / 'scontrol.log'
    script = bin_dir / 'scontrol'
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a" >> {log}; done\n'
                      'echo node07\necho node08\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    return log


def test_node_list_is_one_argument(fake_scontrol):
    assert first_slurm_host('node[07-08]') == 'node07'
    assert fake_scontrol.read_text().splitlines() == ['show', 'hostnames', 'node[07-08]']


@pytest.mark.parametrize('node_list', ['n1; touch {marker}; echo', 'n1 && touch {marker}',
                                       'n1|touch {marker}', '$(touch {marker})', '`touch {marker}`',
                                       'n1\ntouch {marker}'])
def test_shell_metacharacters_are_refused_before_anything_runs(node_list, fake_scontrol, tmp_path,
                                                               monkeypatch, capsys):
    marker = tmp_path / 'created'
    value = node_list.format(marker=marker)
    for key, v in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_NODELIST=value).items():
        monkeypatch.setenv(key, v)
    monkeypatch.delenv('MASTER_ADDR', raising=False)
    assert run_main(lambda argv: init_cpu_distributed('slurm'), []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'is not a Slurm host list' in err[0] and 'MASTER_ADDR' in err[0], err
    assert not marker.exists() and not fake_scontrol.exists()  # no shell, no scontrol either
    assert 'MASTER_ADDR' not in os.environ


def test_missing_scontrol_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))  # no scontrol anywhere
    with pytest.raises(UserError, match=r'cannot run scontrol to resolve SLURM_NODELIST=n1 .*'
                                        'set MASTER_ADDR'):
        first_slurm_host('n1')


def test_no_shell_strings_in_the_package():
    """Commands are argument lists: no shell=True, os.system, os.popen or getoutput."""
    pattern = re.compile(r'shell\s*=\s*True|os\.system\(|os\.popen\(|getoutput\(|'
                         r'getstatusoutput\(')
    offenders = [str(p.relative_to(REPO_ROOT)) for folder in ('splattingocc', 'tools')
                 for p in sorted((REPO_ROOT / folder).rglob('*.py'))
                 if pattern.search(p.read_text())]
    assert offenders == []
