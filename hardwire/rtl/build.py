"""From a die to files and binaries: `hardwire rtl` output, and the cached Verilator build of `hardwire sim`."""
from __future__ import annotations

import json
from pathlib import Path

from hardwire.rtl.emit import GENERATOR_VERSION
from hardwire.rtl.sim import CXX_FLAGS, TESTBENCH_CPP, VERILATOR_FLAGS, ChipSimulator, build_key, build_verilator, cache_root
from hardwire.rtl.top import RtlOptions, generate


def design_key(design) -> str:
    """The build cache key: the generated Verilog itself (every module's text, ~0.2 s to generate
    for stories260K), the testbench and the compiler flags, so a changed generator can never reuse
    a stale build."""
    modules = sorted(design.modules.items())
    return build_key(design.top, modules, TESTBENCH_CPP, VERILATOR_FLAGS, CXX_FLAGS)


def write_rtl(die, directory: str | Path, options: RtlOptions | None = None, tables=None):
    """Write the design (one .v per module, files.f) and design.json (options, lanes, cycles)."""
    options = options or RtlOptions()
    design = generate(die, tables, options)
    directory = Path(directory)
    design.write(directory, what=f"die {die.id[:16]}")
    notes = {"die_id": die.id, "generator_version": GENERATOR_VERSION, "top": design.top, **design.notes}
    (directory / "design.json").write_text(json.dumps(notes, indent=1) + "\n")
    return design


def simulator_for(die, tables, options: RtlOptions, log=None, workdir: Path | None = None,
                  plusargs: tuple[str, ...] = ()) -> tuple[ChipSimulator, dict]:
    """A running simulator of `die`, built once per generated design (`design_key`), started in
    `workdir` with `plusargs` (the adapter SRAM images, hardwire.rtl.engine)."""
    design = generate(die, tables, options)
    key = design_key(design)
    root = cache_root() / "rtl" / key
    notes_path = root / "design.json"
    binary = root / "obj" / "chip_sim"
    if not (binary.exists() and notes_path.exists()):
        binary = build_verilator(design, key, die.spec.vocab_size, log=log)
        notes = {"die_id": die.id, "generator_version": GENERATOR_VERSION, "top": design.top, **design.notes}
        notes_path.write_text(json.dumps(notes, indent=1) + "\n")
    notes = json.loads(notes_path.read_text())
    return ChipSimulator(binary, die.spec.vocab_size, workdir, plusargs), notes
