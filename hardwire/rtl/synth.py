"""Yosys synthesis of the generated design (or one block) to generic cells: cells by type, flip-flops.

`synth -flatten` maps to Yosys's internal gate library ($_AND_, $_XOR_, $_MUX_, $_DFF_P_, ...), so
counts compare across designs without a vendor library; they calibrate the chip estimate (docs/rtl.md).
The KV-cache SRAM model is read as a black box: a back-end flow puts an SRAM macro there, and
synthesising it as flip-flops would swamp every other count.

Cost (docs/rtl.md, measured toolchain facts): ~0.5 ms of CPU and ~10 KiB of peak memory per cell, ABC
being the peak.
"""
from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


# `hw_x name (` or `hw_x #(.p(v), ...) name (`, the parameter list possibly over several lines
INSTANCE = re.compile(r"^\s*(hw_\w+)\s+(#\((?:[^()]|\([^()]*\))*\))?\s*\w+\s*\(", re.MULTILINE)
HEADER = re.compile(r"^module (\w+) \((.*?)\);", re.MULTILINE | re.DOTALL)
PORT = re.compile(r"^\s*(input|output)\s+(?:wire|reg)\s*(signed\s*)?(\[[^\]]+\])?\s*(\w+)\s*,?\s*$")


def reachable_modules(modules: dict[str, str], top: str) -> list[str]:
    """`top` and the modules it instantiates, directly or not, in the design's (leaves-first) order:
    Yosys then parses only those (the whole stories260K chip is ~3 MB of ROM tables)."""
    seen, stack = {top}, [top]
    while stack:
        for name, _ in INSTANCE.findall(modules[stack.pop()]):
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


@dataclass(frozen=True)
class Instance:
    """A child block as its parent instantiates it: the module and its parameter overrides."""
    module: str
    parameters: str = ""      # the `#(...)` text, "" when none


def child_instances(text: str) -> Counter:
    """The blocks a module instantiates, counted by (module, parameters)."""
    return Counter(Instance(m.group(1), " ".join((m.group(2) or "").split()))
                   for m in INSTANCE.finditer(text))


def ports_of(text: str) -> list[tuple]:
    """(direction, signed, vector, name) of each port in a generated module's ANSI header."""
    header = HEADER.search(text)
    return [m.groups() for m in map(PORT.match, header.group(2).splitlines()) if m] if header else []


def wrapper(modules: dict[str, str], instance: Instance, name: str) -> str:
    """A module `name` with the ports of `instance.module` that instantiates it with its parameters,
    so a flattening synthesis folds those constants into the block."""
    ports = ports_of(modules[instance.module])
    declarations = ",\n".join("    " + " ".join(part for part in (d, "wire", (sign or "").strip(), vector, port) if part)
                               for d, sign, vector, port in ports)
    if not ports:
        raise RuntimeError(f"no ports found in the header of {instance.module}")
    connections = ", ".join(f".{port}({port})" for *_, port in ports)
    return (f"module {name} (\n{declarations}\n);\n"
            f"    {instance.module} {instance.parameters} block ({connections});\nendmodule\n")


def run_yosys(work: Path, files: list[str], top: str, boxes: list[str], timeout_s: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "synth.ys").write_text(yosys_script(files, top, boxes))
    began = time.perf_counter()
    proc = subprocess.run(["yosys", "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=work, capture_output=True,
                          text=True, timeout=timeout_s)
    seconds = time.perf_counter() - began
    if proc.returncode:
        tail = (work / "yosys.log").read_text()[-3000:] if (work / "yosys.log").exists() else proc.stderr
        raise RuntimeError(f"yosys failed on {top}:\n{tail}")
    report = parse_stat((work / "stat.txt").read_text())
    report["seconds"] = seconds
    return report


def synthesize(die, options, block: str | None = None, log=None, workdir: str | Path | None = None,
               timeout_s: float = 3 * 3600, flat: bool = False, jobs: int = 1) -> dict:
    """Synthesize `block` (a module name; default the top `hw_chip`) of `die`'s design.

    A block that instantiates others is synthesized bottom-up unless `flat`: each distinct child
    (module and parameters) on its own, flattened with its constants, `jobs` at a time; then the
    block's own logic with the children as black boxes; the counts are summed over the instances.
    One flattened run of a stories260K layer (1.4 M gates before ABC) took Yosys 0.23 over 30 min,
    most of it in `opt` over the flattened netlist; its blocks alone take seconds to minutes each."""
    from hardwire.rtl.top import generate
    require("yosys")
    design = generate(die, None, options)
    top = block or design.top
    if top not in design.modules:
        names = ", ".join(n for n in design.modules if not n.endswith(("_codes", "_scales", "_rows", "_mult")))
        raise BadConfig(f"no module {top!r} in the design; modules: {names}", field="--block")
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="hardwire-synth-")) if own else Path(workdir)
    began = time.perf_counter()
    try:
        design.write(work)
        plan = synthesis_plan(design.modules, top)
        if flat or not plan[1]:           # nothing to split (a leaf, or a matvec with its ROMs)
            needed = reachable_modules(design.modules, top)
            files = [f"{name}.v" for name in needed if name not in BLACK_BOXES]
            boxes = [f"{name}.v" for name in BLACK_BOXES if name in needed]
            if log:
                log(f"yosys: synthesizing {top} in {work}")
            report = run_yosys(work, files, top, boxes, timeout_s)
            report["method"] = "flat"
        else:
            report = _bottom_up(design.modules, plan, top, work, jobs, timeout_s, log)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        report.update(top=top, die_id=die.id, options=options.to_dict(), seconds=time.perf_counter() - began,
                      peak_rss_mib=peak_kib / 1024)
        return report
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def is_table(text: str) -> bool:
    """A ROM table (`emit.case_rom`): its only ports are addr -> data (and clk, en when registered)."""
    ports = {name for *_, name in ports_of(text)}
    return bool(ports) and ports <= {"clk", "en", "addr", "data"}


