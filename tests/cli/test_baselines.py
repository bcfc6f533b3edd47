"""tools/analysis/baselines.py: the voxel-mode prior against a brute-force count, and both
baselines scored end to end on hand-made Occ3D files (a prior that equals the ground truth scores
100)."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splattingocc.cli.baselines import voxel_mode

REPO = Path(__file__).resolve().parents[2]

SHAPE = (200, 200, 16)


def _brute_mode(grids):
    stack = np.stack(grids)  # [F, X, Y, Z]
    counts = np.stack([(stack == c).sum(0) for c in range(256)], -1)
    best = counts.max(-1)
    # smallest label among the most frequent
    return np.argmax(counts == best[..., None], -1).astype(np.uint8)


def test_voxel_mode_hand_case_and_ties():
    a = np.array([[[1, 2, 3]]])
    b = np.array([[[1, 4, 5]]])
    c = np.array([[[7, 4, 3]]])
    np.testing.assert_array_equal(voxel_mode([a, b, c]), [[[1, 4, 3]]])
    np.testing.assert_array_equal(voxel_mode([b, c]), [[[1, 4, 3]]])  # ties: smaller label
    with pytest.raises(ValueError, match='no grids'):
        voxel_mode([])


def test_voxel_mode_matches_brute_force():
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 6, size=(7, 5, 3)) for _ in range(5)]
    np.testing.assert_array_equal(voxel_mode(grids), _brute_mode(grids))


def _write_split(root: Path, name: str, grids, scene='scene-0001'):
    infos = []
    for i, sem in enumerate(grids):
        token = f'{name}{i:03d}'
        rel = f'gts/{scene}/{token}/labels.npz'
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        ones = np.ones(SHAPE, dtype=np.uint8)
        np.savez_compressed(root / rel, semantics=sem.astype(np.uint8), mask_camera=ones,
                            mask_lidar=ones)
        infos.append(dict(token=token, scene_name=scene, occ_path=rel))
    with open(root / f'nuscenes_infos_{name}.pkl', 'wb') as f:
        pickle.dump(dict(infos=infos), f)


def _scene(rng):
    sem = np.full(SHAPE, 17, dtype=np.uint8)
    sem[:, :, 0] = 11  # driveable surface
    x, y = rng.integers(0, 190, size=2)
    sem[x:x + 8, y:y + 8, 1:4] = rng.integers(1, 11)  # an object
    return sem


def _run(root, tmp_path):
    out = tmp_path / 'out.json'
    proc = subprocess.run([sys.executable, 'tools/analysis/baselines.py', '--data-root',
                           str(root), '--out', str(tmp_path / 'pred'), '--json', str(out)],
                          cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_baselines_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    train = [_scene(rng) for _ in range(3)]
    val = [_scene(rng) for _ in range(2)]
    root = tmp_path / 'data'
    _write_split(root, 'train', train)
    _write_split(root, 'val', val)
    scores, stdout = _run(root, tmp_path)
    assert scores['all-free']['frames'] == 2
    assert scores['all-free']['miou'] == 0.0 and scores['all-free']['geometry_iou'] == 0.0
    # the written prior is the brute-force mode of the train grids, for every val frame
    expect = _brute_mode(train)
    preds = sorted((tmp_path / 'pred' / 'voxel-mode').glob('*/*/pred.npz'))
    assert len(preds) == 2
    for p in preds:
        np.testing.assert_array_equal(np.load(p)['semantics'], expect)
    # ground: every frame has it under the car -> driveable surface IoU 100 from the prior
    assert scores['voxel-mode']['per_class_iou']['driveable_surface'] == 100.0
    assert 'voxel-mode' in stdout and 'all-free' in stdout


def test_prior_equal_to_the_ground_truth_scores_100(tmp_path):
    sem = _scene(np.random.default_rng(2))
    root = tmp_path / 'data'
    _write_split(root, 'train', [sem, sem])
    _write_split(root, 'val', [sem])
    scores, _ = _run(root, tmp_path)
    assert scores['voxel-mode']['miou'] == 100.0
    assert scores['voxel-mode']['geometry_iou'] == 100.0


def test_missing_info_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, 'tools/analysis/baselines.py', '--data-root',
                           str(tmp_path)],
                          cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'nuscenes_infos_val.pkl' in proc.stderr and 'create_data.py' in proc.stderr
