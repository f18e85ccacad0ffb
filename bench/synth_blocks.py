"""Calibrate the chip estimate's per-layer vector logic on Yosys runs of our own generated blocks.

    python bench/synth_blocks.py [--dies h32 h128 stories260k] [--jobs 2] [--out tests/data/synth_blocks.json]
    python bench/synth_blocks.py --check          # fit and held-out check from the committed measurements

Synthesizes layer 0 of each die block by block (`hardwire synth DIE --block hw_layer_0`, bottom-up:
every distinct block flattened with its constants, then the layer's own logic) and merges each die's
block cell counts into the measurements file as soon as that die is done, so a long run keeps what it
finished. The calibration dies are random Llama-shaped models of other sizes than stories260K (the
check die), frozen at `w8` like it. `--check` refits `hardwire.chip.vector_logic`'s coefficients from
the fit dies, prints them beside the committed ones, and prints the held-out table for the check die
(docs/chip-model.md §8).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hardwire.model.spec import ModelSpec  # noqa: E402

MEASUREMENTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "synth_blocks.json"
# Calibration shapes: stories260K's proportions (head size 8, FFN ≈ 2.7 × hidden, GQA 2:1) at half and
# twice its width, and one with a wider head, so head size and head count move apart.
CALIBRATION_SPECS = {  # hardwire.chip.vector_logic.FIT_DIES
    "h32": ModelSpec(family="llama", hidden_dim=32, layers=1, heads=4, kv_heads=2, head_dim=8, ffn_dim=88,
                     vocab_size=64, max_context=512),
    "h128": ModelSpec(family="llama", hidden_dim=128, layers=1, heads=16, kv_heads=8, head_dim=8, ffn_dim=344,
                      vocab_size=64, max_context=512),
    "h96": ModelSpec(family="llama", hidden_dim=96, layers=1, heads=6, kv_heads=3, head_dim=16, ffn_dim=256,
                     vocab_size=64, max_context=512),
    "h32w": ModelSpec(family="llama", hidden_dim=32, layers=1, heads=2, kv_heads=1, head_dim=16, ffn_dim=88,
                      vocab_size=64, max_context=512),
}
# The generator's design point, changed for one die so the element-wise blocks' lanes per cycle move too.
RTL_FIELDS = {"h96": {"norm_per_cycle": 16}}
# Dies of which only some blocks are synthesized (module name prefixes; one instance of each, with its
# constants as the layer sets them): the blocks whose cost terms need a third or fourth point.
# h32, synthesized whole, gives the products' and the layer's own points (one size suffices for their
# proportional terms, docs/chip-model.md §8).
PARTIAL_BLOCKS = {"h96": ("hw_rmsnorm_", "hw_swiglu_", "hw_attention_", "hw_rope"),
                  "h128": ("hw_rmsnorm_", "hw_swiglu_", "hw_rope"), "h32w": ("hw_attention_", "hw_rope")}
CHECK_DIE = "stories260k"              # hardwire.chip.vector_logic.CHECK_DIE
PLAN = "w8"


def freeze_die(name: str, directory: Path) -> Path:
    """The die `name`: the bundled stories260K, or a calibration shape with seeded random weights,
    each frozen at `PLAN` with the real freezer."""
    from hardwire.freeze.freezer import Calibration, freeze
    from hardwire.freeze.plan import parse_plan
    if name == CHECK_DIE:
        from bench.sim_rtl import freeze_stories
        return freeze_stories(PLAN, directory)
    import numpy as np
    from tests.golden_dies import RandomModel
    spec = CALIBRATION_SPECS[name]
    rng = np.random.default_rng(1)
    sequences = [[int(i) for i in rng.integers(0, spec.vocab_size, 64)] for _ in range(4)]
    path = directory / f"{name}.die"
    freeze(RandomModel(spec, seed=0), parse_plan(PLAN), path, Calibration(sequences, {"source": "random ids"}))
    return path


def yosys_version() -> str:
    return subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()


SPEC_FIELDS = ("hidden_dim", "heads", "kv_heads", "head_dim", "ffn_dim", "vocab_size", "max_context")


def layer_entry(name: str, die, options, report: dict) -> dict:
    """What the measurements file records of a die's layer-0 synthesis (`report`, bottom-up)."""
    from hardwire.golden.tables import tables_for
    point = options.design_point(die, tables_for(die))
    return {
        "die": name, "die_id": die.id, "plan": PLAN,
        "spec": {k: getattr(die.spec, k) for k in SPEC_FIELDS},
        "point": point.to_dict(), "yosys": yosys_version(),
        "layer_cells": report["cells"], "layer_flip_flops": report["flip_flops"],
        "blocks": [{k: b[k] for k in ("module", "parameters", "role", "instances", "cells", "flip_flops")}
                   | {"seconds": round(b["seconds"], 1)} for b in report["blocks"]],
    }


