"""§3 matvec (docs/arithmetic.md): weight codes times an integer vector, exact, then requantized.

    acc_i = sum_g m_ig * sum_{j in g} (c_ij - z_ig) x_j
    a_i = sat59(round(acc_i * 2^-(k_i + e - 7))),   y_i = sat_out(round(a_i * mu * 2^-10) + b_i)

with (mu, e) the token scale of x (§2.2).

Golden: `hardwire.golden.matvec.matvec`. Two circuit styles of the same arithmetic (weight styles of
`hardwire.datapath`, which also gives each product its lanes and cycles):

`rom_mac` (default): the codes sit in a registered `case` ROM read one word per cycle; a word holds one
code for each of `lanes` MAC lanes. Rows are cut into blocks of `lanes` rows; in block b, lane l
computes row b*lanes + l while the column counter j walks the input vector, x_j broadcast to every
lane (a cycle after the ROM address). A lane keeps the running group sum (partial) and the scaled
row sum (acc); at a group's last column it adds m_ig * partial to acc, at the row's last column it
moves acc aside, and ceil(lanes / cols) shared requantizers drain the block's sums (read, then
requantize) while the lanes compute the next block. A product takes blocks * cols + drain steps + 3
cycles (`hardwire.datapath.Matrix.plan`).

`hardwired`: every weight is a constant multiplier in a per-row adder tree (no ROM, no lanes);
the whole product is one registered pass, 2 cycles. Worth it only for small matrices: ~60 logic
cells per weight against ~1-2 for the ROM (docs/rtl.md, measured toolchain facts).

Interface (both styles): `start` (one-cycle pulse, x held stable until `done`), `done` (one-cycle
pulse; y then holds until the next `start`), x and y flattened (element i at [i*W +: W]). A matrix
with a §11 low-rank block (`term_bits` > 0) has a `term` input, one T_i per row (from
rtl/blocks/adapter.py, stable from `start` to `done`), which its requantizers add to each row's
accumulator A_i before requantizing it (`with_term`), as `hardwire.golden.matvec.matvec` adds `extra`.
"""
from __future__ import annotations

from dataclasses import dataclass

import dataclasses

import numpy as np

from hardwire.arithmetic import TOKEN_GUARD_BITS, TOKEN_MANTISSA_BITS, TOKEN_PRODUCT_LIMIT_BITS
from hardwire.formats import expand_groups
from hardwire.rtl.emit import (RSHIFT_ROUND, SATURATE, Port, case_rom, clear_pulses, index_bits, last_value, literal,
                               module, pack_fields, sext, signed_bits, word_read, word_write, zext)

STYLES = ("rom_mac", "hardwired")


