"""The Slurm scripts on a real two-node cluster on this machine (slurm/local_cluster.sh).

The first test, in the order a user works (kept short: a tiny synthetic dataset, 96 x 48 input,
a few iterations):

1. ``CONFIG=<tiny synthetic> WORK_DIR=... sbatch -N 2 --gpus-per-node=1 --cpus-per-task=1
   --mem=500M slurm/run_2_nodes.sh`` trains on 2 nodes x 1 process (one per granted placeholder
   'gpu'; gloo on CPUs), the resources given on the sbatch line overriding the script's defaults
   and passed on to srun. When the log shows training, ``scancel --signal=USR1 --batch JOBID``
   (what ``--signal=B:USR1@120`` does before the time limit): the batch script asks training to
   stop, PreemptionHook checkpoints at the next iteration, the job requeues itself and the
   requeued job resumes from the checkpoint and finishes with the configured number of
   iterations.
2. ``RUN=slurm/test.sh CHECKPOINT=... sbatch -N 2 slurm/run_2_nodes.sh`` evaluates the final
   checkpoint on the 2 nodes and prints the mIoU table.

The second test preempts the way a scheduler does, with SIGTERM: ``scancel --signal=TERM JOBID``
signals every process of the job step (torchrun and the training processes; a scheduler's
preemption with a grace time does the same) and ``scancel --batch --signal=TERM`` the batch
script; training checkpoints, the job requeues and resumes as with USR1. The third runs jobs that
fail: GPUS_PER_NODE against the granted GPUs (refused with one line) and an evaluation of a
missing checkpoint (the job's exit code is srun's, not 0).

Slurm gives a requeued job a begin time in the future (``Reason=BeginTime``, about 2 minutes: the
job credential of the killed run stays revoked for that long); the test moves it to a few seconds
from now with ``scontrol update jobid=J starttime=now+3`` rather than wait. ``starttime=now`` is
not enough: a restart within the same second as the requeue is refused by slurmd ("Job 1 already
killed, do not launch batch job"; the job ends FAILED with exit code 1 and no output), which made
this test fail now and then. On a real cluster the delay is harmless.

The cluster gets its own state folder and ports, so it never meets another cluster on the
machine; it is stopped (jobs cancelled first) even when the test fails. Skipped with the reason
where Slurm is not installed and cannot be installed (needs root and apt-get).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import splattingocc.engine  # noqa: F401  (allow-list: torch.load of mmengine checkpoints)

REPO = Path(__file__).resolve().parents[2]
CONFIG = 'configs/splattingocc/splattingocc-tiny-synthetic.py'
MAX_ITERS = 8
CKPT_INTERVAL = 4
JOB_TIMEOUT_S = 240
TERMINAL_GRACE_S = 10

pytestmark = pytest.mark.slow


def _ports_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                return False
    return True


def _free_port_range(count: int) -> int:
    """First of ``count`` consecutive free TCP ports (random start, away from the defaults)."""
    import random
    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        first = rng.randrange(30000, 60000 - count)
        if _ports_free(first, count):
            return first
    raise RuntimeError('no free port range found')


def _slurm_installable() -> str | None:
    """None if Slurm is (or can be) installed; else the reason to skip."""
    if sys.platform != 'linux':
        return 'the local Slurm cluster runs on Linux only'
    if all(shutil.which(c) for c in ('slurmctld', 'slurmd', 'sbatch', 'scontrol')):
        if os.geteuid() != 0:
            return 'the local Slurm cluster runs slurmd as root (SlurmdUser=root): run as root'
        return None
    if not shutil.which('apt-get'):
        return 'Slurm (slurmctld, slurmd, sbatch) is not installed and apt-get is unavailable'
    if os.geteuid() != 0:
        return 'Slurm is not installed and installing slurm-wlm with apt-get needs root'
    return None


class Cluster:
    """A started slurm/local_cluster.sh cluster: runs Slurm client commands against it."""

    def __init__(self, state_dir: Path, port: int):
        self.state_dir = state_dir
        self.env = dict(os.environ, SOCC_SLURM_DIR=str(state_dir), SOCC_SLURM_PORT=str(port),
                        SLURM_CONF=str(state_dir / 'slurm.conf'))
        for key in list(self.env):  # a surrounding allocation must not leak into our jobs
            if key.startswith(('SLURM_JOB', 'SLURM_STEP', 'SBATCH_', 'SALLOC_')):
                del self.env[key]

    def run(self, *cmd, check=True, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env=kwargs.pop('env', self.env), capture_output=True,
                              text=True, cwd=str(REPO), timeout=kwargs.pop('timeout', 120),
                              **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f'{" ".join(map(str, cmd))} failed ({proc.returncode}):\n'
                                 f'{proc.stdout}\n{proc.stderr}')
        return proc

    def job(self, job_id: str) -> dict:
        out = self.run('scontrol', 'show', 'job', '-o', job_id).stdout
        return dict(re.findall(r'(\w+)=(\S*)', out))

    def has_gpus(self) -> bool:
        return 'Gres=gpu:' in (self.state_dir / 'slurm.conf').read_text()

    def cancel_all(self) -> None:
        self.run('scancel', '--full', '--user', str(os.geteuid()), check=False)
        for _ in range(60):
            if not self.run('squeue', '-h', check=False).stdout.strip():
                return
            time.sleep(0.5)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A tiny synthetic dataset with info pkls: 2 scenes x 2 keyframes (train / val), 96 x 54."""
    from splattingocc.datasets.synthetic import make_tiny_dataset
    root = tmp_path_factory.mktemp('slurm_data') / 'synthetic'
    make_tiny_dataset(root, scenes=2, samples_per_scene=2, image_size=(96, 54))
    proc = subprocess.run(
        [sys.executable, 'tools/create_data.py', 'nuscenes', '--root', str(root), '--version',
         'v1.0-mini'], cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / 'nuscenes_infos_train.pkl').is_file()
    return root


