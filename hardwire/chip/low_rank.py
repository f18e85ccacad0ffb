"""The patch's low-rank path on a chip (docs/arithmetic.md §11, docs/chip-model.md §7): the MAC lanes,
transistors, area and energy per token of the adapter blocks a design has, beside the SRAM that holds
their constants (`lora_sram_mib`, priced with the KV SRAM in `hardwire.chip.estimate`).

The blocks and their cycles come from `hardwire.datapath` (`AdapterDesign`, `LowRank`): each block
runs before the matrix it patches, on the same input, so its cycles add to that matrix's stage
(not hidden under the matvec's walk; `hardwire.datapath.adapter`). Here only what the cycles do
not say: what the blocks cost in silicon and in energy.

Per block (`LowRank`): rank x per_cycle lanes of an 8-bit code times a 16-bit operand (x, at most
16 bits, in the A pass; t' in the B pass), each with an accumulator as wide as t; one 16-bit a_mult
multiplier and per_cycle 23-bit b_mult multipliers. Per token: rank (cols + rows) lane products,
rank + rows scale products, and every bit of the block's SRAM read once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hardwire.adapters import ADAPTER_A_MULT_BITS, ADAPTER_B_MULT_BITS, ADAPTER_CODE_BITS, ADAPTER_INNER_BITS
from hardwire.chip.arch import AND2_T, FLIP_FLOP_T, FULL_ADDER_T, ChipConfig
from hardwire.chip.process import ADD_PJ_PER_BIT_45NM, MULT_PJ_PER_PARTIAL_PRODUCT_45NM, SRAM_READ_PJ_PER_BIT_32KB_45NM
from hardwire.datapath import AdapterDesign, LowRank, build
from hardwire.model.spec import ModelSpec

# A lane's second operand: the 16-bit t' (the B pass) or x, narrower where activations are.
LANE_OPERAND_BITS = ADAPTER_INNER_BITS


def multiplier_transistors(a_bits: int, b_bits: int) -> float:
    """An a x b array multiplier: a·b AND gates, a·(b - 1) full adders (as `arch.lane_transistors`)."""
    return a_bits * b_bits * AND2_T + a_bits * (b_bits - 1) * FULL_ADDER_T


def accumulator_bits(block: LowRank, activation_bits: int) -> int:
    """t's width: an 8-bit code times an activation, summed over the columns (the B pass's u is narrower)."""
    return ADAPTER_CODE_BITS + max(activation_bits, LANE_OPERAND_BITS) + math.ceil(math.log2(max(block.cols, 2)))


def block_transistors(block: LowRank, activation_bits: int) -> float:
    """The block's logic: its lanes (multiplier + accumulator) and its scale multipliers."""
    t_bits = accumulator_bits(block, activation_bits)
    lane = multiplier_transistors(ADAPTER_CODE_BITS, LANE_OPERAND_BITS) + t_bits * (FULL_ADDER_T + FLIP_FLOP_T)
    a_mults, b_mults = block.scale_multipliers
    u_bits = ADAPTER_CODE_BITS + ADAPTER_INNER_BITS + math.ceil(math.log2(max(block.rank, 2)))
    scales = (a_mults * multiplier_transistors(ADAPTER_A_MULT_BITS, t_bits)
              + b_mults * multiplier_transistors(ADAPTER_B_MULT_BITS, u_bits))
    return block.lanes * lane + scales


def block_energy_pj_45nm(block: LowRank, activation_bits: int) -> float:
    """One token through the block at 45 nm: lane products and accumulations, scale products, SRAM reads."""
    t_bits = accumulator_bits(block, activation_bits)
    lane_mac = (ADAPTER_CODE_BITS * LANE_OPERAND_BITS * MULT_PJ_PER_PARTIAL_PRODUCT_45NM
                + t_bits * ADD_PJ_PER_BIT_45NM * 2)              # adder + register, as weight_pj_45nm
    scales = (block.rank * ADAPTER_A_MULT_BITS * t_bits
              + block.rows * ADAPTER_B_MULT_BITS * (ADAPTER_CODE_BITS + ADAPTER_INNER_BITS)) \
        * MULT_PJ_PER_PARTIAL_PRODUCT_45NM
    return block.macs * lane_mac + scales + block.sram_bits() * SRAM_READ_PJ_PER_BIT_32KB_45NM


@dataclass(frozen=True)
class LowRankCost:
    """What a chip's adapter blocks add: per layer (lanes, transistors, area) and per token (cycles at
    the estimate's context, energy); the SRAM they read (its capacity is `lora_sram_mib`)."""

    design: AdapterDesign
    blocks_per_layer: int
    lanes_per_layer: int
    transistors_per_layer: float
    area_mm2_per_layer: float
    sram_mib: float                 # the blocks' SRAM, whole model
    extra_cycles_per_token: int     # a token's latency: the blocks' cycles on its path
    energy_per_token_j: float

    def to_json(self) -> dict:
        return {"rank": self.design.rank, "targets": list(self.design.targets),
                "per_cycle": self.design.per_cycle, "blocks_per_layer": self.blocks_per_layer,
                "lanes_per_layer": self.lanes_per_layer, "transistors_per_layer": self.transistors_per_layer,
                "area_mm2_per_layer": self.area_mm2_per_layer, "sram_mib": self.sram_mib,
                "extra_cycles_per_token": self.extra_cycles_per_token,
                "energy_per_token_j": self.energy_per_token_j}


def low_rank_cost(model, chip: ChipConfig, design: AdapterDesign, context: int = 1) -> LowRankCost:
    """The adapter blocks of `design` on `chip` for `model` (a ModelSpec, a model or a die)."""
    spec = model if isinstance(model, ModelSpec) else model.spec
    step = build(model, chip.point, design)
    blocks = step.low_rank()
    first_layer = [b for b in blocks if b.name.startswith("layers.0.")]
    transistors = sum(block_transistors(b, chip.activation_bits) for b in first_layer)
    plain = build(model, chip.point)
    energy_pj = sum(block_energy_pj_45nm(b, chip.activation_bits) for b in blocks)
    return LowRankCost(
        design=design, blocks_per_layer=len(first_layer), lanes_per_layer=sum(b.lanes for b in first_layer),
        transistors_per_layer=transistors, area_mm2_per_layer=chip.process.logic_area_mm2(transistors),
        sram_mib=sum(b.sram_bits() for b in blocks) / (8 * 2**20),
        extra_cycles_per_token=step.cycles(context) - plain.cycles(context),
        energy_per_token_j=energy_pj * chip.process.energy_scale * 1e-12 if spec.layers else 0.0)
