"""Generic cells of a layer's vector logic: everything a layer has besides its weight storage, its MAC
lanes and attention's multiply-accumulates, block by block, from the sizes that drive each block.

Each block kind costs Σ coefficient × size, its sizes read from the datapath block at the chip's
design point (elements × activation bits it buffers, element lanes it computes per cycle, shared
requantizers, a fixed part). The coefficients are fitted on Yosys runs of our own generated
blocks (`python bench/synth_blocks.py`, measurements in tests/data/synth_blocks.json) at die sizes
other than stories260K's, and checked on stories260K (docs/chip-model.md §8.1):

- `norm`       §4 RMSNorm with its §2.2 token quantizer (max, squares, rsqrt, C_i multiply per lane)
- `swiglu`     §7 SwiGLU with its token quantizer (sigmoid table and multiplies per lane)
- `rope`       §5 RoPE (rotation lanes over one head's pairs, the rotated q and k held for attention)
- `attention`  §6 attention beyond its multiply-accumulates: running maxima, exp2 tables, weight sums,
               the normaliser (reciprocal, Newton step, output multiply per lane), the token quantizer
- `matvec`     §3 a product beyond its ROM and lanes: the shared requantizers, the output register,
               the walk's addressing and drain control
- `layer`      the layer's own logic: the residual stream register and its adder, the sequencer

and, for a die that records it, `hadamard`: §12's online Walsh–Hadamard transform inside SwiGLU,
priced from textbook cells (no calibration die has one to fit on): its butterfly adders and the
register of the transformed vector.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from hardwire.arithmetic import INTERNAL_BITS, RESIDUAL_BITS, hadamard_input_bits
from hardwire.chip import arch
from hardwire.datapath import Attention, Block, DesignPoint, MatVec, Matrix, Norm, Rope, SwiGLU, chunk_plan

# the dies the cost terms are fitted on, and the one they are checked on (tests/data/synth_blocks.json)
FIT_DIES = ("h32", "h32w", "h128", "h96")
CHECK_DIE = "stories260k"
KINDS = ("norm", "swiglu", "rope", "attention", "matvec", "layer")


@dataclass(frozen=True)
class CostTerm:
    """cells = Σ cells_per[size] × sizes[size] over the kind's sizes."""
    sizes: tuple[str, ...]
    cells_per: tuple[float, ...]

    def cells(self, sizes: dict[str, float]) -> float:
        return sum(c * sizes[name] for name, c in zip(self.sizes, self.cells_per))


# Fitted by `python bench/synth_blocks.py --check` (`calibrate` below) on the calibration dies of
# tests/data/synth_blocks.json, random Llama-shaped models frozen at w8 (Yosys 0.23 `synth -flatten
# -noshare`, generic cells; the counts, die ids and design points are in that file):
#   h32  hidden 32, 4/2 heads of 8, FFN 88, 8 elements per cycle: the whole layer
#   h32w hidden 32, 2/1 heads of 16, FFN 88: attention, RoPE
#   h128 hidden 128, 16/8 heads of 8, FFN 344: RMSNorm, SwiGLU, RoPE
#   h96  hidden 96, 6/3 heads of 16, FFN 256, 16 elements per cycle: RMSNorm, SwiGLU, attention, RoPE
# Not stories260K (hidden 64, 8/4 heads of 8, FFN 172), the check die (docs/chip-model.md §8.1).
COST_TERMS: dict[str, CostTerm] = {
    "norm": CostTerm(("element_bits", "lanes", "fixed"), (16.0221, 15938.6, 17987.7)),
    "swiglu": CostTerm(("element_bits", "lanes", "fixed"), (20.0629, 13553.4, 0.0)),
    "rope": CostTerm(("element_bits", "lanes", "fixed"), (4.00301, 4438.11, 2271.04)),
    "attention": CostTerm(("element_bits", "lanes", "fixed"), (308.221, 12308.3, 20949.0)),
    "matvec": CostTerm(("requantizers", "output_bits"), (7678.9, 3.87201)),
    "layer": CostTerm(("residual_bits", "fixed"), (16.6748, 0.0)),
}
# Kinds priced from textbook cells, not fitted (no calibration die has them): §12's transform, a
# full adder per adder bit and a flip-flop per register bit [weste-harris], in generic cells.
TEXTBOOK_TERMS: dict[str, CostTerm] = {
    "hadamard": CostTerm(("adder_bits", "register_bits"),
                         (arch.FULL_ADDER_T / arch.GENERIC_CELL_T, arch.FLIP_FLOP_T / arch.GENERIC_CELL_T)),
}


