"""The `fit` chip: the template's micro-architecture (hc1's node, weight style, widths, clock,
weights per lane) with the parts a model drives sized for that model (docs/chip-model.md §1.2).

What the template fixes: node, weight style and bits, clock, weights per lane (so lanes follow the
model's weights), per-cycle widths of the vector logic, schedule, board and cost figures.
What the model drives:
- KV SRAM: `users` users at `context` positions, at the template's KV bits;
- LoRA SRAM: rank-`LORA_RANK` adapters on all seven projections of every layer at 8 bits, the rule
  hc1's 32 MiB assumption was sized by (21 MB for Llama 3.1 8B, rounded up there);
- host I/O: PCIe lanes for the token traffic, `PCIE_LANE_MM2` each (hc1's 20 mm² for x16), at least one.
"""
from __future__ import annotations

import math

from hardwire.chip.arch import ChipConfig, load_chip
from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec

TEMPLATE_CHIP = "hc1"
TEMPLATE_MODEL = "llama-3.1-8b"          # the model the template was built for (Taalas HC1: Llama 3.1 8B)
DEFAULT_USERS = 4                        # hc1's KV SRAM assumption: 4 users at the 1k demo context
DEFAULT_CONTEXT = 1024
LORA_RANK = 8
LORA_BITS = 8
PCIE_LANE_MM2 = 20.0 / 16                # assumed: hc1's x16 interface (20 mm²) per lane
PCIE_LANE_BYTES_PER_S = 1e9              # PCIe Gen3 x1: ~1 GB/s per direction
TOKEN_BYTES = 4                          # a token id in and a token id out per generated token, 32-bit
SHAPE_FIELDS = ("hidden_dim", "layers", "heads", "kv_heads", "head_dim", "ffn_dim", "vocab_size")


def is_template_model(spec: ModelSpec) -> bool:
    """Whether `spec` has the shape the template chip was built for."""
    from hardwire.chip.presets import model_preset
    template = model_preset(TEMPLATE_MODEL)
    return all(getattr(spec, f) == getattr(template, f) for f in SHAPE_FIELDS)


def default_chip(spec: ModelSpec) -> str:
    """The chip `hardwire estimate` takes when none is named: the template for its own model, else `fit`."""
    return TEMPLATE_CHIP if is_template_model(spec) else "fit"


def default_context(spec: ModelSpec, chip: str | None = None) -> int:
    """Positions to estimate at when none is given: the chip file's `default_context` where it sets one
    (hnlpu: the 2K its paper evaluates at), else DEFAULT_CONTEXT; never beyond the model's maximum."""
    preferred = DEFAULT_CONTEXT
    if chip is not None and chip.lower() != "fit":
        preferred = load_chip(chip).default_context or DEFAULT_CONTEXT
    return min(preferred, spec.max_context)


def check_context(spec: ModelSpec, context: int) -> None:
    """A context the model was not trained for is refused, not silently estimated."""
    if context > spec.max_context:
        raise BadConfig(f"the model attends to at most {spec.max_context:,} positions, got {context:,}",
                        field="context")


def lora_sram_mib(spec: ModelSpec, rank: int = LORA_RANK, bits: int = LORA_BITS) -> float:
    """Rank-`rank` adapters (A: rank × in, B: out × rank) on every projection of every layer."""
    projections = [shape for name, shape in spec.layer_tensor_shapes().items() if name.startswith("w")]
    per_layer = sum(rank * (rows + cols) for rows, cols in projections)
    return spec.layers * per_layer * bits / (8 * 2**20)


def kv_sram_mib(spec: ModelSpec, users: int, context: int, kv_bits: int) -> float:
    return users * context * 2 * spec.layers * spec.kv_dim * kv_bits / (8 * 2**20)


def fit_chip(spec: ModelSpec, users: int = DEFAULT_USERS, context: int | None = None,
             template: ChipConfig | None = None) -> ChipConfig:
    """The template chip with its KV SRAM, LoRA SRAM and host I/O sized for `spec`."""
    template = template or load_chip(TEMPLATE_CHIP)
    context = default_context(spec) if context is None else context
    if not isinstance(users, int) or users < 1:
        raise BadConfig(f"expected a positive number of users, got {users!r}", field="users")
    check_context(spec, context)
    # token traffic if every user decoded at the template's peak: far below one lane for any model here
    peak_tokens_per_s = users * template.clock_hz / (2 * template.weights_per_lane)
    lanes = max(1, math.ceil(peak_tokens_per_s * 2 * TOKEN_BYTES / PCIE_LANE_BYTES_PER_S))
    return template.replace(name="fit", kv_sram_mib=kv_sram_mib(spec, users, context, template.kv_bits),
                            lora_sram_mib=lora_sram_mib(spec), io_mm2=min(lanes, 16) * PCIE_LANE_MM2)
