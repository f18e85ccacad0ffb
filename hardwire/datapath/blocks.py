"""The blocks of a token step: dimensions, lanes and cycles, one formula per block.

Each formula is the generated RTL's state machine counted cycle by cycle (hardwire/rtl/blocks/*.py,
hardwire/rtl/top.py), with the RTL's fixed widths (one RoPE head, one KV position, one normalised
head, one logit per cycle) as DesignPoint fields, so the chip estimate prices other design points
with the same formulas. Counting convention, as the RTL's handshake has it (docs/rtl.md):

- `latency`: from the cycle a block's one-cycle `start` is high to the cycle its one-cycle `done`
  is high. A block's registers see `start` at the next clock edge, so even a one-step block has 1.
- `handoff`: cycles from the previous block's `done` to this block's `start`: 1 where the layer's
  sequencer sees `done` and registers the next `start` (every block inside a layer), 0 where a
  `done` wire is the next `start` (embedding -> layer -> layer -> final norm -> classifier).
- `cycles = handoff + latency`: the cycles a token spends in the block, so a sequential token step
  takes the sum over its blocks.

Three blocks end in the §2.2 token quantizer, whose choice of (mu, e) tries exponents from the
finest (e = 8) down to the first that fits: its cycles depend on the exponent the token gets.
`exponent=None` charges the worst case (all nine tried); the golden model's exponent gives the
exact count (`hardwire.datapath.exponents`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from hardwire.arithmetic import TOKEN_MAX_EXPONENT
from hardwire.datapath.adapter import LowRank
from hardwire.datapath.point import DesignPoint


# -- element walks ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)      # a pure function the estimate asks thousands of times per chip
def chunk_plan(count: int, per_cycle: int) -> tuple[int, int]:
    """(elements per cycle, chunks) for walking `count` elements: the largest divisor of `count`
    that is <= per_cycle, so every chunk is full (padding a flattened vector makes a simulator copy
    all of it on every read)."""
    per_cycle = max(1, min(per_cycle, count))
    per = max(d for d in range(1, per_cycle + 1) if count % d == 0)
    return per, count // per


def chunk_width(group_width: int, per_cycle: int) -> int:
    """Embedding elements per cycle: the largest divisor of the scale group's width that is <=
    per_cycle, so a chunk never straddles a group (one multiplier serves the chunk)."""
    return max(d for d in range(1, min(per_cycle, group_width) + 1) if group_width % d == 0)


QUANTIZE_EXPONENTS = TOKEN_MAX_EXPONENT + 1      # e in [0, 8]: at most nine tried


def token_quantize_latency(count: int, per_cycle: int, exponent: int | None = None) -> int:
    """§2.2 token quantizer (rtl/blocks/token_scale.py): the largest-magnitude pass (one cycle per
    chunk), a CHOOSE and a DECIDE cycle per exponent tried from e = 8 down to the chosen one, the
    output pass, `done` in the cycle after the last chunk."""
    _, chunks = chunk_plan(count, per_cycle)
    tried = QUANTIZE_EXPONENTS if exponent is None else TOKEN_MAX_EXPONENT - exponent + 1
    return 2 * chunks + 2 * tried + 1


def hadamard_latency(count: int, block: int) -> int:
    """§12 online Walsh–Hadamard transform (rtl/blocks/hadamard.py): one block of `block` values a
    cycle through log2(block) butterfly stages, `done` in the cycle after the last; 0 without one."""
    return 0 if block <= 1 else count // block + 1


# -- blocks -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Block:
    name: str              # the golden model's probe name, e.g. layers.0.attn_norm
    stage: str             # the layer-pipeline stage holding it (embed, L0.qkv, ..., head)
    layer: int | None = None   # the layer it belongs to (None: embedding, head)
    handoff: int = 0       # cycles from the previous block's done to this block's start
    quantizes = False      # ends in a §2.2 token quantizer (latency depends on its exponent)

    def latency(self, point: DesignPoint, context: int = 1, exponent: int | None = None) -> int:
        raise NotImplementedError

    def cycles(self, point: DesignPoint, context: int = 1, exponent: int | None = None) -> int:
        """Cycles a token spends here at `context` positions attended (itself included)."""
        return self.handoff + self.latency(point, context, exponent)

    def lanes(self, point: DesignPoint) -> int:
        return 0


@dataclass(frozen=True, kw_only=True)
class Embed(Block):
    """§8.1 the token's embedding row (rtl/blocks/embed.py): one chunk per cycle through a ROM, the
    scaled values written a cycle later."""
    vocab: int
    dim: int
    group: int             # scale group width of the embedding table (dim: one scale per row)

    def latency(self, point, context=1, exponent=None):
        chunks = -(-self.dim // chunk_width(self.group, point.embed_per_cycle))
        return chunks + 2


@dataclass(frozen=True, kw_only=True)
class Norm(Block):
    """§4 RMSNorm (rtl/blocks/rmsnorm.py): three passes over h (largest |h|, squares, outputs), a
    pre-shift cycle between the first two, EPS and RSQRT between the last two, then the token
    quantizer; `done` the cycle after the quantizer's."""
    dim: int
    quantizes = True

    def latency(self, point, context=1, exponent=None):
        _, chunks = chunk_plan(self.dim, point.norm_per_cycle)
        return 3 * chunks + 5 + token_quantize_latency(self.dim, point.norm_per_cycle, exponent)


