"""Analytic chip estimate: area, transistors, power, speed, capacity, yield and cost of a model
frozen into a chip described by a `ChipConfig`. Equations and constants: docs/chip-model.md.

Order of the computation follows the data: the token step's blocks at the chip's design point
(`hardwire.datapath.build`: their lanes and cycles) → blocks per layer (transistors, area) →
partition into chips → stages (cycles) → speed → energy and power → yield and cost.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from hardwire.chip import arch, vector_logic
from hardwire.chip.arch import ChipConfig, Stage
from hardwire.chip.process import (ADD_PJ_PER_BIT_45NM, MULT_PJ_PER_PARTIAL_PRODUCT_45NM, RETICLE_MM2,
                                   SRAM_READ_PJ_PER_BIT_8KB_45NM, SRAM_READ_PJ_PER_BIT_32KB_45NM,
                                   dies_per_wafer, murphy_yield)
from hardwire.chip.low_rank import LowRankCost, low_rank_cost
from hardwire.datapath import NO_ADAPTERS, AdapterDesign, MatVec, Matrix, TokenStep, build
from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec

MIB_BITS = 8 * 2**20
SECONDS_PER_YEAR = 365.25 * 86400
AREA_KEYS = ("weight_storage", "mac_select", "attention", "kv_sram", "lora_sram", "control", "io")


# -- blocks: transistors and area ------------------------------------------------------------------

@dataclass
class Blocks:
    """Transistors and area of a set of blocks, keyed like AREA_KEYS."""
    transistors: dict[str, float] = field(default_factory=lambda: dict.fromkeys(AREA_KEYS, 0.0))
    area_mm2: dict[str, float] = field(default_factory=lambda: dict.fromkeys(AREA_KEYS, 0.0))

    def add(self, other: "Blocks", times: float = 1.0) -> None:
        for key in AREA_KEYS:
            self.transistors[key] += other.transistors[key] * times
            self.area_mm2[key] += other.area_mm2[key] * times

    @property
    def total_area_mm2(self) -> float:
        return sum(self.area_mm2.values())

    @property
    def total_transistors(self) -> float:
        return sum(self.transistors.values())


def matrix_blocks(matrices: list[Matrix], chip: ChipConfig, stored: bool = True) -> Blocks:
    """Weight storage and lanes (or constant multipliers) for some matrices."""
    node = chip.process
    blocks = Blocks()
    weights = sum(m.rows * m.cols for m in matrices)
    if stored:
        storage = weights * chip.mean_weight_bits * arch.storage_transistors_per_bit(chip)
        blocks.transistors["weight_storage"] = storage
        blocks.area_mm2["weight_storage"] = node.logic_area_mm2(storage)
    if chip.weight_style == "hardwired":
        datapath = weights * chip.slices_per_weight * arch.hardwired_transistors_per_slice(chip)
    elif chip.weight_style == "metal_embedded":
        datapath = weights * chip.mean_weight_bits * arch.metal_embedded_transistors_per_bit(chip)
    else:
        plans = [m.plan(chip.point) for m in matrices]
        datapath = sum(p.lanes for p in plans) * arch.lane_transistors(chip)
        if chip.weight_style == "multiply_select_add":
            # one precompute bank per group of lanes that shares an input element (a row's segment)
            datapath += sum(p.lanes_per_row for p in plans) * arch.precompute_transistors(chip)
    blocks.transistors["mac_select"] = datapath
    blocks.area_mm2["mac_select"] = node.logic_area_mm2(datapath)
    return blocks


def layer_matrices(step: TokenStep, index: int = 0) -> list[Matrix]:
    """The seven projections of layer `index`."""
    return [m for m in step.matrices() if m.name.startswith(f"layers.{index}.")]


# -- mixture of experts ----------------------------------------------------------------------------
# Every expert has its own weight storage and lanes (all are stored); a token's chosen and shared
# experts run at once on their own lanes, so a token's path through a layer is a dense layer whose FFN
# is one expert wide, plus the router's product before it (docs/chip-model.md §1.3).

def token_path(model):
    """What one token runs through: `model` itself when dense; for a mixture of experts, its spec
    with a dense FFN one expert wide."""
    spec = model if isinstance(model, ModelSpec) else model.spec
    if not spec.is_moe:
        return model
    return dataclasses.replace(spec, ffn_dim=spec.expert_ffn_dim, experts=0, experts_per_token=0,
                               shared_experts=0, expert_ffn_dim=0)


def router(spec: ModelSpec, index: int) -> MatVec:
    """Layer `index`'s router: one score per expert from the normed hidden state."""
    name = f"layers.{index}.router"
    return MatVec(name=name, stage=f"L{index}.router", layer=index, handoff=1,
                  matrices=(Matrix(name, spec.experts, spec.hidden_dim),))


