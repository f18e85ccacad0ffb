"""From a die to files and binaries: `hardwire rtl` output, and the cached Verilator build of `hardwire sim`."""
from __future__ import annotations

import json
from pathlib import Path

from hardwire.rtl.emit import GENERATOR_VERSION
from hardwire.rtl.sim import ChipSimulator, build_key, build_verilator, cache_root
from hardwire.rtl.top import RtlOptions, generate


def design_key(die, options: RtlOptions) -> str:
    return build_key(die.id, GENERATOR_VERSION, options.to_dict())


def write_rtl(die, directory: str | Path, options: RtlOptions | None = None, tables=None):
    """Write the design (one .v per module, files.f) and design.json (options, lanes, cycles)."""
    options = options or RtlOptions()
    design = generate(die, tables, options)
    directory = Path(directory)
    design.write(directory, what=f"die {die.id[:16]}")
    notes = {"die_id": die.id, "generator_version": GENERATOR_VERSION, "top": design.top, **design.notes}
    (directory / "design.json").write_text(json.dumps(notes, indent=1) + "\n")
    return design


def simulator_for(die, tables, options: RtlOptions, log=None) -> tuple[ChipSimulator, dict]:
    """A running simulator of `die`, built once per (die id, generator version, options)."""
    key = design_key(die, options)
    root = cache_root() / "rtl" / key
    notes_path = root / "design.json"
    binary = root / "obj" / "chip_sim"
    if not (binary.exists() and notes_path.exists()):
        design = generate(die, tables, options)
        binary = build_verilator(design, key, die.spec.vocab_size, log=log)
        notes = {"die_id": die.id, "generator_version": GENERATOR_VERSION, "top": design.top, **design.notes}
        notes_path.write_text(json.dumps(notes, indent=1) + "\n")
    notes = json.loads(notes_path.read_text())
    return ChipSimulator(binary, die.spec.vocab_size), notes