@dataclass(frozen=True)
class LanePlan:
    """How a matrix maps onto MAC lanes (rtl/blocks/matvec.py): rows are cut into blocks of `lanes`
    rows (one lane per row, each lane walking its row's columns), or, with split_rows, a long row
    over `lanes_per_row` lanes whose sums an adder tree joins."""
    lanes: int             # MAC lanes (0: hardwired or metal_embedded, no lanes)
    lanes_per_row: int     # lanes one row is cut over (each a group of lanes sharing x_j)
    blocks: int            # row blocks the lanes walk one after another
    walk: int              # cycles per block: the columns (in weight slices) one lane walks
    tree: int              # cycles of the adder tree joining a row's lanes
    requantizers: int      # shared requantizers: enough to drain a block while the next one walks
    drain: int             # cycles they take to drain the last block
    cycles: int            # start to done


@dataclass(frozen=True)
class Matrix:
    """One projection: y = W x with W of rows x cols."""
    name: str              # canonical tensor name, e.g. layers.0.wq
    rows: int              # out features
    cols: int              # in features

    def plan(self, point: DesignPoint) -> LanePlan:
        """Lanes and cycles of one product. rom_mac and multiply_select_add: a ROM word per cycle
        (stage A addresses the registered ROM, stage B runs the lanes on it a cycle later), the
        last block's sums drained by the requantizers (read, then requantize), `done` a cycle
        later: blocks * walk + tree + drain + 3. hardwired: one registered pass, 1 cycle.
        metal_embedded: the input's bits stream in one a cycle, least significant first, into a
        carry-save tree one level a cycle over the row's inputs, then the same 3 registered cycles
        (close the sums, the value multiplies and their adder tree, done)."""
        if point.weight_style == "hardwired":
            return LanePlan(lanes=0, lanes_per_row=0, blocks=1, walk=0, tree=0, requantizers=self.rows, drain=0,
                            cycles=1)
        if point.weight_style == "metal_embedded":
            tree = math.ceil(math.log2(max(math.ceil(self.cols * point.slices_per_weight), 2)))
            return LanePlan(lanes=0, lanes_per_row=0, blocks=1, walk=point.activation_bits, tree=tree,
                            requantizers=self.rows, drain=0, cycles=point.activation_bits + tree + 3)
        slices = math.ceil(self.cols * point.slices_per_weight)
        if point.split_rows and slices > point.weights_per_lane:
            per_row = math.ceil(slices / point.weights_per_lane)
            lanes, blocks, rows_per_block = self.rows * per_row, 1, self.rows
            walk, tree = math.ceil(slices / per_row), math.ceil(math.log2(per_row))
        else:
            per_row = 1
            row_blocks = max(1, min(self.rows, point.weights_per_lane // slices))
            lanes = -(-self.rows // row_blocks)
            blocks, rows_per_block, walk, tree = -(-self.rows // lanes), lanes, slices, 0
        requantizers = -(-rows_per_block // walk)
        drain = -(-rows_per_block // requantizers)
        return LanePlan(lanes=lanes, lanes_per_row=per_row, blocks=blocks, walk=walk, tree=tree,
                        requantizers=requantizers, drain=drain, cycles=blocks * walk + tree + drain + 3)


@dataclass(frozen=True, kw_only=True)
class MatVec(Block):
    """§3 matrix-vector products reading the same input in parallel (q, k, v; gate, up): the block
    is done when the slowest is. A matrix with a low-rank block (§11, `low_rank`) starts when its
    block is done, so it takes both blocks' cycles."""
    matrices: tuple[Matrix, ...]
    low_rank: tuple[LowRank, ...] = ()

    def matrix_cycles(self, point, matrix: Matrix) -> int:
        """Start to done of one matrix's product, its low-rank block (if any) included."""
        before = sum(r.cycles for r in self.low_rank if r.name == matrix.name)
        return before + matrix.plan(point).cycles

    def latency(self, point, context=1, exponent=None):
        return max(self.matrix_cycles(point, m) for m in self.matrices)

    def lanes(self, point):
        return sum(m.plan(point).lanes for m in self.matrices)


@dataclass(frozen=True, kw_only=True)
class Rope(Block):
    """§5 RoPE over q's and k's heads laid end to end (rtl/blocks/rope.py), `rope_heads_per_cycle`
    heads a cycle, `done` with the last."""
    heads: int             # q heads + kv heads
    head_dim: int

    def latency(self, point, context=1, exponent=None):
        return -(-self.heads // point.rope_heads_per_cycle) + 1


@dataclass(frozen=True, kw_only=True)
class Attention(Block):
    """§6 attention (rtl/blocks/attention.py): write k and v to the cache (1 cycle), two scans of
    the attended positions (maxima, then exp2 weights and V sums), each `ceil(P / positions per
    cycle)` reads plus 2 (the SRAM's registered read, and the cycle that sees the scan end), the
    heads normalised `attention_heads_per_cycle` at a time, then the token quantizer over all heads
    (one chunk per group of normalised heads); `done` the cycle after the quantizer's."""
    heads: int
    kv_heads: int
    head_dim: int
    window: int | None     # sliding window: at most this many positions attended
    quantizes = True

    def positions(self, context):
        """Positions attended at `context` (an int or an array of contexts)."""
        return context if self.window is None else np.minimum(context, self.window)

    def latency(self, point, context=1, exponent=None):
        reads = -(-self.positions(context) // point.attention_positions_per_cycle)
        per_group = self.head_dim * point.attention_heads_per_cycle
        normalise = -(-self.heads // point.attention_heads_per_cycle)
        return (1 + 1 + 2 * (reads + 2) + normalise
                + token_quantize_latency(self.heads * self.head_dim, per_group, exponent) + 1)


@dataclass(frozen=True, kw_only=True)
class Residual(Block):
    """§8.2 h = sat32(h + y): the layer's adders in the cycle after the wo or w_down product is done
    (rtl/top.py); that cycle is also when the sequencer starts the next block."""
    dim: int

    def latency(self, point, context=1, exponent=None):
        return 1


@dataclass(frozen=True, kw_only=True)
class SwiGLU(Block):
    """§7 SwiGLU (rtl/blocks/swiglu.py): one pass over gate and up, then (a die recording it) §12's
    online Walsh–Hadamard transform in blocks of `hadamard_block`, then the token quantizer, whose
    `done` is the block's."""
    ffn_dim: int
    hadamard_block: int = 1    # 1: no transform
    quantizes = True

    def latency(self, point, context=1, exponent=None):
        _, chunks = chunk_plan(self.ffn_dim, point.norm_per_cycle)
        return (chunks + 1 + hadamard_latency(self.ffn_dim, self.hadamard_block)
                + token_quantize_latency(self.ffn_dim, point.norm_per_cycle, exponent))


@dataclass(frozen=True, kw_only=True)
class Logits(Block):
    """§9.1 the logits to the host with their argmax (rtl/top.py hw_chip): `logits_per_cycle` a
    cycle, the next token offered the cycle after the last."""
    vocab: int

    def latency(self, point, context=1, exponent=None):
        return -(-self.vocab // point.logits_per_cycle) + 1