@pytest.fixture(scope='module')
def cluster():
    reason = _slurm_installable()
    if reason:
        pytest.skip(reason)
    state_dir = Path(tempfile.mkdtemp(prefix='socc-slurm-', dir='/tmp'))  # short: socket paths
    c = Cluster(state_dir, _free_port_range(4))
    start = c.run('bash', 'slurm/local_cluster.sh', 'start', check=False, timeout=900)
    try:
        if start.returncode != 0:
            text = start.stdout + start.stderr
            if 'apt-get' in text and 'failed' in text:
                pytest.skip(f'Slurm could not be installed: {text.strip().splitlines()[-1]}')
            raise AssertionError(f'slurm/local_cluster.sh start failed:\n{text}')
        assert f'export SLURM_CONF={state_dir}/slurm.conf' in start.stdout
        yield c
    finally:
        c.cancel_all()
        stop = c.run('bash', 'slurm/local_cluster.sh', 'stop', check=False)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        shutil.rmtree(state_dir, ignore_errors=True)


def _data_options(root: Path, splits=('train', 'val', 'test')) -> list:
    """cfg-options pointing the tiny config at ``root`` with a 96 x 48 input and no workers."""
    opts = []
    for split in splits:
        loader = f'{split}_dataloader'
        index = 2 if split == 'train' else 1  # ResizeCropImages in the train / test pipelines
        opts += [f'{loader}.dataset.data_root={root}/', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False',
                 f'{loader}.dataset.pipeline.{index}.final_size=(96,48)']
    for split in ('val', 'test'):
        if split in splits:
            opts.append(f'{split}_evaluator.ann_file={root}/nuscenes_infos_val.pkl')
    if 'test' in splits:  # the tiny dataset has no test scenes: evaluate on val
        opts.append('test_dataloader.dataset.ann_file=nuscenes_infos_val.pkl')
    return opts


def _preemption_hook_options() -> list:
    """Add PreemptionHook to the config's custom_hooks unless the runtime has it already."""
    from mmengine.config import Config
    hooks = Config.fromfile(str(REPO / CONFIG)).custom_hooks
    if any(h['type'] == 'PreemptionHook' for h in hooks):
        return []
    summary = [i for i, h in enumerate(hooks) if h['type'] == 'TrainingSummaryHook']
    return [f'custom_hooks.{summary[0]}.type=PreemptionHook']


