"""Prediction files (splattingocc/evaluation/dump.py): atomic uint8 writes that load back."""
import numpy as np
import pytest

from splattingocc.evaluation.dump import dump_prediction, load_prediction, prediction_path


def test_dump_is_atomic_uint8_and_loads_back(tmp_path):
    sem = np.arange(24).reshape(2, 3, 4) % 18
    p = dump_prediction(tmp_path, 'scene-1', 'abc', sem)
    assert p == prediction_path(tmp_path, 'scene-1', 'abc')
    back = load_prediction(p)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, sem)
    assert [q.name for q in p.parent.iterdir()] == ['pred.npz']  # no temporary left behind
    with pytest.raises(ValueError, match=r'\[X, Y, Z\]'):
        dump_prediction(tmp_path, 'scene-1', 'abc', np.zeros((4, 4), np.uint8))
