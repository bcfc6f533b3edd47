"""Vectorised first-hit voxel traversal vs exact and fine-stepping brute force references."""
import numpy as np
import pytest

from splattingocc.evaluation.functional.ray_casting import first_hit, first_hits_multi


def _slab_reference(occupied, origins, dirs, pc_range, vs):
    """Exact brute force: intersect every ray with every occupied voxel box (slab test)."""
    lo = np.asarray(pc_range[:3], float)
    vs = np.broadcast_to(np.asarray(vs, float), (3,))
    cells = np.argwhere(occupied)  # [V, 3]
    bmin = lo + cells * vs  # [V, 3]
    bmax = bmin + vs
    idx = np.full((len(origins), 3), -1)
    t_in = np.full(len(origins), np.inf)
    t_out = np.full(len(origins), np.inf)
    for r, (o, d) in enumerate(zip(origins, dirs)):
        with np.errstate(divide='ignore', invalid='ignore'):
            a = (bmin - o) / d
            b = (bmax - o) / d
        # axes with d == 0: inside the slab -> (-inf, inf), outside -> empty
        par = d == 0
        inside = (o >= bmin) & (o < bmax)
        lo_t = np.where(par, np.where(inside, -np.inf, np.inf), np.minimum(a, b)).max(1)
        hi_t = np.where(par, np.where(inside, np.inf, -np.inf), np.maximum(a, b)).min(1)
        enter = np.maximum(lo_t, 0)
        hit = enter < hi_t
        if hit.any():
            k = np.flatnonzero(hit)[np.argmin(enter[hit])]
            idx[r], t_in[r], t_out[r] = cells[k], enter[k], hi_t[k]
    return idx, t_in, t_out


def _random_case(seed, shape=(7, 5, 4), vs=(0.5, 0.3, 0.4), density=0.25, n=600):
    rng = np.random.default_rng(seed)
    pc_range = [-1.0, 0.5, -0.2] + [-1.0 + shape[0] * vs[0], 0.5 + shape[1] * vs[1],
                                    -0.2 + shape[2] * vs[2]]
    occ = rng.random(shape) < density
    lo, hi = np.array(pc_range[:3]), np.array(pc_range[3:])
    # half the origins inside the grid, half outside (up to 1 m beyond every face)
    inside = lo + rng.random((n // 2, 3)) * (hi - lo)
    outside = lo - 1 + rng.random((n - n // 2, 3)) * (hi - lo + 2)
    origins = np.concatenate([inside, outside])
    dirs = rng.normal(size=(n, 3))
    dirs[::7, 2] = 0  # some rays parallel to a face
    dirs[1::11] = [0.0, 0.0, 1.0]  # some straight up
    dirs[3::11] = [0.0, 0.0, -1.0]  # and straight down
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return occ, origins, dirs, pc_range, vs


def test_hand_computed_ray():
    occ = np.zeros((4, 1, 1), bool)
    occ[2] = True
    pc_range = [0, 0, 0, 4, 1, 1]
    origins = np.array([[0.5, 0.5, 0.5], [3.5, 0.5, 0.5], [2.5, 0.5, 0.5], [-2.0, 0.5, 0.5]])
    dirs = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    idx, t_in = first_hit(occ, origins, dirs, pc_range, 1.0)
    _, t_out = first_hit(occ, origins, dirs, pc_range, 1.0, distance='exit')
    np.testing.assert_array_equal(idx, [[2, 0, 0], [-1, -1, -1], [2, 0, 0], [2, 0, 0]])
    np.testing.assert_allclose(t_in, [1.5, np.inf, 0.0, 4.0])  # inside start: distance 0
    np.testing.assert_allclose(t_out, [2.5, np.inf, 0.5, 5.0])
    # max_dist: the hit at 1.5 m is beyond 1 m
    idx, t_in = first_hit(occ, origins[:1], dirs[:1], pc_range, 1.0, max_dist=1.0)
    assert idx[0, 0] == -1 and np.isinf(t_in[0])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_exact_brute_force(seed):
    occ, origins, dirs, pc_range, vs = _random_case(seed)
    ref_idx, ref_in, ref_out = _slab_reference(occ, origins, dirs, pc_range, vs)
    idx, t_in = first_hit(occ, origins, dirs, pc_range, vs)
    _, t_out = first_hit(occ, origins, dirs, pc_range, vs, distance='exit')
    assert (ref_idx[:, 0] >= 0).sum() > 150 and (ref_idx[:, 0] < 0).sum() > 20
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(t_in, ref_in, atol=1e-9)
    np.testing.assert_allclose(t_out, ref_out, atol=1e-9)


def test_matches_fine_stepping_reference():
    occ, origins, dirs, pc_range, vs = _random_case(5, n=300)
    idx, t_in = first_hit(occ, origins, dirs, pc_range, vs)
    lo = np.array(pc_range[:3])
    step = 1e-3
    ts = np.arange(0, 8, step)  # metres along the ray
    agree = 0
    for r in range(len(origins)):
        pts = origins[r] + ts[:, None] * dirs[r]  # [S, 3]
        cell = np.floor((pts - lo) / vs).astype(int)
        ok = np.all((cell >= 0) & (cell < occ.shape), axis=1)
        hit = np.zeros(len(ts), bool)
        hit[ok] = occ[cell[ok, 0], cell[ok, 1], cell[ok, 2]]
        if not hit.any():
            agree += idx[r, 0] == -1
            continue
        k = np.argmax(hit)
        if np.array_equal(cell[k], idx[r]):
            assert abs(ts[k] - t_in[r]) <= step + 1e-9
            agree += 1
    # stepping can only differ on rays that clip a voxel corner by less than the step
    assert agree >= 0.99 * len(origins)


def test_multi_bit_equals_separate_casts_and_exit_after_entry():
    rng = np.random.default_rng(3)
    occ_a = rng.random((6, 6, 3)) < 0.1
    occ_b = rng.random((6, 6, 3)) < 0.2
    pc_range = [0, 0, 0, 6, 6, 3]
    origins = rng.random((400, 3)) * [6, 6, 3]
    dirs = rng.normal(size=(400, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    codes = occ_a.astype(np.uint8) | (occ_b.astype(np.uint8) << 1)
    idx, t_in, t_out = first_hits_multi(codes, origins, dirs, pc_range, 1.0, num_bits=2)
    for b, occ in enumerate((occ_a, occ_b)):
        i1, d1 = first_hit(occ, origins, dirs, pc_range, 1.0)
        np.testing.assert_array_equal(idx[b], i1)
        np.testing.assert_array_equal(t_in[b], d1)
        hit = i1[:, 0] >= 0
        assert np.all(t_out[b][hit] > t_in[b][hit])


def test_input_errors():
    occ = np.zeros((4, 4, 4), bool)
    o = np.zeros((1, 3))
    with pytest.raises(ValueError, match='unit'):
        first_hit(occ, o, np.array([[2.0, 0, 0]]), [0, 0, 0, 4, 4, 4], 1.0)
    with pytest.raises(ValueError, match='does not match'):
        first_hit(occ, o, np.array([[1.0, 0, 0]]), [0, 0, 0, 4, 4, 4], 0.5)
    with pytest.raises(ValueError, match="'entry' or 'exit'"):
        first_hit(occ, o, np.array([[1.0, 0, 0]]), [0, 0, 0, 4, 4, 4], 1.0, distance='mid')