@dataclass
class IntMatrix:
    """The integer constants of one matrix-vector product, as the golden model holds them."""

    name: str                     # canonical tensor name, e.g. layers.0.wq (or wqkv when stacked)
    codes: np.ndarray             # int [rows, cols]
    zeros: np.ndarray | None      # int [rows, groups] zero points (None: symmetric)
    group: int | None             # columns per scale group (None: one group per row)
    multipliers: np.ndarray       # int [rows, groups], >= 0
    shifts: np.ndarray            # int [rows]
    bias: np.ndarray | None       # int [rows] in the output scale (None: no bias)

    @property
    def rows(self) -> int:
        return self.codes.shape[0]

    @property
    def cols(self) -> int:
        return self.codes.shape[1]

    @property
    def group_width(self) -> int:
        return self.cols if self.group is None else self.group

    @property
    def groups(self) -> int:
        return -(-self.cols // self.group_width)

    def weights(self) -> np.ndarray:
        """c_ij - z_ig as int64 [rows, cols]."""
        w = self.codes.astype(np.int64)
        if self.zeros is not None:
            w = w - expand_groups(self.zeros.astype(np.int64), self.group_width, self.cols)
        return w


def module_name(matrix_name: str) -> str:
    return "hw_matvec_" + matrix_name.replace(".", "_")


# -- width bounds ---------------------------------------------------------------------------------

@dataclass
class Widths:
    code: int          # c - z
    partial: int       # sum over one group of (c - z) x
    mult: int          # m_ig (signed, non-negative)
    acc: int           # sum over groups of m * partial
    shift: int
    bias: int
    left: int          # largest left shift (k <= 0)
    shifted: int       # acc after rounding shift, plus bias


def bounds(matrix: IntMatrix, x_bits: int) -> Widths:
    """Exact worst-case widths for any x in the signed x_bits range (the constants are known)."""
    w = matrix.weights()
    x_max = 1 << (x_bits - 1)
    gw = matrix.group_width
    abs_group = np.zeros((matrix.rows, matrix.groups), dtype=object)
    for g in range(matrix.groups):
        abs_group[:, g] = np.abs(w[:, g * gw:(g + 1) * gw]).sum(axis=1).astype(object)
    partial_max = int(abs_group.max()) * x_max if abs_group.size else 0
    mults = matrix.multipliers.astype(object)
    acc_max = max(int((mults[i] * abs_group[i]).sum()) * x_max for i in range(matrix.rows))
    shifts = [int(k) for k in matrix.shifts]
    left = max(0, -min(shifts))
    bias = [0] if matrix.bias is None else [int(b) for b in matrix.bias]
    code_lo, code_hi = int(w.min()), int(w.max())
    shifted_max = (acc_max << left) + 1 + max(abs(b) for b in bias)
    acc_bits = max(signed_bits(-acc_max, acc_max), signed_bits(-partial_max, partial_max))
    # the rounding half 2^(k-1) must fit beside acc, or a large k would round negatives to -1
    shifted = max(signed_bits(-shifted_max, shifted_max), max(acc_bits, max(shifts)) + 1)
    return Widths(code=signed_bits(min(code_lo, -1), max(code_hi, 1)),
                  partial=signed_bits(-partial_max, partial_max),
                  mult=signed_bits(0, max(1, int(matrix.multipliers.max()))),
                  acc=acc_bits,
                  shift=signed_bits(min(shifts + [-1]), max(shifts + [1])),
                  bias=signed_bits(min(bias + [-1]), max(bias + [1])),
                  left=left,
                  shifted=shifted)


# -- Verilog fragments shared by both styles --------------------------------------------------------

def requantize_function(widths: Widths, out_bits: int) -> list[str]:
    """§3.2 requantization as a Verilog function `requantize(acc, k, b, mu, e)`, shared by both styles:

        a = sat59(rshift_round(acc, k + e - 7)),  y = sat_out(rshift_round(a * mu, 10) + b)

    rshift_round and saturate are the §1 functions (emit.RSHIFT_ROUND, emit.SATURATE)."""
    guard, mantissa = TOKEN_GUARD_BITS, TOKEN_MANTISSA_BITS
    a = widths.acc
    if widths.shift > 8:
        raise ValueError(f"a requantization shift of {widths.shift} bits does not fit the 8-bit shifter")
    return [
        "    // §3.2: a = sat59(round(acc 2^-(k + e - 7))), y = sat_out(round(a mu 2^-10) + b).",
        f"    function signed [{out_bits - 1}:0] requantize;",
        f"        input signed [{a - 1}:0] rq_acc;",
        f"        input signed [{widths.shift - 1}:0] rq_shift;",
        f"        input signed [{widths.bias - 1}:0] rq_bias;",
        "        input [3:0] rq_mu;",
        "        input [3:0] rq_e;",
        "        reg signed [7:0] rq_k;",
        "        reg signed [63:0] rq_guarded;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // saturated to the output width: upper bits copy the sign",
        "        reg signed [63:0] rq_saturated;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        f"            rq_k = {sext('rq_shift', widths.shift, 8)} + $signed({{4'd0, rq_e}}) - 8'sd{guard};",
        f"            rq_guarded = saturate(rshift_round({sext('rq_acc', a, 64)}, rq_k), 7'd{TOKEN_PRODUCT_LIMIT_BITS});",
        f"            rq_saturated = saturate(rshift_round(rq_guarded * $signed({{1'b0, rq_mu}}), 8'sd{guard + mantissa})"
        f" + {sext('rq_bias', widths.bias, 64)}, 7'd{out_bits});",
        f"            requantize = rq_saturated[{out_bits - 1}:0];",
        "        end",
        "    endfunction",
    ]


def matvec_ports(rows: int, cols: int, x_bits: int, out_bits: int, term_bits: int = 0) -> list[Port]:
    """The interface both styles share (with `term`, a low-rank block's T_i per row, when term_bits > 0)."""
    term = [Port("input", "term", rows * term_bits)] if term_bits else []
    return [Port("input", "clk"), Port("input", "rst"), Port("input", "start"),
            Port("input", "x", cols * x_bits), Port("input", "mu", 4), Port("input", "e", 4), *term,
            Port("output", "done", reg=True), Port("output", "y", rows * out_bits, reg=True)]


def term_sum_bits(acc_bits: int, term_bits: int) -> int:
    """Width of A_i + T_i (§11): within s64 wherever A_i is (docs/arithmetic.md)."""
    if not term_bits:
        return acc_bits
    bits = max(acc_bits, term_bits) + 1
    if bits > 64:
        raise ValueError(f"A_i + T_i needs {bits} bits, more than the requantizer's 64")
    return bits


def with_term_function(acc_bits: int, term_bits: int) -> list[str]:
    """§11 `with_term(acc, T)`: a row's accumulator plus its low-rank term, exact."""
    total = term_sum_bits(acc_bits, term_bits)
    return [
        f"    // §11: A_i + T_i, exact ({total} bits), before requantization",
        f"    function signed [{total - 1}:0] with_term;",
        f"        input signed [{acc_bits - 1}:0] wt_acc;",
        f"        input signed [{term_bits - 1}:0] wt_term;",
        f"        with_term = {sext('wt_acc', acc_bits, total)} + {sext('wt_term', term_bits, total)};",
        "    endfunction",
    ]


def matvec_comment(matrix: IntMatrix, style: str, out_bits: int) -> str:
    return (f"§3 matvec of {matrix.name} (docs/arithmetic.md), {style}.\n"
            f"a_i = sat59(round(sum_g m_ig sum_j (c_ij - z_ig) x_j * 2^-(k_i + e - 7))); "
            f"y_i = sat{out_bits}(round(a_i mu 2^-10) + b_i)")


# -- ROM + MAC lanes ---------------------------------------------------------------------------------
#
# Two variants of one circuit, each composed from the sections below:
#   rom_mac_per_row  one scale per row (per-channel): the lanes only sum (c - z) x, and the
#                    requantizer multiplies the row sum by m_i, read with the row's constants;
#   rom_mac_grouped  several scale groups per row: a scales ROM beside the codes, and each lane
#                    adds m_ig * partial to its row sum `acc` at every group's end.

def requantizers_for(lanes: int, cols: int) -> int:
    """Requantizers shared by the lanes: enough that a block's results drain (R per cycle) while
    the next block walks its columns."""
    return -(-lanes // max(cols, 1))


@dataclass(frozen=True)
class RomMac:
    """The geometry of one ROM + MAC lanes product: rows cut into `blocks` of `lanes` rows, each block
    walking the columns, its sums drained by `requantizers` in `steps` cycles; and the counters' bits."""

    matrix: IntMatrix
    x_bits: int
    out_bits: int
    lanes: int
    widths: Widths
    blocks: int
    requantizers: int
    steps: int             # drain cycles per block
    block_bits: int
    step_bits: int
    col_bits: int
    row_bits: int          # a row index (up to blocks * lanes)
    row_addr_bits: int     # the row constants ROM's address (block * steps + step)
    q_bits: int            # a requantizer's index
    term_bits: int = 0     # a low-rank block's T_i (§11) added before requantizing; 0: no such block

    @classmethod
    def plan(cls, matrix: IntMatrix, x_bits: int, out_bits: int, lanes: int, term_bits: int = 0) -> "RomMac":
        lanes = max(1, min(lanes, matrix.rows))
        blocks = -(-matrix.rows // lanes)
        requantizers = requantizers_for(lanes, matrix.cols)
        steps = -(-lanes // requantizers)
        return cls(matrix, x_bits, out_bits, lanes, bounds(matrix, x_bits), blocks, requantizers, steps,
                   index_bits(blocks), index_bits(steps), index_bits(matrix.cols), index_bits(blocks * lanes + 1),
                   index_bits(blocks * steps), index_bits(requantizers), term_bits)

    @property
    def name(self) -> str:
        return module_name(self.matrix.name)

    @property
    def per_row(self) -> bool:
        return self.matrix.groups == 1

    @property
    def cycles(self) -> int:
        return self.blocks * self.matrix.cols + self.steps + 3

    @property
    def row_width(self) -> int:
        """Bits of one row's constants {m (one scale per row only), bias, shift}."""
        wd = self.widths
        return wd.shift + wd.bias + (wd.mult if self.per_row else 0)

    def row(self, block: int, lane: int) -> int | None:
        """The row lane `lane` computes in block `block` (None past the last row)."""
        r = block * self.lanes + lane
        return r if r < self.matrix.rows and lane < self.lanes else None


@dataclass(frozen=True)
class LaneRom:
    """A registered ROM the lanes read one word of per column, `lanes` fields to a word: its address
    counter steps every column, or only at a group's end (`when`)."""

    instance: str          # codes | scales
    word: str              # the data wire, e.g. code_word
    address: str           # the address counter, e.g. code_addr
    address_bits: int
    word_bits: int
    when: str = ""         # the step's condition ("": every column)


@dataclass(frozen=True)
class LaneSum:
    """A running sum each lane keeps, cleared at `start`."""

    name: str
    bits: int
    declaration: str       # the text after the array's name (aligned comment)


# -- the ROMs ------------------------------------------------------------------------------------------

def code_rom(g: RomMac) -> tuple[LaneRom, dict[str, str]]:
    """c - z of `lanes` rows per word, word = block * cols + column."""
    m, wd = g.matrix, g.widths
    weights = m.weights()
    words = [pack_fields([weights[r, j] if (r := g.row(b, l)) is not None else 0 for l in range(g.lanes)], wd.code)
             for b in range(g.blocks) for j in range(m.cols)]
    name = f"{g.name}_codes"
    text = case_rom(name, words, g.lanes * wd.code,
                    f"{m.name}: c - z, {g.lanes} lanes x {wd.code} bits, word = block * {m.cols} + column.",
                    registered=True)
    return LaneRom("codes", "code_word", "code_addr", index_bits(g.blocks * m.cols), g.lanes * wd.code), {name: text}


def scale_rom(g: RomMac) -> tuple[LaneRom, dict[str, str]]:
    """The group multipliers m_ig of `lanes` rows per word, word = block * groups + group."""
    m, wd = g.matrix, g.widths
    words = [pack_fields([int(m.multipliers[r, k]) if (r := g.row(b, l)) is not None else 0 for l in range(g.lanes)],
                         wd.mult)
             for b in range(g.blocks) for k in range(m.groups)]
    name = f"{g.name}_scales"
    text = case_rom(name, words, g.lanes * wd.mult,
                    f"{m.name}: group multipliers m, word = block * {m.groups} + group.", registered=True)
    return (LaneRom("scales", "scale_word", "scale_addr", index_bits(g.blocks * m.groups), g.lanes * wd.mult,
                    "group_end"), {name: text})


def row_constants_rom(g: RomMac) -> dict[str, str]:
    """{m (one scale per row only), bias, shift} of the rows each drain step requantizes, one field
    per requantizer, word = block * steps + step."""
    m, wd = g.matrix, g.widths
    bias = np.zeros(m.rows, dtype=np.int64) if m.bias is None else np.asarray(m.bias, dtype=np.int64)
    words = []
    for b in range(g.blocks):
        for step in range(g.steps):
            fields = []
            for q in range(g.requantizers):
                r = g.row(b, step * g.requantizers + q)
                k, bb, mult = (int(m.shifts[r]), int(bias[r]), int(m.multipliers[r, 0])) if r is not None else (0, 0, 0)
                field = ((bb & ((1 << wd.bias) - 1)) << wd.shift) | (k & ((1 << wd.shift) - 1))
                if g.per_row:
                    field |= mult << (wd.shift + wd.bias)
                fields.append(field)
            words.append(pack_fields(fields, g.row_width))
    name = f"{g.name}_rows"
    return {name: case_rom(name, words, g.requantizers * g.row_width,
                           f"{m.name}: {{{'m, ' if g.per_row else ''}bias, shift}} of the rows each drain "
                           f"step requantizes, word = block * {g.steps} + step.", registered=True)}


# -- the module's sections, in the order of its text ------------------------------------------------------

def overview(g: RomMac) -> list[str]:
    m = g.matrix
    return [
        f"    // {m.rows} x {m.cols}, {m.groups} group(s) of {m.group_width}, {g.lanes} lanes, {g.blocks} block(s), "
        f"{g.requantizers} requantizer(s): {g.cycles} cycles per product.",
        "    // Three stages: (A) counters address the registered ROMs; (B) a cycle later the lanes take the",
        "    // ROM words and x_j; (C) after a block's last column its sums move to `held` and the",
        "    // requantizers drain them (read, then requantize) while the lanes start the next block.",
        last_value("LAST_COL", m.cols - 1, g.col_bits),
        last_value("LAST_IN_GROUP", m.group_width - 1, index_bits(m.group_width)),
        last_value("LAST_BLOCK", g.blocks - 1, g.block_bits),
        last_value("LAST_STEP", g.steps - 1, g.step_bits),
        f"    localparam integer LANES = {g.lanes};",
        f"    localparam integer REQUANTIZERS = {g.requantizers};",
        "",
    ]


def registers(g: RomMac, roms: list[LaneRom], sums: list[LaneSum], held_bits: int) -> list[str]:
    """The registers of the three stages; a lane's finished row sum (`held`) is `held_bits` wide."""
    in_group_bits = index_bits(g.matrix.group_width)
    return [
        "    // (A) addressing",
        "    reg running;                       // walking the columns of a block",
        f"    reg [{g.block_bits - 1}:0] block;",
        f"    reg [{g.col_bits - 1}:0] col;",
        f"    reg [{in_group_bits - 1}:0] in_group;",
        *[f"    reg [{rom.address_bits - 1}:0] {rom.address};" for rom in roms],
        "    // (B) the lanes, one cycle behind (A)",
        "    reg lane_valid;",
        "    reg lane_group_end;",
        "    reg lane_last_col;",
        f"    reg [{g.block_bits - 1}:0] lane_block;",
        f"    reg signed [{g.x_bits - 1}:0] lane_x;    // x_j, broadcast to every lane",
        *[f"    reg signed [{s.bits - 1}:0] {s.name} [0:{g.lanes - 1}];{s.declaration}" for s in sums],
        f"    reg signed [{held_bits - 1}:0] held [0:{g.lanes - 1}];      // each lane's finished row sum, waiting "
        "for a requantizer",
        "    // (C) draining",
        "    reg draining;                      // reading `held` for the block just finished",
        "    reg requantizing;                  // requantizing what the previous drain step read",
        "    reg finishing;                     // that was the product's last drain step",
        f"    reg [{g.block_bits - 1}:0] drain_block;",
        f"    reg [{g.step_bits - 1}:0] step;",
        f"    reg [{g.row_addr_bits - 1}:0] row_addr;",
        f"    reg signed [{held_bits - 1}:0] drained [0:{g.requantizers - 1}];",
        f"    reg [{g.row_bits - 1}:0] drained_row [0:{g.requantizers - 1}];",
        f"    reg drained_valid [0:{g.requantizers - 1}];",
        f"    reg [{g.out_bits - 1}:0] y_now;      // a requantized output, on its way to y",
        *([f"    reg signed [{g.term_bits - 1}:0] term_now;   // its row's low-rank term T_i"] if g.term_bits else []),
        "",
    ]


def rom_readers(g: RomMac, roms: list[LaneRom]) -> list[str]:
    """The ROMs' data wires and instances: the lanes' ROMs read while running, the row constants
    while draining."""
    return [
        *[f"    wire [{rom.word_bits - 1}:0] {rom.word};" for rom in roms],
        f"    wire [{g.requantizers * g.row_width - 1}:0] row_word;",
        *[f"    {g.name}_{rom.instance} {rom.instance} (.clk(clk), .en(running), .addr({rom.address}), "
          f".data({rom.word}));" for rom in roms],
        f"    {g.name}_rows row_constants (.clk(clk), .en(draining), .addr(row_addr), .data(row_word));",
        "",
        "    reg last_col;                      // the column walk's position: temporaries of the clocked block",
        "    reg group_end;",
    ]


def _unclipped(bits_from: int, bits_to: int, declaration: str) -> list[str]:
    """`declaration`, with Verilator's unused-bits warning off when it is wider than the kept result."""
    if bits_to > bits_from:
        return ["        /* verilator lint_off UNUSEDSIGNAL */  // |result| stays within the bound computed from "
                "the constants; the upper bits only keep the product unclipped",
                declaration, "        /* verilator lint_on UNUSEDSIGNAL */"]
    return [declaration]


def arithmetic(g: RomMac) -> list[str]:
    """§1 rounding and saturation, one MAC, a group's scaled add and §3.2 requantization, as functions."""
    wd, x_bits = g.widths, g.x_bits
    p, a, cw, mw = wd.partial, wd.acc, wd.code, wd.mult
    # partial + product must not lose the product: widen the sum to the larger of the two (likewise acc).
    sum_bits = max(p, cw + x_bits)
    add_bits = max(a, mw + p)
    return [
        RSHIFT_ROUND, SATURATE,
        f"    // One MAC: partial + (c - z) x_j, exact ({sum_bits} bits), kept to the group bound ({p} bits).",
        f"    function signed [{p - 1}:0] mac;",
        f"        input signed [{p - 1}:0] mac_partial;",
        f"        input signed [{cw - 1}:0] mac_weight;",
        f"        input signed [{x_bits - 1}:0] mac_x;",
        *_unclipped(p, sum_bits, f"        reg signed [{sum_bits - 1}:0] mac_sum;"),
        "        begin",
        f"            mac_sum = {sext('mac_partial', p, sum_bits)} + "
        f"{sext('mac_weight', cw, sum_bits)} * {sext('mac_x', x_bits, sum_bits)};",
        f"            mac = mac_sum[{p - 1}:0];",
        "        end",
        "    endfunction",
        f"    // A group's end: acc + m_ig * partial ({add_bits} bits), kept to the row bound ({a} bits).",
        f"    function signed [{a - 1}:0] scale_add;",
        f"        input signed [{a - 1}:0] sa_acc;",
        f"        input signed [{mw - 1}:0] sa_multiplier;",
        f"        input signed [{p - 1}:0] sa_partial;",
        *_unclipped(a, add_bits, f"        reg signed [{add_bits - 1}:0] sa_sum;"),
        "        begin",
        f"            sa_sum = {sext('sa_acc', a, add_bits)} + "
        f"{sext('sa_multiplier', mw, add_bits)} * {sext('sa_partial', p, add_bits)};",
        f"            scale_add = sa_sum[{a - 1}:0];",
        "        end",
        "    endfunction",
        *(with_term_function(a, g.term_bits) if g.term_bits else []),
        *requantize_function(dataclasses.replace(wd, acc=term_sum_bits(a, g.term_bits)), g.out_bits),
        "",
    ]


def drain_indexing(g: RomMac) -> list[str]:
    """Which lane (`held` entry) and which row drain step s, requantizer q takes."""
    step_bits, q_bits, row_bits = g.step_bits, g.q_bits, g.row_bits
    lane_bits = index_bits(g.lanes)
    return [
        "    // Drain step s, requantizer q: lane s * REQUANTIZERS + q of the block, row block * LANES + lane.",
        f"    function [{row_bits - 1}:0] lane_of;",
        f"        input [{step_bits - 1}:0] lo_step;",
        f"        input [{q_bits - 1}:0] lo_q;",
        f"        lane_of = {zext('lo_step', step_bits, row_bits)} * {row_bits}'d{g.requantizers} + "
        f"{zext('lo_q', q_bits, row_bits)};",
        "    endfunction",
        "    /* verilator lint_off UNUSEDSIGNAL */  // an index past the last lane reads an unused word (drained_valid is 0)",
        f"    function [{lane_bits - 1}:0] held_index;",
        f"        input [{step_bits - 1}:0] hi_step;",
        f"        input [{q_bits - 1}:0] hi_q;",
        f"        reg [{row_bits - 1}:0] hi_lane;",
        "        begin",
        "            hi_lane = lane_of(hi_step, hi_q);",
        f"            held_index = hi_lane[{lane_bits - 1}:0];",
        "        end",
        "    endfunction",
        "    /* verilator lint_on UNUSEDSIGNAL */",
        f"    function [{row_bits - 1}:0] row_of;",
        f"        input [{g.block_bits - 1}:0] ro_block;",
        f"        input [{row_bits - 1}:0] ro_lane;",
        f"        row_of = {zext('ro_block', g.block_bits, row_bits)} * {row_bits}'d{g.lanes} + ro_lane;",
        "    endfunction",
        "",
    ]


def clocked(stages: list[str]) -> list[str]:
    """The one clocked block: the stages' statements (requantize, drain, lanes, addressing, start,
    in that order, each array read before its write), then the reset."""
    return [
        "    integer l, q;",
        "    // The lane and drain arrays are written with blocking assignments inside loops (Verilator 5.006",
        "    // rejects non-blocking array writes in loops it does not unroll). Each element is written at",
        "    // most once per clock, and every read of an array in this block comes before its write",
        "    // (requantize, then drain, then lanes), so the result is that of non-blocking writes. y too",
        "    // (a non-blocking write to part of a wide vector makes verilated code copy all of it twice in",
        "    // every cycle): it is read only after `done`.",
        "    /* verilator lint_off BLKSEQ */",
        "    // Every register is read before it is written in this block's text (the reset comes last, the",
        "    // lane pipeline registers are set after the lanes read them): verilated code then writes the",
        "    // registers directly, instead of copying each into a shadow and back on every clock, idle or not.",
        "    always @(posedge clk) begin",
        f"        {clear_pulses('done')}",
        "        if (!rst && (start || running || lane_valid || draining || requantizing)) begin   // idle otherwise",
        "            last_col = col == LAST_COL;",
        "            group_end = last_col || in_group == LAST_IN_GROUP;",
        *stages,
        "        end",
        "        if (rst) begin",
        "            running <= 1'b0;",
        "            lane_valid <= 1'b0;",
        "            draining <= 1'b0;",
        "            requantizing <= 1'b0;",
        "            finishing <= 1'b0;",
        "        end",
        "    end",
        "    /* verilator lint_on BLKSEQ */",
    ]


def requantize_stage(g: RomMac, row_sum: str) -> list[str]:
    """(C) each requantizer turns the sum it read (`row_sum`, the row's acc, plus the row's low-rank
    term when the matrix has one) into y_i."""
    wd = g.widths
    term = []
    if g.term_bits:
        term = word_read("term", g.matrix.rows, g.term_bits, "drained_row[q]", "term_now", " " * 24, g.row_bits)
        row_sum = f"with_term({row_sum}, term_now)"
    return [
        "            // (C) requantize what the last drain step read (the rows ROM word is ready now)",
        "            if (requantizing) begin",
        "                for (q = 0; q < REQUANTIZERS; q = q + 1)",
        "                    if (drained_valid[q]) begin",
        *term,
        f"                        y_now = requantize({row_sum}, "
        f"row_word[q * {g.row_width} +: {wd.shift}], row_word[q * {g.row_width} + {wd.shift} +: {wd.bias}], mu, e);",
        *word_write("y", g.matrix.rows, g.out_bits, "drained_row[q]", "y_now", " " * 24, g.row_bits),
        "                    end",
        "                done <= finishing;",
        "                finishing <= 1'b0;",
        "            end",
        "            requantizing <= draining;",
    ]


def drain_stage(g: RomMac) -> list[str]:
    """(C) each drain step, every requantizer reads its lane's held sum and notes the row."""
    q_index = f"q[{g.q_bits - 1}:0]"
    return [
        "            // (C) drain step: each requantizer reads its lane's held sum",
        "            if (draining) begin",
        "                for (q = 0; q < REQUANTIZERS; q = q + 1) begin",
        f"                    drained[q] = held[held_index(step, {q_index})];",
        f"                    drained_row[q] = row_of(drain_block, lane_of(step, {q_index}));",
        f"                    drained_valid[q] = lane_of(step, {q_index}) < {g.row_bits}'d{g.lanes} "
        f"&& row_of(drain_block, lane_of(step, {q_index})) < {g.row_bits}'d{g.matrix.rows};",
        "                end",
        "                if (step == LAST_STEP) begin",
        "                    draining <= 1'b0;",
        "                    if (!lane_valid) finishing <= 1'b1;",
        "                end",
        f"                step <= step + {g.step_bits}'d1;",
        f"                row_addr <= row_addr + {g.row_addr_bits}'d1;",
        "            end",
    ]


def lane_stage(g: RomMac, group_end: list[str]) -> list[str]:
    """(B) every lane's MAC; `group_end`: what a lane does with its group sum at the group's end.
    After a block's last column its sums are `held` and the drain starts."""
    cw = g.widths.code
    return [
        "            // (B) the lanes",
        "            if (lane_valid) begin",
        "                for (l = 0; l < LANES; l = l + 1) begin",
        "                    if (!lane_group_end) begin",
        f"                        partial[l] = mac(partial[l], code_word[l * {cw} +: {cw}], lane_x);",
        "                    end else begin",
        *group_end,
        f"                        partial[l] = {literal(0, g.widths.partial, True)};",
        "                    end",
        "                end",
        "                if (lane_last_col) begin    // the block's sums move aside (`held`); the lanes go on",
        "                    draining <= 1'b1;",
        "                    drain_block <= lane_block;",
        f"                    step <= {g.step_bits}'d0;",
        "                end",
        "            end",
        "            lane_valid <= running;",
        "            lane_group_end <= group_end;",
        "            lane_last_col <= last_col;",
        "            lane_block <= block;",
        *word_read("x", g.matrix.cols, g.x_bits, "col", "lane_x", "            ", assign="<="),
    ]


def per_row_group_end(g: RomMac) -> list[str]:
    """One group per row: the group's end is the row's, and the row sum is the group sum."""
    cw = g.widths.code
    return [f"                        held[l] = mac(partial[l], code_word[l * {cw} +: {cw}], lane_x);"
            "   // the row's end"]


def grouped_group_end(g: RomMac) -> list[str]:
    """A group's end adds m_ig times the group sum to the lane's acc; the row's end moves it to held."""
    cw, mw = g.widths.code, g.widths.mult
    scaled = f"scale_add(acc[l], scale_word[l * {mw} +: {mw}], mac(partial[l], code_word[l * {cw} +: {cw}], lane_x))"
    return [
        "                        if (lane_last_col) begin",
        f"                            held[l] = {scaled};",
        f"                            acc[l] = {literal(0, g.widths.acc, True)};",
        "                        end else begin",
        f"                            acc[l] = {scaled};",
        "                        end",
    ]


def addressing_stage(g: RomMac, roms: list[LaneRom], sums: list[LaneSum]) -> list[str]:
    """(A) the column walk and the ROM addresses; `start` clears them and the lanes' sums."""
    in_group_bits = index_bits(g.matrix.group_width)

    def step(rom: LaneRom) -> str:
        advance = f"{rom.address} <= {rom.address} + {rom.address_bits}'d1;"
        return f"if ({rom.when}) {advance}" if rom.when else advance

    return [
        "            // (A) addressing",
        "            if (running && !start) begin",
        *[f"                {step(rom)}" for rom in roms],
        f"                in_group <= group_end ? {in_group_bits}'d0 : in_group + {in_group_bits}'d1;",
        "                if (last_col) begin",
        f"                    col <= {g.col_bits}'d0;",
        "                    if (block == LAST_BLOCK) running <= 1'b0;",
        f"                    block <= block + {g.block_bits}'d1;",
        "                end else begin",
        f"                    col <= col + {g.col_bits}'d1;",
        "                end",
        "            end",
        "            if (start) begin",
        "                running <= 1'b1;",
        f"                block <= {g.block_bits}'d0;",
        f"                col <= {g.col_bits}'d0;",
        f"                in_group <= {in_group_bits}'d0;",
        *[f"                {rom.address} <= {rom.address_bits}'d0;" for rom in roms],
        f"                row_addr <= {g.row_addr_bits}'d0;",
        "                for (l = 0; l < LANES; l = l + 1) begin",
        *[f"                    {s.name}[l] = {literal(0, s.bits, True)};" for s in sums],
        "                end",
        "            end",
    ]


def rom_mac_module(g: RomMac, body: list[str]) -> str:
    m = g.matrix
    return module(g.name, matvec_ports(m.rows, m.cols, g.x_bits, g.out_bits, g.term_bits), "\n".join(body),
                  matvec_comment(m, f"ROM + {g.lanes} MAC lanes", g.out_bits))


def partial_sum(g: RomMac) -> LaneSum:
    return LaneSum("partial", g.widths.partial, "   // each lane's running sum over the current group")


# -- the two variants --------------------------------------------------------------------------------------

def rom_mac_per_row(g: RomMac) -> dict[str, str]:
    """One scale per row (per-channel): the requantizer applies m_i to the lane's sum, so lanes need
    no scale multiplier (m_i * partial is the whole of acc_i with one group): it forms
    acc = scale_add(0, m_i, partial) from the m in the row constants."""
    codes, modules = code_rom(g)
    modules.update(row_constants_rom(g))
    wd = g.widths
    roms, sums = [codes], [partial_sum(g)]
    multiplier = f"row_word[q * {g.row_width} + {wd.shift + wd.bias} +: {wd.mult}]"
    row_sum = f"scale_add({literal(0, wd.acc, True)}, {multiplier}, drained[q])"
    body = [*overview(g), *registers(g, roms, sums, held_bits=wd.partial), *rom_readers(g, roms), *arithmetic(g),
            *drain_indexing(g),
            *clocked([*requantize_stage(g, row_sum), *drain_stage(g), *lane_stage(g, per_row_group_end(g)),
                         *addressing_stage(g, roms, sums)])]
    return {**modules, g.name: rom_mac_module(g, body)}


def rom_mac_grouped(g: RomMac) -> dict[str, str]:
    """Several scale groups per row: the lanes read each group's m_ig from the scales ROM and keep
    the scaled row sum `acc`; the requantizer takes it as it is."""
    codes, modules = code_rom(g)
    modules.update(row_constants_rom(g))
    scales, scale_modules = scale_rom(g)
    modules.update(scale_modules)
    roms = [codes, scales]
    sums = [partial_sum(g),
            LaneSum("acc", g.widths.acc, "       // each lane's sum of its row's scaled groups so far")]
    body = [*overview(g), *registers(g, roms, sums, held_bits=g.widths.acc), *rom_readers(g, roms), *arithmetic(g),
            *drain_indexing(g),
            *clocked([*requantize_stage(g, "drained[q]"), *drain_stage(g), *lane_stage(g, grouped_group_end(g)),
                         *addressing_stage(g, roms, sums)])]
    return {**modules, g.name: rom_mac_module(g, body)}


def matvec_rom(matrix: IntMatrix, x_bits: int, out_bits: int, lanes: int, term_bits: int = 0) -> dict[str, str]:
    """Modules {name: text} of the ROM style: the matvec and its ROMs (codes, row constants, and
    group scales when a row has several groups)."""
    g = RomMac.plan(matrix, x_bits, out_bits, lanes, term_bits)
    return rom_mac_per_row(g) if g.per_row else rom_mac_grouped(g)


# -- fully hardwired constant multipliers --------------------------------------------------------

def matvec_hardwired(matrix: IntMatrix, x_bits: int, out_bits: int, term_bits: int = 0) -> dict[str, str]:
    """Modules of the hardwired style: each row an adder tree of constant multiples of x."""
    name = module_name(matrix.name)
    rows, cols, gw, groups = matrix.rows, matrix.cols, matrix.group_width, matrix.groups
    wd = bounds(matrix, x_bits)
    weights = matrix.weights()
    p, a = wd.partial, wd.acc
    body = [
        f"    // {rows} x {cols}, {groups} group(s) of {gw}: every weight a constant multiplier, 2 cycles.",
        RSHIFT_ROUND, SATURATE, *(with_term_function(a, term_bits) if term_bits else []),
        *requantize_function(dataclasses.replace(wd, acc=term_sum_bits(a, term_bits)), out_bits),
        f"    wire signed [{x_bits - 1}:0] x_elements [0:{cols - 1}];",
        f"    wire signed [{p - 1}:0] x_wide [0:{cols - 1}];",
        "    genvar i;",
        "    generate",
        f"        for (i = 0; i < {cols}; i = i + 1) begin : element",
        f"            assign x_elements[i] = x[i * {x_bits} +: {x_bits}];",
        f"            assign x_wide[i] = {sext('x_elements[i]', x_bits, p)};",
        "        end",
        "    endgenerate",
    ]
    outputs = []
    for r in range(rows):
        terms_acc = []
        for g in range(groups):
            terms = []
            for j in range(g * gw, min(cols, (g + 1) * gw)):
                c = int(weights[r, j])
                if c == 0:
                    continue
                sign = "-" if c < 0 else "+"
                magnitude = abs(c)
                product = f"x_wide[{j}]" if magnitude == 1 else f"x_wide[{j}] * {literal(magnitude, p, True)}"
                terms.append(f"{sign} {product}")
            partial = " ".join(terms).lstrip("+ ") if terms else literal(0, p, True)
            if partial.startswith("- "):
                partial = f"{literal(0, p, True)} {partial}"
            body.append(f"    wire signed [{p - 1}:0] row{r}_group{g} = {partial};")
            m = int(matrix.multipliers[r, g])
            if m:
                body.append(f"    wire signed [{a - 1}:0] row{r}_scaled{g} = "
                            f"{sext(f'row{r}_group{g}', p, a)} * {literal(m, a, True)};")
                terms_acc.append(f"row{r}_scaled{g}")
        acc = " + ".join(terms_acc) if terms_acc else literal(0, a, True)
        body.append(f"    wire signed [{a - 1}:0] row{r}_acc = {acc};")
        k = int(matrix.shifts[r])
        b = 0 if matrix.bias is None else int(matrix.bias[r])
        body.append(f"    wire signed [{wd.shift - 1}:0] row{r}_shift = {literal(k, wd.shift, True)};")
        body.append(f"    wire signed [{wd.bias - 1}:0] row{r}_bias = {literal(b, wd.bias, True)};")
        row_acc = f"with_term(row{r}_acc, term[{r * term_bits} +: {term_bits}])" if term_bits else f"row{r}_acc"
        body.append(f"    wire signed [{out_bits - 1}:0] row{r}_y = "
                    f"requantize({row_acc}, row{r}_shift, row{r}_bias, mu, e);")
        outputs.append(f"row{r}_y")
    body += [
        "    always @(posedge clk) begin",
        "        done <= start && !rst;",
        "        if (start) y <= {" + ", ".join(reversed(outputs)) + "};",
        "    end",
    ]
    return {name: module(name, matvec_ports(rows, cols, x_bits, out_bits, term_bits), "\n".join(body),
                         matvec_comment(matrix, "hardwired constant multipliers", out_bits))}


def matvec_modules(matrix: IntMatrix, x_bits: int, out_bits: int, style: str = "rom_mac",
                   lanes: int = 16, term_bits: int = 0) -> dict[str, str]:
    """The matvec's modules; `term_bits` > 0 gives it a `term` input (a §11 low-rank block's T_i)."""
    if style == "rom_mac":
        return matvec_rom(matrix, x_bits, out_bits, lanes, term_bits)
    if style == "hardwired":
        return matvec_hardwired(matrix, x_bits, out_bits, term_bits)
    raise ValueError(f"unknown matvec style {style!r}; expected one of {', '.join(STYLES)}")