def _job_env(cluster: Cluster, **extra) -> dict:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(cluster.env, PYTHON=sys.executable, OMP_NUM_THREADS='1', MASTER_PORT=str(port),
               CUDA_VISIBLE_DEVICES='')
    env.pop('GPUS_PER_NODE', None)
    if not cluster.has_gpus():  # a CPU cluster: the processes per node must be named
        env['GPUS_PER_NODE'] = '1'
    return dict(env, **extra)


def _sbatch(cluster: Cluster, env: dict, output: Path, gpus: int = 1) -> str:
    """sbatch run_2_nodes.sh on 2 nodes with 1 CPU and 500 MB per node (overriding the script's
    defaults, which this machine's nodes do not have) and ``gpus`` placeholder GPUs per node."""
    args = ['sbatch', '--parsable', '-N', '2', '-o', str(output), '--job-name', 'socc-test',
            '--cpus-per-task=1', '--mem=500M',
            f'--gpus-per-node={gpus if cluster.has_gpus() else 0}']
    proc = cluster.run(*args, 'slurm/run_2_nodes.sh', env=env)
    return proc.stdout.strip().split(';')[0]


def _wait(cluster: Cluster, job_id: str, until, what: str, output: Path, timeout=JOB_TIMEOUT_S):
    """Poll the job until ``until(job_dict)`` is true; requeue begin-time delays are skipped."""
    deadline = time.time() + timeout
    terminal_since = None
    hurried = False
    while time.time() < deadline:
        job = cluster.job(job_id)
        if job.get('JobState') == 'PENDING' and job.get('Reason') == 'BeginTime' and not hurried:
            # a requeued job waits; start it 3 s from now, once (documented above)
            print(f'\n[slurm test] job {job_id} pending with Reason=BeginTime (StartTime='
                  f'{job.get("StartTime")}): scontrol update starttime=now+3')
            cluster.run('scontrol', 'update', f'jobid={job_id}', 'starttime=now+3', check=False)
            hurried = True
        if until(job):
            return job
        # a requeue passes through transient states (the killed batch step can show FAILED for a
        # moment before the job is PENDING again): give up only on a state that stays terminal
        if job.get('JobState') in ('FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY'):
            terminal_since = terminal_since or time.time()
            if time.time() - terminal_since > TERMINAL_GRACE_S:
                break
        else:
            terminal_since = None
        time.sleep(0.5)
    text = output.read_text() if output.exists() else '(no output)'
    raise AssertionError(f'job {job_id}: waited for {what}; state {cluster.job(job_id)}\n'
                         f'{text[-6000:]}')


def _finished(job: dict) -> bool:
    return job.get('JobState') in ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT')


def _train_env(cluster: Cluster, dataset: Path, work_dir: Path) -> dict:
    train_opts = [
        *_data_options(dataset), *_preemption_hook_options(),
        'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None',  # no validation in training
        'model.supervision.0.pixel_sampler.num_rays=512', f'train_cfg.max_iters={MAX_ITERS}',
        f'train_cfg.val_interval={MAX_ITERS}', f'param_scheduler.1.end={MAX_ITERS}',
        'param_scheduler.0.end=2', 'default_hooks.logger.interval=1',
        f'default_hooks.checkpoint.interval={CKPT_INTERVAL}']
    return _job_env(cluster, CONFIG=CONFIG, WORK_DIR=str(work_dir),
                    PY_ARGS='--cfg-options ' + ' '.join(train_opts))


def _wait_for_training(cluster: Cluster, job_id: str, work_dir: Path, out: Path) -> None:
    def training(job):
        logs = sorted(work_dir.glob('*/*.log'))
        return bool(logs) and re.search(r'Iter\(train\) \[\s*[1-9]\d*/', logs[0].read_text())
    _wait(cluster, job_id, lambda job: training(job) or _finished(job), 'training to start', out)
    assert not _finished(cluster.job(job_id)), out.read_text()[-4000:]


def _wait_for_the_requeued_run(cluster: Cluster, job_id: str, out: Path) -> dict:
    # finished means: restarted, in a final state, and the restarted batch script printed its
    # closing line (the state alone can read FAILED for a moment while the requeue is under way)
    def requeued_run_finished(job):
        return (int(job.get('Restarts', 0)) >= 1 and _finished(job) and out.exists()
                and '[run_2_nodes] finished with exit code' in out.read_text())
    return _wait(cluster, job_id, requeued_run_finished, 'the requeued job to finish', out)


