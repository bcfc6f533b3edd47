"""splattingocc.experiments.report / plots: results.md, results.json, plots, the log entry."""
import datetime
import json
import math

import pytest
from fake_tools import FakeTools, make_runner

import splattingocc.experiments.runner as runner_module
from splattingocc.experiments import Budget, append_log_entry, next_entry_id


def test_results_content(base, tmp_path):
    fake = FakeTools(seed_effect={'nerf': 0.5})
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1, 2), fake=fake).run()
    out = tmp_path / 'out'
    data = json.loads((out / 'results.json').read_text())
    assert data['budgets'][0]['tag'] == 'iters-40'
    assert data['budgets'][0]['iters'] == 40 and 'test unless stated' in data['protocol']
    splat, nerf = data['budgets'][0]['arms']
    # seeds 0, 1, 2 give mIoU 30, 31, 32: mean 31, std 1, 95 % half-width 4.3027 / sqrt(3)
    iv = splat['intervals']['mIoU']
    assert iv['mean'] == pytest.approx(31.0) and iv['std'] == pytest.approx(1.0)
    assert iv['half_width'] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert splat['splits'] == ['test'] and splat['readout_kinds'] == ['threshold']
    # the val-chosen thresholds of the fake: 0.30, 0.31, 0.32
    assert splat['threshold']['mean'] == pytest.approx(0.31)
    assert splat['intervals']['RayIoU']['mean'] == pytest.approx(26.0)
    assert splat['intervals']['occupancy_AP']['mean'] == pytest.approx(41.0)
    assert nerf['intervals']['mIoU']['mean'] == pytest.approx(21.5)  # 20, 21.5, 23
    assert splat['per_class']['car'] == pytest.approx(15.5)
    assert splat['seconds_per_iter'] == pytest.approx(0.5)
    assert splat['data_share'] == pytest.approx(0.2)
    assert splat['render_share'] is None and splat['peak_rss_mb'] == 321.0
    assert 'model.head' in data['arms'][1]['changes'] and data['arms'][0]['changes'] == {}
    assert len(splat['runs'][0]['timeline']) == 4  # evals=4 during training
    # the paired difference splat - nerf by seed: 10, 9.5, 9 -> 9.5 [8.26, 10.74]
    pair = data['budgets'][0]['pairs'][0]
    assert (pair['a'], pair['b'], pair['metric']) == ('splat', 'nerf', 'mIoU')
    assert pair['mean'] == pytest.approx(9.5) and pair['verdict'] == 'a > b'
    md = (out / 'results.md').read_text()
    assert '## Equal iterations (40 per run)' in md
    assert ('| splat | 3/3 | test | 31.00 [28.52, 33.48] | 50.00 [50.00, 50.00] | '
            '26.00 [23.52, 28.48] | 41.00 [38.52, 43.48] | 0.31 ± 0.01 | '
            '33.00 [33.00, 33.00] | 40 | 0.500 | n/a | 321 MB RSS |') in md
    assert '| splat - nerf | mIoU | 3 | 9.50 [8.26, 10.74] | splat > nerf |' in md
    assert '| splat | test | 0.1000 [0.1000, 0.1000] |' in md  # rendering metrics
    assert '| car | 15.50 | 10.75 |' in md
    assert '40 training iterations per run' in md and 'fewer than 3 seeds' not in md
    names = base.class_names
    assert all(f'| {n} |' in md for n in names if n != 'free') and '| free |' not in md


def test_few_seeds_and_val_numbers_are_labelled(base, tmp_path):
    summary = make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1)).run()
    pair = summary['budgets'][0]['pairs'][0]
    assert pair['verdict'] == 'too few seeds for a claim'
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert 'fewer than 3 seeds' in md and '| too few seeds for a claim |' in md
    # a result computed on val is labelled so
    from splattingocc.experiments.runner import _labels
    assert _labels('val', 'val') == [
        'evaluated on the val split, not a held-out test split',
        'threshold chosen on the val split it is reported on: optimistic']
    assert _labels('test', 'val') == [] and _labels('test', None) == []


def test_plots_are_written(base, tmp_path):
    summary = make_runner(tmp_path, base, arms='splat,nerf', plots=True).run()
    names = ['miou_vs_time.png', 'per_class_iou.png', 'step_time.png']
    assert summary['budgets'][0]['plots'] == [f'iters-40/{n}' for n in names]
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert '![iters-40/step_time.png](iters-40/step_time.png)' in md
    for name in names:
        data = (tmp_path / 'out' / 'iters-40' / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 2000, name


def test_log_entry_appended(base, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, 'git_commit', lambda *a, **k: 'abc1234')
    log = tmp_path / 'log.txt'
    before = '# SplattingOcc experiment log\n\nE1  2026-01-01  project start\n  Skeleton.\n'
    log.write_text(before)
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1), budgets=Budget(iters=40),
                command_line='python tools/ablate.py --base X').run()
    text = log.read_text()
    assert text.startswith(before + '\n')  # one blank line between entries
    entry = text[len(before) + 1:]
    assert entry.startswith(f'E2  {datetime.date.today().isoformat()}  ablation of ')
    assert all(line.startswith('  ') for line in entry.splitlines()[1:])  # the body is indented
    assert 'splattingocc-tiny-synthetic.py' in entry
    assert 'commit: abc1234' in entry and 'command: python tools/ablate.py --base X' in entry
    assert 'budgets: 40 training iterations per run; seeds: 0, 1' in entry
    assert 'protocol: trained on train; read-out threshold' in entry
    assert '    splat: (base as is)' in entry
    assert '    nerf: model.head._delete_=True model.head.type=RenderOccHead' in entry
    assert 'model.readout.threshold=0.004890737' in entry
    assert '| splat | 2/2 | test | 30.50 [24.15, 36.85] |' in entry
    assert '| nerf | 2/2 | test | 20.50 [14.15, 26.85] |' in entry
    assert '| splat - nerf | mIoU | 2 | 10.00 [10.00, 10.00] | too few seeds for a claim |' in entry
    # a call with nothing left to run does not add another entry
    make_runner(tmp_path, base, arms='splat,nerf', seeds=(0, 1)).run()
    assert log.read_text() == text


