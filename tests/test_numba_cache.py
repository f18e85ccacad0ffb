"""numba's cache of hardwire's compiled code goes stale with any of the sources compiled into it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from hardwire import numba_cache
from hardwire.golden import multipliers

ROOT = Path(__file__).resolve().parent.parent


def test_the_digest_follows_every_module_that_uses_numba_and_no_other(tmp_path):
    package = tmp_path / "package"
    shutil.copytree(ROOT / "hardwire" / "golden", package / "golden")
    (package / "plain.py").write_text('"""no compiled code here"""\n')
    before = numba_cache.compiled_sources_digest(package)
    (package / "plain.py").write_text('"""still none"""\n')
    assert numba_cache.compiled_sources_digest(package) == before
    kernel = package / "golden" / "matvec.py"
    kernel.write_text(kernel.read_text() + "# an edit that changes no function of this file\n")
    assert numba_cache.compiled_sources_digest(package) != before


def test_hardwire_functions_are_cached_under_the_digest_and_others_are_not():
    from numba import njit

    from hardwire.golden.forward import step_compiled
    from hardwire.golden.matvec import matvec_compiled
    for dispatcher in (step_compiled, matvec_compiled):
        stamp = dispatcher._cache._impl.locator.get_source_stamp()
        assert stamp[-1] == numba_cache.SOURCES_DIGEST == numba_cache.compiled_sources_digest()

    def elsewhere(x):
        return x + 1

    assert numba_cache.HardwireSourcesLocator.from_function(elsewhere, __file__) is None
    assert njit(cache=True)(elsewhere)(1) == 2


def test_multipliers_pack_in_byte_planes_and_unpack_exactly():
    values = np.random.default_rng(0).integers(0, 1 << 24, (3, 5, 16)).astype(np.int32)
    values[0, 0, :2] = [0, (1 << 24) - 1]
    packed = multipliers.pack(values)
    assert packed.shape == (3, 5, 48) and packed.dtype == np.uint8
    assert packed[0, 0, 1] == 0xFF and packed[0, 0, 16 + 1] == 0xFF and packed[0, 0, 32 + 1] == 0xFF
    assert packed[1, 2, 16 + 3] == (values[1, 2, 3] >> 8) & 0xFF           # byte 1 of row 3: plane 1
    assert np.array_equal(multipliers.unpack(packed), values)
