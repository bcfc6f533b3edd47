"""tools/eval_occ.py scores only a complete prediction set (issue 27, item 4): a missing
prediction, a frame of another split or a token predicted twice stops with one line and exit
code 2 (with and without --info), and nothing is written; a complete set prints the scored and
expected frame counts."""
import json
import pickle
import shutil

import numpy as np
import pytest

from splattingocc.cli import eval_occ
from splattingocc.engine.launch import run_main
from splattingocc.evaluation.dump import dump_prediction


def _infos(root, split):
    with open(root / f'nuscenes_infos_{split}.pkl', 'rb') as f:
        return pickle.load(f)['infos']


def _dump_ground_truth(root, out, infos):
    """Predictions equal to the ground truth (they score 100)."""
    for info in infos:
        with np.load(root / info['occ_path']) as z:
            dump_prediction(out, info['scene_name'], info['token'], z['semantics'])
    return out


def _run(capsys, pred, root, *extra):
    out = pred.parent / 'scores.json'
    rc = run_main(eval_occ.main, ['--pred-dir', str(pred), '--data-root', str(root),
                                  '--json', str(out), *extra])
    captured = capsys.readouterr()
    return rc, captured, out


def test_complete_set_prints_scored_and_expected(tiny_dataset, tmp_path, capsys):
    val = _infos(tiny_dataset, 'val')
    pred = _dump_ground_truth(tiny_dataset, tmp_path / 'pred', val)
    info = tiny_dataset / 'nuscenes_infos_val.pkl'
    rc, captured, out = _run(capsys, pred, tiny_dataset, '--info', str(info))
    assert rc == 0, captured.err
    assert f'frames: {len(val)} scored of {len(val)} expected (--info {info})' in captured.out
    doc = json.loads(out.read_text())
    assert doc['frames'] == doc['frames_expected'] == len(val)
    assert doc['miou'] == pytest.approx(100.0)
    rc, captured, _ = _run(capsys, pred, tiny_dataset)  # without --info: the predicted scenes
    assert rc == 0 and (f'frames: {len(val)} scored of {len(val)} expected (ground truth of the '
                        'predicted scenes)') in captured.out


@pytest.mark.parametrize('with_info', [True, False])
def test_a_missing_prediction_is_refused(tiny_dataset, tmp_path, capsys, with_info):
    val = _infos(tiny_dataset, 'val')
    pred = _dump_ground_truth(tiny_dataset, tmp_path / 'pred', val)
    gone = val[1]
    shutil.rmtree(pred / gone['scene_name'] / gone['token'])
    extra = ['--info', str(tiny_dataset / 'nuscenes_infos_val.pkl')] if with_info else []
    rc, captured, out = _run(capsys, pred, tiny_dataset, *extra)
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f'1 of the {len(val)} frames' in err[0] and 'have no prediction' in err[0]
    assert f'{gone["scene_name"]}/{gone["token"]}' in err[0] and '--allow-missing' in err[0]
    assert not out.exists() and 'frames:' not in captured.out  # nothing scored, nothing written
    # scoring the rest is a choice the user makes, and the counts say so
    rc, captured, out = _run(capsys, pred, tiny_dataset, *extra, '--allow-missing')
    assert rc == 0 and f'frames: {len(val) - 1} scored of {len(val)} expected' in captured.out
    assert json.loads(out.read_text())['frames_expected'] == len(val)


def test_a_frame_of_another_split_is_refused(tiny_dataset, tmp_path, capsys):
    val, train = _infos(tiny_dataset, 'val'), _infos(tiny_dataset, 'train')
    pred = _dump_ground_truth(tiny_dataset, tmp_path / 'pred', val + train[:1])
    rc, captured, out = _run(capsys, pred, tiny_dataset, '--info',
                             str(tiny_dataset / 'nuscenes_infos_val.pkl'))
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f'1 of {len(val) + 1} predictions are not among the {len(val)} frames of --info' \
        in err[0] and train[0]['token'] in err[0]
    assert not out.exists()


def test_a_token_predicted_twice_is_refused(tiny_dataset, tmp_path, capsys):
    val = _infos(tiny_dataset, 'val')
    pred = _dump_ground_truth(tiny_dataset, tmp_path / 'pred', val)
    # the same token again as a SparseOcc-style flat file
    with np.load(tiny_dataset / val[0]['occ_path']) as z:
        np.savez(pred / f'{val[0]["token"]}.npz', pred=z['semantics'])
    for info in ([], ['--info', str(tiny_dataset / 'nuscenes_infos_val.pkl')]):
        rc, captured, out = _run(capsys, pred, tiny_dataset, *info)
        err = captured.err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert '1 sample token has more than one prediction' in err[0]
        assert val[0]['token'] in err[0] and not out.exists()
