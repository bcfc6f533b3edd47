"""Broken data ends in one line naming the file and the fix (issue 27, items 1 and 9): a truncated
JPEG or PNG is refused (OpenCV would decode it partly without an error), also from inside a
DataLoader worker; an info file with no samples, another label-file format, a missing key; label
files with arrays of unequal length; the converter's and the Occ3D reader's errors through
``run_main``; rerunning ``create_data synthetic`` into a finished folder."""
import pickle
import re
import shutil

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from torch.utils.data import DataLoader

from splattingocc.cli import create_data
from splattingocc.datasets.nuscenes_converter import load_labels2d
from splattingocc.datasets.occ3d import load_occ3d_labels
from splattingocc.datasets.transforms import image_truncation, read_image_rgb
from splattingocc.engine.launch import run_main
from splattingocc.errors import CorruptFileError, DataError, OutputExistsError, UserError
from splattingocc.paths import REPO_ROOT
from splattingocc.registry import DATASETS

DCFG = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/occ3d_nuscenes.py'))
CAMS = list(DCFG.camera_names)


def _pipeline():
    return [dict(type='LoadMultiViewImages', camera_names=CAMS),
            dict(type='LoadLabels2D', camera_names=CAMS),
            dict(type='LoadOcc3DLabels', occ_size=DCFG.occ_size, num_classes=DCFG.num_classes),
            dict(type='PackOccInputs', label_downsample=1, ignore_label=DCFG.ignore_label)]


def _infos(root):
    with open(root / 'nuscenes_infos_val.pkl', 'rb') as f:
        return pickle.load(f)


def _write(path, data):
    with open(path, 'wb') as f:
        pickle.dump(data, f)
    return path


def _dataset(ann_file, root):
    return DATASETS.build(dict(type='Occ3DNuScenesDataset', ann_file=str(ann_file),
                               data_root=str(root), camera_names=CAMS, pipeline=_pipeline(),
                               test_mode=True))


def _one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


