"""numba's on-disk cache of hardwire's compiled functions, stale as soon as any of their sources is.

numba names a cached function's entry by its own file and checks only that file's stamp, but the
machine code it stores has the functions it calls compiled in. After an edit of
`golden/matvec.py`, `golden/forward.py`'s cached one-call step still held the old kernels and
returned wrong integers (seen while building it; the golden tests caught it). So every hardwire
function compiled with `cache=True` gets the locator numba would choose, with a source stamp that
also covers the text of every hardwire module that uses numba: an edit to any of them recompiles
them all on first use, and a checkout whose sources differ never loads another's code.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from numba.core.caching import CacheImpl

PACKAGE = Path(__file__).resolve().parent


def compiled_sources_digest(root: Path = PACKAGE) -> str:
    """sha256 over the path and text of each module under `root` that mentions numba."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        text = path.read_bytes()
        if b"numba" in text:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + text + b"\0")
    return digest.hexdigest()


SOURCES_DIGEST = compiled_sources_digest()


class _Stamped:
    """A locator numba chose, whose source stamp also names SOURCES_DIGEST."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def get_source_stamp(self):
        return self._inner.get_source_stamp(), SOURCES_DIGEST


class HardwireSourcesLocator:
    """For functions defined in hardwire's own files: numba's locator, `_Stamped`."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if not Path(py_file).resolve().is_relative_to(PACKAGE):
            return None
        for other in CacheImpl._locator_classes:
            if other is not cls:
                locator = other.from_function(py_func, py_file)
                if locator is not None:
                    return _Stamped(locator)
        return None


if HardwireSourcesLocator not in CacheImpl._locator_classes:
    CacheImpl._locator_classes.insert(0, HardwireSourcesLocator)
