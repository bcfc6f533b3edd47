"""splattingocc.experiments.report / plots: results.md, results.json, plots, the log entry."""
import datetime
import json
import math

import pytest
from fake_tools import make_runner

import splattingocc.experiments.runner as runner_module
from splattingocc.experiments import Budget


def test_results_content(base, tmp_path):
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1)).run()
    out = tmp_path / 'out'
    data = json.loads((out / 'results.json').read_text())
    splat, nerf = data['arms']
    # seeds 0 and 1 give mIoU 30 and 31: mean 30.5, sample std 1/sqrt(2)
    assert splat['mIoU_mean'] == pytest.approx(30.5)
    assert splat['mIoU_std'] == pytest.approx(1 / math.sqrt(2))
    assert (splat['mIoU_min'], splat['mIoU_max']) == (30.0, 31.0)
    assert nerf['mIoU_mean'] == pytest.approx(20.5) and nerf['geometry_IoU_mean'] == 50.0
    assert splat['per_class']['car'] == pytest.approx(15.25)
    assert splat['seconds_per_iter'] == pytest.approx(0.5) and splat['data_share'] == 0.2
    assert splat['render_share'] is None and splat['peak_rss_mb'] == 321.0
    assert data['budget'] == {'kind': 'iters', 'iters': 40, 'minutes': None}
    assert 'model.renderer' in nerf['changes'] and splat['changes'] == {}
    assert len(splat['runs'][0]['timeline']) == 4  # evals=4 during training
    md = (out / 'results.md').read_text()
    assert '| splat | 2/2 | 30.50 ± 0.71 | 50.00 | n/a | 40 | 0.500 | n/a | 321 MB RSS |' in md
    assert '| car | 15.25 | 10.25 |' in md
    assert '40 training iterations per run' in md
    names = base.class_names
    assert all(f'| {n} |' in md for n in names if n != 'free') and '| free |' not in md


def test_plots_are_written(base, tmp_path):
    summary = make_runner(tmp_path, base, arms='splat,nerf', plots=True).run()
    assert summary['plots'] == ['miou_vs_time.png', 'per_class_iou.png', 'step_time.png']
    assert '![step_time.png](step_time.png)' in (tmp_path / 'out' / 'results.md').read_text()
    for name in ('miou_vs_time.png', 'per_class_iou.png', 'step_time.png'):
        data = (tmp_path / 'out' / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 2000, name


def test_log_entry_appended(base, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, 'git_commit', lambda *a, **k: 'abc1234')
    log = tmp_path / 'log.txt'
    log.write_text('SplattingOcc experiment log\n\n2026-01-01  project start\n')
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1), budget=Budget(iters=40),
                command_line='python tools/ablate.py --base X').run()
    text = log.read_text()
    assert text.startswith('SplattingOcc experiment log\n\n2026-01-01  project start\n')
    entry = text[len('SplattingOcc experiment log\n\n2026-01-01  project start\n'):]
    assert entry.lstrip('\n').startswith(f'{datetime.date.today().isoformat()}  ablation of ')
    assert 'splattingocc-tiny-synthetic.py' in entry
    assert 'commit: abc1234' in entry and 'command: python tools/ablate.py --base X' in entry
    assert 'budget: 40 training iterations per run; seeds: 0, 1' in entry
    assert '    splat: (base as is)' in entry
    assert ('    nerf: model.renderer._delete_=True model.renderer.type=VolumeRenderer '
            'model.renderer.step_ratio=0.5') in entry
    assert '| splat | 2/2 | 30.50 ± 0.71 |' in entry and '| nerf | 2/2 | 20.50 ± 0.71 |' in entry
    # a call with nothing left to run does not add another entry
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1)).run()
    assert log.read_text() == text