def synthesize_die(name: str, jobs: int, log) -> dict:
    """Layer 0 of die `name`, block by block (or the blocks of PARTIAL_BLOCKS): what the measurements
    file records for it."""
    from hardwire.die import open_die
    from hardwire.rtl.synth import synthesize
    from hardwire.rtl.top import RtlOptions
    with tempfile.TemporaryDirectory(prefix="hardwire-synth-blocks-") as tmp:
        die = open_die(freeze_die(name, Path(tmp)))
        options = RtlOptions(**RTL_FIELDS.get(name, {}))
        began = time.perf_counter()
        if name in PARTIAL_BLOCKS:
            report = synthesize_some_blocks(die, options, PARTIAL_BLOCKS[name], Path(tmp) / "synth", log)
        else:
            report = synthesize(die, options, block="hw_layer_0", jobs=jobs, log=log)
        entry = layer_entry(name, die, options, report) | {"wall_s": round(time.perf_counter() - began, 1)}
        if name in PARTIAL_BLOCKS:
            entry.update(partial=list(PARTIAL_BLOCKS[name]), layer_cells=None, layer_flip_flops=None)
        return entry


def synthesize_some_blocks(die, options, prefixes: tuple[str, ...], work: Path, log) -> dict:
    """The first block of layer 0 whose module starts with each prefix (a ROM table aside: a norm's
    constants), synthesized as the layer's
    bottom-up run would (with the layer's constants), in the shape of a bottom-up report."""
    from hardwire.rtl.synth import is_table, synthesis_plan, synthesize_instance
    from hardwire.rtl.top import generate
    design = generate(die, None, options)
    work.mkdir(parents=True)
    design.write(work)
    whole, _ = synthesis_plan(design.modules, "hw_layer_0")
    blocks = []
    for k, prefix in enumerate(prefixes):
        instance = next(i for i in whole if i.module.startswith(prefix) and not is_table(design.modules[i.module]))
        log(f"yosys: {instance.module} {instance.parameters}")
        report = synthesize_instance(design.modules, instance, work, f"hw_synth_block_{k}", 3 * 3600)
        blocks.append({"module": instance.module, "parameters": instance.parameters, "role": "block",
                       "instances": 1, "cells": report["cells"], "flip_flops": report["flip_flops"],
                       "seconds": report["seconds"]})
    return {"cells": None, "flip_flops": None, "blocks": blocks}


def merge(path: Path, entry: dict) -> None:
    from hardwire.atomic import write_text_atomic
    data = json.loads(path.read_text()) if path.exists() else {"dies": {}}
    data["dies"][entry["die"]] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dies", nargs="+", default=[*CALIBRATION_SPECS, CHECK_DIE],
                        choices=[*CALIBRATION_SPECS, CHECK_DIE])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--blocks", nargs="+", help="only these module prefixes (one die: a partial re-run)")
    parser.add_argument("--out", type=Path, default=MEASUREMENTS)
    parser.add_argument("--check", action="store_true", help="fit and check from the measurements; no synthesis")
    args = parser.parse_args()
    if args.check:
        check(args.out)
        return
    if args.blocks:
        if len(args.dies) != 1:
            raise SystemExit("--blocks takes one die")
        PARTIAL_BLOCKS[args.dies[0]] = tuple(args.blocks)
    for name in args.dies:
        began = time.perf_counter()
        entry = synthesize_die(name, args.jobs, log=lambda m: print(m, file=sys.stderr, flush=True))
        merge(args.out, entry)
        cells = sum(b["cells"] * b["instances"] for b in entry["blocks"])
        print(f"{name}: {len(entry['blocks'])} blocks of layer 0, {cells:,} cells in {time.perf_counter() - began:.0f} s",
              flush=True)


def describe(entry: dict) -> str:
    spec, point = entry["spec"], entry["point"]
    return (f"{entry['die']} (hidden {spec['hidden_dim']}, {spec['heads']}/{spec['kv_heads']} heads of "
            f"{spec['head_dim']}, FFN {spec['ffn_dim']}, {point['norm_per_cycle']} elements per cycle)")


def check(path: Path) -> None:
    """Refit the cost terms on the fit dies and print them beside the committed ones, the fit's own
    residuals, and the held-out table for the check die (the tables of docs/chip-model.md §8.1)."""
    from hardwire.chip import vector_logic as vl
    dies = json.loads(path.read_text())["dies"]
    missing = [d for d in (*vl.FIT_DIES, vl.CHECK_DIE) if d not in dies]
    if missing:
        raise SystemExit(f"{path}: no measurements for {', '.join(missing)}; run without --check first")
    fit = [dies[d] for d in vl.FIT_DIES]
    terms = vl.calibrate(fit)
    print("refit (hardwire/chip/vector_logic.py COST_TERMS):")
    for kind, term in terms.items():
        print(f"    {kind!r}: CostTerm({term.sizes!r}, ({', '.join(repr(float(f'{c:.6g}')) for c in term.cells_per)})),")
        committed = vl.COST_TERMS.get(kind)
        if committed is None or committed.cells_per != tuple(float(f"{c:.6g}") for c in term.cells_per):
            print(f"    # differs from the committed {committed}")
    print("\nfit dies: " + "; ".join(describe(e) for e in fit))
    print("\n| cost term | sizes: generic cells per unit | fitted on (synthesized cells, ratio fitted / synthesized) |")
    print("|---|---|---|")
    for kind, term in terms.items():
        coefficients = ", ".join(f"{name} {c:,.1f}" for name, c in zip(term.sizes, term.cells_per))
        points = []
        for entry in fit:
            for u in vl.predicted_units(entry, terms):
                if u["kind"] == kind:
                    points.append(f"{entry['die']} {u['name']} {u['synthesized']:,.0f} ({u['predicted'] / u['synthesized']:.2f})"
                                  if kind == "matvec" else f"{entry['die']} {u['synthesized']:,.0f} ({u['predicted'] / u['synthesized']:.2f})")
                    if kind != "matvec":
                        break
        print(f"| {kind} | {coefficients} | {'; '.join(points)} |")
    check_entry = dies[vl.CHECK_DIE]
    print(f"\nheld out: {describe(check_entry)}")
    print("| block | synthesized cells | predicted (textbook part + cost term) | ratio |")
    print("|---|---:|---:|---:|")
    units = vl.predicted_units(check_entry, terms)
    for kind in vl.KINDS:
        for u in (u for u in units if u["kind"] == kind):
            textbook = f"{u['textbook']:,.0f} + {u['predicted'] - u['textbook']:,.0f}" if u["textbook"] else \
                f"{u['predicted']:,.0f}"
            print(f"| {kind} {u['name']} | {u['synthesized']:,.0f} | {textbook} | {u['predicted'] / u['synthesized']:.2f} |")
    for kind in vl.KINDS:
        mine = [u for u in units if u["kind"] == kind]
        s, p = sum(u["synthesized"] for u in mine), sum(u["predicted"] for u in mine)
        print(f"| **{'layer own logic' if kind == 'layer' else kind}, all** | {s:,.0f} | {p:,.0f} | {p / s:.2f} |")
    s, p = check_entry["layer_cells"], sum(u["predicted"] for u in units)
    print(f"| **layer** | **{s:,}** | **{p:,.0f}** | **{p / s:.2f}** |")


if __name__ == "__main__":
    main()
