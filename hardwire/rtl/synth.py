"""Yosys synthesis of the generated design (or one block) to generic cells: cells by type, flip-flops.

`synth -flatten` maps to Yosys's internal gate library ($_AND_, $_XOR_, $_MUX_, $_DFF_P_, ...), so
counts compare across designs without a vendor library; they calibrate the chip estimate (docs/rtl.md).
The KV-cache SRAM model is read as a black box: a back-end flow puts an SRAM macro there, and
synthesising it as flip-flops would swamp every other count.

Cost (../shared/facts/rtl-toolchain.md): ~0.5 ms of CPU and ~10 KiB of peak memory per cell, ABC
being the peak.
"""
from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hardwire.errors import BadConfig
from hardwire.rtl.sim import require

BLACK_BOXES = ("hw_kv_sram",)
FLIP_FLOP = re.compile(r"^\$_(S?DFFE?|DFFSRE?|ALDFFE?|SDFFCE|DLATCH)_")


def yosys_script(files: list[str], top: str, black_boxes: list[str]) -> str:
    """`synth -noshare`: the SAT-based `share` pass took ~330 of 400 s on one stories260K matvec and
    changed its cell count by 0.04% (33 of 76,736 cells); it never finished on a whole layer."""
    lines = [f"read_verilog -sv -lib {f}" for f in black_boxes]
    lines += [f"read_verilog -sv {f}" for f in files]
    lines += [f"hierarchy -check -top {top}", f"synth -flatten -noshare -top {top}", f"tee -o stat.txt stat -top {top}"]
    return "\n".join(lines) + "\n"


INSTANCE = re.compile(r"^\s*(hw_\w+)\s+\w+\s*\(", re.MULTILINE)


def reachable_modules(modules: dict[str, str], top: str) -> list[str]:
    """`top` and the modules it instantiates, directly or not, in the design's (leaves-first) order:
    Yosys then parses only those (the whole stories260K chip is ~3 MB of ROM tables)."""
    seen, stack = {top}, [top]
    while stack:
        for name in INSTANCE.findall(modules[stack.pop()]):
            if name in modules and name not in seen:
                seen.add(name)
                stack.append(name)
    return [name for name in modules if name in seen]


def parse_stat(text: str) -> dict:
    """Cells by type and flip-flop bits from the last module summary of `stat`."""
    sections = text.split("=== ")
    body = sections[-1] if len(sections) > 1 else text
    cells: dict[str, int] = {}
    total = 0
    for line in body.splitlines():
        match = re.match(r"^\s+Number of cells:\s+(\d+)", line)
        if match:
            total = int(match.group(1))
            continue
        match = re.match(r"^\s+(\S+)\s+(\d+)$", line)
        if match and total:
            cells[match.group(1)] = int(match.group(2))
    flip_flops = sum(n for kind, n in cells.items() if FLIP_FLOP.match(kind))
    return {"cells": total, "cells_by_type": cells, "flip_flops": flip_flops}


def synthesize(die, options, block: str | None = None, log=None, workdir: str | Path | None = None,
               timeout_s: float = 3 * 3600) -> dict:
    """Synthesize `block` (a module name; default the top `hw_chip`) of `die`'s design."""
    from hardwire.rtl.top import generate
    require("yosys")
    design = generate(die, None, options)
    top = block or design.top
    if top not in design.modules:
        names = ", ".join(n for n in design.modules if not n.endswith(("_codes", "_scales", "_rows", "_mult")))
        raise BadConfig(f"no module {top!r} in the design; modules: {names}", field="--block")
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="hardwire-synth-")) if own else Path(workdir)
    try:
        design.write(work)
        needed = reachable_modules(design.modules, top)
        files = [f"{name}.v" for name in needed if name not in BLACK_BOXES]
        boxes = [f"{name}.v" for name in BLACK_BOXES if name in needed]
        (work / "synth.ys").write_text(yosys_script(files, top, boxes))
        if log:
            log(f"yosys: synthesizing {top} in {work}")
        began = time.perf_counter()
        proc = subprocess.run(["yosys", "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work, capture_output=True,
                              text=True, timeout=timeout_s)
        seconds = time.perf_counter() - began
        if proc.returncode:
            tail = (work / "yosys.log").read_text()[-3000:] if (work / "yosys.log").exists() else proc.stderr
            raise RuntimeError(f"yosys failed on {top}:\n{tail}")
        report = parse_stat((work / "stat.txt").read_text())
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        report.update(top=top, die_id=die.id, options=options.to_dict(), seconds=seconds,
                      peak_rss_mib=peak_kib / 1024)
        return report
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