def _truncate(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def _cut_jpeg_scan(src, dst):
    """The JPEG cut in the middle of its image data (what OpenCV decodes partly)."""
    data = src.read_bytes()
    start = data.rfind(b'\xff\xda')
    dst.write_bytes(data[:start + (len(data) - start) // 2])
    return dst


def test_truncated_jpeg_is_refused_though_opencv_decodes_it(tiny_dataset, tmp_path):
    data = _infos(tiny_dataset)
    jpeg = tiny_dataset / data['infos'][0]['cams'][CAMS[0]]['data_path']
    cut = _cut_jpeg_scan(jpeg, tmp_path / 'cut.jpg')
    assert cv2.imread(str(cut)) is not None  # the real failure: OpenCV returns an image
    assert image_truncation(jpeg.read_bytes()) is None
    assert read_image_rgb(jpeg).shape[2] == 3  # the complete file still reads
    with pytest.raises(CorruptFileError, match=r'cut\.jpg cannot be decoded: a truncated JPEG'):
        read_image_rgb(cut)
    # PNG: cut before the IEND chunk
    png = tmp_path / 'full.png'
    cv2.imwrite(str(png), np.full((8, 8, 3), 7, np.uint8))
    assert read_image_rgb(png).mean() == 7
    with pytest.raises(OSError, match='truncated PNG'):  # CorruptFileError is an OSError too
        read_image_rgb(_truncate(png, tmp_path / 'cut.png', 0.8))


def test_truncated_jpeg_in_a_dataloader_worker_is_one_line(tiny_dataset, tmp_path, capsys):
    """The error raised in a worker process comes back as one line and exit code 2."""
    data = _infos(tiny_dataset)
    jpeg = tiny_dataset / data['infos'][1]['cams'][CAMS[2]]['data_path']
    cut = _cut_jpeg_scan(jpeg, tmp_path / 'cut.jpg')
    data['infos'][1]['cams'][CAMS[2]]['data_path'] = str(cut)
    ann = _write(tmp_path / 'infos.pkl', data)
    seen = []

    def main(argv):
        loader = DataLoader(_dataset(ann, tiny_dataset), batch_size=1, num_workers=1,
                            collate_fn=lambda batch: batch)
        for batch in loader:
            seen.append(batch[0]['meta']['sample_token'])

    assert run_main(main, []) == 2
    line = _one_error_line(capsys)
    assert f'camera image {cut} cannot be decoded: a truncated JPEG' in line, line
    assert 'Traceback' not in line and 'DataLoader worker' not in line
    assert seen == [data['infos'][0]['token']]  # the sample before it loaded, none after


@pytest.mark.parametrize('change, message', [
    (lambda d: d.update(infos=[]), r'"infos" holds 0 samples, no sample to load'),
    (lambda d: d['metadata'].update(labels2d_format=0),
     r'metadata labels2d_format is 0, this version reads 1'),
    (lambda d: d['metadata'].update(version='v2.0'), r"metadata version is 'v2.0'"),
    (lambda d: d.pop('metadata'), r'no "metadata" dict'),
    (lambda d: d['infos'][1].pop('ego2global'), r"sample 1 lacks \['ego2global'\]"),
    (lambda d: d['infos'][0].update(lidar2ego=np.eye(3)),
     r"sample 0: 'lidar2ego' must be a finite 4x4 matrix, found shape \(3, 3\)"),
    (lambda d: d['infos'][0]['cams'][CAMS[1]].pop('cam_intrinsic'),
     rf"camera {CAMS[1]} lacks \['cam_intrinsic'\]"),
    (lambda d: d['infos'][0]['cams'].pop(CAMS[3]), rf'has no camera {CAMS[3]}'),
])
def test_bad_info_files_are_one_clear_error(tiny_dataset, tmp_path, change, message, capsys):
    data = _infos(tiny_dataset)
    change(data)
    ann = _write(tmp_path / 'infos.pkl', data)
    with pytest.raises(DataError, match=message) as info:
        _dataset(ann, tiny_dataset)
    text = str(info.value)
    assert text.startswith(str(ann)) and ('create_data' in text or 'camera_names' in text), text
    # through run_main (mmengine's registry adds the class name to the message): one line
    assert run_main(lambda argv: _dataset(ann, tiny_dataset), []) == 2
    assert 'infos.pkl' in _one_error_line(capsys)


def test_label_file_with_unequal_arrays_is_one_clear_error(tiny_dataset, tmp_path):
    token = _infos(tiny_dataset)['infos'][0]['token']
    src = tiny_dataset / 'labels2d' / f'{token}.npz'
    with np.load(src) as z:
        arrays = dict(z)
    assert load_labels2d(src, CAMS)[CAMS[0]]['u'].shape == arrays[f'{CAMS[0]}_u'].shape
    bad = dict(arrays)
    bad[f'{CAMS[1]}_depth'] = bad[f'{CAMS[1]}_depth'][:-3]  # was a bare AssertionError
    np.savez(tmp_path / 'short.npz', **bad)
    with pytest.raises(DataError, match=rf'short\.npz: the arrays of camera {CAMS[1]} must be '
                                        r'1-D of one length.*create_data'):
        load_labels2d(tmp_path / 'short.npz', CAMS)
    bad = dict(arrays)
    bad[f'{CAMS[0]}_depth'] = bad[f'{CAMS[0]}_depth'].copy()
    bad[f'{CAMS[0]}_depth'][0] = np.inf
    np.savez(tmp_path / 'inf.npz', **bad)
    with pytest.raises(DataError, match=rf'{CAMS[0]}_depth holds 1 NaN or infinite'):
        load_labels2d(tmp_path / 'inf.npz', CAMS)
    _truncate(src, tmp_path / 'cut.npz', 0.5)
    with pytest.raises(CorruptFileError, match=r'cut\.npz: cannot read the 2D label file'):
        load_labels2d(tmp_path / 'cut.npz', CAMS)


def test_project_errors_are_one_line_through_run_main(tmp_path, capsys):
    """Occ3DFormatError and NuScenesDataError are UserErrors: no traceback."""
    np.savez(tmp_path / 'labels.npz', semantics=np.zeros((2, 2, 2), np.uint8))

    def read_gt(argv):
        load_occ3d_labels(tmp_path / 'labels.npz')

    assert run_main(read_gt, []) == 2
    assert "missing array(s) ['mask_lidar', 'mask_camera']" in _one_error_line(capsys)
    assert run_main(create_data.main, ['nuscenes', '--root', str(tmp_path / 'none')]) == 2
    line = _one_error_line(capsys)
    assert f'nuScenes data root {tmp_path / "none"} does not exist' in line, line
    assert not (tmp_path / 'none').exists()


def test_create_data_synthetic_into_a_finished_folder(tmp_path, capsys):
    root = tmp_path / 'data'
    root.mkdir()
    (root / 'keep.txt').write_text('mine')
    assert run_main(create_data.main, ['synthetic', '--root', str(root), '--scenes', '1',
                                       '--samples-per-scene', '1']) == 2
    line = _one_error_line(capsys)
    assert f'{root} already exists and is not empty' in line and 'another --root' in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ['data']  # no partial folder
    assert [p.name for p in root.iterdir()] == ['keep.txt']
    assert issubclass(OutputExistsError, FileExistsError) and issubclass(OutputExistsError,
                                                                         UserError)


def test_truncated_copy_of_the_whole_camera_set_fails_on_the_first_image(tiny_dataset, tmp_path):
    """The issue's probe at small scale: every image cut to 15% of its bytes."""
    data = _infos(tiny_dataset)
    images = tmp_path / 'images'
    images.mkdir()
    for info in data['infos']:
        for ch in CAMS:
            src = tiny_dataset / info['cams'][ch]['data_path']
            info['cams'][ch]['data_path'] = str(_truncate(src, images / src.name, 0.15))
    ds = _dataset(_write(tmp_path / 'infos.pkl', data), tiny_dataset)
    first = data['infos'][0]['cams'][CAMS[0]]['data_path']
    with pytest.raises(CorruptFileError, match=re.escape(f'camera image {first} cannot be')):
        ds[0]
    shutil.rmtree(images)
