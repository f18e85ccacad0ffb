"""DesignPoint: the micro-architecture of a token step, shared by the RTL generator and the chip estimate.

One set of names for both: the generated Verilog (`hardwire rtl`) is one design point
(`RTL_POINT`: ROM + MAC lanes, one block after another, narrow element-wise logic); the chip
estimate's presets (`hardwire/data/chips/*.toml`) are others. Process, clock and cost stay in
`hardwire.chip.arch.ChipConfig`; RTL-only knobs (KV positions, clock gating) in
`hardwire.rtl.top.RtlOptions`. Both carry a DesignPoint, and `hardwire.datapath.build` turns a
model and a DesignPoint into the typed blocks of the token step with their lanes and cycles.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from hardwire.errors import BadConfig

# Weight storage and multiply styles (docs/chip-model.md §1):
# - multiply_select_add (Taalas HC1): one mask-ROM transistor per weight selects one of the 2^bits
#   products a shared bank precomputed; the lane only accumulates. Not generated as RTL.
# - rom_mac: a mask ROM read one word per cycle into a multiplier and accumulator per lane (the RTL's
#   default, `hardwire rtl --style rom_mac`, formerly `rom`).
# - hardwired: every weight a constant multiplier in a per-row adder tree; no storage, no lanes.
# - metal_embedded (HNLPU's Metal-Embedding): a row is a "hardwired neuron" whose silicon is the same for
#   every weight; a weight is the metal wire that routes its input bit to the popcount of its value, and
#   16 multipliers (one per 4-bit value) and a small adder tree finish the row. Bit-serial inputs, no lanes.
#   Not generated as RTL.
WEIGHT_STYLES = ("multiply_select_add", "rom_mac", "hardwired", "metal_embedded")
STYLE_ALIASES = {"rom": "rom_mac"}           # the RTL's former name for rom_mac

# How the blocks of a token step share time (docs/chip-model.md §1):
# - sequential: one block after another, one token in the chip at a time (the generated RTL's
#   sequencer, rtl/top.py); a token's latency is the sum of its blocks' cycles.
# - layer_pipeline: each layer is cut into stages (qkv, attention, wo, gate_up, down) that hold
#   different tokens at once; a stage's cycles are the sum of its blocks'.
SCHEDULES = ("sequential", "layer_pipeline")


def weight_style(name: str) -> str:
    """The canonical weight style for `name` (the RTL's old `rom` is `rom_mac`)."""
    return STYLE_ALIASES.get(name, name)


@dataclass(frozen=True)
class DesignPoint:
    """Micro-architecture: storage style, widths, parallelism per block, schedule. The defaults are
    the generated RTL's (`RTL_POINT`)."""

    weight_style: str = "rom_mac"
    weight_bits: int = 8                  # base weight format (the estimate's; the RTL reads each matrix's own)
    high_precision_bits: int = 0          # a wider format for some weights (0 = none)
    high_precision_fraction: float = 0.0  # share of weights in the wider format
    activation_bits: int = 8
    kv_bits: int = 8
    weights_per_lane: int = 256           # weight slices a lane walks per product: the cycles of one matvec
    split_rows: bool = False              # a row longer than weights_per_lane is cut over several lanes
                                          # joined by an adder tree; False: one lane walks a whole row (RTL)
    explicit_select_mux: bool = False     # multiply_select_add: a 2^bits:1 mux per lane instead of the
                                          # storage transistor doing the select (as Taalas describes)
    embed_per_cycle: int = 16             # embedding elements read per cycle
    norm_per_cycle: int = 8               # RMSNorm, SwiGLU and their token quantizers: elements per cycle
    rope_heads_per_cycle: int = 1         # RoPE: q and k heads rotated per cycle
    attention_positions_per_cycle: int = 1    # KV positions read per cycle per layer (all heads)
    attention_heads_per_cycle: int = 1    # heads normalised (and quantized) per cycle after the scans
    logits_per_cycle: int = 1             # logits streamed to the host (and compared, argmax) per cycle
    schedule: str = "sequential"
    kv_sram_mib: float = 64.0             # KV-cache SRAM, whole model
    lora_sram_mib: float = 0.0            # LoRA adapter SRAM, whole model (its compute: hardwire.datapath.adapter)

    def __post_init__(self):
        self.validate()

    def validate(self, source: object | None = None) -> None:
        def bad(field: str, expected: str):
            raise BadConfig(f"expected {expected}, got {getattr(self, field)!r}", path=source, field=field)

        if self.weight_style not in WEIGHT_STYLES:
            bad("weight_style", "one of " + ", ".join(WEIGHT_STYLES))
        if self.schedule not in SCHEDULES:
            bad("schedule", "one of " + ", ".join(SCHEDULES))
        int_ranges = {"weight_bits": (1, 16), "high_precision_bits": (0, 16), "activation_bits": (2, 32),
                      "kv_bits": (2, 32), "weights_per_lane": (1, 1 << 20), "embed_per_cycle": (1, 1 << 20),
                      "norm_per_cycle": (1, 1 << 20), "rope_heads_per_cycle": (1, 1 << 16),
                      "attention_positions_per_cycle": (1, 1 << 16), "attention_heads_per_cycle": (1, 1 << 16),
                      "logits_per_cycle": (1, 1 << 24)}
        for field, (low, high) in int_ranges.items():
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                bad(field, f"an integer in [{low}, {high}]")
        for field in ("split_rows", "explicit_select_mux"):
            if not isinstance(getattr(self, field), bool):
                bad(field, "true or false")
        for field in ("kv_sram_mib", "lora_sram_mib"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                bad(field, "a number >= 0")
        if not 0 <= self.high_precision_fraction < 1:
            bad("high_precision_fraction", "a fraction in [0, 1)")
        if self.high_precision_fraction > 0 and self.high_precision_bits <= self.weight_bits:
            bad("high_precision_bits", f"more bits than weight_bits={self.weight_bits}")

    # -- derived -------------------------------------------------------------------------------
    @property
    def mean_weight_bits(self) -> float:
        f = self.high_precision_fraction
        return self.weight_bits * (1 - f) + (self.high_precision_bits * f if f else 0.0)

    @property
    def slices_per_weight(self) -> float:
        """A wider weight is stored and processed as ceil(bits / base) base-width slices."""
        if not self.high_precision_fraction:
            return 1.0
        extra = math.ceil(self.high_precision_bits / self.weight_bits) - 1
        return 1.0 + self.high_precision_fraction * extra

    @property
    def product_bits(self) -> int:
        return self.activation_bits + self.weight_bits

    @property
    def accumulator_bits(self) -> int:
        return self.product_bits + math.ceil(math.log2(max(self.weights_per_lane, 2)))

    def replace(self, **changes) -> "DesignPoint":
        if "weight_style" in changes:
            changes["weight_style"] = weight_style(changes["weight_style"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


POINT_FIELDS = tuple(f.name for f in dataclasses.fields(DesignPoint))

# The generated RTL (hardwire/rtl/): ROM + MAC lanes that walk whole rows, 8 norm and 16 embedding
# elements per cycle, one RoPE head, one KV position, one normalised head and one logit per cycle,
# each block started by the layer's sequencer after the previous one is done.
RTL_POINT = DesignPoint()
