"""The real tiny config (configs/splattingocc/splattingocc-tiny-synthetic.py) on the synthetic
dataset: two seeded runs are bit-identical, and a run interrupted and resumed equals an
uninterrupted one. Needs the demo's dataset (data/synthetic-nuscenes with info pkls: `bash
tools/demo.sh` or tools/create_data.py synthetic + nuscenes) and SPLATTINGOCC_SLOW_TESTS=1:
    SPLATTINGOCC_SLOW_TESTS=1 [SPLATTINGOCC_SYNTHETIC_DATA=DIR] \
        python -m pytest tests/cli/test_tiny_config_reproducibility.py
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))  # toy_components

import splattingocc.engine  # noqa: F401,E402
from splattingocc.cli import train as train_tool  # noqa: E402
from toy_components import (REPO, Interrupt, StopAfter, assert_same_state,  # noqa: E402
                            losses_of, unique_name)

CONFIG = str(REPO / 'configs' / 'splattingocc' / 'splattingocc-tiny-synthetic.py')
# the demo's dataset; SPLATTINGOCC_SYNTHETIC_DATA points elsewhere (e.g. a small generated copy)
DATA = Path(os.environ.get('SPLATTINGOCC_SYNTHETIC_DATA', REPO / 'data' / 'synthetic-nuscenes'))
ITERS = 6

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get('SPLATTINGOCC_SLOW_TESTS'),
                       reason='slow (minutes on 2 cores: 3 model builds, 15 iterations): set '
                       'SPLATTINGOCC_SLOW_TESTS=1 to run it'),
    pytest.mark.skipif(not (DATA / 'nuscenes_infos_train.pkl').is_file(),
                       reason=f'{DATA} has no info pkls: run bash tools/demo.sh (or '
                       'tools/create_data.py synthetic + nuscenes) to create the dataset'),
]


def _runner(work_dir, *extra):
    root = f'{DATA}/'
    options = [
        f'experiment_name={unique_name("tiny")}',
        f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={root}nuscenes_infos_val.pkl',
        f'test_evaluator.ann_file={root}nuscenes_infos_val.pkl',
        f'train_cfg.max_iters={ITERS}', 'train_cfg.val_begin=1000000',
        f'param_scheduler.1.end={ITERS}', f'default_hooks.checkpoint.interval={ITERS // 2}']
    return train_tool.build_runner(train_tool.parse_args(
        [CONFIG, '--work-dir', str(work_dir), *extra, '--cfg-options', *options]))


def test_tiny_config_is_reproducible_and_resumable(tmp_path):
    runs = []
    for name in ('a', 'b'):
        runs.append(_runner(tmp_path / name))  # construction seeds the global RNGs
        runs[-1].train()
    a, b = (losses_of(r) for r in runs)
    assert len(a) == ITERS and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    state = runs[0].model.state_dict()

    interrupted = _runner(tmp_path / 'c')
    interrupted.register_hook(StopAfter(ITERS // 2))
    with pytest.raises(Interrupt):
        interrupted.train()
    resumed = _runner(tmp_path / 'c', '--resume')
    resumed.train()
    np.testing.assert_array_equal(losses_of(resumed), a)
    assert_same_state(resumed.model.state_dict(), state)
