"""§3 matvec (docs/arithmetic.md): weight codes times an integer vector, exact, then requantized.

    acc_i = sum_g m_ig * sum_{j in g} (c_ij - z_ig) x_j
    a_i = sat59(round(acc_i * 2^-(k_i + e - 7))),   y_i = sat_out(round(a_i * mu * 2^-10) + b_i)

with (mu, e) the token scale of x (§2.2).

Golden: `hardwire.golden.matvec.matvec`. Two circuit styles of the same arithmetic:

`rom` (default): the codes sit in a `case` ROM read one word per cycle; a word holds one code for
each of `lanes` MAC lanes. Rows are cut into blocks of `lanes` rows; in block b, lane l computes row
b*lanes + l while the column counter j walks the input vector, x_j broadcast to every lane. A lane
keeps the running group sum (partial) and the scaled row sum (acc); at a group's last column it adds
m_ig * partial to acc, at the row's last column it hands acc to its requantizer, which writes y_i
the next cycle while the lane starts the next block. A product takes blocks * cols + 2 cycles.

`hardwired`: every weight is a constant multiplier in a per-row adder tree (no ROM, no lanes);
the whole product is one registered pass, 2 cycles. Worth it only for small matrices: ~60 logic
cells per weight against ~1-2 for the ROM (../shared/facts/rtl-toolchain.md).

Interface (both styles): `start` (one-cycle pulse, x held stable until `done`), `done` (one-cycle
pulse; y then holds until the next `start`), x and y flattened (element i at [i*W +: W]).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardwire.golden.arithmetic import TOKEN_GUARD_BITS, TOKEN_MANTISSA_BITS, TOKEN_PRODUCT_LIMIT_BITS
from hardwire.rtl.emit import (RSHIFT_ROUND, SATURATE, Port, case_rom, index_bits, literal, module, pack_fields,
                               signed_bits)

STYLES = ("rom", "hardwired")


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
            w = w - np.repeat(self.zeros.astype(np.int64), self.group_width, axis=1)[:, :self.cols]
        return w


def module_name(matrix_name: str) -> str:
    return "hw_matvec_" + matrix_name.replace(".", "_")


def lanes_for(rows: int, cols: int, weights_per_lane: int) -> int:
    """Lanes so that one product takes about `weights_per_lane` cycles (ChipConfig's knob): as many
    row blocks as fit in that many cycles, one lane per row of a block."""
    blocks = max(1, min(rows, weights_per_lane // max(cols, 1)))
    return -(-rows // blocks)


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

def sext(name: str, from_bits: int, to_bits: int) -> str:
    """A signed name widened to `to_bits` by sign extension (a signed expression)."""
    if to_bits == from_bits:
        return name
    if to_bits < from_bits:
        raise ValueError(f"cannot sign-extend {name} from {from_bits} to {to_bits} bits")
    return f"$signed({{{{{to_bits - from_bits}{{{name}[{from_bits - 1}]}}}}, {name}}})"


def requantize_lines(prefix: str, acc: str, shift: str, bias: str, out: str, widths: Widths,
                     out_bits: int, indent: str = "    ") -> list[str]:
    """§3.2 requantization with the input's token scale (mu, e) as combinational wires:

        a = sat59(rshift_round(acc, k + e - 7)),  out = sat_out(rshift_round(a * mu, 10) + b)

    rshift_round and saturate are the §1 functions (emit.RSHIFT_ROUND, emit.SATURATE)."""
    guard, mantissa = TOKEN_GUARD_BITS, TOKEN_MANTISSA_BITS
    if widths.shift > 8:
        raise ValueError(f"a requantization shift of {widths.shift} bits does not fit the 8-bit shifter")
    lines = [
        f"wire signed [63:0] {prefix}_acc = {sext(acc, widths.acc, 64)};",
        f"wire signed [7:0] {prefix}_shift = {sext(shift, widths.shift, 8)} + $signed({{4'd0, e}}) - 8'sd{guard};",
        f"wire signed [63:0] {prefix}_guarded = saturate(rshift_round({prefix}_acc, {prefix}_shift), "
        f"7'd{TOKEN_PRODUCT_LIMIT_BITS});",
        f"wire signed [63:0] {prefix}_scaled = rshift_round({prefix}_guarded * $signed({{60'd0, mu}}), "
        f"8'sd{guard + mantissa});",
        f"wire signed [63:0] {prefix}_sum = {prefix}_scaled + {sext(bias, widths.bias, 64)};",
        "/* verilator lint_off UNUSEDSIGNAL */  // saturated to the output width: upper bits copy the sign",
        f"wire signed [63:0] {prefix}_saturated = saturate({prefix}_sum, 7'd{out_bits});",
        "/* verilator lint_on UNUSEDSIGNAL */",
        f"wire signed [{out_bits - 1}:0] {out} = {prefix}_saturated[{out_bits - 1}:0];",
    ]
    return [indent + line for line in lines]


# -- ROM + MAC lanes ---------------------------------------------------------------------------------

def requantizers_for(lanes: int, cols: int) -> int:
    """Requantizers shared by the lanes: enough that a block's results drain (R per cycle) while
    the next block walks its columns."""
    return -(-lanes // max(cols, 1))


def matvec_rom(matrix: IntMatrix, x_bits: int, out_bits: int, lanes: int) -> dict[str, str]:
    """Modules {name: text} of the ROM style: the matvec and its three ROMs (codes, group scales,
    row constants)."""
    name = module_name(matrix.name)
    rows, cols, gw, groups = matrix.rows, matrix.cols, matrix.group_width, matrix.groups
    lanes = max(1, min(lanes, rows))
    blocks = -(-rows // lanes)
    requantizers = requantizers_for(lanes, cols)
    steps = -(-lanes // requantizers)              # drain cycles per block
    wd = bounds(matrix, x_bits)
    weights = matrix.weights()
    bias = np.zeros(rows, dtype=np.int64) if matrix.bias is None else np.asarray(matrix.bias, dtype=np.int64)

    def row(b, l):
        r = b * lanes + l
        return r if r < rows and l < lanes else None

    # ROM words: codes [blocks*cols] x lanes; scales [blocks*groups] x lanes; rows [blocks*steps] x requantizers.
    code_words = []
    for b in range(blocks):
        for j in range(cols):
            code_words.append(pack_fields([weights[r, j] if (r := row(b, l)) is not None else 0
                                           for l in range(lanes)], wd.code))
    scale_words = []
    for b in range(blocks):
        for g in range(groups):
            scale_words.append(pack_fields([int(matrix.multipliers[r, g]) if (r := row(b, l)) is not None else 0
                                            for l in range(lanes)], wd.mult))
    row_width = wd.shift + wd.bias
    row_words = []
    for b in range(blocks):
        for step in range(steps):
            fields = []
            for q in range(requantizers):
                r = row(b, step * requantizers + q)
                k, bb = (int(matrix.shifts[r]), int(bias[r])) if r is not None else (0, 0)
                fields.append(((bb & ((1 << wd.bias) - 1)) << wd.shift) | (k & ((1 << wd.shift) - 1)))
            row_words.append(pack_fields(fields, row_width))

    modules = {
        f"{name}_codes": case_rom(f"{name}_codes", code_words, lanes * wd.code,
                                  f"{matrix.name}: c - z, {lanes} lanes x {wd.code} bits, word = block * {cols} + column."),
        f"{name}_scales": case_rom(f"{name}_scales", scale_words, lanes * wd.mult,
                                   f"{matrix.name}: group multipliers m, word = block * {groups} + group."),
        f"{name}_rows": case_rom(f"{name}_rows", row_words, requantizers * row_width,
                                 f"{matrix.name}: {{bias, shift}} of the rows each drain step requantizes, "
                                 f"word = block * {steps} + step."),
    }

    code_addr_bits = index_bits(blocks * cols)
    scale_addr_bits = index_bits(blocks * groups)
    row_addr_bits = index_bits(blocks * steps)
    block_bits = index_bits(blocks)
    step_bits = index_bits(steps)
    col_bits = index_bits(cols)
    in_group_bits = index_bits(gw)
    row_bits = index_bits(blocks * lanes + 1)
    p, a = wd.partial, wd.acc
    product_bits = wd.code + x_bits
    scaled_bits = wd.mult + p

    body = [
        f"    // {rows} x {cols}, {groups} group(s) of {gw}, {lanes} lanes, {blocks} block(s), {requantizers} "
        f"requantizer(s): {blocks * cols + steps + 1} cycles per product.",
        f"    localparam [{col_bits - 1}:0] LAST_COL = {col_bits}'d{cols - 1};",
        f"    localparam [{in_group_bits - 1}:0] LAST_IN_GROUP = {in_group_bits}'d{gw - 1};",
        f"    localparam [{block_bits - 1}:0] LAST_BLOCK = {block_bits}'d{blocks - 1};",
        f"    localparam [{step_bits - 1}:0] LAST_STEP = {step_bits}'d{steps - 1};",
        "",
        "    reg running;                       // walking the columns of a block",
        "    reg draining;                      // requantizing the block just finished",
        f"    reg [{block_bits - 1}:0] block;",
        f"    reg [{block_bits - 1}:0] drain_block;",
        f"    reg [{step_bits - 1}:0] step;",
        f"    reg [{col_bits - 1}:0] col;",
        f"    reg [{in_group_bits - 1}:0] in_group;",
        f"    reg [{code_addr_bits - 1}:0] code_addr;",
        f"    reg [{scale_addr_bits - 1}:0] scale_addr;",
        f"    reg [{row_addr_bits - 1}:0] row_addr;",
        f"    reg signed [{a - 1}:0] held [0:{lanes - 1}];   // each lane's finished row sum, waiting for a requantizer",
        f"    wire [{lanes * wd.code - 1}:0] code_word;",
        f"    wire [{lanes * wd.mult - 1}:0] scale_word;",
        f"    wire [{requantizers * row_width - 1}:0] row_word;",
        f"    {name}_codes codes (.addr(code_addr), .data(code_word));",
        f"    {name}_scales scales (.addr(scale_addr), .data(scale_word));",
        f"    {name}_rows row_constants (.addr(row_addr), .data(row_word));",
        "",
        "    wire last_col = col == LAST_COL;",
        "    wire group_end = last_col || in_group == LAST_IN_GROUP;",
        f"    wire signed [{x_bits - 1}:0] xj = x[col * {x_bits} +: {x_bits}];     // x_j, broadcast to every lane",
        RSHIFT_ROUND, SATURATE,
        "    always @(posedge clk) begin",
        "        done <= 1'b0;",
        "        if (rst) begin",
        "            running <= 1'b0;",
        "            draining <= 1'b0;",
        "        end else begin",
        "            if (draining) begin",
        f"                step <= step + {step_bits}'d1;",
        f"                row_addr <= row_addr + {row_addr_bits}'d1;",
        "                if (step == LAST_STEP) begin",
        "                    draining <= 1'b0;",
        "                    if (!running) done <= 1'b1;",
        "                end",
        "            end",
        "            if (running && last_col) begin    // the block's sums move aside (`held`); the lanes start the next",
        "                draining <= 1'b1;",
        "                drain_block <= block;",
        f"                step <= {step_bits}'d0;",
        "            end",
        "            if (start) begin",
        "                running <= 1'b1;",
        f"                block <= {block_bits}'d0;",
        f"                col <= {col_bits}'d0;",
        f"                in_group <= {in_group_bits}'d0;",
        f"                code_addr <= {code_addr_bits}'d0;",
        f"                scale_addr <= {scale_addr_bits}'d0;",
        f"                row_addr <= {row_addr_bits}'d0;",
        "            end else if (running) begin",
        f"                code_addr <= code_addr + {code_addr_bits}'d1;",
        f"                if (group_end) scale_addr <= scale_addr + {scale_addr_bits}'d1;",
        f"                in_group <= group_end ? {in_group_bits}'d0 : in_group + {in_group_bits}'d1;",
        "                if (last_col) begin",
        f"                    col <= {col_bits}'d0;",
        f"                    block <= block + {block_bits}'d1;",
        "                    if (block == LAST_BLOCK) running <= 1'b0;",
        "                end else begin",
        f"                    col <= col + {col_bits}'d1;",
        "                end",
        "            end",
        "        end",
        "    end",
        "",
    ]
    # partial + product must not lose the product: widen the sum to the larger of the two.
    sum_bits = max(p, product_bits)
    add_bits = max(a, scaled_bits)
    body += [
        "    genvar l;",
        "    generate",
        f"        for (l = 0; l < {lanes}; l = l + 1) begin : lane",
        f"            wire signed [{wd.code - 1}:0] weight = code_word[l * {wd.code} +: {wd.code}];",
        f"            wire signed [{wd.mult - 1}:0] multiplier = scale_word[l * {wd.mult} +: {wd.mult}];",
        f"            reg signed [{p - 1}:0] partial;     // running sum over the current group",
        f"            reg signed [{a - 1}:0] acc;         // sum of the row's scaled groups so far",
        f"            wire signed [{product_bits - 1}:0] product = "
        f"{sext('weight', wd.code, product_bits)} * {sext('xj', x_bits, product_bits)};",
        f"            wire signed [{sum_bits - 1}:0] partial_sum = "
        f"{sext('partial', p, sum_bits)} + {sext('product', product_bits, sum_bits)};",
        f"            wire signed [{p - 1}:0] group_sum = partial_sum[{p - 1}:0];",
        f"            wire signed [{scaled_bits - 1}:0] scaled = "
        f"{sext('multiplier', wd.mult, scaled_bits)} * {sext('group_sum', p, scaled_bits)};",
        *(["            /* verilator lint_off UNUSEDSIGNAL */  // |acc| stays within the bound computed from the "
           "constants; the upper bits only keep the product unclipped"] if add_bits > a else []),
        f"            wire signed [{add_bits - 1}:0] acc_sum = "
        f"{sext('acc', a, add_bits)} + {sext('scaled', scaled_bits, add_bits)};",
        *(["            /* verilator lint_on UNUSEDSIGNAL */"] if add_bits > a else []),
        "            always @(posedge clk) begin",
        "                if (start) begin",
        f"                    partial <= {literal(0, p, True)};",
        f"                    acc <= {literal(0, a, True)};",
        "                end else if (running) begin",
        f"                    partial <= group_end ? {literal(0, p, True)} : group_sum;",
        "                    if (group_end)",
        f"                        acc <= last_col ? {literal(0, a, True)} : acc_sum[{a - 1}:0];",
        f"                    if (last_col) held[l] <= acc_sum[{a - 1}:0];",
        "                end",
        "            end",
        "        end",
        "    endgenerate",
    ]
    lane_bits = index_bits(lanes)
    step_wide = "step" if row_bits == step_bits else f"{{{row_bits - step_bits}'d0, step}}"
    block_wide = "drain_block" if row_bits == block_bits else f"{{{row_bits - block_bits}'d0, drain_block}}"
    for q in range(requantizers):
        prefix = f"requantizer{q}"
        body += [
            f"    // requantizer {q}: lane step * {requantizers} + {q} of the block being drained",
            f"    wire [{row_bits - 1}:0] {prefix}_slot = {step_wide} * {row_bits}'d{requantizers} + {row_bits}'d{q};",
            f"    wire [{row_bits - 1}:0] {prefix}_row = {block_wide} * {row_bits}'d{lanes} + {prefix}_slot;",
            f"    wire [{lane_bits - 1}:0] {prefix}_lane = {prefix}_slot[{lane_bits - 1}:0];",
            f"    wire signed [{a - 1}:0] {prefix}_sum = held[{prefix}_lane];",
            f"    wire signed [{wd.shift - 1}:0] {prefix}_shift = row_word[{q * row_width} +: {wd.shift}];",
            f"    wire signed [{wd.bias - 1}:0] {prefix}_bias = row_word[{q * row_width + wd.shift} +: {wd.bias}];",
        ]
        body += requantize_lines(f"{prefix}_requant", f"{prefix}_sum", f"{prefix}_shift", f"{prefix}_bias",
                                 f"{prefix}_y", wd, out_bits)
        body += [
            "    always @(posedge clk)",
            f"        if (draining && {prefix}_slot < {row_bits}'d{lanes} && {prefix}_row < {row_bits}'d{rows})",
            f"            y[{prefix}_row * {out_bits} +: {out_bits}] <= {prefix}_y;",
        ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"),
             Port("input", "x", cols * x_bits), Port("input", "mu", 4), Port("input", "e", 4),
             Port("output", "done", reg=True),
             Port("output", "y", rows * out_bits, reg=True)]
    comment = (f"§3 matvec of {matrix.name} (docs/arithmetic.md), ROM + {lanes} MAC lanes.\n"
               f"a_i = sat59(round(sum_g m_ig sum_j (c_ij - z_ig) x_j * 2^-(k_i + e - 7))); y_i = sat{out_bits}(round(a_i mu 2^-10) + b_i)")
    modules[name] = module(name, ports, "\n".join(body), comment)
    return modules


# -- fully hardwired constant multipliers --------------------------------------------------------

def matvec_hardwired(matrix: IntMatrix, x_bits: int, out_bits: int) -> dict[str, str]:
    """Modules of the hardwired style: each row an adder tree of constant multiples of x."""
    name = module_name(matrix.name)
    rows, cols, gw, groups = matrix.rows, matrix.cols, matrix.group_width, matrix.groups
    wd = bounds(matrix, x_bits)
    weights = matrix.weights()
    p, a = wd.partial, wd.acc
    body = [
        f"    // {rows} x {cols}, {groups} group(s) of {gw}: every weight a constant multiplier, 2 cycles.",
        RSHIFT_ROUND, SATURATE,
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
        body += requantize_lines(f"row{r}_requant", f"row{r}_acc", f"row{r}_shift", f"row{r}_bias",
                                 f"row{r}_y", wd, out_bits)
        outputs.append(f"row{r}_y")
    body += [
        "    always @(posedge clk) begin",
        "        done <= start && !rst;",
        "        if (start) y <= {" + ", ".join(reversed(outputs)) + "};",
        "    end",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"),
             Port("input", "x", cols * x_bits), Port("input", "mu", 4), Port("input", "e", 4),
             Port("output", "done", reg=True),
             Port("output", "y", rows * out_bits, reg=True)]
    comment = (f"§3 matvec of {matrix.name} (docs/arithmetic.md), hardwired constant multipliers.\n"
               f"a_i = sat59(round(sum_g m_ig sum_j (c_ij - z_ig) x_j * 2^-(k_i + e - 7))); y_i = sat{out_bits}(round(a_i mu 2^-10) + b_i)")
    return {name: module(name, ports, "\n".join(body), comment)}


def matvec_modules(matrix: IntMatrix, x_bits: int, out_bits: int, style: str = "rom",
                   lanes: int = 16) -> dict[str, str]:
    if style == "rom":
        return matvec_rom(matrix, x_bits, out_bits, lanes)
    if style == "hardwired":
        return matvec_hardwired(matrix, x_bits, out_bits)
    raise ValueError(f"unknown matvec style {style!r}; expected one of {', '.join(STYLES)}")


def matvec_cycles(matrix: IntMatrix, style: str, lanes: int) -> int:
    """Cycles from `start` to `done` (what the top-level schedule and the chip model count)."""
    if style == "hardwired":
        return 1
    lanes = max(1, min(lanes, matrix.rows))
    steps = -(-lanes // requantizers_for(lanes, matrix.cols))
    return -(-matrix.rows // lanes) * matrix.cols + steps + 1
