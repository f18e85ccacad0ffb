"""ChipConfig and the microarchitecture it describes: what blocks a chip has, how many
transistors each block takes, and how its token step's blocks are grouped into stages.

A ChipConfig is a `hardwire.datapath.DesignPoint` (the micro-architecture the RTL generator shares:
weight style, widths, lanes, per-cycle parallelism, schedule) plus process, clock, partition and
cost. Every block's lanes and cycles come from `hardwire.datapath` (one formula per block, counted
from the generated RTL's state machines); this module prices their transistors and groups them.

The hc1 preset is layer-pipelined (docs/chip-model.md §1): every projection matrix has its own
weight storage and its own array of *lanes*. A lane owns `weights_per_lane` weight slices on one
ROM bit line and reads one per cycle, so a matrix-vector product walks `weights_per_lane` columns
however large the matrix is; the number of lanes (the parallelism per layer) is about weights ÷
`weights_per_lane`. The hc1 preset takes 256, the usual largest sub-array height of a memory bank
(Weste & Harris: ≤ 256 rows per bit line), not a number chosen to hit a throughput.

Weight storage styles (`hardwire.datapath.WEIGHT_STYLES`):
- `multiply_select_add` (Taalas HC1): a shared bank precomputes x·v for every weight value v; each
  weight is one mask-ROM transistor ("one transistor stores a 4-bit parameter") whose via selects
  the product; the lane muxes the selected product and accumulates.
- `rom_mac`: a plain NOR mask ROM (one transistor per bit) feeding a multiplier and accumulator per lane.
- `hardwired`: every weight is a constant multiplier (shift-and-add) wired into an adder tree; no
  storage, no lanes, a matrix-vector product in one pass through the tree.
- `metal_embedded` (HNLPU): every output is a hardwired neuron whose silicon does not depend on the
  weights: the input bits arrive one a cycle and a metal wire per weight routes each to the popcount of
  its value; 2^bits multipliers and a small adder tree finish the row. The weights live in the upper
  metal masks only, so a model update re-spins those and nothing else.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardwire.chip.process import ProcessNode, process_node
from hardwire.datapath import POINT_FIELDS, Block, DesignPoint, TokenStep, weight_style
from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec
from hardwire.tomlfile import read_toml

CHIPS_DIR = Path(__file__).resolve().parent.parent / "data" / "chips"

# -- transistor counts of standard static-CMOS cells [weste-harris] ------------------------------
FULL_ADDER_T = 28          # mirror adder
FLIP_FLOP_T = 24           # master-slave D flip-flop with local clock inverters
MUX2_T = 4                 # transmission-gate 2:1 mux (select inverter shared along the lane)
AND2_T = 6
SRAM_CELL_T = 6
# Our own Yosys runs (docs/rtl.md, measured toolchain facts): ~39 generic cells per nonzero bit of a constant
# weight; a generic 2-input cell is taken as ~6 transistors (NAND2 4, XOR2 8–12).
HARDWIRED_CELLS_PER_NONZERO_BIT = 39
GENERIC_CELL_T = 6

# The estimate's default design point (a chip file sets any of these fields): the layer-pipelined
# chip the estimate has always described, long rows split over lanes, and element-wise logic one
# 4,096-element vector wide: a whole hidden vector of Llama 3.1 8B, or 32 of its 128-wide heads, per
# cycle (the former model's norm was a tree over the whole vector; docs/chip-model.md §1).
VECTOR_ELEMENTS_PER_CYCLE = 4096
HEADS_PER_CYCLE = VECTOR_ELEMENTS_PER_CYCLE // 128
CHIP_POINT = DesignPoint(
    weight_style="multiply_select_add", weight_bits=4, activation_bits=8, kv_bits=8, weights_per_lane=256,
    split_rows=True, embed_per_cycle=VECTOR_ELEMENTS_PER_CYCLE, norm_per_cycle=VECTOR_ELEMENTS_PER_CYCLE,
    rope_heads_per_cycle=HEADS_PER_CYCLE, attention_positions_per_cycle=8, attention_heads_per_cycle=HEADS_PER_CYCLE,
    logits_per_cycle=VECTOR_ELEMENTS_PER_CYCLE, schedule="layer_pipeline", kv_sram_mib=64.0, lora_sram_mib=0.0)
# the design point's derived quantities, read through the chip like its fields (chip.mean_weight_bits)
POINT_PROPERTIES = ("mean_weight_bits", "slices_per_weight", "product_bits", "accumulator_bits")


@dataclass(frozen=True)
class ChipConfig:
    """A chip to estimate: its design point (`point`) plus process, clock, partition and cost. The
    point's fields read through the chip (`chip.weights_per_lane`), and `replace` and chip files
    take both kinds of field by name."""
    name: str = "custom"
    point: DesignPoint = CHIP_POINT
    node: str = "N6"
    clock_ghz: float = 1.0
    chips: int = 0                       # 0: as many as the reticle requires
    default_context: int = 0             # positions estimated without --context (0: 1,024, or the model's
                                         # maximum if smaller); a chip published at another context sets it
    link_gbytes_per_s: float = 100.0     # chip-to-chip link, per direction
    link_latency_ns: float = 500.0
    link_pj_per_bit: float = 5.0
    link_phy_mm2: float = 10.0           # per link end
    io_mm2: float = 20.0                 # host interface (PCIe PHY + controller), pads, per chip
    control_fraction: float = 0.05       # dynamic energy of norms, softmax, sequencing, as a share of the
                                         # datapath's (their transistors: chip.vector_logic, block by block)
    card_overhead_w: float = 15.0        # board power outside the die, per chip
    vrm_efficiency: float = 0.90
    board_cost_usd: float = 500.0        # package, test, board, per chip
    lifetime_years: float = 3.0
    electricity_usd_per_kwh: float = 0.10

    def __post_init__(self):
        self.validate()

    def __getattr__(self, name: str):
        if name in POINT_FIELDS or name in POINT_PROPERTIES:
            return getattr(self.point, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def validate(self, source: object | None = None) -> None:
        def bad(field: str, expected: str):
            raise BadConfig(f"expected {expected}, got {getattr(self, field)!r}", path=source, field=field)

        process_node(self.node)
        if not isinstance(self.point, DesignPoint):
            bad("point", "a DesignPoint")
        self.point.validate(source)
        if not isinstance(self.chips, int) or isinstance(self.chips, bool) or not 0 <= self.chips <= 4096:
            bad("chips", "an integer in [0, 4096]")
        if not isinstance(self.default_context, int) or isinstance(self.default_context, bool) \
                or not 0 <= self.default_context <= 1 << 24:
            bad("default_context", f"an integer in [0, {1 << 24}]")
        positive = ("clock_ghz", "link_gbytes_per_s", "lifetime_years")
        non_negative = ("link_latency_ns", "link_pj_per_bit", "link_phy_mm2", "io_mm2", "card_overhead_w",
                        "board_cost_usd", "electricity_usd_per_kwh")
        for field in positive + non_negative:
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                bad(field, "a finite number")
            if value < 0 or (field in positive and value == 0):
                bad(field, "a positive number" if field in positive else "a number >= 0")
        if not self.clock_ghz <= 10:
            bad("clock_ghz", "a clock in (0, 10] GHz")
        if not 0 <= self.control_fraction < 1:
            bad("control_fraction", "a fraction in [0, 1)")
        if not 0 < self.vrm_efficiency <= 1:
            bad("vrm_efficiency", "a fraction in (0, 1]")

    # -- derived -------------------------------------------------------------------------------
    @property
    def process(self) -> ProcessNode:
        return process_node(self.node)

    @property
    def clock_hz(self) -> float:
        return self.clock_ghz * 1e9

    def replace(self, **changes) -> "ChipConfig":
        """A copy with some fields changed, the design point's included (`weights_per_lane=512`)."""
        point_changes = {k: changes.pop(k) for k in list(changes) if k in POINT_FIELDS}
        if point_changes:
            changes["point"] = changes.get("point", self.point).replace(**point_changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The chip file's fields, flat (the design point's among them)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "point"}
        return {**fields, **self.point.to_dict()}