def _summary(out_dir):
    """A minimal runner summary: one arm, one finished and one failed seed."""
    runs = [dict(arm='splat', seed=0, status='ok'), dict(arm='splat', seed=1, status='failed')]
    return dict(date='2026-12-07', base='configs/splattingocc/splattingocc-tiny-synthetic.py',
                commit='abc1234', command='python tools/ablate.py --base X',
                protocol='trained on train', seeds=[0, 1], common_options=[],
                arms=[dict(name='splat', overrides='(base as is)')],
                budgets=[dict(tag='iters-8', text='8 training iterations per run',
                              arms=[dict(name='splat', runs=runs)])],
                out_dir=str(out_dir))


def test_log_entry_ids(tmp_path):
    table = ['| arm | mIoU |', '|---|---|', '| splat | 30.00 |']
    # IDs E1, E2 and E10 start lines: the next is E11 (not E3, not from an indented E99 or E7x)
    log = tmp_path / 'log.txt'
    before = ('# experiment log\n# one entry per experiment\n\n'
              'E1  2026-11-23  project start\n  body\n\n'
              'E10  2026-11-25  later\n  body mentions\n  E99 indented, not an ID\n\n'
              'E2  2026-11-24  out of order\n  body\nE7x  not an ID either\n')
    log.write_text(before)
    assert next_entry_id(before) == 'E11'
    entry_id, entry = append_log_entry(str(log), _summary(tmp_path), table)
    assert entry_id == 'E11'
    assert entry.startswith('E11  2026-12-07  ablation of configs/splattingocc/'
                            'splattingocc-tiny-synthetic.py (tools/ablate.py)\n')
    assert '  commit: abc1234\n  command: python tools/ablate.py --base X\n' in entry
    assert '    | splat | 30.00 |\n' in entry and '  failed: iters-8/splat/seed1\n' in entry
    assert all(line.startswith('  ') for line in entry.splitlines()[1:])
    assert log.read_text() == before + '\n' + entry
    assert next_entry_id(log.read_text()) == 'E12'
    # trailing blank lines (or none at all) still give exactly one blank line between entries
    log.write_text('E3  2026-11-23  x\n  body')
    assert append_log_entry(str(log), _summary(tmp_path), table).id == 'E4'
    assert log.read_text().startswith('E3  2026-11-23  x\n  body\n\nE4  2026-12-07  ')
    log.write_text('E3  2026-11-23  x\n\n\n')
    append_log_entry(str(log), _summary(tmp_path), table)
    assert log.read_text().startswith('E3  2026-11-23  x\n\nE4  ')
    # a missing or empty file, or a header alone: E1
    missing = tmp_path / 'new' / 'log.txt'
    entry_id, entry = append_log_entry(str(missing), _summary(tmp_path), table)
    assert entry_id == 'E1' and missing.read_text() == entry and entry.startswith('E1  2026-12-07')
    empty = tmp_path / 'empty.txt'
    empty.write_text('')
    assert append_log_entry(str(empty), _summary(tmp_path), table).id == 'E1'
    assert empty.read_text().startswith('E1  ')
    header = tmp_path / 'header.txt'
    header.write_text('# experiment log\n')
    assert append_log_entry(str(header), _summary(tmp_path), table).id == 'E1'
    assert header.read_text().startswith('# experiment log\n\nE1  2026-12-07  ablation of ')


def _append_many(log, out_dir, n):
    for _ in range(n):
        append_log_entry(log, _summary(out_dir), ['| arm | mIoU |'])


def test_concurrent_appends_keep_every_entry(tmp_path):
    """Issue 27 item 8: two ablations finishing together must not lose an entry (the file is
    copied and renamed; the folder lock serialises the read-append-rename)."""
    import multiprocessing as mp
    log = str(tmp_path / 'log.txt')
    ctx = mp.get_context('fork')
    procs = [ctx.Process(target=_append_many, args=(log, tmp_path, 10)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    ids = [line.split()[0] for line in open(log, encoding='utf-8') if line.startswith('E')]
    assert sorted(ids, key=lambda i: int(i[1:])) == [f'E{i}' for i in range(1, 41)]
    assert not [p for p in tmp_path.iterdir() if p.name != 'log.txt']  # no temporary left
