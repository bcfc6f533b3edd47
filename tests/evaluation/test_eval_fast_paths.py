"""The fast evaluation paths (issue 28) against plain references on random small grids.

* ``confusion_matrix`` / ``confusion_matrix_pair`` with uint8 labels, or integer labels that fit
  them (uint16 index, interleaved lanes, 8-voxel block gathering under a mask; torch's or numpy's
  bincount), against a per-voxel ``np.add.at`` count, errors included.
* ``first_hits_multi`` (rays parked when finished and dropped in batches) against a scalar
  Amanatides & Woo walk written out ray by ray with the same arithmetic and tie order (bit-exact),
  and against the exact slab intersection for many rays of very different lengths.
"""
import math
import re

import numpy as np
import pytest

from splattingocc.evaluation.functional import occ_miou
from splattingocc.evaluation.functional.occ_miou import confusion_matrix, confusion_matrix_pair
from splattingocc.evaluation.functional.ray_casting import first_hits_multi

from test_eval_ray_casting import _slab_reference  # same folder (pytest rootdir import)


def _reference_confusion(pred, gt, mask, C, ignore=255):
    """[C, C] int64 by np.add.at over the evaluated voxels; ValueError for a bad gt row."""
    keep = np.ones(gt.shape, bool) if mask is None else np.asarray(mask) != 0
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    bad = np.unique(g[(g >= C) & (g != ignore)])
    if bad.size:
        raise ValueError(f'out of range {bad[:10].tolist()}')
    ok = g < C
    ref = np.zeros((C, C), np.int64)
    np.add.at(ref, (g[ok], p[ok]), 1)
    return ref


def _random_frame(rng, shape, C):
    gt = rng.integers(0, C, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.6] = C - 1  # mostly "free", as in Occ3D
    kind = rng.integers(0, 3)
    if kind == 1:
        gt[rng.random(shape) < 0.05] = 255  # ignored
    elif kind == 2:
        gt[rng.random(shape) < 0.002] = rng.integers(C, 255)  # invalid (if evaluated)
    pred = np.where(rng.random(shape) < 0.8, gt % C, rng.integers(0, C, shape)).astype(np.uint8)
    mask = rng.random(shape) < rng.choice([0.0, 0.03, 0.3, 1.0])
    mask = [mask, mask.astype(np.uint8), mask.astype(np.uint8) * 7][rng.integers(0, 3)]
    return pred, gt, mask


@pytest.mark.parametrize('counter', ['torch', 'numpy'])
def test_uint8_confusion_fast_paths_match_add_at(counter, monkeypatch):
    if counter == 'numpy':  # the fallback when torch cannot be imported
        monkeypatch.setattr(occ_miou, '_torch_bincount', lambda: None)
    rng = np.random.default_rng(28)
    # sizes below and above the lane threshold, multiples of 8 (block path) and not
    shapes = [(4, 4, 4), (3, 5, 7), (20, 20, 16), (17, 19, 15), (1, 1, 1)]
    checked = raised = 0
    for trial in range(60):
        shape = shapes[trial % len(shapes)]
        C = [4, 18, 40][trial % 3]
        pred, gt, mask = _random_frame(rng, shape, C)
        if trial % 7 == 3:  # non-contiguous inputs
            pred, gt, mask = (np.asfortranarray(a) for a in (pred, gt, mask))
        if trial % 5 == 2:  # wider integer labels (converted to uint8 when in 0..255)
            pred, gt = pred.astype(np.int64), gt.astype(np.int32)
        if trial % 10 == 4:  # ground truth beyond uint8 outside the mask: the general path
            gt = gt.astype(np.int16)
            gt[np.asarray(mask) == 0] = 300
        for m in (mask, None):
            try:
                ref = _reference_confusion(pred, gt, m, C)
            except ValueError as e:  # the same rows, named the same way
                bad = str(e).split('range ')[1]
                with pytest.raises(ValueError, match='ground truth for p: class index out of '
                                   'range ' + re.escape(bad)):
                    confusion_matrix(pred, gt, m, C, name='p')
                raised += 1
                continue
            got = confusion_matrix(pred, gt, m, C, name='p')
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, ref)
            checked += 1
        try:
            ref_in, ref_all = (_reference_confusion(pred, gt, mask, C),
                               _reference_confusion(pred, gt, None, C))
        except ValueError:
            with pytest.raises(ValueError, match='out of range'):
                confusion_matrix_pair(pred, gt, mask, C, name='p')
            continue
        got_in, got_all = confusion_matrix_pair(pred, gt, mask, C, name='p')
        np.testing.assert_array_equal(got_in, ref_in)
        np.testing.assert_array_equal(got_all, ref_all)
    assert checked > 60 and raised > 3
    # many classes: the histograms would not fit the uint16 / int16 bins; the general path
    pred, gt, mask = _random_frame(np.random.default_rng(1), (6, 6, 6), 200)
    gt %= 5  # few ground-truth rows, many prediction columns
    np.testing.assert_array_equal(confusion_matrix(pred, gt, mask, 200),
                                  _reference_confusion(pred, gt, mask, 200))
    got_in, got_all = confusion_matrix_pair(pred, gt, mask, 200)
    np.testing.assert_array_equal(got_in, _reference_confusion(pred, gt, mask, 200))
    np.testing.assert_array_equal(got_all, _reference_confusion(pred, gt, None, 200))