def _digest(text: str) -> str:
    """The lines of a job's output that tell what happened (not mmengine's hook listing)."""
    keep = ('[run_2_nodes]', '[socc_8gpu]', '[test]', '[gsplat_build]', 'PreemptionHook', 'srun',
            'rror', 'Traceback', 'slurmstepd', 'Signal', 'signal', 'exit')
    return '\n'.join(line for line in text.splitlines() if any(k in line for k in keep))[-6000:]


def _check_stop_and_resume(work_dir: Path, text: str) -> int:
    """The preempted run stopped after a checkpoint at some iteration N, the requeued one resumed
    at N + 1 and finished; returns N."""
    saved = re.search(r'checkpoint saved at iteration (\d+) \(srun exit code 0\); requeueing job',
                      text)
    assert saved, _digest(text)
    stop = int(saved.group(1))
    assert 1 <= stop < MAX_ITERS
    logs = sorted(work_dir.glob('*/*.log'))  # one per run (timestamped folders)
    assert len(logs) == 2, logs
    first, second = (p.read_text() for p in logs)
    for log in (first, second):
        assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert f'saved at iteration {stop}; training stops' in first
    assert re.search(rf'resumed epoch: 0, iter: {stop}\b', second)
    iters_first = [int(i) for i in re.findall(rf'Iter\(train\) \[\s*(\d+)/{MAX_ITERS}\]', first)]
    iters_second = [int(i) for i in re.findall(rf'Iter\(train\) \[\s*(\d+)/{MAX_ITERS}\]', second)]
    assert iters_first == list(range(1, stop + 1))
    assert iters_second == list(range(stop + 1, MAX_ITERS + 1))
    final = torch.load(work_dir / f'iter_{MAX_ITERS}.pth')
    assert final['meta']['iter'] == MAX_ITERS
    assert len(final['rng_states']) == 2  # random states gathered from 2 ranks
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(
        work_dir / f'iter_{MAX_ITERS}.pth')
    assert not (work_dir / '.preempt-request').exists()
    return stop


def test_train_preempt_requeue_resume_and_evaluate_on_two_nodes(cluster, dataset, tmp_path):
    t0 = time.time()
    work_dir = tmp_path / 'work'
    out = tmp_path / 'train.out'
    job_id = _sbatch(cluster, _train_env(cluster, dataset, work_dir), out)

    # 1. preempt once training runs: USR1 to the batch shell, as --signal=B:USR1@120 does
    _wait_for_training(cluster, job_id, work_dir, out)
    cluster.run('scancel', '--signal=USR1', '--batch', job_id)
    t_signal = time.time()

    # 2. it requeues itself and the requeued job runs to the end
    job = _wait_for_the_requeued_run(cluster, job_id, out)
    t_train = time.time()
    text = out.read_text()
    assert job['JobState'] == 'COMPLETED' and job['ExitCode'] == '0:0', text[-6000:]

    # two nodes, one rank each (one per granted GPU), world size 2, the sbatch line's CPUs and
    # memory passed to srun (in both runs)
    assert len(re.findall(r'\[socc_8gpu\] node \S+/node1 rank 0 of 2: 1 processes, 1 CPUs',
                          text)) == 2
    assert len(re.findall(r'\[socc_8gpu\] node \S+/node2 rank 1 of 2: 1 processes, 1 CPUs',
                          text)) == 2
    assert text.count('srun --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=1 '
                      '--mem=500M') == 2
    if cluster.has_gpus():
        assert text.count('GPUS_PER_NODE=1 ') == 2 and text.count('per node: 1 GPUs') == 2
    # gsplat's build step ran on each node before torchrun (nothing to build without CUDA)
    assert text.count('[gsplat_build] torch sees no CUDA device') == 4
    assert f'job {job_id} (restart 0)' in text and f'job {job_id} (restart 1)' in text
    assert '[run_2_nodes] USR1 received' in text
    _check_stop_and_resume(work_dir, text)

    # 3. evaluation of the final checkpoint on the two nodes
    out_test = tmp_path / 'test.out'
    env = _job_env(cluster, CONFIG=CONFIG, WORK_DIR=str(work_dir), RUN='slurm/test.sh',
                   CHECKPOINT=str(work_dir / f'iter_{MAX_ITERS}.pth'),
                   PY_ARGS='--cfg-options ' + ' '.join(_data_options(dataset, ('val', 'test'))))
    test_id = _sbatch(cluster, env, out_test)
    job = _wait(cluster, test_id, _finished, 'the evaluation job', out_test)
    text = out_test.read_text()
    assert job['JobState'] == 'COMPLETED' and job['ExitCode'] == '0:0', text[-6000:]
    assert len(re.findall(r'\[test\] node \S+/node[12] rank [01] of 2', text)) == 2
    assert re.search(r'^mean\s+\d+\.\d+\s+\d+\.\d+', text, re.M), text[-4000:]  # the mIoU table
    assert 'frames: 2' in text  # both val samples counted once over the 2 ranks
    assert re.search(r'Test results: mIoU: \d+\.\d+', text)
    t_end = time.time()
    print(f'\n[slurm test] training + preemption + requeue: {t_train - t0:.1f} s '
          f'(signal at {t_signal - t0:.1f} s), evaluation: {t_end - t_train:.1f} s')


