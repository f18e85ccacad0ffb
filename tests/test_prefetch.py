"""`hardwire.golden.prefetch.prefetch_rows`: a hint with no effect on values, taken only where a
row is contiguous memory."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from hardwire.golden.prefetch import prefetch_rows


@njit(cache=False)
def _prefetch_then_sum(cache, first, count):
    prefetch_rows(cache, first, count)
    return cache.astype(np.int64).sum()


def test_prefetching_any_row_range_changes_nothing():
    cache = np.random.default_rng(0).integers(-3000, 3000, (40, 3, 24)).astype(np.int16)
    before = cache.copy()
    for first, count in ((0, 40), (5, 0), (39, 1), (12, 17)):
        assert _prefetch_then_sum(cache, first, count) == before.astype(np.int64).sum()
    assert np.array_equal(cache, before)


def test_a_strided_array_is_refused_when_compiled():
    with pytest.raises(Exception, match="prefetch_rows"):
        _prefetch_then_sum(np.zeros((8, 4, 4), np.int16)[:, ::2], 0, 2)