# -- sizes of each block kind -----------------------------------------------------------------------

def norm_sizes(dim: int, point: DesignPoint) -> dict[str, float]:
    lanes, _ = chunk_plan(dim, point.norm_per_cycle)
    return {"element_bits": dim * point.activation_bits, "lanes": lanes, "fixed": 1}


def swiglu_sizes(ffn_dim: int, point: DesignPoint) -> dict[str, float]:
    lanes, _ = chunk_plan(ffn_dim, point.norm_per_cycle)
    return {"element_bits": ffn_dim * point.activation_bits, "lanes": lanes, "fixed": 1}


def hadamard_sizes(count: int, block: int, point: DesignPoint) -> dict[str, float]:
    """§12 one block of n a cycle (rtl/blocks/hadamard.py): (n/2) log2 n butterflies, each an adder
    and a subtractor as wide as its stage (the clamped input's width plus one bit per stage), and
    the transformed vector's register (`count` values at the input width)."""
    stages = block.bit_length() - 1
    width = hadamard_input_bits(point.activation_bits)
    adder_bits = sum(block * (width + stage) for stage in range(1, stages + 1))    # n/2 butterflies x 2 adders
    return {"adder_bits": adder_bits, "register_bits": count * width}


def rope_sizes(heads: int, head_dim: int, point: DesignPoint) -> dict[str, float]:
    """`heads`: q heads + KV heads, laid end to end; q and k are INTERNAL_BITS wide."""
    return {"element_bits": heads * head_dim * INTERNAL_BITS, "lanes": point.rope_heads_per_cycle * head_dim,
            "fixed": 1}


def attention_sizes(heads: int, head_dim: int, point: DesignPoint) -> dict[str, float]:
    return {"element_bits": heads * head_dim * point.activation_bits,
            "lanes": point.attention_heads_per_cycle * head_dim, "fixed": 1}


def matvec_sizes(matrix: Matrix, point: DesignPoint) -> dict[str, float]:
    """No fixed part: every product of the calibration dies has one requantizer (its rows drain
    while the next block walks), so a product's own control is priced inside its requantizer, an
    upper bound where a product shares several (hc1: 17)."""
    return {"requantizers": matrix.plan(point).requantizers, "output_bits": matrix.rows * point.activation_bits}


def layer_sizes(hidden_dim: int) -> dict[str, float]:
    return {"residual_bits": hidden_dim * RESIDUAL_BITS, "fixed": 1}


def block_sizes(block: Block, point: DesignPoint) -> list[tuple[str, dict[str, float]]]:
    """(kind, sizes) for each costed unit of a datapath block: one per matrix of a MatVec; none for a
    residual add (its adder is the layer's, `layer_sizes`)."""
    if isinstance(block, Norm):
        return [("norm", norm_sizes(block.dim, point))]
    if isinstance(block, SwiGLU):
        transform = ([("hadamard", hadamard_sizes(block.ffn_dim, block.hadamard_block, point))]
                     if block.hadamard_block > 1 else [])
        return [("swiglu", swiglu_sizes(block.ffn_dim, point))] + transform
    if isinstance(block, Rope):
        return [("rope", rope_sizes(block.heads, block.head_dim, point))]
    if isinstance(block, Attention):
        return [("attention", attention_sizes(block.heads, block.head_dim, point))]
    if isinstance(block, MatVec):
        return [("matvec", matvec_sizes(m, point)) for m in block.matrices]
    return []


