"""RTL simulation speed: simulated tokens per wall-second and cycles per token, stories260K in Verilator.

    python bench/sim_rtl.py [--tokens 32] [--plan w8] [--die PATH] [--weights-per-lane 256 64] [--synth-layer]

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

import numpy as np

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


def predicted_layer_cells(spec, weights_per_lane: int, weight_bits: int, kv_bits: int = 8) -> float:
    """The chip estimate's logic for one layer (KV SRAM excluded) in generic cells, for the chip the
    RTL builds: ROM + MAC lanes, 8-bit activations, one KV position per cycle (all heads)."""
    from hardwire.chip import arch
    from hardwire.chip.arch import ChipConfig
    from hardwire.chip.estimate import layer_blocks
    chip = ChipConfig(weight_style="rom_mac", weight_bits=weight_bits, activation_bits=8, kv_bits=kv_bits,
                      weights_per_lane=weights_per_lane, attention_positions_per_cycle=1)
    blocks = layer_blocks(spec, chip)
    logic = sum(t for key, t in blocks.transistors.items() if "sram" not in key and "kv" not in key)
    return logic / arch.GENERIC_CELL_T, blocks.transistors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--plan", default="w8")
    parser.add_argument("--die", type=Path, default=None)
    parser.add_argument("--weights-per-lane", type=int, nargs="+", default=[256],
                        help="ChipConfig's weights per MAC lane (one build each; fewer means more lanes, fewer cycles)")
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
        "| die | plan | weights per lane | MAC lanes | token steps | cycles/token (mean, min-max) | simulated tokens/s | "
        "simulated cycles/s | build (cached after) | greedy tokens equal to golden |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for weights_per_lane in args.weights_per_lane:
        options = RtlOptions(weights_per_lane=weights_per_lane)
        began = time.perf_counter()
        engine = RtlEngine(die, options=options, log=lambda m: print(m, file=sys.stderr))
        build_s = time.perf_counter() - began
        try:
            engine.generate([die.spec.bos_id or 1], max_tokens=1, stop_at_eos=False)    # warm-up (JIT, page cache)
            began = time.perf_counter()
            result = engine.generate([die.spec.bos_id or 1], max_tokens=args.tokens, stop_at_eos=False)
            sim_s = time.perf_counter() - began
        finally:
            engine.close()
        cycles = result.extra["cycles_per_token"]
        agree = sum(a == b for a, b in zip(result.ids, golden.ids))
        steps = len(cycles)
        lanes = sum(m["lanes"] for m in engine.design_notes["matvec"].values())
        rows.append(
            f"| stories260K `{die.id[:12]}` | {die.manifest.get('plan', {}).get('default', args.plan)} | "
            f"{weights_per_lane} | {lanes:,} | {steps} | "
            f"{sum(cycles) / steps:,.0f} ({min(cycles):,}-{max(cycles):,}) | {steps / sim_s:.1f} | "
            f"{sum(cycles) / sim_s / 1e6:.2f} M | {build_s:.0f} s | {agree}/{len(golden.ids)} |")
        print(rows[-1], file=sys.stderr)
    body = [
        f"Command: `python bench/sim_rtl.py --tokens {args.tokens} --plan {args.plan} --weights-per-lane "
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
        from hardwire.rtl.synth import synthesize
        options = RtlOptions()
        report = synthesize(die, options, block="hw_layer_0", log=lambda m: print(m, file=sys.stderr))
        bits = die.manifest["tensors"]["layers.0.wq"]["format"]["bits"]
        from hardwire.golden.tables import tables_for
        kv_bits = int(np.asarray(tables_for(die)["kv_bits"]).reshape(-1)[0])
        predicted, _ = predicted_layer_cells(die.spec, options.weights_per_lane, bits, kv_bits)
        body += [
            "",
            "Yosys 0.23 `synth -flatten -noshare` of one whole layer (`hw_layer_0`: its ROMs, MAC lanes, norms, RoPE, attention, "
            "SwiGLU; KV SRAM as a black box), generic cells, against the chip estimate for the same block "
            "(`rom_mac`, same lanes, one KV position per cycle, the die's KV width):",
            "",
            "| block | cells | flip-flop bits | Yosys time | peak memory | chip estimate (transistors / 6) | ratio |",
            "|---|---|---|---|---|---|---|",
            f"| hw_layer_0 | {report['cells']:,} | {report['flip_flops']:,} | {report['seconds']:.0f} s | "
            f"{report['peak_rss_mib']:.0f} MiB | {predicted:,.0f} | {report['cells'] / predicted:.2f}x |",
        ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        update_section("RTL simulation", text)


if __name__ == "__main__":
    main()
