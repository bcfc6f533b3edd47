"""tools/dist_train.sh: two CPU processes (torchrun, gloo, CPU DDP wrapper) on the toy model."""
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))  # toy_components

import splattingocc.engine  # noqa: F401,E402
from toy_components import REPO, TOY_CONFIG, dist_env  # noqa: E402


def test_dist_train_two_cpu_processes(tmp_path):
    env = dist_env()
    proc = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), TOY_CONFIG, '2', '--work-dir',
         str(tmp_path), '--cfg-options', 'train_cfg.max_iters=6', 'train_cfg.val_interval=6',
         'param_scheduler.1.end=6', 'default_hooks.checkpoint.interval=3'],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'Distributed launcher: pytorch' in log
    assert re.search(r'Distributed training: True', log)
    assert re.search(r"dist_cfg: \{'backend': '(gloo|nccl)'", log)
    # checkpoints written once (rank 0), complete, with the random states of both ranks
    # (gathered from the 2 processes: proof that two ranks trained together)
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_3.pth', 'iter_6.pth']
    ckpt = torch.load(tmp_path / 'iter_6.pth')
    assert ckpt['meta']['iter'] == 6 and len(ckpt['rng_states']) == 2
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])  # unwrapped weights
    # the validation split (5 samples over 2 ranks, uneven) counted every sample once
    assert re.search(r'Iter\(val\).*frames: 5', log)
    assert 'Training finished: iteration 6/6' in log