# -- loading ---------------------------------------------------------------------------------------

def chip_from_dict(data: dict, source: object | None = None) -> ChipConfig:
    """A chip from a chip file's flat fields: the design point's and the chip's own, each defaulting
    to ChipConfig's."""
    defaults = {**{f.name: f.default for f in dataclasses.fields(ChipConfig) if f.name != "point"},
                **CHIP_POINT.to_dict()}
    values = {}
    for key, value in data.items():
        if key == "notes":       # free text kept in the TOML for readers
            continue
        if key not in defaults:
            raise BadConfig(f"unknown chip field; expected one of {', '.join(defaults)}", path=source, field=key)
        default = defaults[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise BadConfig(f"expected a {type(default).__name__}, got {value!r}", path=source, field=key)
        values[key] = weight_style(value) if key == "weight_style" else value
    try:
        chip = ChipConfig().replace(**values)
    except BadConfig as e:
        raise BadConfig(str(e).split(": ", 1)[-1], path=source, field=e.field) from None
    return chip


def load_chip(name_or_path: str | Path) -> ChipConfig:
    """A chip preset by name (`hc1`) or a TOML file."""
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and not path.exists():
        path = CHIPS_DIR / f"{text.lower()}.toml"
        if not path.exists():
            names = ", ".join(sorted(p.stem for p in CHIPS_DIR.glob("*.toml")))
            raise BadConfig(f"unknown chip preset {text!r}; expected a TOML file or one of: {names}", field="chip")
    data = read_toml(path, "chip file")
    if not data:
        raise BadConfig("the chip file sets nothing; expected keys such as name, node and weight_bits "
                        "(see the bundled hc1.toml)", path=path)
    return chip_from_dict(data, source=path)


# -- transistor counts per block ------------------------------------------------------------------

def storage_transistors_per_bit(chip: ChipConfig) -> float:
    """Mask-ROM transistors per stored weight bit."""
    if chip.weight_style == "multiply_select_add":
        return 1 / 4          # "one transistor stores a 4-bit parameter" [taalas-claim]
    if chip.weight_style == "rom_mac":
        return 1.0            # NOR mask ROM: one transistor per bit, presence of a via = 1 [weste-harris]
    return 0.0                # hardwired, metal_embedded: the weight is wiring, not a stored bit


# Styles whose weights are wiring of the arithmetic itself: nothing a token could read back as a row,
# so a tied classifier cannot share the embedding's storage.
WIRED_WEIGHT_STYLES = ("hardwired", "metal_embedded")

# HNLPU, Fig. 12 (post-layout at 5 nm): a 1×1024 by 1024×128 FP4 product built metal-embedded takes
# 0.95× the area of the 64 KB SRAM that would merely hold its weights, built cell-embedded (a
# constant multiplier per weight) 14.3× [hnlpu]: the paper's "15× density". The metal-embedded
# figure includes the hardwired neurons' arithmetic (popcounts, value multipliers, adder tree).
METAL_EMBEDDED_AREA_PER_SRAM_BIT = 0.95


def metal_embedded_transistors_per_bit(chip: ChipConfig) -> float:
    """Hardwired-neuron silicon per weight bit, as the transistors of logic that fill the same area:
    0.95 of the node's SRAM macro area per bit [hnlpu] at the node's achieved logic density."""
    node = chip.process
    return METAL_EMBEDDED_AREA_PER_SRAM_BIT * node.achieved_logic_mtr_per_mm2 / node.sram_mbit_per_mm2


@dataclass(frozen=True)
class WeightMasks:
    """The photomask layers that carry a weight style's weights: what a new model (same template, new
    weights) re-spins, and what each further die of a multi-chip model adds to the template's set; the
    rest of the set is shared and reused (docs/chip-model.md §10)."""
    duv: int = 0                  # 193i masks among them
    euv: int = 0                  # EUV masks among them (each priced as EUV_MASK_COST_FACTOR DUV masks)
    every_layer: bool = False     # the weights are the logic: the whole set changes
    names: tuple[str, ...] = ()   # the layers, where the source names them

    @property
    def layers(self) -> int:
        return self.duv + self.euv


WEIGHT_MASKS: dict[str, WeightMasks] = {
    # published reading of HC1: the two via masks that pick each weight's product [taalas-claim]
    "multiply_select_add": WeightMasks(duv=2),
    # a NOR mask ROM is coded by one via (or contact) mask [weste-harris]
    "rom_mac": WeightMasks(duv=1),
    # the weights are the multipliers' logic: every layer changes
    "hardwired": WeightMasks(every_layer=True),
    # HNLPU's Metal-Embedding: the wires and vias of M8–M11, ten 193i masks; the other 60 of the 70
    # (all 12 EUV ones among them) are the same on every die and every update [hnlpu]
    "metal_embedded": WeightMasks(duv=10, names=("VIA7", "M8 mandrel", "M8 cut", "VIA8", "M9 mandrel", "M9 cut",
                                                 "VIA9", "M10", "VIA10", "M11")),
}


def weight_mask_layers(chip: ChipConfig) -> int:
    """Photomasks a model update re-spins on `chip` (all of them where the weights are the logic)."""
    masks = WEIGHT_MASKS[chip.weight_style]
    return chip.process.mask_layers if masks.every_layer else masks.layers


def weight_masks_usd(chip: ChipConfig) -> float:
    """The price of one die's weight-bearing masks (the full set where the weights are the logic)."""
    masks, node = WEIGHT_MASKS[chip.weight_style], chip.process
    if masks.every_layer:
        return node.mask_set_usd
    return masks.duv * node.duv_mask_usd + masks.euv * node.euv_mask_usd


def lane_transistors(chip: ChipConfig) -> float:
    """One lane: its select or multiplier plus an accumulator (adder + register)."""
    accumulate = chip.accumulator_bits * (FULL_ADDER_T + FLIP_FLOP_T)
    if chip.weight_style == "multiply_select_add":
        # Taalas: "one transistor stores a 4-bit parameter and multiplies": the storage transistor
        # picks the product line, so the lane only accumulates unless an explicit mux is asked for.
        select = chip.product_bits * (2 ** chip.weight_bits - 1) * MUX2_T if chip.explicit_select_mux else 0
        return select + accumulate
    if chip.weight_style == "rom_mac":
        a, b = chip.activation_bits, chip.weight_bits
        multiply = a * b * AND2_T + a * (b - 1) * FULL_ADDER_T
        return multiply + accumulate
    raise ValueError(f"{chip.weight_style} chips have no lanes")


def hardwired_transistors_per_slice(chip: ChipConfig) -> float:
    """A constant multiplier plus its share of the adder tree (about half the bits are nonzero)."""
    return HARDWIRED_CELLS_PER_NONZERO_BIT * chip.weight_bits / 2 * GENERIC_CELL_T


def precompute_transistors(chip: ChipConfig) -> float:
    """Multiply-select-add: one bank forms the odd multiples x·3, x·5, … of one input per cycle
    (even multiples are shifts, negatives are inversions in the select)."""
    odd_multiples = max(2 ** (chip.weight_bits - 2) - 1, 0)
    adders = odd_multiples * chip.product_bits * (FULL_ADDER_T + FLIP_FLOP_T)
    line_drivers = 2 ** chip.weight_bits * chip.product_bits * 2 * 4     # two inverters per product line
    return adders + line_drivers + chip.product_bits * FLIP_FLOP_T


def attention_mac_transistors(chip: ChipConfig) -> float:
    a, b = chip.activation_bits, chip.kv_bits
    multiply = a * b * AND2_T + a * (b - 1) * FULL_ADDER_T
    return multiply + (a + b + 8) * (FULL_ADDER_T + FLIP_FLOP_T)


def attention_transistors(q_dim: int, chip: ChipConfig) -> float:
    """A layer's score and value multiply-accumulates: 2 per q element per KV position read a cycle."""
    return 2 * chip.attention_positions_per_cycle * q_dim * attention_mac_transistors(chip)


# -- stages ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """What holds a token until it moves on: in a layer pipeline one stage of a layer (its norm,
    matvecs, RoPE, ...), the embedding, the head, or a chip-to-chip link (`fixed` cycles, no
    blocks); in the sequential schedule the whole token step."""
    name: str
    chip: int
    point: DesignPoint
    blocks: tuple[Block, ...] = ()
    fixed: int = 0

    def cycles(self, context):
        """Cycles a token holds the stage at `context` positions attended (an int, or an array of
        contexts), every token quantizer at its worst case."""
        total = self.fixed + sum(b.cycles(self.point, context) for b in self.blocks)
        return int(total) if np.ndim(total) == 0 else total

    @property
    def kind(self) -> tuple:
        """Equal for stages that take the same cycles at every context (layer 3's qkv and layer 7's)."""
        return self.fixed, self.point, tuple(dataclasses.replace(b, name="", stage="") for b in self.blocks)


def link_cycles(spec: ModelSpec, chip: ChipConfig) -> int:
    """Hand the hidden state of one token to the next chip: latency plus serialisation."""
    bits = spec.hidden_dim * chip.activation_bits
    seconds = chip.link_latency_ns * 1e-9 + bits / (chip.link_gbytes_per_s * 8e9)
    return math.ceil(seconds * chip.clock_hz)


def stage_plan(step: TokenStep, chip: ChipConfig, layer_chip: list[int], head_chip: int | None = None
               ) -> list[Stage]:
    """Every stage a token passes through, in order (layer_chip[i] = chip holding layer i). A layer
    pipeline has the token step's own stages (embed, L<i>.qkv, .attention, .wo, .gate_up, .down,
    head) with a link stage wherever the next stage sits on another chip; the sequential schedule
    one stage, the whole step, its links included."""
    spec = step.spec
    last = layer_chip[-1] if head_chip is None else head_chip

    stages: list[Stage] = []
    for name, blocks in step.stages():
        layer = blocks[0].layer
        c = layer_chip[layer] if layer is not None else 0 if name == "embed" else last
        if stages and stages[-1].chip != c:
            stages.append(Stage(f"link{c}", c, chip.point, fixed=link_cycles(spec, chip)))
        stages.append(Stage(name, c, chip.point, blocks))
    if chip.schedule == "sequential":
        links = sum(s.fixed for s in stages)
        return [Stage("token", 0, chip.point, step.blocks, fixed=links)]
    return stages
