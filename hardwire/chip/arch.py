"""ChipConfig and the microarchitecture it describes: what blocks a chip has, how many
transistors each block takes, and how many cycles each pipeline stage spends on a token.

The chip is layer-pipelined (docs/chip-model.md §1): every projection matrix has its own weight storage and
its own array of *lanes*. A lane owns `weights_per_lane` weight slices on one ROM bit line and reads
one per cycle, so a matrix-vector product takes `weights_per_lane` cycles however large the matrix
is; the number of lanes (the parallelism per layer) is weights ÷ `weights_per_lane`. The hc1
preset takes 256, the usual largest sub-array height of a memory bank (Weste & Harris: ≤ 256 rows
per bit line), not a number chosen to hit a throughput.

Weight storage styles:
- `multiply_select_add` (Taalas HC1): a shared bank precomputes x·v for every weight value v; each
  weight is one mask-ROM transistor ("one transistor stores a 4-bit parameter") whose via selects
  the product; the lane muxes the selected product and accumulates.
- `rom_mac`: a plain NOR mask ROM (one transistor per bit) feeding a multiplier and accumulator per lane.
- `hardwired`: every weight is a constant multiplier (shift-and-add) wired into an adder tree; no
  storage, no lanes, a matrix-vector product in one pass through the tree.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from hardwire.chip.process import ProcessNode, process_node
from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec

try:
    import tomllib
except ModuleNotFoundError:      # Python 3.10
    import tomli as tomllib

WEIGHT_STYLES = ("multiply_select_add", "rom_mac", "hardwired")
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

# -- fixed pipeline latencies, cycles (our design assumptions, docs/chip-model.md §timing) -------
ROM_READ_PIPELINE = 2      # word-line decode, bit-line sense
REQUANT_CYCLES = 4         # scale multiply, round, clamp of a matmul output
RSQRT_CYCLES = 8           # RMSNorm: reciprocal square root after the sum-of-squares tree
ROPE_CYCLES = 2
SOFTMAX_CYCLES = 16        # max, exp table, sum, reciprocal (online softmax overlaps the passes)
SILU_CYCLES = 4
RESIDUAL_CYCLES = 1
EMBED_CYCLES = 2


@dataclass(frozen=True)
class ChipConfig:
    name: str = "custom"
    node: str = "N6"
    clock_ghz: float = 1.0
    weight_style: str = "multiply_select_add"
    weight_bits: int = 4                 # base weight format
    high_precision_bits: int = 0         # a wider format for some weights (0 = none)
    high_precision_fraction: float = 0.0 # share of weights in the wider format
    activation_bits: int = 8
    kv_bits: int = 8
    weights_per_lane: int = 256          # weight slices per lane = cycles per matrix-vector product
    explicit_select_mux: bool = False    # multiply_select_add: a 2^bits:1 mux per lane instead of the
                                         # storage transistor doing the select (as Taalas describes)
    attention_positions_per_cycle: int = 8   # key/value positions per cycle per layer (all heads)
    kv_sram_mib: float = 64.0            # KV-cache SRAM, whole model
    lora_sram_mib: float = 0.0           # LoRA adapter SRAM, whole model
    chips: int = 0                       # 0: as many as the reticle requires
    link_gbytes_per_s: float = 100.0     # chip-to-chip link, per direction
    link_latency_ns: float = 500.0
    link_pj_per_bit: float = 5.0
    link_phy_mm2: float = 10.0           # per link end
    io_mm2: float = 20.0                 # host interface (PCIe PHY + controller), pads, per chip
    control_fraction: float = 0.05       # norms, softmax, sequencing, as a share of datapath logic
    card_overhead_w: float = 15.0        # board power outside the die, per chip
    vrm_efficiency: float = 0.90
    board_cost_usd: float = 500.0        # package, test, board, per chip
    lifetime_years: float = 3.0
    electricity_usd_per_kwh: float = 0.10

    def __post_init__(self):
        self.validate()

    def validate(self, source: object | None = None) -> None:
        def bad(field: str, expected: str):
            raise BadConfig(f"expected {expected}, got {getattr(self, field)!r}", path=source, field=field)

        process_node(self.node)
        if self.weight_style not in WEIGHT_STYLES:
            bad("weight_style", "one of " + ", ".join(WEIGHT_STYLES))
        int_ranges = {"weight_bits": (1, 16), "high_precision_bits": (0, 16), "activation_bits": (2, 32),
                      "kv_bits": (2, 32), "weights_per_lane": (1, 1 << 20),
                      "attention_positions_per_cycle": (1, 1 << 16), "chips": (0, 4096)}
        for field, (low, high) in int_ranges.items():
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                bad(field, f"an integer in [{low}, {high}]")
        positive = ("clock_ghz", "link_gbytes_per_s", "lifetime_years")
        non_negative = ("kv_sram_mib", "lora_sram_mib", "link_latency_ns", "link_pj_per_bit", "link_phy_mm2",
                        "io_mm2", "card_overhead_w", "board_cost_usd", "electricity_usd_per_kwh")
        for field in positive + non_negative:
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                bad(field, "a finite number")
            if value < 0 or (field in positive and value == 0):
                bad(field, "a positive number" if field in positive else "a number >= 0")
        if not self.clock_ghz <= 10:
            bad("clock_ghz", "a clock in (0, 10] GHz")
        for field in ("high_precision_fraction", "control_fraction"):
            if not 0 <= getattr(self, field) < 1:
                bad(field, "a fraction in [0, 1)")
        if not 0 < self.vrm_efficiency <= 1:
            bad("vrm_efficiency", "a fraction in (0, 1]")
        if self.high_precision_fraction > 0 and self.high_precision_bits <= self.weight_bits:
            bad("high_precision_bits", f"more bits than weight_bits={self.weight_bits}")

    # -- derived -------------------------------------------------------------------------------
    @property
    def process(self) -> ProcessNode:
        return process_node(self.node)

    @property
    def clock_hz(self) -> float:
        return self.clock_ghz * 1e9

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

    def replace(self, **changes) -> "ChipConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- loading ---------------------------------------------------------------------------------------

def chip_from_dict(data: dict, source: object | None = None) -> ChipConfig:
    fields = {f.name: f for f in dataclasses.fields(ChipConfig)}
    values = {}
    for key, value in data.items():
        if key == "notes":       # free text kept in the TOML for readers
            continue
        if key not in fields:
            raise BadConfig(f"unknown chip field; expected one of {', '.join(fields)}", path=source, field=key)
        default = fields[key].default
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise BadConfig(f"expected a {type(default).__name__}, got {value!r}", path=source, field=key)
        values[key] = value
    try:
        chip = ChipConfig(**values)
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
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadConfig("no such chip file", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadConfig(f"cannot read chip file: {e}", path=path) from None
    except tomllib.TOMLDecodeError as e:
        raise BadConfig(f"not valid TOML: {e}", path=path) from None
    return chip_from_dict(data, source=path)


# -- transistor counts per block ------------------------------------------------------------------

def storage_transistors_per_bit(chip: ChipConfig) -> float:
    """Mask-ROM transistors per stored weight bit."""
    if chip.weight_style == "multiply_select_add":
        return 1 / 4          # "one transistor stores a 4-bit parameter" [taalas-claim]
    if chip.weight_style == "rom_mac":
        return 1.0            # NOR mask ROM: one transistor per bit, presence of a via = 1 [weste-harris]
    return 0.0                # hardwired: the weight is the wiring of its multiplier


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
    raise ValueError("hardwired chips have no lanes")


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


# -- matrices and pipeline stages ------------------------------------------------------------------

@dataclass(frozen=True)
class Matrix:
    name: str
    rows: int      # out features
    cols: int      # in features


def layer_matrices(spec: ModelSpec) -> list[list[Matrix]]:
    """The projections of one layer grouped by pipeline stage (matrices in a group run together)."""
    return [
        [Matrix("wq", spec.q_dim, spec.hidden_dim), Matrix("wk", spec.kv_dim, spec.hidden_dim),
         Matrix("wv", spec.kv_dim, spec.hidden_dim)],
        [Matrix("wo", spec.hidden_dim, spec.q_dim)],
        [Matrix("w_gate", spec.ffn_dim, spec.hidden_dim), Matrix("w_up", spec.ffn_dim, spec.hidden_dim)],
        [Matrix("w_down", spec.hidden_dim, spec.ffn_dim)],
    ]


def head_matrix(spec: ModelSpec) -> Matrix:
    return Matrix("output", spec.vocab_size, spec.hidden_dim)


def matrix_lanes(m: Matrix, chip: ChipConfig) -> int:
    if chip.weight_style == "hardwired":
        return 0
    slices = m.rows * m.cols * chip.slices_per_weight
    return max(math.ceil(slices / chip.weights_per_lane), 1)


def matvec_cycles(group: list[Matrix], chip: ChipConfig) -> int:
    """Cycles for one matrix-vector product of a stage (its matrices run in parallel)."""
    worst = 0
    for m in group:
        cols_slices = m.cols * chip.slices_per_weight
        if chip.weight_style == "hardwired":
            cycles = 1 + math.ceil(math.log2(max(m.cols, 2)))     # one pass down the adder tree
        else:
            lanes = matrix_lanes(m, chip)
            rows_per_lane = math.ceil(m.rows * m.cols * chip.slices_per_weight / lanes)
            lanes_per_row = max(math.ceil(cols_slices / chip.weights_per_lane), 1)
            cycles = ROM_READ_PIPELINE + rows_per_lane + math.ceil(math.log2(lanes_per_row)) \
                if lanes_per_row > 1 else ROM_READ_PIPELINE + rows_per_lane
        worst = max(worst, cycles + REQUANT_CYCLES)
    return worst


def norm_cycles(spec: ModelSpec) -> int:
    return math.ceil(math.log2(spec.hidden_dim)) + RSQRT_CYCLES


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: a token occupies it for `fixed_cycles + attention_passes·⌈context/P⌉`."""
    name: str
    chip: int
    fixed_cycles: int
    attention_passes: int = 0
    positions_per_cycle: int = 1

    def cycles(self, context: int) -> int:
        if not self.attention_passes:
            return self.fixed_cycles
        return self.fixed_cycles + self.attention_passes * math.ceil(context / self.positions_per_cycle)


