"""A compiled function built twice: its `prange` loops run in order, or split over numba's threads.

A block that loops over users or heads pays for a parallel launch (microseconds) even when it has
one user, so the caller picks the build by the work it has. Both builds are cached on disk. numba
names a cache entry by the function's qualified name and first line, not by its compile options,
so a parallel build of the same function would share the serial one's entry (and load the wrong
code); the parallel build is therefore a copy of the function under its own name, `<name>_parallel`.
"""
from __future__ import annotations

from types import FunctionType

from numba import njit


def serial_and_parallel(function: FunctionType) -> tuple:
    """(serial build, parallel build) of `function`, both `nogil` and cached."""
    twin = FunctionType(function.__code__, function.__globals__, function.__name__ + "_parallel",
                        function.__defaults__, function.__closure__)
    twin.__qualname__ = function.__qualname__ + "_parallel"
    twin.__doc__ = function.__doc__
    return njit(cache=True, nogil=True)(function), njit(cache=True, nogil=True, parallel=True)(twin)