def cells(kind: str, sizes: dict[str, float], terms: dict[str, CostTerm] | None = None) -> float:
    """Generic cells of one unit: a fitted term (`terms`, default COST_TERMS) or a textbook one."""
    if kind in TEXTBOOK_TERMS:
        return TEXTBOOK_TERMS[kind].cells(sizes)
    return (COST_TERMS if terms is None else terms)[kind].cells(sizes)


# -- what the textbook cells already price (not fitted) --------------------------------------------

def matvec_textbook_cells(matrix: Matrix, point: DesignPoint) -> float:
    """The estimate's weight storage and lanes for one matrix (`estimate.matrix_blocks`), in generic
    cells: what a synthesized matvec holds besides the `matvec` term."""
    from hardwire.chip.estimate import matrix_blocks        # the estimate imports this module
    blocks = matrix_blocks([matrix], arch.ChipConfig(point=point))
    return (blocks.transistors["weight_storage"] + blocks.transistors["mac_select"]) / arch.GENERIC_CELL_T


def attention_textbook_cells(q_dim: int, point: DesignPoint) -> float:
    """The estimate's score and value multiply-accumulates, in generic cells."""
    return arch.attention_transistors(q_dim, arch.ChipConfig(point=point)) / arch.GENERIC_CELL_T


# -- calibration -----------------------------------------------------------------------------------

def fit_nonnegative(rows: list[dict[str, float]], measured: list[float], sizes: tuple[str, ...]) -> tuple[float, ...]:
    """Coefficients ≥ 0 minimising the squared *relative* error Σ ((Σ c·size) / measured − 1)²: every
    subset of the sizes is tried (a kind has at most four), the best fit whose coefficients are all
    non-negative wins (a negative cell count per lane would extrapolate to negative logic)."""
    a = np.array([[row[s] / m for s in sizes] for row, m in zip(rows, measured)], dtype=float)
    b = np.ones(len(rows))
    best, best_error = tuple(0.0 for _ in sizes), float("inf")
    for k in range(1, len(sizes) + 1):
        for subset in itertools.combinations(range(len(sizes)), k):
            coef, *_ = np.linalg.lstsq(a[:, subset], b, rcond=None)
            if (coef < 0).any():
                continue
            error = float(((a[:, subset] @ coef - b) ** 2).sum())
            if error < best_error - 1e-12:
                full = [0.0] * len(sizes)
                for i, c in zip(subset, coef):
                    full[i] = float(c)
                best, best_error = tuple(full), error
    return best


# -- measurements: our Yosys runs of a die's layer 0, block by block (bench/synth_blocks.py) ---------

def measured_layer(entry: dict):
    """The spec and design point a measured die was generated at, and its layer-0 datapath blocks."""
    from hardwire.datapath import build
    from hardwire.model.spec import ModelSpec
    spec = ModelSpec(family="llama", layers=1, **entry["spec"])
    point = DesignPoint(**entry["point"])
    return spec, point, [b for b in build(spec, point).blocks if b.layer == 0]