def test_real_frame_fast_confusion_matches_add_at(realdata):
    d = np.load(realdata / 'occ3d' / '29796060110c4163b07f06eff4af0753.labels.npz')
    gt, cam = d['semantics'], d['mask_camera']
    rng = np.random.default_rng(2)
    pred = np.roll(gt, 1, axis=0)
    flip = rng.random(gt.shape) < 0.05
    pred[flip] = rng.integers(0, 18, flip.sum())
    np.testing.assert_array_equal(confusion_matrix(pred, gt, cam), _reference_confusion(pred, gt,
                                                                                         cam, 18))
    hm, hn = confusion_matrix_pair(pred, gt, cam)
    np.testing.assert_array_equal(hm, _reference_confusion(pred, gt, cam, 18))
    np.testing.assert_array_equal(hn, _reference_confusion(pred, gt, None, 18))


def _scalar_walk(codes, origins, dirs, pc_range, vs, num_bits):
    """Amanatides & Woo one ray at a time, for origins inside the grid: the voxel containing the
    origin first; on equal crossings z before y before x; exit = the smallest next crossing."""
    lo = np.asarray(pc_range[:3], float)
    vs = np.broadcast_to(np.asarray(vs, float), (3,))
    shape = codes.shape
    R = len(origins)
    idx = np.full((num_bits, R, 3), -1)
    t_in = np.full((num_bits, R), np.inf)
    t_out = np.full((num_bits, R), np.inf)
    for r in range(R):
        o = (origins[r] - lo) / vs
        d = dirs[r] / vs
        v = [int(math.floor(o[a])) for a in range(3)]
        step = [1 if d[a] >= 0 else -1 for a in range(3)]
        m = [((v[a] + (step[a] > 0)) - o[a]) / d[a] + 0.0 if d[a] != 0 else 1e30
             for a in range(3)]
        dt = [abs(1.0 / d[a]) if d[a] != 0 else 1e30 for a in range(3)]
        enter, pending = 0.0, (1 << num_bits) - 1
        while pending and all(0 <= v[a] < shape[a] for a in range(3)):
            c = int(codes[v[0], v[1], v[2]]) & pending
            for b in range(num_bits):
                if c >> b & 1:
                    idx[b, r], t_in[b, r], t_out[b, r] = v, enter, min(m)
            pending &= ~c
            a = 0 if (m[0] < m[1] and m[0] < m[2]) else (1 if m[1] < m[2] else 2)
            enter = m[a]
            v[a] += step[a]
            m[a] += dt[a]
    return idx, t_in, t_out


