"""Intervals over seeds: the mean of a metric with its 95 % t-interval, and paired differences.

A metric of one arm over ``n`` seeds (values ``x_1..x_n``) is reported as the mean with the
Student-t interval ``mean +- t_{0.975, n-1} * s / sqrt(n)`` (``s`` the sample standard deviation,
``ddof=1``): the seeds are taken as independent draws of the training randomness. Two arms are
compared *paired by seed* (the same seed gives both arms the same data order and the same
initialisation of the shared parts): the differences ``d_s = a_s - b_s`` over the seeds both
finished get the same interval. An interval that excludes 0 separates the arms at the 95 % level;
otherwise the verdict is that the intervals do not separate them. Fewer than 2 values give no
interval (None), and the report says so instead of a claim.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

__all__ = ['LEVEL', 't_quantile', 't_interval', 'paired_difference', 'MIN_SEEDS_FOR_CLAIM']

#: the confidence level of every interval
LEVEL = 0.95
#: fewer finished seeds than this: the report states no comparison, whatever the interval says
MIN_SEEDS_FOR_CLAIM = 3


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile ``t_{(1 + level) / 2, df}`` (e.g. 4.303 for df=2)."""
    from scipy.stats import t
    if df < 1:
        raise ValueError(f't_quantile: df must be >= 1, got {df}')
    return float(t.ppf(0.5 + level / 2.0, df))


def t_interval(values: Sequence[Optional[float]], level: float = LEVEL) -> dict:
    """Mean, sample std and the t-interval of the finite values (None and NaN dropped).

    Returns ``{n, mean, std, half_width, low, high}``; ``std``, ``half_width``, ``low`` and
    ``high`` are None for fewer than 2 values, everything but ``n`` for none.
    """
    x = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))],
                   dtype=np.float64)
    n = int(x.size)
    out = dict(n=n, mean=None, std=None, half_width=None, low=None, high=None)
    if n == 0:
        return out
    out['mean'] = float(x.mean())
    if n >= 2:
        std = float(x.std(ddof=1))
        half = t_quantile(n - 1, level) * std / math.sqrt(n)
        out.update(std=std, half_width=half, low=out['mean'] - half, high=out['mean'] + half)
    return out


def paired_difference(a: Mapping[int, Optional[float]], b: Mapping[int, Optional[float]],
                      level: float = LEVEL) -> Dict:
    """The difference ``a - b`` paired by seed (the seeds where both have a finite value).

    Returns :func:`t_interval` of the differences plus ``seeds`` (those used) and ``verdict``:
    ``'a > b'`` / ``'a < b'`` when the interval excludes 0 and at least
    :data:`MIN_SEEDS_FOR_CLAIM` seeds were paired, ``'the intervals do not separate them'`` when
    it includes 0, ``'too few seeds for a claim'`` otherwise.
    """
    seeds = sorted(s for s in set(a) & set(b)
                   if a[s] is not None and b[s] is not None
                   and math.isfinite(float(a[s])) and math.isfinite(float(b[s])))
    out = t_interval([float(a[s]) - float(b[s]) for s in seeds], level)
    out['seeds'] = seeds
    if len(seeds) < MIN_SEEDS_FOR_CLAIM or out['low'] is None:
        out['verdict'] = 'too few seeds for a claim'
    elif out['low'] > 0:
        out['verdict'] = 'a > b'
    elif out['high'] < 0:
        out['verdict'] = 'a < b'
    else:
        out['verdict'] = 'the intervals do not separate them'
    return out
