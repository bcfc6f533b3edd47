"""slurm/local_cluster.sh never kills a process its pid files merely name: only this cluster's own
slurmctld / slurmd (started with its slurm.conf) are stopped, and its folder must be the user's."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'slurm' / 'local_cluster.sh'


def _stop(state_dir):
    env = dict(os.environ, SOCC_SLURM_DIR=str(state_dir))
    return subprocess.run(['bash', str(SCRIPT), 'stop'], env=env, capture_output=True, text=True,
                          timeout=60)


def test_planted_pid_files_do_not_get_a_process_killed(tmp_path):
    state = tmp_path / 'slurm'
    state.mkdir(mode=0o700)
    victim = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        for name in ('slurmctld.pid', 'slurmd.node1.pid', 'slurmd.node2.pid'):
            (state / name).write_text(f'{victim.pid}\n')
        out = _stop(state)
        assert out.returncode == 0, out.stderr
        assert 'stopped 0 daemon(s)' in out.stdout
        assert victim.poll() is None  # still running
        assert not list(state.glob('*.pid'))  # the stale files are gone
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to give the folder to another user')
def test_a_folder_of_another_user_is_refused(tmp_path):
    state = tmp_path / 'slurm'
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)  # nobody
    out = _stop(state)
    assert out.returncode != 0
    assert 'belongs to another user' in out.stderr