def stored_layer_matrices(spec: ModelSpec, chip: ChipConfig) -> list[Matrix]:
    """Every matrix one layer stores: a dense layer's seven; with experts, attention's four, the
    router and each expert's three."""
    matrices = layer_matrices(build(token_path(spec), chip.point))
    if spec.is_moe:
        ffn = [m for m in matrices if m.name.rsplit(".", 1)[-1] in ("w_gate", "w_up", "w_down")]
        matrices += ffn * (spec.experts + spec.shared_experts - 1) + list(router(spec, 0).matrices)
    return matrices


def with_routers(stages: list[Stage], spec: ModelSpec, chip: ChipConfig) -> list[Stage]:
    """A mixture of experts' router stage before each layer's gate_up."""
    if not spec.is_moe or chip.schedule == "sequential":
        return stages
    out = []
    for stage in stages:
        if stage.name.endswith(".gate_up"):
            layer = int(stage.name[1:].split(".")[0])
            out.append(Stage(f"L{layer}.router", stage.chip, stage.point, (router(spec, layer),)))
        out.append(stage)
    return out


def layer_blocks(model, chip: ChipConfig) -> Blocks:
    """One layer's blocks of `model`, a ModelSpec or a die (which adds what it records, such as the
    online transform of §12 inside SwiGLU), as `token_path` takes it."""
    spec = model if isinstance(model, ModelSpec) else model.spec
    node = chip.process
    matrices = stored_layer_matrices(spec, chip)
    blocks = matrix_blocks(matrices, chip)
    blocks.transistors["attention"] = arch.attention_transistors(spec.q_dim, chip)
    for key, mib in (("kv_sram", chip.kv_sram_mib), ("lora_sram", chip.lora_sram_mib)):
        bits = mib * MIB_BITS / spec.layers
        blocks.transistors[key] = bits * arch.SRAM_CELL_T
        blocks.area_mm2[key] = node.sram_area_mm2(bits)
    token_layer = [b for b in build(token_path(model), chip.point).blocks if b.layer == 0]
    add_vector_logic(blocks, chip, vector_logic.vector_cells(token_layer, matrices, chip.point, spec.hidden_dim))
    return blocks


def embed_blocks(spec: ModelSpec, chip: ChipConfig) -> Blocks:
    """The token-embedding table: a ROM read one row per token. A hardwired chip still keeps it
    in a NOR ROM (one transistor per bit); a tied classifier reuses it as its weight storage."""
    node = chip.process
    blocks = Blocks()
    per_bit = arch.storage_transistors_per_bit(chip) or 1.0
    storage = spec.vocab_size * spec.hidden_dim * chip.mean_weight_bits * per_bit
    blocks.transistors["weight_storage"] = storage
    blocks.area_mm2["weight_storage"] = node.logic_area_mm2(storage)
    return blocks


def head_blocks(spec: ModelSpec, chip: ChipConfig) -> Blocks:
    shares_embedding = spec.tied_embeddings and chip.weight_style not in arch.WIRED_WEIGHT_STYLES
    classifier = Matrix(spec.classifier, spec.vocab_size, spec.hidden_dim)
    blocks = matrix_blocks([classifier], chip, stored=not shares_embedding)
    head = [b for b in build(token_path(spec), chip.point).blocks if b.stage == "head"]   # final norm, ...
    add_vector_logic(blocks, chip, vector_logic.vector_cells(head, [classifier], chip.point))
    return blocks


