"""tools/analysis/probe_depth.py: the per-class depth scores against hand-computed cases, and the
tool end to end on a tiny synthetic dataset (the image half learns, the saved state loads, the
counts add up)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from splattingocc.cli import probe_depth as tool

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = ['others', 'barrier', 'bicycle', 'bus', 'car', 'construction_vehicle', 'motorcycle',
         'pedestrian', 'traffic_cone', 'trailer', 'truck', 'driveable_surface', 'other_flat',
         'sidewalk', 'terrain', 'manmade', 'vegetation', 'free']


def test_depth_scores_hand_computed():
    cls = np.array([4, 4, 4, 11, 15])
    hit = np.array([1, 0, 1, 1, 0])
    mass = np.array([0.5, 0.1, 0.3, 0.9, 0.2])
    err = np.array([1.0, 4.0, 2.0, 0.5, 7.0])
    s = tool.depth_scores(cls, hit, mass, err, NAMES)
    assert list(s) == ['car', 'driveable_surface', 'manmade', 'objects', 'all']
    assert s['car'] == dict(cells=3, argmax_near=pytest.approx(200 / 3),
                            mass_near=pytest.approx(30.0), median_error=2.0)
    assert s['objects'] == s['car']  # class 4 is the only object class here
    assert s['all']['cells'] == 5 and s['all']['argmax_near'] == pytest.approx(60.0)
    assert s['all']['mass_near'] == pytest.approx(40.0) and s['all']['median_error'] == 2.0
    assert s['manmade'] == dict(cells=1, argmax_near=0.0, mass_near=pytest.approx(20.0),
                                median_error=7.0)
    with pytest.raises(ValueError, match='one length'):
        tool.depth_scores(cls, hit[:2], mass, err, NAMES)


def test_probe_depth_end_to_end(tmp_path, tiny_dataset):
    from splattingocc.engine.launch import load_config
    from splattingocc.registry import MODELS

    root = tiny_dataset
    config = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')
    options = [f'train_dataloader.dataset.data_root={root}/',
               f'val_dataloader.dataset.data_root={root}/', 'train_dataloader.num_workers=0',
               'model.view_transform.lift_upsample=2']
    ckpt, out_json = tmp_path / 'probe.pth', tmp_path / 'probe.json'
    out = tool.main([config, '--iters', '24', '--lr', '3e-3', '--log-every', '8', '--save',
                     str(ckpt), '--json', str(out_json), '--cfg-options', *options])
    # the image half learns the depth of the 2 training frames
    assert np.mean(out['last_losses']) < 0.8 * np.mean(out['first_losses'])
    assert json.loads(out_json.read_text())['classes'] == json.loads(json.dumps(out['classes']))
    s = out['classes']
    per_class = [s[n]['cells'] for n in NAMES if n in s]
    assert sum(per_class) == s['all']['cells'] > 0
    assert s.get('objects', {}).get('cells', 0) == sum(s[n]['cells'] for n in NAMES[:11] if n in s)
    for v in s.values():
        assert 0.0 <= v['argmax_near'] <= 100.0 and 0.0 <= v['mass_near'] <= 100.0 + 1e-9
    # the saved state is the whole network's, trained in its image half only
    cfg = load_config(config, {'model.view_transform.lift_upsample': 2})
    torch.manual_seed(0)
    fresh = MODELS.build(cfg.model)
    state = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    init = {k: v.clone() for k, v in fresh.state_dict().items()}
    fresh.load_state_dict(state, strict=True)
    moved = {k.split('.')[0] for k in state if not torch.equal(state[k], init[k])}
    assert {'backbone', 'neck', 'view_transform'} <= moved
    assert not moved & {'volume_encoder', 'head'}


def test_bad_arguments_are_clear_errors():
    from splattingocc.errors import UserError
    config = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')
    with pytest.raises(UserError, match='--iters must be >= 0'):
        tool.main([config, '--iters', '-1'])
    with pytest.raises(UserError, match='--lr must be a positive number'):
        tool.main([config, '--lr', '0'])
