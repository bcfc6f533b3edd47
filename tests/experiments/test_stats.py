"""splattingocc.experiments.stats: t-intervals over seeds and paired differences, against values
computed by hand (Student-t table: t_{0.975, 2} = 4.303, t_{0.975, 4} = 2.776)."""
import math

import pytest

from splattingocc.experiments import paired_difference, t_interval, t_quantile


def test_t_quantile_matches_the_table():
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(1000) == pytest.approx(1.9623, abs=1e-4)  # -> the normal's 1.96
    with pytest.raises(ValueError):
        t_quantile(0)


def test_t_interval_by_hand():
    # 30, 31, 32: mean 31, sample std 1, half-width 4.3027 / sqrt(3) = 2.4841
    iv = t_interval([30.0, 31.0, 32.0])
    assert iv['n'] == 3 and iv['mean'] == pytest.approx(31.0) and iv['std'] == pytest.approx(1.0)
    assert iv['half_width'] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (iv['low'], iv['high']) == pytest.approx((31 - 2.484138, 31 + 2.484138), abs=1e-5)
    # None and NaN are dropped; one value: a mean but no interval; none: nothing
    one = t_interval([None, 5.0, float('nan')])
    assert one['n'] == 1 and one['mean'] == 5.0 and one['half_width'] is None
    assert t_interval([])['mean'] is None


def test_paired_difference_verdicts():
    splat = {0: 30.0, 1: 31.0, 2: 32.0}
    # nerf = 20 + 1.5 seed: differences 10, 9.5, 9 -> mean 9.5, std 0.5, half 1.2421
    nerf = {0: 20.0, 1: 21.5, 2: 23.0}
    d = paired_difference(splat, nerf)
    assert d['seeds'] == [0, 1, 2] and d['mean'] == pytest.approx(9.5)
    assert d['half_width'] == pytest.approx(4.302653 * 0.5 / math.sqrt(3), rel=1e-6)
    assert d['verdict'] == 'a > b'
    assert paired_difference(nerf, splat)['verdict'] == 'a < b'
    # differences 5, -5, -15: the interval contains 0
    wide = paired_difference(splat, {0: 25.0, 1: 36.0, 2: 47.0})
    assert wide['mean'] == pytest.approx(-5.0) and wide['low'] < 0 < wide['high']
    assert wide['verdict'] == 'the intervals do not separate them'
    # only the seeds both finished are paired; two seeds are too few for a claim even when the
    # interval excludes 0
    two = paired_difference(splat, {0: 0.0, 1: 0.5, 5: 3.0})
    assert two['seeds'] == [0, 1] and two['verdict'] == 'too few seeds for a claim'
