"""RTL simulation speed: simulated tokens per wall-second and cycles per token, stories260K in Verilator.

    python bench/sim_rtl.py [--tokens 32] [--repeats 5] [--plan w8] [--die PATH] [--weights-per-lane 256 64] [--synth-layer]

Freezes the bundled stories260K (unless --die is given), builds the generated RTL with Verilator
(cached by die id; the build time is reported separately), generates greedy tokens from BOS with the
simulated chip and with the golden model, and checks that they agree. With --synth-layer it also runs
Yosys on one whole layer (`hw_layer_0`, ROM style) and compares its generic-cell count with the chip
estimate's prediction for the same block. Results go to the `## RTL simulation` section of
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_summary, update_section  # noqa: E402


def freeze_stories(plan: str, directory: Path) -> Path:
    from hardwire.freeze.commands import load_calibration
    from hardwire.freeze.freezer import freeze
    from hardwire.freeze.plan import parse_plan
    from hardwire.model.load import load
    model = load(None)
    path = directory / "stories260K.die"
    freeze(model, parse_plan(plan), path, load_calibration(model, None, 16384))
    return path


def synth_layer_section(die) -> list[str]:
    """Yosys on one whole layer, bottom-up, against the chip estimate block by block (the cost
    terms of `hardwire.chip.vector_logic`, fitted on other dies: bench/synth_blocks.py)."""
    from bench.synth_blocks import layer_entry
    from hardwire.chip.vector_logic import predicted_units
    from hardwire.rtl.synth import synthesize
    from hardwire.rtl.top import RtlOptions
    options = RtlOptions()
    began = time.perf_counter()
    report = synthesize(die, options, block="hw_layer_0", jobs=2, log=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - began
    bits = die.manifest["tensors"]["layers.0.wq"]["format"]["bits"]
    units = predicted_units(layer_entry("this die", die, options, report))
    groups = {"matvec": "matvecs (ROMs, MAC lanes, requantizers)",
              "attention": "attention (scores, softmax, V sums, normalize, quantize)"}
    parts: dict[str, list[float]] = {}
    for unit in units:
        part = parts.setdefault(groups.get(unit["kind"], "norms, SwiGLU, RoPE, residual, control"), [0.0, 0.0])
        part[0] += unit["synthesized"]
        part[1] += unit["predicted"]
    predicted = sum(u["predicted"] for u in units)
    lines = [
        f"Yosys 0.23 on one whole layer (`hardwire synth DIE --block hw_layer_0 --jobs 2`, bottom-up: each "
        f"distinct block flattened with its constants, then the layer's own logic, KV SRAM as a black box): "
        f"**{report['cells']:,} generic cells, {report['flip_flops']:,} flip-flop bits, {wall / 60:.1f} min wall** "
        f"({report['yosys_seconds'] / 60:.1f} min of Yosys CPU over 2 jobs), peak {report['peak_rss_mib'] / 1024:.1f} GiB. "
        f"Against the chip estimate for the same layer (`rom_mac`, {options.point.weights_per_lane} weights per lane, "
        f"{bits}-bit weights, one KV position per cycle; transistors / 6 per generic cell, the vector logic's "
        f"cost terms fitted on other dies, docs/chip-model.md §8):",
        "",
        "| part of the layer | synthesized cells | chip estimate (cells) | ratio |",
        "|---|---|---|---|",
    ]
    for name, (cells, estimate) in parts.items():
        lines.append(f"| {name} | {cells:,.0f} | {estimate:,.0f} | {cells / estimate:.2f}x |")
    lines.append(f"| **whole layer** | **{report['cells']:,}** | {predicted:,.0f} | "
                 f"**{report['cells'] / predicted:.2f}x** |")
    lines += ["", "| block | instances | cells | flip-flop bits | Yosys time |", "|---|---|---|---|---|"]
    for block in sorted(report["blocks"], key=lambda b: -b["cells"] * b["instances"]):
        lines.append(f"| `{block['module']}` ({block['role']}) | {block['instances']} | {block['cells']:,} | "
                     f"{block['flip_flops']:,} | {block['seconds']:.0f} s |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--plan", default="w8")
    parser.add_argument("--die", type=Path, default=None)
    parser.add_argument("--weights-per-lane", type=int, nargs="+", default=[256],
                        help="ChipConfig's weights per MAC lane (one build each; fewer means more lanes, fewer cycles)")
    parser.add_argument("--repeats", type=int, default=5, help="timed decodes per configuration (median reported)")
    parser.add_argument("--synth-layer", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    from hardwire.die import open_die
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.engine import RtlEngine
    from hardwire.rtl.top import RtlOptions

    work = Path(tempfile.mkdtemp(prefix="hardwire-bench-rtl-"))
    die_path = args.die or freeze_stories(args.plan, work)
    die = open_die(die_path)
    golden = GoldenEngine(die).generate([die.spec.bos_id or 1], max_tokens=args.tokens, stop_at_eos=False)
    rows = [
        f"| die | plan | weights per lane | MAC lanes | token steps | cycles/token (mean, min-max) | simulated tokens/s "
        f"(median, min-max of {args.repeats} runs) | simulated cycles/s (median) | build (cached after) | "
        "greedy tokens equal to golden |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for weights_per_lane in args.weights_per_lane:
        options = RtlOptions(weights_per_lane=weights_per_lane)
        began = time.perf_counter()
        engine = RtlEngine(die, options=options, log=lambda m: print(m, file=sys.stderr))
        build_s = time.perf_counter() - began
        try:
            engine.generate([die.spec.bos_id or 1], max_tokens=1, stop_at_eos=False)    # warm-up (JIT, page cache)
            speeds = []
            for _ in range(args.repeats):      # the same decode each time; this VM's speed drifts by tens of %
                began = time.perf_counter()
                result = engine.generate([die.spec.bos_id or 1], max_tokens=args.tokens, stop_at_eos=False)
                speeds.append(len(result.extra["cycles_per_token"]) / (time.perf_counter() - began))
        finally:
            engine.close()
        speeds.sort()
        median = speeds[len(speeds) // 2]
        cycles = result.extra["cycles_per_token"]
        agree = sum(a == b for a, b in zip(result.ids, golden.ids))
        steps = len(cycles)
        lanes = sum(m["lanes"] for m in engine.design_notes["matvec"].values())
        rows.append(
            f"| stories260K `{die.id[:12]}` | {die.manifest.get('plan', {}).get('default', args.plan)} | "
            f"{weights_per_lane} | {lanes:,} | {steps} | "
            f"{sum(cycles) / steps:,.0f} ({min(cycles):,}-{max(cycles):,}) | {median:.1f} ({speeds[0]:.1f}-{speeds[-1]:.1f}) | "
            f"{sum(cycles) / steps * median / 1e6:.2f} M | {build_s:.0f} s | {agree}/{len(golden.ids)} |")
        print(rows[-1], file=sys.stderr)
    body = [
        f"Command: `python bench/sim_rtl.py --tokens {args.tokens} --repeats {args.repeats} --plan {args.plan} --weights-per-lane "
        f"{' '.join(str(v) for v in args.weights_per_lane)}{' --synth-layer' if args.synth_layer else ''}`  ",
        f"Machine: {machine_summary()}; Verilator 5.006 (`{' '.join(__import__('hardwire.rtl.sim', fromlist=['x']).VERILATOR_FLAGS)}`), "
        "one simulation thread.",
        "",
        "Greedy decode from BOS through the generated RTL (`hardwire sim`), at ChipConfig's default 256 weights "
        "per MAC lane (hc1) and, where listed, fewer weights per lane (more lanes, fewer cycles per token). "
        "Each token step runs the whole chip: embedding, every layer, "
        "the classifier and a {vocab}-cycle logit stream with argmax; the testbench reads every logit back. Cycles "
        "per token grow with the position (attention reads the KV cache twice).".replace("{vocab}", str(die.spec.vocab_size)),
        "",
        *rows,
    ]
    if args.synth_layer:
        body += ["", *synth_layer_section(die)]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        update_section("RTL simulation", text)


if __name__ == "__main__":
    main()
