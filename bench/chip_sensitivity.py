"""Which assumptions the HC1 reproduction is sensitive to.

Runs `hardwire estimate --preset llama-3.1-8b --chip hc1` with one assumption moved at a time and
prints a Markdown table (the one in docs/chip-model.md, "Sensitivity"):

    python bench/chip_sensitivity.py
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hardwire.chip import process  # noqa: E402
from hardwire.chip.arch import load_chip  # noqa: E402
from hardwire.chip.estimate import estimate  # noqa: E402
from hardwire.chip.presets import model_preset  # noqa: E402

PUBLISHED = {"tokens_per_s": 17000, "area_mm2": 815, "transistors": 53e9, "power_w": 225}

CHIP_CHANGES = [  # (label, ChipConfig changes)
    ("clock 0.8 GHz", {"clock_ghz": 0.8}), ("clock 1.2 GHz", {"clock_ghz": 1.2}),
    ("weights per lane 128", {"weights_per_lane": 128}), ("weights per lane 512", {"weights_per_lane": 512}),
    ("attention 4 positions/cycle", {"attention_positions_per_cycle": 4}),
    ("attention 16 positions/cycle", {"attention_positions_per_cycle": 16}),
    ("KV SRAM 128 MiB", {"kv_sram_mib": 128.0}), ("KV SRAM 512 MiB", {"kv_sram_mib": 512.0}),
    ("no 6-bit weights", {"high_precision_fraction": 0.0}), ("25% 6-bit weights", {"high_precision_fraction": 0.25}),
    ("activations 6-bit", {"activation_bits": 6}), ("activations 12-bit", {"activation_bits": 12}),
    ("explicit select mux per lane", {"explicit_select_mux": True}),
    ("control energy 10%", {"control_fraction": 0.10}),
    ("vector logic 512 elements/cycle", {"norm_per_cycle": 512, "embed_per_cycle": 512, "rope_heads_per_cycle": 4,
                                         "attention_heads_per_cycle": 4, "logits_per_cycle": 512}),
    ("vector logic 128 elements/cycle", {"norm_per_cycle": 128, "embed_per_cycle": 128, "rope_heads_per_cycle": 1,
                                         "attention_heads_per_cycle": 1, "logits_per_cycle": 128}),
]
NODE_CHANGES = [  # (label, ProcessNode changes for N6)
    ("achieved density 60% of peak", {"achieved_density_fraction": 0.60}),
    ("achieved density 80% of peak", {"achieved_density_fraction": 0.80}),
    ("leakage 0.5 nW/transistor", {"leakage_nw_per_transistor": 0.5}),
    ("leakage 2 nW/transistor", {"leakage_nw_per_transistor": 2.0}),
    ("Vdd 0.65 V (energy x0.75)", {"vdd": 0.65}),
]


def row(label: str, result) -> str:
    values = {"tokens_per_s": result.tokens_per_s, "area_mm2": result.area_mm2,
              "transistors": result.transistors, "power_w": result.power_w}
    cells = [f"{values[k] / PUBLISHED[k] - 1:+.0%}" for k in PUBLISHED]
    return (f"| {label} | {result.tokens_per_s:,.0f} | {result.area_mm2:,.0f} | {result.transistors / 1e9:.1f} | "
            f"{result.power_w:,.0f} | " + " | ".join(cells) + " |")


def main() -> None:
    spec, chip = model_preset("llama-3.1-8b"), load_chip("hc1")
    print("| assumption moved | tok/s per user | area mm² | transistors B | power W | Δ tok/s | Δ area | "
          "Δ transistors | Δ power (vs 225 W) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(row("**hc1 preset as committed**", estimate(spec, chip)))
    for label, changes in CHIP_CHANGES:
        print(row(label, estimate(spec, chip.replace(**changes))))
    original = process.NODES["N6"]
    try:
        for label, changes in NODE_CHANGES:
            process.NODES["N6"] = dataclasses.replace(original, **changes)
            print(row(label, estimate(spec, chip)))
    finally:
        process.NODES["N6"] = original


if __name__ == "__main__":
    main()
