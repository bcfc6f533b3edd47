"""Occupancy figures: top-down labels by hand, and the per-frame PNG tool on a real frame."""
import pickle

import numpy as np

from splattingocc.evaluation.dump import dump_prediction
from splattingocc.paths import REPO_ROOT
from splattingocc.visualization.occ_figures import camera_grid, labels_to_rgba, top_down_labels


def test_top_down_takes_the_highest_occupied_voxel():
    sem = np.full((2, 2, 4), 17, np.uint8)
    sem[0, 0, 1] = 11  # road low, car above it
    sem[0, 0, 2] = 4
    sem[1, 1, 0] = 11
    mask = np.ones_like(sem)
    mask[0, 0, 2] = 0  # the car voxel is unseen
    np.testing.assert_array_equal(top_down_labels(sem, 17), [[4, 17], [17, 11]])
    np.testing.assert_array_equal(top_down_labels(sem, 17, mask), [[11, 17], [17, 11]])
    rgba = labels_to_rgba(top_down_labels(sem, 17), 17)
    assert rgba[0, 1, 3] == 0 and rgba[0, 0, 3] == 1  # free transparent


def test_camera_grid_orders_left_to_right():
    names = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
             'CAM_BACK_RIGHT']
    assert camera_grid(names) == [['CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT'],
                                  ['CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT']]


def test_visual_tool_writes_a_png_per_frame(realdata, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'visual', REPO_ROOT / 'tools' / 'visualization' / 'visual.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tok = '29796060110c4163b07f06eff4af0753'
    d = dict(np.load(realdata / 'occ3d' / f'{tok}.labels.npz'))
    gt_dir = tmp_path / 'data' / 'gts' / 'scene-x' / tok
    gt_dir.mkdir(parents=True)
    np.savez_compressed(gt_dir / 'labels.npz', **d)
    dump_prediction(tmp_path / 'preds', 'scene-x', tok, np.roll(d['semantics'], 2, axis=0))
    # camera images of the real keyframe fixture (another sample, but real files)
    cams = {}
    for f in (realdata / 'nuscenes-keyframe').glob('*.jpg'):
        cams[f.name.split('__')[1]] = dict(data_path=str(f))
    with open(tmp_path / 'data' / 'infos.pkl', 'wb') as fh:
        pickle.dump({'metadata': {}, 'infos': [dict(token=tok, scene_name='scene-x',
                                                    cams=cams)]}, fh)
    out = tmp_path / 'vis'
    written = tool.main([str(tmp_path / 'preds' / 'scene-x'), '--data-root',
                         str(tmp_path / 'data'), '--out', str(out), '--image-width', '160',
                         '--dpi', '50'])
    assert written == [out / f'{tok}.png']
    from PIL import Image
    with Image.open(written[0]) as im:
        assert im.format == 'PNG' and im.width > 500 and im.height > 400
        # the top-down panels are coloured (not an empty figure)
        arr = np.asarray(im.convert('RGB'))
        assert (np.abs(arr.astype(int) - [255, 0, 255]).sum(-1) < 60).sum() > 500  # road magenta