def link_cycles(spec: ModelSpec, chip: ChipConfig) -> int:
    """Hand the hidden state of one token to the next chip: latency plus serialisation."""
    bits = spec.hidden_dim * chip.activation_bits
    seconds = chip.link_latency_ns * 1e-9 + bits / (chip.link_gbytes_per_s * 8e9)
    return math.ceil(seconds * chip.clock_hz)


def stage_plan(spec: ModelSpec, chip: ChipConfig, layer_chip: list[int], head_chip: int | None = None
               ) -> list[Stage]:
    """Every stage a token passes through, in order (layer_chip[i] = chip holding layer i)."""
    qkv, wo, gate_up, down = layer_matrices(spec)
    norm = norm_cycles(spec)
    stages = [Stage("embed", 0, EMBED_CYCLES)]
    for i in range(spec.layers):
        c = layer_chip[i]
        if stages[-1].chip != c:
            stages.append(Stage(f"link{c}", c, link_cycles(spec, chip)))
        stages += [
            Stage(f"L{i}.qkv", c, norm + matvec_cycles(qkv, chip) + ROPE_CYCLES),
            Stage(f"L{i}.attention", c, SOFTMAX_CYCLES, attention_passes=2,
                  positions_per_cycle=chip.attention_positions_per_cycle),
            Stage(f"L{i}.wo", c, matvec_cycles(wo, chip) + RESIDUAL_CYCLES),
            Stage(f"L{i}.gate_up", c, norm + matvec_cycles(gate_up, chip) + SILU_CYCLES),
            Stage(f"L{i}.down", c, matvec_cycles(down, chip) + RESIDUAL_CYCLES),
        ]
    last = layer_chip[-1] if head_chip is None else head_chip
    if stages[-1].chip != last:
        stages.append(Stage(f"link{last}", last, link_cycles(spec, chip)))
    argmax = math.ceil(math.log2(max(spec.vocab_size, 2)))
    stages.append(Stage("head", last, norm + matvec_cycles([head_matrix(spec)], chip) + argmax))
    return stages
