"""Info pkls go through one restricted unpickler (issue 27, item 5): the files the converter
writes (and mmdetection3d's) load exactly as ``pickle.load`` reads them, at every protocol; a pickle
that would create a file when loaded is refused with one line, through the dataset and
``tools/eval_occ.py --info``, and the file is not created."""
import os
import pickle

import numpy as np
import pytest

from splattingocc.cli import eval_occ
from splattingocc.engine.launch import run_main
from splattingocc.errors import CorruptFileError, UnsafePickleError
from splattingocc.evaluation.ray_origins import load_infos
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import DATASETS
from splattingocc.safe_pickle import load_pickle, loads_pickle


class _CreatesAFile:
    """Unpickling calls ``open(path, 'w')``: a file appears if the loader runs it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


class _RunsAShell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f'touch {self.path}',))


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def test_converter_info_files_load_as_pickle_reads_them(tiny_dataset):
    for path in sorted(tiny_dataset.glob('*.pkl')):
        with open(path, 'rb') as f:
            expected = pickle.load(f)
        assert _same(load_pickle(path), expected), path


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_and_containers_at_every_protocol(protocol):
    from collections import OrderedDict
    obj = dict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.float64(2.5), c=np.int64(7),
               d=[np.eye(4), (1, 'x', None, b'raw', True)], e={1, 2}, f=OrderedDict(k=np.uint8(3)),
               g=np.array(['CAM_FRONT']), h=np.zeros((0, 3), np.uint16))
    assert _same(loads_pickle(pickle.dumps(obj, protocol=protocol)), obj)


@pytest.mark.parametrize('payload', [_CreatesAFile, _RunsAShell])
def test_a_pickle_that_would_create_a_file_is_refused(tmp_path, payload, capsys):
    control = tmp_path / 'control'
    pickle.loads(pickle.dumps(payload(control)))  # plain pickle runs it: the file appears
    assert control.exists()
    control.unlink()
    marker = tmp_path / 'created'
    evil = tmp_path / 'evil_infos.pkl'
    evil.write_bytes(pickle.dumps(dict(metadata={}, infos=[payload(marker)])))
    with pytest.raises(UnsafePickleError, match=r'evil_infos\.pkl: refused, this info file asks '
                                                r'for (io\.open|builtins\.open|posix\.system)'):
        load_pickle(evil)
    # the dataset
    with pytest.raises(UnsafePickleError, match='could run code'):
        DATASETS.build(dict(type='Occ3DNuScenesDataset', ann_file=str(evil), camera_names=['C'],
                            test_mode=True))
    # tools/eval_occ.py --info: one line, exit 2, before any prediction is read
    (tmp_path / 'pred').mkdir()
    rc = run_main(eval_occ.main, ['--pred-dir', str(tmp_path / 'pred'), '--data-root',
                                  str(tmp_path), '--info', str(evil), '--metric', 'miou', 'ray'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'refused' in err[0] and str(evil) in err[0], err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['evil_infos.pkl', 'pred']


def test_object_arrays_other_codecs_and_truncation_are_refused(tmp_path):
    with pytest.raises(UnsafePickleError, match='numpy dtype object'):
        loads_pickle(pickle.dumps(np.array([None, 1], dtype=object)))
    # protocol 2 stores bytes as _codecs.encode(text, 'latin1'); no other codec is allowed
    crafted = b'\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xq\x01X\x04\x00\x00\x00zlibq\x02' \
              b'\x86q\x03Rq\x04.'
    with pytest.raises(UnsafePickleError, match="encoding 'zlib'"):
        loads_pickle(crafted)
    path = tmp_path / 'cut.pkl'
    data = pickle.dumps(dict(infos=[dict(token='t', m=np.eye(4))]))
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptFileError, match=r'cut\.pkl: not a readable info file'):
        load_infos(path)


def test_no_plain_pickle_load_in_the_package():
    """Every pickle the package reads goes through splattingocc.safe_pickle."""
    offenders = []
    for folder in ('splattingocc', 'tools'):
        for path in sorted((REPO_ROOT / folder).rglob('*.py')):
            text = path.read_text()
            if path.name != 'safe_pickle.py' and ('pickle.load(' in text or 'pickle.loads(' in text
                                                  or 'Unpickler(' in text):
                offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []
