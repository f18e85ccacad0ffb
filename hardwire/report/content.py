"""What a report shows, gathered from the stages that compute it: the chip estimate (and the same
estimate at several contexts), the die's bits per tensor, its quality against the float model,
economics, and the results other commands wrote: simulation (golden against RTL), synthesis, time
to correct and an exploration's Pareto front.

Each part is a dict of numbers, or a `Missing` that says why the input cannot show it (a preset has
no weights; no --ttc was given). The page (`page.py`) draws whatever is there.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hardwire.errors import BadConfig, HardwireError

DEFAULT_STORIES = 20            # documents of the bundled text the quality table scores (seconds)
SWEEP_CONTEXTS = (1, 16, 64, 256, 1024, 4096, 16384, 65536, 131072)
TTC_KEYS = ("systems",)
EXPLORE_KEYS = ("points", "pareto")


@dataclass(frozen=True)
class Missing:
    """A part the report cannot show, and why."""
    reason: str


@dataclass
class Report:
    subject: str                          # the die's path or the preset's name
    kind: str                             # "die" or "preset"
    estimate: dict                        # `hardwire estimate --json` for the same input
    contexts: list[dict]                  # the same chip decoding at several contexts
    bits: dict | Missing                  # {"layers": [...], "tensors": [...], "matrix": [[bits]], "other": [...]}
    quality: dict | Missing
    economics: dict | Missing
    synth: dict | Missing
    sim: dict | Missing
    ttc: dict | Missing
    explore: dict | Missing


def resolve_subject(subject: str) -> tuple[str, Optional[str], Optional[str]]:
    """("die" | "preset", the die's path or None, the preset's name or None)."""
    from hardwire.chip.presets import MODEL_PRESETS
    from hardwire.die import is_die
    if is_die(subject):
        return "die", subject, None
    if subject.lower() in MODEL_PRESETS:
        return "preset", None, subject.lower()
    raise BadConfig(f"{subject!r} is neither a die nor a model preset (presets: {', '.join(MODEL_PRESETS)})",
                    field="DIE_OR_PRESET")


def chip_estimate(die_path: Optional[str], preset: Optional[str], chip: Optional[str]):
    """The estimate `hardwire estimate [DIE | --preset P] [--chip C] --json` prints, its result object,
    the chip config and the spec: the report's numbers are the command's numbers."""
    from hardwire.chip.commands import fit_report, resolve_chip, resolve_spec
    from hardwire.chip.estimate import estimate
    from hardwire.chip.fit import check_context, default_context

    label, spec, die_bits = resolve_spec(die_path, preset)
    context = default_context(spec)
    check_context(spec, context)
    config = resolve_chip(chip, None, None, None, die_bits, spec=spec, context=context)
    result = estimate(spec, config, context=context)
    return {"model": label, **result.to_json(), **fit_report(config, result)}, result, config, spec


def context_sweep(spec, config) -> list[dict]:
    """The same chip decoding at contexts up to the model's maximum: latency, tokens/s, users."""
    from hardwire.chip.estimate import estimate
    contexts = sorted({c for c in SWEEP_CONTEXTS if c <= spec.max_context} | {spec.max_context})
    rows = []
    for context in contexts:
        result = estimate(spec, config, context=context)
        rows.append({"context": context, "latency_us_per_token": result.latency_us_per_token,
                     "tokens_per_s": result.tokens_per_s, "max_users": result.max_users,
                     "aggregate_tokens_per_s": result.aggregate_tokens_per_s})
    return rows


LAYER_TENSOR = re.compile(r"^layers\.(\d+)\.(.+)$")


def die_bits(die) -> dict:
    """Bits per weight (scales included) of every quantized matrix, as a layer × tensor grid, and
    the tensors outside the layers (embedding, head, norms) as a list."""
    from hardwire.freeze.commands import describe_die
    described = describe_die(die)
    grid: dict[int, dict[str, float]] = {}
    other = []
    for name, row in described["tensors"].items():
        match = LAYER_TENSOR.match(name)
        if match and row["kind"] == "quantized":
            grid.setdefault(int(match.group(1)), {})[match.group(2)] = row["bits_per_weight"]
        else:
            other.append({"tensor": name, "format": row["format"], "shape": row["shape"],
                          "bits_per_weight": row["bits_per_weight"], "rom_bits": row["rom_bits"]})
    layers = sorted(grid)
    tensors = sorted({t for row in grid.values() for t in row})
    matrix = [[grid[layer].get(t) for t in tensors] for layer in layers]
    return {"layers": layers, "tensors": tensors, "matrix": matrix, "other": other, "plan": described["plan"],
            "totals": described["totals"]}


def die_quality(die_path: str, stories: int, text: Optional[Path] = None) -> dict | Missing:
    """`hardwire quality DIE --stories N [--text FILE] --json` (default: the bundled text)."""
    from hardwire.measure.commands import quality_rows
    from hardwire.model.load import bundled_text_path
    try:
        rows, _ = quality_rows([Path(die_path)], text or bundled_text_path(), stories, None, None, False, None)
    except HardwireError as e:
        return Missing(f"quality could not be measured: {e}")
    return {**rows[0], "stories": stories}


def chip_economics(result) -> dict | Missing:
    """Break-even against the GPU baseline (`hardwire economics`' defaults), where the chip package has it."""
    try:
        from hardwire.chip.economics import Deployment, economics
        from hardwire.chip.gpus import gpu
    except ImportError:
        return Missing("not available: this build has no economics model")
    try:
        return economics(result, gpu("h100"), Deployment()).to_json()
    except HardwireError as e:
        return Missing(f"the economics model cannot price this chip: {e}")


def read_result(path: Optional[Path], keys: tuple[str, ...], what: str, command: str) -> dict | Missing:
    from hardwire.jsonfile import read_json_file
    if path is None:
        return Missing(f"not given: pass --{what} RESULT.json from `{command}`")
    data = read_json_file(path, BadConfig, what=f"{what} result")
    absent = [key for key in keys if key not in data]
    if absent:
        raise BadConfig(f"not a `{command}` result: it has no {', '.join(absent)}", path=path)
    return data


def ttc_curves(data: dict, path) -> dict:
    """Fraction of tasks solved by time t for every system of a `hardwire ttc --json` result (an
    unsolved task's time is null)."""
    systems = []
    for system in data["systems"]:
        times = system.get("ttc_s") if isinstance(system, dict) else None
        if not isinstance(times, list) or not all(t is None or isinstance(t, (int, float)) for t in times):
            raise BadConfig("every system needs a ttc_s list of seconds (null for unsolved)", path=path)
        solved = sorted(t for t in times if t is not None)
        total = len(times)
        systems.append({"system": str(system.get("system", f"system {len(systems) + 1}")), "tasks": total,
                        "solved": len(solved) / total if total else 0.0, "times_s": solved,
                        "fractions": [(i + 1) / total for i in range(len(solved))],
                        "median_s": system.get("ttc_median_s"), "p90_s": system.get("ttc_p90_s")})
    return {"task_set": data.get("task_set"), "mode": data.get("mode"), "systems": systems}


def explore_front(data: dict, path) -> dict:
    """The points and Pareto front of a `hardwire explore --json` result, with the two axes: its
    first two objectives, else its first two numeric keys."""
    points, front = data["points"], data["pareto"]
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise BadConfig("points must be a list of objects", path=path)
    if not isinstance(front, list) or not all(isinstance(i, int) and 0 <= i < len(points) for i in front):
        raise BadConfig("pareto must list indices into points", path=path)
    objectives = [str(o).split(":")[0] for o in data.get("objectives", [])]
    numeric = [k for k in (points[0] if points else {})
               if all(isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool) for p in points)]
    axes = [k for k in objectives if k in numeric][:2] or numeric[:2]
    return {"points": points, "pareto": front, "axes": axes, "objectives": data.get("objectives", [])}