def add_vector_logic(blocks: Blocks, chip: ChipConfig, cells: dict[str, float]) -> None:
    """The vector logic's generic cells (`vector_logic.vector_cells`, fitted on our own synthesis)
    as transistors in their parts (attention's pipeline with its MACs, the rest as control); the
    logic parts' area from their transistors."""
    for key, n in cells.items():
        blocks.transistors[key] += n * arch.GENERIC_CELL_T
    for key in ("attention", "control"):
        blocks.area_mm2[key] = chip.process.logic_area_mm2(blocks.transistors[key])


# -- partition into chips --------------------------------------------------------------------------

@dataclass
class Partition:
    layer_chip: list[int]
    head_chip: int
    chip_blocks: list[Blocks]

    @property
    def chips(self) -> int:
        return len(self.chip_blocks)

    @property
    def fits_reticle(self) -> bool:
        return all(b.total_area_mm2 <= RETICLE_MM2 for b in self.chip_blocks)


def partition(spec: ModelSpec, chip: ChipConfig, layer: Blocks, embed: Blocks, head: Blocks) -> Partition:
    """Split the model by layers. With `chip.chips == 0`, pack layers greedily until a die would
    pass the reticle; otherwise spread them evenly over that many chips."""
    items = [embed] + [layer] * spec.layers + [head]           # in data-flow order
    if chip.chips:
        n = min(chip.chips, spec.layers)
        owner = [0] + [i * n // spec.layers for i in range(spec.layers)] + [n - 1]
    else:
        whole = sum(b.total_area_mm2 for b in items) + chip.io_mm2
        owner, current, area = [], 0, 0.0
        if whole <= RETICLE_MM2:
            owner = [0] * len(items)
        else:
            fixed = chip.io_mm2 + 2 * chip.link_phy_mm2
            for i, item in enumerate(items):
                if area and area + item.total_area_mm2 + fixed > RETICLE_MM2 and i > 1:
                    current, area = current + 1, 0.0
                owner.append(current)
                area += item.total_area_mm2
    count = owner[-1] + 1
    chip_blocks = [Blocks() for _ in range(count)]
    for item, c in zip(items, owner):
        chip_blocks[c].add(item)
    for c, blocks in enumerate(chip_blocks):
        link_ends = (c > 0) + (c < count - 1)
        blocks.area_mm2["io"] += chip.io_mm2 + link_ends * chip.link_phy_mm2
    return Partition(layer_chip=owner[1:-1], head_chip=owner[-1], chip_blocks=chip_blocks)


# -- speed ---------------------------------------------------------------------------------------

def token_cycles(stages: list[Stage], context: int) -> int:
    return sum(s.cycles(context) for s in stages)


def bottleneck(stages: list[Stage], context: int) -> Stage:
    return max(stages, key=lambda s: s.cycles(context))


def prefill_cycles(stages: list[Stage], prompt_tokens: int) -> int:
    """Prompt tokens enter back to back; token t attends to t + 1 positions. The last one leaves
    after its own trip plus, for every earlier token, the time it held the slowest stage."""
    if prompt_tokens <= 0:
        return 0
    # Stages repeat layer after layer: sweep the positions once per distinct kind of stage.
    kinds = {s.kind: s for s in stages}
    positions = np.arange(1, prompt_tokens, dtype=np.int64)
    slowest = np.zeros(positions.shape, dtype=np.int64)
    for stage in kinds.values():
        slowest = np.maximum(slowest, stage.cycles(positions))
    return token_cycles(stages, prompt_tokens) + int(slowest.sum())


def kv_bits_per_token(spec: ModelSpec, chip: ChipConfig) -> int:
    return 2 * spec.layers * spec.kv_dim * chip.kv_bits


# -- energy --------------------------------------------------------------------------------------

def weight_pj_45nm(chip: ChipConfig) -> float:
    """Energy to use one stored weight once (read, select or multiply, accumulate), 45 nm pJ."""
    a, b, p = chip.activation_bits, chip.weight_bits, chip.product_bits
    slices = chip.slices_per_weight
    accumulate = chip.accumulator_bits * ADD_PJ_PER_BIT_45NM * 2           # adder + register
    if chip.weight_style == "hardwired":
        shift_add = b / 2 * p * ADD_PJ_PER_BIT_45NM
        return slices * (shift_add + chip.accumulator_bits * ADD_PJ_PER_BIT_45NM)
    if chip.weight_style == "metal_embedded":
        # each input bit, one a cycle, enters a carry-save tree: about one full-adder bit per weight per
        # input bit; the routing wire is "virtually free" next to standard-cell logic [hnlpu]
        return slices * a * ADD_PJ_PER_BIT_45NM
    read = chip.mean_weight_bits * SRAM_READ_PJ_PER_BIT_8KB_45NM
    if chip.weight_style == "multiply_select_add":
        combine = p * ADD_PJ_PER_BIT_45NM / 2                               # mux ≈ half an adder bit
    else:
        combine = a * b * MULT_PJ_PER_PARTIAL_PRODUCT_45NM
    return read + slices * (combine + accumulate)


def attention_pj_45nm_per_position(spec: ModelSpec, chip: ChipConfig) -> float:
    """Scores and weighted sum for one cached position in one layer: MACs and the K, V reads."""
    a, k = chip.activation_bits, chip.kv_bits
    mac = a * k * MULT_PJ_PER_PARTIAL_PRODUCT_45NM + (a + k + 8) * ADD_PJ_PER_BIT_45NM * 2
    return 2 * spec.q_dim * mac + 2 * spec.kv_dim * k * SRAM_READ_PJ_PER_BIT_32KB_45NM


def token_energy_j(spec: ModelSpec, chip: ChipConfig, context: int, chips: int) -> dict[str, float]:
    """Dynamic energy of one decoded token, by block, in joules at the chip's node."""
    scale = chip.process.energy_scale * 1e-12
    matmul_weights = spec.layers * spec.active_matmul_weights_per_layer() + spec.vocab_size * spec.hidden_dim
    weights = matmul_weights * weight_pj_45nm(chip)
    weights += spec.hidden_dim * chip.mean_weight_bits * SRAM_READ_PJ_PER_BIT_8KB_45NM  # embedding row
    attention = spec.layers * context * attention_pj_45nm_per_position(spec, chip)
    kv_write = spec.layers * 2 * spec.kv_dim * chip.kv_bits * SRAM_READ_PJ_PER_BIT_32KB_45NM
    energy = {
        "weights": weights * scale,
        "attention": (attention + kv_write) * scale,
        "control": chip.control_fraction * (weights + attention + kv_write) * scale,
        "links": (chips - 1) * spec.hidden_dim * chip.activation_bits * chip.link_pj_per_bit * 1e-12,
    }
    return energy


# -- the estimate --------------------------------------------------------------------------------

@dataclass
class Estimate:
    spec: ModelSpec
    chip: ChipConfig
    context: int
    prompt_tokens: int
    step: TokenStep
    partition: Partition
    stages: list[Stage]
    tokens_per_s: float
    latency_us_per_token: float
    ttft_ms: float
    max_users: int
    load_users: int
    aggregate_tokens_per_s: float
    power_w: float
    power_breakdown_w: dict[str, float]
    power_w_single_user: float
    token_energy_j: dict[str, float]
    energy_per_token_j: float
    yield_fraction: float
    dies_per_wafer: int
    die_cost_usd: float
    cost_per_mtok_usd: float
    low_rank: LowRankCost | None = None      # a patch's adapter blocks (docs/chip-model.md §7), if any

    @property
    def area_mm2(self) -> float:
        return sum(b.total_area_mm2 for b in self.partition.chip_blocks)

    @property
    def transistors(self) -> float:
        return sum(b.total_transistors for b in self.partition.chip_blocks)

    def area_breakdown_mm2(self) -> dict[str, float]:
        return {k: sum(b.area_mm2[k] for b in self.partition.chip_blocks) for k in AREA_KEYS}

    def transistor_breakdown(self) -> dict[str, float]:
        return {k: sum(b.transistors[k] for b in self.partition.chip_blocks) for k in AREA_KEYS}

    def latency_us_at(self, context: int) -> float:
        return token_cycles(self.stages, context) / self.chip.clock_hz * 1e6

    def to_json(self) -> dict:
        lanes = sum(m.plan(self.chip.point).lanes for m in stored_layer_matrices(self.spec, self.chip))
        neck = bottleneck(self.stages, self.context)
        return {
            "chip": self.chip.name, "node": self.chip.node, "weight_style": self.chip.weight_style,
            "schedule": self.chip.schedule,
            "clock_ghz": self.chip.clock_ghz, "mean_weight_bits": self.chip.mean_weight_bits,
            "parameters": self.spec.parameter_count(), "active_parameters": self.spec.active_parameter_count(),
            "context": self.context,
            "prompt_tokens": self.prompt_tokens,
            "tokens_per_s": self.tokens_per_s,
            "latency_us_per_token": self.latency_us_per_token,
            "ttft_ms": self.ttft_ms,
            "cycles_per_token": token_cycles(self.stages, self.context),
            "bottleneck_stage": neck.name, "bottleneck_cycles": neck.cycles(self.context),
            "lanes_per_layer": lanes,
            "area_mm2": self.area_mm2,
            "area_per_chip_mm2": [b.total_area_mm2 for b in self.partition.chip_blocks],
            "area_breakdown_mm2": self.area_breakdown_mm2(),
            "transistors": self.transistors,
            "transistor_breakdown": self.transistor_breakdown(),
            "chips": self.partition.chips, "fits_reticle": self.partition.fits_reticle,
            "max_users": self.max_users, "load_users": self.load_users,
            "aggregate_tokens_per_s": self.aggregate_tokens_per_s,
            "power_w": self.power_w, "power_breakdown_w": self.power_breakdown_w,
            "power_w_single_user": self.power_w_single_user,
            "energy_per_token_j": self.energy_per_token_j,
            "token_energy_breakdown_j": self.token_energy_j,
            "yield": self.yield_fraction, "dies_per_wafer": self.dies_per_wafer,
            "die_cost_usd": self.die_cost_usd,
            "cost_per_mtok_usd": self.cost_per_mtok_usd,
            **({"adapters": self.low_rank.to_json()} if self.low_rank is not None else {}),
        }


def aggregate_rate(stages: list[Stage], context: int, users: int, clock_hz: float) -> float:
    """Tokens/s of `users` decoding together: each keeps one token in flight, so the pipeline
    gives min(users / token time, 1 / slowest stage)."""
    return min(users / token_cycles(stages, context), 1 / bottleneck(stages, context).cycles(context)) * clock_hz


def estimate(model, chip: ChipConfig, context: int = 1024, prompt_tokens: int = 1024,
             users: int | None = None, adapters: AdapterDesign = NO_ADAPTERS) -> Estimate:
    """Estimate `model` (a ModelSpec, or a die, whose formats then set the embedding's chunk) frozen
    into `chip`, decoding at `context` cached positions per user. `users` sets the load for power
    and cost (default: as many as the KV SRAM holds). `adapters`: §11 low-rank blocks running a
    patch, their lanes counted with the layer's, their cycles in its stages, their energy per token."""
    spec = model if isinstance(model, ModelSpec) else model.spec
    if not isinstance(context, int) or not 1 <= context <= 1 << 24:
        raise BadConfig(f"expected a context in [1, {1 << 24}], got {context!r}", field="context")
    if not isinstance(prompt_tokens, int) or not 0 <= prompt_tokens <= 1 << 24:
        raise BadConfig(f"expected prompt tokens in [0, {1 << 24}], got {prompt_tokens!r}", field="prompt_tokens")
    if users is not None and (not isinstance(users, int) or users < 1):
        raise BadConfig(f"expected a positive number of users, got {users!r}", field="users")
    node = chip.process
    layer = layer_blocks(model, chip)
    low_rank = low_rank_cost(token_path(model), chip, adapters, context) if adapters.present else None
    if low_rank is not None:
        layer.transistors["mac_select"] += low_rank.transistors_per_layer
        layer.area_mm2["mac_select"] += low_rank.area_mm2_per_layer
    part = partition(spec, chip, layer, embed_blocks(spec, chip), head_blocks(spec, chip))
    step = build(token_path(model), chip.point, adapters)
    stages = with_routers(arch.stage_plan(step, chip, part.layer_chip, part.head_chip), spec, chip)

    cycles = token_cycles(stages, context)
    tokens_per_s = chip.clock_hz / cycles
    ttft_s = prefill_cycles(stages, prompt_tokens) / chip.clock_hz

    kv_capacity_bits = chip.kv_sram_mib * MIB_BITS
    max_users = int(kv_capacity_bits // (kv_bits_per_token(spec, chip) * context))
    load_users = users if users is not None else max(max_users, 1)
    aggregate = aggregate_rate(stages, context, load_users, chip.clock_hz)

    energy = token_energy_j(spec, chip, context, part.chips)
    if low_rank is not None:
        energy["adapters"] = low_rank.energy_per_token_j
    dynamic_j = sum(energy.values())
    transistors = sum(b.total_transistors for b in part.chip_blocks)
    leakage_w = transistors * node.leakage_nw_per_transistor * 1e-9

    def card_power(rate: float) -> dict[str, float]:
        chip_w = leakage_w + dynamic_j * rate
        delivery = chip_w * (1 / chip.vrm_efficiency - 1)
        return {"leakage": leakage_w, "dynamic": dynamic_j * rate, "delivery_loss": delivery,
                "board": chip.card_overhead_w * part.chips}

    breakdown = card_power(aggregate)
    power_w = sum(breakdown.values())
    single_w = sum(card_power(tokens_per_s).values())

    dies = [dies_per_wafer(b.total_area_mm2) for b in part.chip_blocks]
    yields = [murphy_yield(b.total_area_mm2, node.defect_density_per_cm2) for b in part.chip_blocks]
    die_costs = [node.wafer_cost_usd / (d * y) if d and y > 0 else math.inf for d, y in zip(dies, yields)]
    capex_usd = sum(die_costs) + chip.board_cost_usd * part.chips
    usd_per_s = capex_usd / (chip.lifetime_years * SECONDS_PER_YEAR) \
        + power_w / 1000 * chip.electricity_usd_per_kwh / 3600
    cost_per_mtok = usd_per_s / aggregate * 1e6

    return Estimate(
        spec=spec, chip=chip, context=context, prompt_tokens=prompt_tokens, step=step, partition=part,
        stages=stages,
        tokens_per_s=tokens_per_s, latency_us_per_token=cycles / chip.clock_hz * 1e6, ttft_ms=ttft_s * 1e3,
        max_users=max_users, load_users=load_users, aggregate_tokens_per_s=aggregate,
        power_w=power_w, power_breakdown_w=breakdown, power_w_single_user=single_w,
        token_energy_j=energy, energy_per_token_j=power_w / aggregate,
        yield_fraction=min(yields), dies_per_wafer=min(dies), die_cost_usd=sum(die_costs),
        cost_per_mtok_usd=cost_per_mtok, low_rank=low_rank)


def generation_timing(spec: ModelSpec, prompt_tokens: int, generated_tokens: int, chip: str = "hc1",
                      users: int = 1) -> dict:
    """What a generation would take on the chip: prefill, then decode at a context growing from
    the prompt length. Per-token latency is linear in context (attention), so the decode time is the
    latency at the mean context times the number of tokens. With `users` decoding together, each
    keeps one token in the pipeline and waits for the others at its slowest stage: a user's
    per-token latency is then users / aggregate rate when that exceeds the latency alone."""
    config = arch.load_chip(chip)
    mean_context = max(1, prompt_tokens + generated_tokens // 2)
    users = max(1, int(users))
    result = estimate(spec, config, context=mean_context, prompt_tokens=max(prompt_tokens, 0), users=users)
    latency_us = max(result.latency_us_per_token, users / result.aggregate_tokens_per_s * 1e6)
    decode_us = latency_us * generated_tokens
    return {"chip": config.name, "node": config.node, "prompt_tokens": prompt_tokens,
            "generated_tokens": generated_tokens, "users": users, "ttft_ms": result.ttft_ms,
            "decode_ms": decode_us / 1e3, "total_ms": result.ttft_ms + decode_us / 1e3,
            "tokens_per_s": result.tokens_per_s if latency_us == result.latency_us_per_token else 1e6 / latency_us,
            "latency_us_per_token": latency_us}
