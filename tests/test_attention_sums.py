"""The vector code of attention's sums over the cache (`hardwire.golden.attention_sums`) equals
plain int64 arithmetic, at the extremes its bounds allow and at widths that leave a remainder."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from hardwire.golden.attention_sums import dot16, weighted_rows

LIMIT = (1 << 15) - 1           # |q|, |k|, |v| after symmetric saturation to 16 bits
WEIGHT_MAX = 1 << 15            # a softmax weight (§6.2) at its largest


@njit(cache=False)
def _dots(q, keys, g):
    out = np.empty(keys.shape[0], dtype=np.int64)
    for t in range(keys.shape[0]):
        out[t] = dot16(q, keys[t, g])
    return out


@njit(cache=False)
def _weighted(weights, values, g, first, length):
    total = np.full(values.shape[2], -1, dtype=np.int64)   # every column must be written
    weighted_rows(weights, values, g, first, length, total)
    return total


@pytest.mark.parametrize("head_dim", [8, 32, 48, 64, 72, 128])
def test_dot16_is_the_int64_dot_product(head_dim):
    rng = np.random.default_rng(head_dim)
    keys = rng.integers(-LIMIT, LIMIT + 1, (40, 3, head_dim)).astype(np.int16)
    q = rng.integers(-LIMIT, LIMIT + 1, head_dim).astype(np.int16)
    # the largest pairs the 32-bit pair sums must hold: equal extreme signs, and opposite ones
    keys[0, 1] = -LIMIT
    keys[1, 1] = LIMIT
    q_extreme = np.full(head_dim, -LIMIT, dtype=np.int16)
    for query in (q, q_extreme):
        expected = (keys.astype(np.int64) @ query.astype(np.int64))[:, 1]
        assert np.array_equal(_dots(query, keys, 1), expected)
    assert _dots(q_extreme, keys, 1)[0] == head_dim * LIMIT * LIMIT


def test_dot16_refuses_other_types():
    with pytest.raises(Exception, match="dot16"):
        _dots(np.zeros(32, np.int32), np.zeros((2, 1, 32), np.int16), 0)


@pytest.mark.parametrize("head_dim", [8, 16, 40, 64, 128])
def test_weighted_rows_is_the_int64_weighted_sum(head_dim):
    rng = np.random.default_rng(100 + head_dim)
    positions, g = 50, 2
    values = rng.integers(-LIMIT, LIMIT + 1, (positions, 4, head_dim)).astype(np.int16)
    weights = rng.integers(0, WEIGHT_MAX + 1, positions).astype(np.int64)
    weights[7] = WEIGHT_MAX
    values[7, g] = -LIMIT
    for first, length in ((0, positions), (5, 30), (12, 13), (9, 9)):
        expected = weights[first:length] @ values[first:length, g].astype(np.int64)
        assert np.array_equal(_weighted(weights, values, g, first, length), expected), (first, length)
