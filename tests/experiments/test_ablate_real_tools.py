"""tools/ablate.py end to end with the real tools/train.py and tools/test.py (subprocesses) on the
toy model with a real read-out (tests/cli/protocol_toy_config.py): train on train, calibrate on
val, test on test with the val-chosen threshold, every number labelled with its split."""
import json
from pathlib import Path

import pytest

from splattingocc.experiments.cli import main
from splattingocc.paths import REPO_ROOT

TOY = REPO_ROOT / 'tests' / 'cli' / 'protocol_toy_config.py'


def test_protocol_with_the_real_tools(tmp_path, monkeypatch):
    # the toy config's custom_imports (protocol_toy) must import in the subprocesses
    monkeypatch.setenv('PYTHONPATH', str(REPO_ROOT / 'tests' / 'cli'))
    summary = main(['--base', str(TOY), '--arms', 'toy=train_dataloader.batch_size=2',
                    '--seeds', '0', '--iters', '4', '--evals', '2', '--eval', 'segm', 'ap',
                    '--out', str(tmp_path / 'out'), '--no-plots'])
    run = summary['budgets'][0]['arms'][0]['runs'][0]
    assert run['status'] == 'ok', run.get('error_tail')
    # the threshold was chosen on val and the test used exactly it, on the test split
    calib = json.loads(Path(f'{run["checkpoint"]}.calibration.json').read_text())
    assert calib['split'] == 'val' and run['readout']['chosen_on'] == 'val'
    assert run['readout']['threshold'] == calib['threshold'] == run['test']['threshold']
    assert run['test']['split'] == 'test' and run['test']['threshold_source'] == 'calibration'
    assert run['labels'] == [] and run['metrics']['frames'] == 5  # the toy test split's length
    assert 'occupancy_AP' in run['metrics'] and 'RayIoU' not in run['metrics']
    # the learning curve: two val evaluations with the sweep; the last one scores the same
    # checkpoint on the same split as the calibration, whose grid holds the curve's thresholds
    assert [(t['iter'], t['split']) for t in run['timeline']] == [(2, 'val'), (4, 'val')]
    assert run['timeline'][-1]['readout'] == 'threshold chosen on val at this point'
    assert calib['miou'] >= run['timeline'][-1]['mIoU'] - 1e-3
    assert calib['miou'] == pytest.approx(run['readout']['val_mIoU'])
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert '| toy | 1/1 | test |' in md and 'fewer than 3 seeds' in md
