"""The Slurm scripts' rules, without a cluster (issue 25, defects 2-5): processes per node from
the GPUs Slurm granted, the rendezvous port below the ephemeral range, srun's exit code through
the signal-interrupted wait, the interpreter check, and what the batch script requests and passes
to srun. Each helper of slurm/_common.sh runs in bash on its own; the real cluster run is
tests/slurm/test_local_cluster.py."""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from splattingocc.paths import REPO_ROOT

SLURM = REPO_ROOT / 'slurm'
SCRIPTS = ['_common.sh', 'run_2_nodes.sh', 'socc_8gpu.sh', 'test.sh', 'local_cluster.sh']
GRANT_VARS = ('SLURM_GPUS_ON_NODE', 'SLURM_GPUS_PER_NODE', 'SLURM_JOB_GPUS', 'GPUS_PER_NODE')


def _bash(snippet: str, env=None, timeout=60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in GRANT_VARS}
    return subprocess.run(['bash', '-c', f'source {SLURM / "_common.sh"}\n{snippet}'],
                          env=dict(base, **(env or {})), capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO_ROOT))


@pytest.mark.parametrize('name', SCRIPTS)
def test_scripts_parse(name):
    proc = subprocess.run(['bash', '-n', str(SLURM / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize('env, out, rc', [
    (dict(SLURM_GPUS_ON_NODE='4'), '4', 0),                         # one process per GPU
    (dict(SLURM_GPUS_PER_NODE='a100:2'), '2', 0),
    (dict(SLURM_GPUS_PER_NODE='a100:2,v100:1'), '3', 0),
    (dict(SLURM_JOB_GPUS='0,1,2'), '3', 0),                         # --gres=gpu:3
    (dict(SLURM_GPUS_ON_NODE='4', GPUS_PER_NODE='4'), '4', 0),      # set and equal: fine
    (dict(SLURM_GPUS_ON_NODE='4', GPUS_PER_NODE='2'), '', 2),       # mismatch: refused
    (dict(SLURM_GPUS_PER_NODE='8', GPUS_PER_NODE='4'), '', 2),
    (dict(GPUS_PER_NODE='2'), '2', 0),                              # CPU nodes: as given
    (dict(), '', 2),                                                # CPU nodes: required
    (dict(SLURM_GPUS_ON_NODE='0', GPUS_PER_NODE='3'), '3', 0),
    (dict(SLURM_GPUS_ON_NODE='2', GPUS_PER_NODE='two'), '', 2),
    (dict(SLURM_GPUS_PER_NODE='gpu:x'), '', 2),
])
def test_processes_per_node_follow_the_granted_gpus(env, out, rc):
    proc = _bash('socc_procs_per_node', env)
    assert proc.returncode == rc, proc.stderr
    assert proc.stdout.strip() == out
    if rc:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('run_2_nodes.sh: '), proc.stderr
    if env.get('GPUS_PER_NODE') == '2' and 'SLURM_GPUS_ON_NODE' in env:
        assert '--gpus-per-node=2' in proc.stderr and 'unset GPUS_PER_NODE' in proc.stderr


@pytest.mark.parametrize('low, lo_port, hi_port', [
    ('32768', 20000, 30000),   # Linux's default range 32768-60999
    ('49152', 20000, 30000),   # IANA's
    ('25000', 20000, 25000),   # a range that starts lower: only what is below it
    ('15000', 1024, 11024),    # very low: from 1024
])
def test_master_port_is_below_the_ephemeral_range(tmp_path, low, lo_port, hi_port):
    f = tmp_path / 'range'
    f.write_text(f'{low}\t65000\n')
    ports = set()
    for job in (0, 1, 9999, 10000, 123456, 987654321):
        proc = _bash(f'socc_master_port {job} {f}')
        assert proc.returncode == 0, proc.stderr
        port = int(proc.stdout)
        assert lo_port <= port < hi_port and port < int(low), (job, port)
        ports.add(port)
    assert len(ports) > 3  # spread over the jobs
    # the old rule, 20000 + id % 20000, reached 39999: inside Linux's default range
    assert 20000 + 19999 >= 32768
    f.write_text('1030 65000\n')
    proc = _bash(f'socc_master_port 5 {f}')
    assert proc.returncode == 1 and 'MASTER_PORT' in proc.stderr


def test_wait_returns_sruns_exit_code_when_a_signal_interrupts_it():
    # the step ends (code 7) while the USR1 handler runs: `wait` then reports 138 (128 + USR1)
    # with the step already gone; the old loop returned that 138
    snippet = textwrap.dedent('''
        trap 'sleep 2' USR1
        (sleep 1; exit 7) &
        step=$!
        (sleep 0.3; kill -USR1 $$) &
        rc=0; socc_wait_rc "$step" || rc=$?
        echo "rc=$rc"
        # a plain interrupted wait for comparison
        trap 'sleep 2' USR1
        (sleep 1; exit 7) &
        step=$!
        (sleep 0.3; kill -USR1 $$) &
        rc=0; wait "$step" || rc=$?
        echo "plain=$rc"
        # srun killed by a signal itself: its own status (137), not 0
        (sleep 0.2; kill -KILL $BASHPID) &
        step=$!
        rc=0; socc_wait_rc "$step" || rc=$?
        echo "killed=$rc"
    ''')
    proc = _bash(snippet, timeout=120)
    assert 'rc=7' in proc.stdout, proc.stdout + proc.stderr
    assert 'plain=138' in proc.stdout  # the control: what the signal does to a bare wait
    assert 'killed=137' in proc.stdout


def test_interpreter_check_names_the_fix(tmp_path):
    ok = _bash(f'socc_check_python {sys.executable} {REPO_ROOT} && echo fine', timeout=180)
    assert ok.returncode == 0 and 'fine' in ok.stdout, ok.stderr
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho "ModuleNotFoundError: No module named mmengine" >&2\nexit 1\n')
    fake.chmod(0o755)
    bad = _bash(f'socc_check_python {fake} {REPO_ROOT}')
    assert bad.returncode == 2
    line = bad.stderr.strip()
    assert len(line.splitlines()) == 1 and 'No module named mmengine' in line
    assert 'set PYTHON=' in line and 'tools/setup_env.sh' in line
    # an interpreter whose splattingocc is another checkout
    other = tmp_path / 'python2'
    other.write_text('#!/bin/sh\necho /somewhere/else\n')
    other.chmod(0o755)
    bad = _bash(f'socc_check_python {other} {REPO_ROOT}')
    assert bad.returncode == 2 and '/somewhere/else' in bad.stderr


def _sbatch_lines(text):
    return dict(re.findall(r'^#SBATCH --([\w-]+)(?:=(\S+))?', text, re.M))


def test_batch_script_requests_and_passes_on_its_resources():
    text = (SLURM / 'run_2_nodes.sh').read_text()
    req = _sbatch_lines(text)
    assert req['gpus-per-node'] == '4' and req['ntasks-per-node'] == '1'
    assert int(req['cpus-per-task']) >= 4 * 5  # 4 processes x (main + 4 loader workers)
    assert req['mem'].endswith('G') and int(req['mem'][:-1]) >= 64
    # documented, with how to override them on the sbatch line
    header = text[:text.index('\n#SBATCH --')]
    for opt in ('--cpus-per-task', '--mem', '--exclusive', '--gpus-per-node'):
        assert opt in header, opt
    assert re.search(r'`sbatch --gpus-per-node=\d+ --cpus-per-task=\d+ --mem=\d+G', header)
    assert 'srun_args+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")' in text
    assert 'srun_args+=("--mem=${SLURM_MEM_PER_NODE}M")' in text
    assert re.search(r'^srun "\$\{srun_args\[@\]\}" bash "\$RUN" &$', text, re.M)
    assert "trap 'on_preempt TERM' TERM" in text and "trap 'on_preempt USR1' USR1" in text
    assert 'socc_wait_rc' in text and 'socc_procs_per_node' in text
    assert 'socc_check_python' in text and 'socc_master_port' in text
    assert 'epoch_24' not in text and 'epoch_12.pth' in text  # the schedule has 12 epochs


def test_per_node_scripts_need_no_installed_package_and_train_survives_sigterm():
    for name in ('socc_8gpu.sh', 'test.sh'):
        text = (SLURM / name).read_text()
        assert 'export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"' in text, name
        assert '"$REPO/tools/' in text, name
    train = (SLURM / 'socc_8gpu.sh').read_text()
    # gsplat built once per node before torchrun; torchrun does not act on SIGTERM
    build = train.index('splattingocc.rendering.gsplat_build --if-cuda')
    assert build < train.index("trap '' TERM") < train.index('torch.distributed.run')
    handled = re.search(r'PET_SIGNALS_TO_HANDLE:-([A-Z,]+)', train).group(1)
    assert 'SIGTERM' not in handled.split(',') and 'SIGINT' in handled.split(',')


def test_torchrun_reads_the_signals_to_handle_from_the_environment():
    """PET_SIGNALS_TO_HANDLE sets torchrun's --signals-to-handle (the list it installs handlers
    for and exports to its workers' process contexts)."""
    code = ('import sys; from torch.distributed.run import get_args_parser; '
            'print(get_args_parser().parse_args(["x.py"]).signals_to_handle)')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PET_SIGNALS_TO_HANDLE='SIGINT,SIGHUP'))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'SIGINT,SIGHUP'
