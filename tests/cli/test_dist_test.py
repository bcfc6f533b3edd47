"""tools/dist_test.sh: two CPU processes evaluate, dump every sample once, write one JSON."""
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))  # toy_components

import splattingocc.engine  # noqa: F401,E402
from splattingocc.cli import test as test_tool  # noqa: E402
from splattingocc.cli import train  # noqa: E402
from toy_components import REPO, TOY_CONFIG, dist_env, unique_name  # noqa: E402


def test_dist_test_two_cpu_processes(tmp_path):
    train.main([TOY_CONFIG, '--work-dir', str(tmp_path / 'train'), '--cfg-options',
                f'experiment_name={unique_name()}'])
    single = test_tool.main([TOY_CONFIG, str(tmp_path / 'train' / 'iter_8.pth'),
                             '--work-dir', str(tmp_path / 'single'), '--eval', 'segm', 'ray',
                             '--cfg-options', f'experiment_name={unique_name()}'])

    env = dist_env()
    dump = tmp_path / 'dump'
    proc = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_test.sh'), TOY_CONFIG,
         str(tmp_path / 'train' / 'iter_8.pth'), '2', '--work-dir', str(tmp_path / 'dist'),
         '--eval', 'segm', 'ray', '--dump-dir', str(dump), '--gpu-collect'],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    found = list((tmp_path / 'dist').glob('*/metrics.json'))
    assert len(found) == 1  # rank 0 only
    metrics = json.loads(found[0].read_text())['metrics']
    assert metrics == dict(single)  # 5 samples over 2 ranks (uneven): same as one process
    assert len(list(dump.glob('*/*/pred.npz'))) == 5
