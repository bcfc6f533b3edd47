"""A NaN loss on one of two processes stops both at once (no rank left waiting in a collective)."""
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))  # toy_components

from toy_components import REPO, TOY_CONFIG, dist_env  # noqa: E402


def test_nan_on_one_rank_stops_both(tmp_path):
    env = dist_env()
    proc = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), TOY_CONFIG, '2', '--work-dir',
         str(tmp_path), '--cfg-options', 'model.nan_at_iter=3', 'model.nan_rank=1',
         'env_cfg.dist_cfg.timeout=120'],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'loss_fit became nan at iteration 3' in out, out[-4000:]  # rank 1, the term
    assert 'became non-finite on another process at iteration 3' in out, out[-4000:]  # rank 0
    assert not list(tmp_path.glob('*.pth'))