def test_sigterm_preemption_checkpoints_requeues_and_resumes(cluster, dataset, tmp_path):
    """A scheduler's preemption: SIGTERM to every process of the job step, and to the batch
    script (``scancel --batch``, as ``--signal=B:TERM`` would)."""
    work_dir = tmp_path / 'work'
    out = tmp_path / 'train.out'
    job_id = _sbatch(cluster, _train_env(cluster, dataset, work_dir), out)
    _wait_for_training(cluster, job_id, work_dir, out)
    cluster.run('scancel', '--signal=TERM', job_id)  # the step: torchrun, training processes
    cluster.run('scancel', '--signal=TERM', '--batch', job_id)  # the batch script
    job = _wait_for_the_requeued_run(cluster, job_id, out)
    text = out.read_text()
    assert job['JobState'] == 'COMPLETED' and job['ExitCode'] == '0:0', _digest(text)
    assert '[run_2_nodes] TERM received: asking training to checkpoint and stop' in text
    assert 'forcing job termination' not in text  # srun did not kill the step
    _check_stop_and_resume(work_dir, text)


def test_failing_jobs_end_with_their_own_exit_code(cluster, dataset, tmp_path):
    # processes per node against the granted GPUs: refused before srun, one line
    if cluster.has_gpus():
        out = tmp_path / 'mismatch.out'
        env = _job_env(cluster, CONFIG=CONFIG, WORK_DIR=str(tmp_path / 'w1'), GPUS_PER_NODE='2')
        job_id = _sbatch(cluster, env, out, gpus=1)
        job = _wait(cluster, job_id, _finished, 'the refused job', out)
        text = out.read_text()
        assert job['JobState'] == 'FAILED' and job['ExitCode'] == '2:0', text
        assert ('run_2_nodes.sh: GPUS_PER_NODE=2 but Slurm granted 1 GPUs per node: submit with '
                '--gpus-per-node=2, or unset GPUS_PER_NODE') in text
        assert '[run_2_nodes] job' not in text  # nothing started
    # an evaluation whose checkpoint does not exist: the job's exit code is srun's
    out = tmp_path / 'fail.out'
    env = _job_env(cluster, CONFIG=CONFIG, WORK_DIR=str(tmp_path / 'w2'), RUN='slurm/test.sh',
                   CHECKPOINT=str(tmp_path / 'missing.pth'),
                   PY_ARGS='--cfg-options ' + ' '.join(_data_options(dataset, ('val', 'test'))))
    job_id = _sbatch(cluster, env, out)
    job = _wait(cluster, job_id, lambda j: _finished(j) and out.exists() and
                '[run_2_nodes] finished with exit code' in out.read_text(), 'the failing job', out)
    text = out.read_text()
    code = int(re.search(r'\[run_2_nodes\] finished with exit code (\d+)', text).group(1))
    assert code != 0 and job['JobState'] == 'FAILED', text[-4000:]
    assert job['ExitCode'] == f'{code}:0', (job['ExitCode'], text[-4000:])
