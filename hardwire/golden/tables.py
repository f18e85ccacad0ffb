"""Reading a die's datapath tables: every integer constant the golden model (and the RTL) reads.

The freezer builds them once from the die's scales and calibrated ranges
(`hardwire.freeze.tables.build_tables`, docs/arithmetic.md §10) and stores them in the die;
`tables_for(die)` reads them back. A die without them, or with a layout this version does not
read, is refused with the way out: freeze the model again.

Names: scalars are 1-element int64 arrays; `{matrix}.mult` [rows, groups] and `{matrix}.shift`
[rows] are the §3 requantization of each matrix; `layers.{i}.{point}.*` the per-layer constants.
"""
from __future__ import annotations

import numpy as np

from hardwire.die import GOLDEN_TABLES_KEY, TABLES_VERSION, Die
from hardwire.errors import BadDie

REFREEZE = "freeze the model again (hardwire freeze MODEL --plan PLAN -o NAME.die) to make a die that has them"


def tables_for(die: Die) -> dict[str, np.ndarray]:
    """The integer constants stored in `die` (a die directory opened by `open_die`)."""
    info = die.manifest.get(GOLDEN_TABLES_KEY)
    if not info:
        raise BadDie(f"this die has no datapath tables (it was frozen by an older hardwire); {REFREEZE}",
                     path=die.path)
    if info.get("version") != TABLES_VERSION:
        raise BadDie(f"datapath tables version {info.get('version')!r} is not the version {TABLES_VERSION} this "
                     f"hardwire reads; {REFREEZE}", path=die.path)
    from safetensors.numpy import load_file
    return load_file(str(die.path / info["file"]))