def measured_units(entry: dict) -> list[dict]:
    """Each costed unit of a measured layer: kind, name, sizes, synthesized cells, and the cells the
    textbook terms already price (weight storage and lanes of a matvec, attention's MACs); the cost
    term is fitted to synthesized − textbook. The generated modules map onto units by name
    (hw_matvec_layers_0_<matrix> with its ROM tables, hw_attention_*, hw_rope, hw_swiglu_*, an
    RMSNorm hw_rmsnorm_* — the mean over its synthesized instances — plus its constant ROM
    hw_rmsnorm_layers_0_*_mult, the layer's own logic). A die synthesized in part (`partial`) has
    only the units of the blocks it synthesized."""
    spec, point, blocks = measured_layer(entry)
    synthesized: dict[str, float] = {}
    norm_instances = 0
    for b in entry["blocks"]:
        module, total = b["module"], b["cells"] * b["instances"]
        if module.startswith("hw_matvec_layers_0_"):
            key = "matvec:" + module.removeprefix("hw_matvec_layers_0_")
        elif module.startswith("hw_rmsnorm_layers_0_"):
            key = "norm_constants"
        elif module.startswith("hw_rmsnorm_"):
            key, norm_instances = "norm", norm_instances + b["instances"]
        elif b["role"] == "own logic":
            key = "layer"
        else:
            key = module.removeprefix("hw_").split("_")[0]         # attention, rope, swiglu
        synthesized[key] = synthesized.get(key, 0.0) + total
    norms = [b for b in blocks if isinstance(b, Norm)]
    if "norm" in synthesized:
        synthesized["norm"] = synthesized["norm"] / norm_instances + synthesized.get("norm_constants", 0.0) / len(norms)
    units = []

    def unit(kind, name, sizes, textbook=0.0, key=None):
        if (key or kind) in synthesized:
            units.append({"kind": kind, "name": name, "sizes": sizes, "textbook": textbook,
                          "synthesized": synthesized[key or kind]})

    for block in blocks:
        if isinstance(block, MatVec):
            for m in block.matrices:
                name = m.name.rsplit(".", 1)[-1]
                unit("matvec", name, matvec_sizes(m, point), matvec_textbook_cells(m, point), "matvec:" + name)
        elif isinstance(block, Norm):
            unit("norm", block.name.rsplit(".", 1)[-1], norm_sizes(block.dim, point))
        elif isinstance(block, Attention):
            unit("attention", "attention", attention_sizes(block.heads, block.head_dim, point),
                 attention_textbook_cells(block.heads * block.head_dim, point))
        else:
            for kind, sizes in block_sizes(block, point):
                unit(kind, kind, sizes)
    unit("layer", "layer", layer_sizes(spec.hidden_dim))
    return units


def calibrate(entries: list[dict]) -> dict[str, CostTerm]:
    """The cost terms fitted on measured dies (`fit_nonnegative` per kind, on synthesized − textbook)."""
    units = [u for entry in entries for u in measured_units(entry)]
    terms = {}
    for kind in KINDS:
        mine = [u for u in units if u["kind"] == kind]
        sizes = tuple(mine[0]["sizes"])
        coef = fit_nonnegative([u["sizes"] for u in mine], [u["synthesized"] - u["textbook"] for u in mine], sizes)
        terms[kind] = CostTerm(sizes, coef)
    return terms


def predicted_units(entry: dict, terms: dict[str, CostTerm] | None = None) -> list[dict]:
    """`measured_units` with each unit's predicted cells: textbook + its cost term."""
    return [{**u, "predicted": u["textbook"] + cells(u["kind"], u["sizes"], terms)} for u in measured_units(entry)]


# -- the estimate's view: a layer's and the head's vector logic ------------------------------------

def vector_cells(blocks: list[Block], matrices: list[Matrix], point: DesignPoint,
                 hidden_dim: int | None = None) -> dict[str, float]:
    """Generic cells of the vector logic around `blocks` (the norms, RoPE, attention and SwiGLU among
    them; their products' matrices given separately as `matrices`, every stored one, so a mixture of
    experts' idle experts keep their requantizers) and, with `hidden_dim`, a layer's own residual
    logic: {"attention": attention's pipeline beyond its MACs, "control": the rest}."""
    out = {"attention": 0.0, "control": 0.0}
    for block in blocks:
        if isinstance(block, MatVec):
            continue
        for kind, sizes in block_sizes(block, point):
            out["attention" if kind == "attention" else "control"] += cells(kind, sizes)
    out["control"] += sum(cells("matvec", matvec_sizes(m, point)) for m in matrices)
    if hidden_dim is not None:
        out["control"] += cells("layer", layer_sizes(hidden_dim))
    return out