def synth_calibration(data: dict, die, path) -> dict:
    """A `hardwire synth --json` result, and for a layer of a die the estimate's cells beside it."""
    for key in ("cells", "flip_flops"):
        if not isinstance(data.get(key), (int, float)):
            raise BadConfig(f"not a `hardwire synth --json` result: it has no {key}", path=path)
    out = {"top": data.get("top", "hw_chip"), "cells": data["cells"], "flip_flops": data["flip_flops"],
           "blocks": data.get("blocks", []), "cells_by_type": data.get("cells_by_type", {})}
    if die is not None and str(out["top"]).startswith("hw_layer"):
        from hardwire.rtl.synth import layer_estimate
        from hardwire.rtl.top import RtlOptions
        try:
            predicted, _ = layer_estimate(die, RtlOptions().point.weights_per_lane)
            out["estimate_cells"] = predicted
            out["ratio"] = data["cells"] / predicted if predicted else math.nan
        except HardwireError as e:
            out["estimate_note"] = str(e)
    return out


def golden_against_rtl(data: dict, die, path) -> dict:
    """A `hardwire sim DIE --json` result beside the golden model's greedy generation from the same
    prompt: the same tokens or not, and the RTL's cycles against the datapath's prediction."""
    from hardwire.golden.engine import GoldenEngine
    ids, prompt = data.get("ids"), data.get("prompt_ids")
    if not all(isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in x)
               for x in (ids, prompt)) or not prompt:
        raise BadConfig("not a `hardwire sim --json` result: it needs lists of token ids ids and prompt_ids",
                        path=path)
    if any(not 0 <= i < die.spec.vocab_size for i in ids + prompt):
        raise BadConfig(f"token ids outside this die's vocabulary of {die.spec.vocab_size}: a result of another die?",
                        path=path)
    golden = GoldenEngine(die).generate(prompt, max_tokens=len(ids), temperature=0.0).ids if ids else []
    estimate = data.get("rtl_estimate") if isinstance(data.get("rtl_estimate"), dict) else {}
    return {"prompt_ids": prompt, "rtl_ids": ids, "golden_ids": list(golden), "match": list(golden) == ids,
            "rtl_cycles": data.get("cycles"), "predicted_cycles": estimate.get("cycles"),
            "cycles_exact": estimate.get("exact"), "simulator": data.get("simulator"), "text": data.get("text")}


def gather(subject: str, chip: Optional[str] = None, stories: int = DEFAULT_STORIES, ttc: Optional[Path] = None,
           explore: Optional[Path] = None, synth: Optional[Path] = None, sim: Optional[Path] = None,
           text: Optional[Path] = None) -> Report:
    kind, die_path, preset = resolve_subject(subject)
    # the result files first: a bad one is refused before anything slow runs
    ttc_data = read_result(ttc, TTC_KEYS, "ttc", "hardwire ttc --json")
    explore_data = read_result(explore, EXPLORE_KEYS, "explore", "hardwire explore --json")
    synth_data = read_result(synth, (), "synth", "hardwire synth --json")
    sim_data = read_result(sim, ("ids", "prompt_ids"), "sim", "hardwire sim DIE --json")
    if die_path is None and not isinstance(sim_data, Missing):
        raise BadConfig("a sim result is compared with a die's golden model; give the die, not a preset",
                        field="--sim")
    estimate, result, config, spec = chip_estimate(die_path, preset, chip)
    no_weights = Missing(f"{preset} is a preset: a shape without weights. Freeze a checkpoint "
                         f"(`hardwire freeze MODEL -o X.die`) and report the die to see this")
    die = None
    if die_path is not None:
        from hardwire.die import open_die
        die = open_die(die_path)
    return Report(
        subject=subject, kind=kind, estimate=estimate, contexts=context_sweep(spec, config),
        bits=die_bits(die) if die is not None else no_weights,
        quality=die_quality(die_path, stories, text) if die is not None else no_weights,
        economics=chip_economics(result),
        synth=synth_data if isinstance(synth_data, Missing) else synth_calibration(synth_data, die, synth),
        sim=sim_data if isinstance(sim_data, Missing) else golden_against_rtl(sim_data, die, sim),
        ttc=ttc_data if isinstance(ttc_data, Missing) else ttc_curves(ttc_data, ttc),
        explore=explore_data if isinstance(explore_data, Missing) else explore_front(explore_data, explore),
    )
