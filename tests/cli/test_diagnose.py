"""tools/analysis/diagnose.py end to end on a tiny synthetic dataset against counts read from its
files."""
import json
import pickle

import numpy as np
import pytest
import torch

from splattingocc.cli import diagnose as tool
from splattingocc.paths import REPO_ROOT


def test_diagnose_tool_end_to_end(tmp_path, tiny_dataset):
    """Random-weight tiny model on a tiny synthetic dataset: the per-class voxel counts are those
    of the val frames' labels.npz inside mask_camera, every voxel gets one prediction, and the
    pixel shares are consistent."""
    from splattingocc.models import SplattingOcc  # noqa: F401  (registers the model)
    from splattingocc.registry import MODELS
    from splattingocc.engine.launch import load_config

    root = tiny_dataset
    config = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')
    options = [f'val_dataloader.dataset.data_root={root}/']
    cfg = load_config(config)
    torch.manual_seed(0)
    ckpt = tmp_path / 'random.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), ckpt)
    out_json = tmp_path / 'diag.json'
    summary = tool.main([config, str(ckpt), '--json', str(out_json), '--cfg-options',
                            *options])
    with open(root / 'nuscenes_infos_val.pkl', 'rb') as f:
        infos = pickle.load(f)
    infos = infos['infos'] if 'infos' in infos else infos['data_list']
    assert len(infos) == 2
    counts = np.zeros(18, np.int64)
    for info in infos:
        with np.load(root / info['occ_path']) as z:
            counts += np.bincount(z['semantics'][z['mask_camera'].astype(bool)], minlength=18)
    names = list(cfg.class_names)
    assert [summary[n]['gt_voxels'] for n in names] == counts.tolist()
    assert sum(summary[n]['predicted_voxels'] for n in names) == counts.sum()
    assert sum(summary[n]['pixels'] for n in names) > 0
    assert sum(summary[n]['cells'] for n in names) > 0
    assert all(summary[n]['lift_near'] is None or 0.0 <= summary[n]['lift_near'] <= 100.0 + 1e-9
               for n in names)
    # the lift reaches some but not all of the counted voxels
    reach = [summary[n]['lift_reach'] for n in names if summary[n]['gt_voxels']]
    assert all(r is not None and 0.0 <= r <= 100.0 for r in reach) and 0 < max(reach)
    for n in names:
        s = summary[n]
        if s['pixels']:
            assert s['pixels_right'] + s['pixels_none'] <= 100.0 + 1e-9
        if s['gt_voxels']:
            assert s['right'] <= s['occupied'] + 1e-9 or n == 'free'
    assert out_json.is_file()
    # the Gaussians: the tiny head predicts one per cell of its 50 x 50 x 8 grid; the render uses
    # those at or above the renderer's opacity threshold
    with open(out_json) as f:
        gaussians = json.load(f)['gaussians']
    assert gaussians['samples'] == 2 and gaussians['predicted'] == 50 * 50 * 8
    assert 0 < gaussians['rendered'] <= gaussians['predicted']
    # a checkpoint of another network is an error naming it, not a partial load
    from splattingocc.errors import UserError
    with pytest.raises(UserError, match='does not fit the network'):
        tool.main([config, str(ckpt), '--max-samples', '1', '--cfg-options', *options,
                      'model.volume_encoder.num_blocks=1'])


def test_gaussian_counts_are_averaged_and_checked():
    from splattingocc.evaluation.diagnostics import ClassDiagnostics
    diag = ClassDiagnostics(['car', 'free'], free_label=1)
    assert diag.gaussians() is None  # no splatting render: nothing to report
    diag.add_gaussians(100, 40)
    diag.add_gaussians(100, 70)
    assert diag.gaussians() == dict(samples=2, predicted=100.0, rendered=55.0)
    assert diag.table()[-1].startswith('Gaussians per sample (mean of 2): 100 predicted, 55 '
                                       'rendered')
    with pytest.raises(ValueError, match='120 Gaussians rendered of 100'):
        diag.add_gaussians(100, 120)