def synthesis_plan(modules: dict[str, str], top: str) -> tuple[Counter, Counter]:
    """The bottom-up jobs for `top`: (blocks synthesized whole, flattened with their constants,
    counted by (module, parameters); modules whose own logic is synthesized with their children as
    black boxes, counted). A module is split only when it takes no parameters (a block with
    parameters is flattened whole, so its constants reach every level inside it) and has children
    other than ROM tables: a matvec stays whole with its ROMs, which synthesis optimizes together
    with the lanes they feed (split, a tiny matvec came out 16% larger than flattened)."""
    whole: Counter = Counter()
    split: Counter = Counter()

    def visit(instance: Instance, count: int) -> None:
        kids = {i: n for i, n in child_instances(modules[instance.module]).items() if i.module not in BLACK_BOXES}
        if kids and not instance.parameters and not all(is_table(modules[i.module]) for i in kids):
            split[instance.module] += count
            for kid, n in kids.items():
                visit(kid, count * n)
        else:
            whole[instance] += count

    visit(Instance(top), 1)
    return whole, split


def synthesize_instance(modules: dict[str, str], instance: Instance, work: Path, name: str,
                        timeout_s: float) -> dict:
    """One block as its parent instantiates it (`instance`: module and parameter overrides), flattened
    with its constants, in `work / name` (the design's modules written in `work`)."""
    sub = work / name
    sub.mkdir()
    (sub / f"{name}.v").write_text(wrapper(modules, instance, name))
    needed = reachable_modules(modules, instance.module)
    files = [f"../{m}.v" for m in needed if m not in BLACK_BOXES] + [f"{name}.v"]
    boxes = [f"../{m}.v" for m in BLACK_BOXES if m in needed]
    return run_yosys(sub, files, name, boxes, timeout_s)


def _bottom_up(modules: dict[str, str], plan: tuple[Counter, Counter], top: str, work: Path, jobs: int,
               timeout_s: float, log=None) -> dict:
    whole, split = plan

    def whole_job(k: int, instance: Instance) -> dict:
        return synthesize_instance(modules, instance, work, f"hw_synth_block_{k}", timeout_s)

    def own_job(module: str) -> dict:
        kids = {i.module for i in child_instances(modules[module])} | set(BLACK_BOXES)
        boxes = [f"../{m}.v" for m in sorted(kids) if m in modules]
        report = run_yosys(work / f"own_{module}", [f"../{module}.v"], module, boxes, timeout_s)
        # its own gates ($_..._) and SRAM macros, not the black-box instances of its children
        report["cells_by_type"] = {kind: n for kind, n in report["cells_by_type"].items()
                                   if kind.startswith("$_") or kind in BLACK_BOXES}
        report["cells"] = sum(report["cells_by_type"].values())
        report["flip_flops"] = sum(n for kind, n in report["cells_by_type"].items() if FLIP_FLOP.match(kind))
        return report

    if log:
        log(f"yosys: synthesizing {top} bottom-up ({len(whole)} blocks whole, {len(split)} modules' own logic, "
            f"{jobs} at a time) in {work}")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        # the largest first, so the last job to finish is a short one
        order = sorted(whole, key=lambda i: -len(modules[i.module]))
        futures = [(i, "block", whole[i], pool.submit(whole_job, k, i)) for k, i in enumerate(order)]
        futures += [(Instance(m), "own logic", n, pool.submit(own_job, m)) for m, n in split.items()]
        results = [(instance, role, count, future.result()) for instance, role, count, future in futures]
    total: Counter = Counter()
    blocks = []
    for instance, role, count, report in results:
        for kind, n in report["cells_by_type"].items():
            total[kind] += n * count
        blocks.append({"module": instance.module, "parameters": instance.parameters, "role": role,
                       "instances": count, "cells": report["cells"], "flip_flops": report["flip_flops"],
                       "seconds": report["seconds"]})
    return {"cells": sum(total.values()), "cells_by_type": dict(total),
            "flip_flops": sum(n for kind, n in total.items() if FLIP_FLOP.match(kind)),
            "method": "bottom-up", "blocks": blocks, "yosys_seconds": sum(r["seconds"] for *_, r in results)}


def layer_estimate(die, weights_per_lane: int) -> tuple[float, dict]:
    """The chip estimate's logic for one layer of `die` (KV SRAM excluded) in generic cells, for the
    chip the RTL builds (its design point, `RtlOptions.design_point`: ROM + MAC lanes at the die's
    weight, activation and KV widths, the RTL's lanes, one KV position per cycle), and the
    estimate's transistors by part (`weight_storage`, `mac_select`, `attention`, `control`, ...)."""
    from hardwire.chip import arch
    from hardwire.chip.arch import ChipConfig
    from hardwire.chip.estimate import layer_blocks
    from hardwire.golden.tables import tables_for
    from hardwire.rtl.top import RtlOptions
    point = RtlOptions(weights_per_lane=weights_per_lane).design_point(die, tables_for(die))
    blocks = layer_blocks(die, ChipConfig(point=point))
    logic = sum(t for key, t in blocks.transistors.items() if "sram" not in key and "kv" not in key)
    return logic / arch.GENERIC_CELL_T, blocks.transistors
