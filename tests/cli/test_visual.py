"""tools/visualization/visual.py: the per-frame PNG on a real frame."""
import pickle

import numpy as np

from splattingocc.cli import visual as tool
from splattingocc.evaluation.dump import dump_prediction


def test_visual_tool_writes_a_png_per_frame(realdata, tmp_path):
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