def test_walk_matches_scalar_walk_bit_for_bit_with_ties():
    rng = np.random.default_rng(7)
    shape, vs = (9, 7, 5), (0.4, 0.4, 0.4)
    pc_range = [-1.8, -1.4, -1.0, -1.8 + 3.6, -1.4 + 2.8, -1.0 + 2.0]
    codes = ((rng.random(shape) < 0.08).astype(np.uint8)
             | ((rng.random(shape) < 0.12).astype(np.uint8) << 1))
    lo, hi = np.array(pc_range[:3]), np.array(pc_range[3:])
    n = 1500
    origins = lo + rng.random((n, 3)) * (hi - lo) * 0.999
    # origins on voxel faces and corners, directions on lattice diagonals: exact ties
    on_face = rng.random(n) < 0.4
    origins[on_face] = lo + rng.integers(0, 5, (on_face.sum(), 3)) * 0.4
    dirs = rng.normal(size=(n, 3))
    lattice = rng.random(n) < 0.4
    dirs[lattice] = rng.integers(-1, 2, (lattice.sum(), 3))
    dirs[np.all(dirs == 0, axis=1)] = [0.0, 0.0, 1.0]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    got = first_hits_multi(codes, origins, dirs, pc_range, vs, num_bits=2)
    ref = _scalar_walk(codes, origins, dirs, pc_range, vs, 2)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    hit = got[0][:, :, 0] >= 0
    assert hit.sum() > 1000 and (~hit).sum() > 100  # hits and misses, both bits


def test_many_rays_of_varied_length_match_slab_reference_with_max_dist():
    # thousands of rays that finish at very different steps: the batched dropping of finished
    # rays and the parking of the others must not disturb any of them
    rng = np.random.default_rng(11)
    shape, vs = (24, 20, 6), (0.5, 0.5, 0.4)
    pc_range = [-6.0, -5.0, -1.0, 6.0, 5.0, 1.4]
    occ_a = rng.random(shape) < 0.03
    occ_b = rng.random(shape) < 0.04
    codes = occ_a.astype(np.uint8) | (occ_b.astype(np.uint8) << 1)
    n = 3000
    lo, hi = np.array(pc_range[:3]), np.array(pc_range[3:])
    origins = lo - 0.5 + rng.random((n, 3)) * (hi - lo + 1.0)  # inside and just outside
    dirs = rng.normal(size=(n, 3))
    dirs[:, 2] *= 0.2  # mostly flat: long walks
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hits = []
    for max_dist in (None, 4.0):
        idx, t_in, t_out = first_hits_multi(codes, origins, dirs, pc_range, vs, num_bits=2,
                                            max_dist=max_dist)
        for b, occ in enumerate((occ_a, occ_b)):
            ri, rin, rout = _slab_reference(occ, origins, dirs, pc_range, vs)
            if max_dist is not None:
                far = rin > max_dist
                ri[far], rin[far], rout[far] = -1, np.inf, np.inf
            np.testing.assert_array_equal(idx[b], ri)
            np.testing.assert_allclose(t_in[b], rin, atol=1e-9)
            np.testing.assert_allclose(t_out[b], rout, atol=1e-9)
        hits.append((idx[:, :, 0] >= 0).sum(axis=1))  # [2] per bit
    # both bits hit often, most rays miss, and max_dist cuts hits off
    assert np.all(hits[0] > hits[1]) and np.all(hits[1] > 300) and np.all(hits[0] < n / 2)



def test_confusion_counts_on_one_torch_thread_and_restores_the_setting(monkeypatch):
    """The histogram runs torch.bincount on one thread (E62) and puts the thread count back, also
    when the count fails."""
    import torch
    real, seen = occ_miou._torch_bincount(), []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    def broken(*args, **kwargs):
        raise RuntimeError('count failed')

    pred, gt, mask = _random_frame(np.random.default_rng(3), (40, 40, 16), 18)
    gt %= 18
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(occ_miou, '_torch_bincount', lambda: spy)
        got = confusion_matrix(pred, gt, mask, 18)
        np.testing.assert_array_equal(got, _reference_confusion(pred, gt, mask, 18))
        assert seen == [1] and torch.get_num_threads() == 2
        monkeypatch.setattr(occ_miou, '_torch_bincount', lambda: broken)
        with pytest.raises(RuntimeError, match='count failed'):
            confusion_matrix(pred, gt, mask, 18)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
