"""§11 a patch's low-rank path (docs/arithmetic.md): the terms an adapter adds to a matrix's accumulators.

    t_j  = sum_k a_jk x_k                              the A pass: `rank` lanes, one column of x a cycle
    t'_j = sat16(rshift_round(t_j a_mult_j, a_shift))  the inner pass: one rank row a cycle
    u_i  = sum_j b_ij t'_j                             the B pass: one row a cycle, `rank` products summed
    T_i  = rshift_round(u_i b_mult_i, b_shift)         -> term, read by the matrix's requantizers

Golden: `hardwire.golden.adapter.adapter_term`. The block's constants are not in the Verilog: they sit
in its adapter SRAM, which the testbench loads when the simulation starts (`$readmemh` of the files
`sram_image` lays out, under `adapter_sram/` of the simulator's working directory, when the
simulator is given `+adapter_sram`); without it the SRAM is zero and every T_i is 0, so the matrix
computes exactly its unpatched result. The SRAM has room for rank `rank` (the hardware's largest);
a patch of lower rank leaves the rest zero, which adds nothing. So the generated Verilog is the same
with or without a patch, and one Verilator build runs any patch that fits.

SRAM layout (one memory per part, word = what one cycle reads):
  a        cols words of rank x 8 bits: column k = {a_(rank-1)k, ..., a_0k}   (read a cycle ahead)
  a_mult   rank words of 16 bits                                              (read in the cycle used)
  b        rows words of 23 + rank x 8 bits: row i = {b_mult_i, b_i(rank-1), ..., b_i0}   (a cycle ahead)
  shifts   one word: {b_shift, a_shift}, 6 bits each                          (read in the cycle used)
a and b are SRAM arrays with a registered read; a_mult and shifts, rank + 1 words, are read
without a register, as a small register file would be.

Interface: `start` (one-cycle pulse, x held stable until the matrix it feeds is done), `done`
(one-cycle pulse; `term` then holds until the next `start`). Cycles: cols + rank + rows + 3
(`hardwire.datapath.LowRank`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardwire.adapters import (ADAPTER_A_MULT_BITS, ADAPTER_B_MULT_BITS, ADAPTER_CODE_BITS, ADAPTER_INNER_BITS,
                               ADAPTER_SHIFT_BITS, CODE_LIMIT, Adapter)
from hardwire.rtl.emit import (RSHIFT_ROUND, SATURATE, Fsm, Port, index_bits, last_value, module, pack_fields, sext,
                               signed_bits, word_read, word_write, zext)

SRAM_DIRECTORY = "adapter_sram"        # the simulator's working directory holds the SRAM images here
SRAM_PLUSARG = "adapter_sram"          # `+adapter_sram` on the simulator's command line loads them
SRAM_PARTS = ("a", "a_mult", "b", "shifts")
INNER_LIMIT = (1 << (ADAPTER_INNER_BITS - 1)) - 1
B_MULT_MAX = (1 << ADAPTER_B_MULT_BITS) - 1


def adapter_name(matrix_name: str) -> str:
    return "hw_adapter_" + matrix_name.replace(".", "_")


def sram_file(matrix_name: str, part: str) -> str:
    """The SRAM image of one part, relative to the simulator's working directory."""
    return f"{SRAM_DIRECTORY}/{matrix_name.replace('.', '_')}.{part}.hex"


@dataclass(frozen=True)
class AdapterWidths:
    """Exact worst-case widths of the low-rank path for any codes, multipliers and shifts."""

    t: int            # t_j = sum_k a_jk x_k
    u: int            # u_i = sum_j b_ij t'_j
    term: int         # T_i

    @classmethod
    def of(cls, cols: int, rank: int, x_bits: int) -> "AdapterWidths":
        t_max = CODE_LIMIT * (1 << (x_bits - 1)) * cols
        u_max = CODE_LIMIT * INNER_LIMIT * rank
        term_max = u_max * B_MULT_MAX          # b_shift >= 0 only divides
        return cls(signed_bits(-t_max, t_max), signed_bits(-u_max, u_max), signed_bits(-term_max, term_max))


def term_bits(cols: int, rank: int, x_bits: int) -> int:
    """Width of the `term` port (what the matrix's requantizers add to their row sums)."""
    return AdapterWidths.of(cols, rank, x_bits).term


# -- the SRAM contents a patch loads ------------------------------------------------------------------

def sram_image(adapter: Adapter | None, rows: int, cols: int, rank: int) -> dict[str, list[int]]:
    """The words of each SRAM part (unsigned bit patterns, in `SRAM_PARTS` order) for `adapter` on a
    block of `rank` lanes; None (no adapter on this matrix): all zero."""
    a = np.zeros((rank, cols), np.int64)
    b = np.zeros((rows, rank), np.int64)
    a_mult = np.zeros(rank, np.int64)
    b_mult = np.zeros(rows, np.int64)
    a_shift = b_shift = 0
    if adapter is not None:
        if adapter.rank > rank or (adapter.rows, adapter.cols) != (rows, cols):
            raise ValueError(f"{adapter.target}: rank {adapter.rank} [{adapter.rows}, {adapter.cols}] does not fit "
                             f"a block of rank {rank} [{rows}, {cols}]")
        a[:adapter.rank] = adapter.a
        b[:, :adapter.rank] = adapter.b
        a_mult[:adapter.rank] = adapter.a_mult
        b_mult[:] = adapter.b_mult
        a_shift, b_shift = adapter.a_shift, adapter.b_shift
    code_bits = ADAPTER_CODE_BITS
    return {"a": [pack_fields(a[:, k], code_bits) for k in range(cols)],
            "a_mult": [int(m) for m in a_mult],
            "b": [pack_fields(b[i], code_bits) | (int(b_mult[i]) << (rank * code_bits)) for i in range(rows)],
            "shifts": [(b_shift << ADAPTER_SHIFT_BITS) | a_shift]}


def write_sram_images(directory, blocks: dict[str, tuple[int, int]], rank: int, adapters: dict[str, Adapter]) -> None:
    """`adapter_sram/*.hex` under `directory` for every low-rank block (matrix name -> (rows, cols)):
    the patch's adapter where it has one, zeros elsewhere ($readmemh wants every file)."""
    from pathlib import Path
    for name, (rows, cols) in blocks.items():
        image = sram_image(adapters.get(name), rows, cols, rank)
        for part in SRAM_PARTS:
            path = Path(directory) / sram_file(name, part)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{word:x}\n" for word in image[part]))


# -- the block ------------------------------------------------------------------------------------------

def sram_declarations(name: str, rows: int, cols: int, rank: int) -> list[str]:
    """The adapter SRAM as four memories, zero unless the simulator is asked to load the images."""
    b_bits = ADAPTER_B_MULT_BITS + rank * ADAPTER_CODE_BITS
    memories = [("a_sram", rank * ADAPTER_CODE_BITS, cols, "a"), ("a_mult_sram", ADAPTER_A_MULT_BITS, rank, "a_mult"),
                ("b_sram", b_bits, rows, "b"), ("shift_sram", 2 * ADAPTER_SHIFT_BITS, 1, "shifts")]
    lines = ["    // The adapter SRAM (written by the host at run time; in simulation, loaded from files at start)"]
    lines += [f"    reg [{bits - 1}:0] {memory} [0:{depth - 1}];" for memory, bits, depth, _ in memories]
    lines += ["    integer s;", "    initial begin"]
    for memory, bits, depth, _ in memories:
        lines.append(f"        for (s = 0; s < {depth}; s = s + 1) {memory}[s] = {bits}'d0;")
    lines += ["`ifndef SYNTHESIS", f'        if ($test$plusargs("{SRAM_PLUSARG}")) begin']
    lines += [f'            $readmemh("{sram_file(name, part)}", {memory});' for memory, _, _, part in memories]
    lines += ["        end", "`endif", "    end"]
    return lines


def arithmetic(widths: AdapterWidths, x_bits: int) -> list[str]:
    """One lane's A step, one t', one row's B product sum step and one T, as element functions."""
    code, inner = ADAPTER_CODE_BITS, ADAPTER_INNER_BITS
    t, u, term = widths.t, widths.u, widths.term

    def shift(name: str) -> str:         # an unsigned 6-bit shift as rshift_round's signed 8-bit one
        return f"$signed({zext(name, ADAPTER_SHIFT_BITS, 8)})"

    def unsigned(name: str, bits: int) -> str:    # an unsigned multiplier as a non-negative 64-bit operand
        return f"$signed({zext(name, bits, 64)})"
    return [
        RSHIFT_ROUND, SATURATE,
        f"    // t_j + a_jk x_k, exact within the bound of t ({t} bits)",
        f"    function signed [{t - 1}:0] a_step;",
        f"        input signed [{t - 1}:0] as_sum;",
        f"        input signed [{code - 1}:0] as_code;",
        f"        input signed [{x_bits - 1}:0] as_x;",
        f"        a_step = as_sum + {sext('as_code', code, t)} * {sext('as_x', x_bits, t)};",
        "    endfunction",
        "    // t'_j = sat16(rshift_round(t_j a_mult_j, a_shift))",
        f"    function signed [{inner - 1}:0] inner_of;",
        f"        input signed [{t - 1}:0] io_t;",
        f"        input [{ADAPTER_A_MULT_BITS - 1}:0] io_mult;",
        f"        input [{ADAPTER_SHIFT_BITS - 1}:0] io_shift;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // saturated to 16 bits: the upper bits copy the sign",
        "        reg signed [63:0] io_value;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        f"            io_value = saturate(rshift_round({sext('io_t', t, 64)} * {unsigned('io_mult', ADAPTER_A_MULT_BITS)}, "
        f"{shift('io_shift')}), 7'd{inner});",
        f"            inner_of = io_value[{inner - 1}:0];",
        "        end",
        "    endfunction",
        f"    // u_i + b_ij t'_j, exact within the bound of u ({u} bits)",
        f"    function signed [{u - 1}:0] b_step;",
        f"        input signed [{u - 1}:0] bs_sum;",
        f"        input signed [{code - 1}:0] bs_code;",
        f"        input signed [{inner - 1}:0] bs_inner;",
        f"        b_step = bs_sum + {sext('bs_code', code, u)} * {sext('bs_inner', inner, u)};",
        "    endfunction",
        f"    // T_i = rshift_round(u_i b_mult_i, b_shift), within {term} bits",
        f"    function signed [{term - 1}:0] term_of;",
        f"        input signed [{u - 1}:0] to_u;",
        f"        input [{ADAPTER_B_MULT_BITS - 1}:0] to_mult;",
        f"        input [{ADAPTER_SHIFT_BITS - 1}:0] to_shift;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // |T| is within its bound: the upper bits copy the sign",
        "        reg signed [63:0] to_value;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        f"            to_value = rshift_round({sext('to_u', u, 64)} * {unsigned('to_mult', ADAPTER_B_MULT_BITS)}, "
        f"{shift('to_shift')});",
        f"            term_of = to_value[{term - 1}:0];",
        "        end",
        "    endfunction",
    ]


def adapter_module(matrix_name: str, rows: int, cols: int, rank: int, x_bits: int) -> dict[str, str]:
    """The low-rank block of matrix `matrix_name` (rows x cols) with `rank` lanes, reading x_bits inputs."""
    name = adapter_name(matrix_name)
    widths = AdapterWidths.of(cols, rank, x_bits)
    code = ADAPTER_CODE_BITS
    col_bits, rank_bits, row_bits = index_bits(cols), index_bits(rank), index_bits(rows)
    b_bits = ADAPTER_B_MULT_BITS + rank * code
    fsm = Fsm(("IDLE", "A_WALK", "A_LAST", "INNER", "B_WALK", "B_LAST"))
    shifts = "shift_sram[0]"
    a_shift = f"{shifts}[{ADAPTER_SHIFT_BITS - 1}:0]"
    b_shift = f"{shifts}[{2 * ADAPTER_SHIFT_BITS - 1}:{ADAPTER_SHIFT_BITS}]"
    body = [
        f"    // rank {rank}: A pass {cols} cycles, inner pass {rank}, B pass {rows}: {cols + rank + rows + 3} cycles.",
        *fsm.localparams(),
        fsm.declaration(),
        last_value("LAST_COL", cols - 1, col_bits),
        last_value("LAST_RANK", rank - 1, rank_bits),
        last_value("LAST_ROW", rows - 1, row_bits),
        f"    localparam integer RANK = {rank};",
        *sram_declarations(matrix_name, rows, cols, rank),
        f"    reg [{col_bits - 1}:0] col;",
        f"    reg [{rank_bits - 1}:0] rank_index;",
        f"    reg [{row_bits - 1}:0] row;",
        "    reg a_valid;                       // a_word and lane_x hold column col - 1: the lanes use them",
        f"    reg [{rank * code - 1}:0] a_word;",
        f"    reg signed [{x_bits - 1}:0] lane_x;",
        "    reg b_valid;                       // b_word holds row b_row: its term is formed",
        f"    reg [{b_bits - 1}:0] b_word;",
        f"    reg [{row_bits - 1}:0] b_row;",
        f"    reg signed [{widths.t - 1}:0] t [0:{rank - 1}];        // each lane's t_j",
        f"    reg signed [{ADAPTER_INNER_BITS - 1}:0] inner [0:{rank - 1}];   // t'_j",
        f"    reg signed [{widths.u - 1}:0] u;                  // a temporary of the clocked block",
        f"    reg signed [{widths.term - 1}:0] term_now;",
        "    integer l;",
        *arithmetic(widths, x_bits),
        "",
        "    // t, inner, u and term are written with blocking assignments (arrays in loops, a wide vector",
        "    // part by part); every read comes before the write in this block's text, and term is read by",
        "    // the matrix only after `done`.",
        "    /* verilator lint_off BLKSEQ */",
        "    always @(posedge clk) begin",
        "        done <= 1'b0;",
        "        if (!rst && (start || state != IDLE)) begin   // idle otherwise",
        "            // the B pass: the row read last cycle",
        "            u = " + f"{widths.u}'sd0;",
        "            term_now = " + f"{widths.term}'sd0;",
        "            if (b_valid) begin",
        "                for (l = 0; l < RANK; l = l + 1)",
        f"                    u = b_step(u, b_word[l * {code} +: {code}], inner[l]);",
        f"                term_now = term_of(u, b_word[{b_bits - 1}:{rank * code}], {b_shift});",
        *word_write("term", rows, widths.term, "b_row", "term_now", " " * 16, row_bits),
        "            end",
        "            // the A pass: every lane takes the column read last cycle",
        "            if (a_valid)",
        "                for (l = 0; l < RANK; l = l + 1)",
        f"                    t[l] = a_step(t[l], a_word[l * {code} +: {code}], lane_x);",
        "            case (state)",
        "                IDLE: begin",
        f"                    col <= {col_bits}'d0;",
        "                    for (l = 0; l < RANK; l = l + 1)",
        f"                        t[l] = {widths.t}'sd0;",
        "                    state <= A_WALK;",
        "                end",
        "                A_WALK: begin",
        "                    a_word <= a_sram[col];",
        *word_read("x", cols, x_bits, "col", "lane_x", " " * 20, col_bits, assign="<="),
        "                    a_valid <= 1'b1;",
        f"                    col <= col + {col_bits}'d1;",
        "                    if (col == LAST_COL) state <= A_LAST;",
        "                end",
        "                A_LAST: begin                  // the lanes take the last column",
        "                    a_valid <= 1'b0;",
        f"                    rank_index <= {rank_bits}'d0;",
        "                    state <= INNER;",
        "                end",
        "                INNER: begin",
        f"                    inner[rank_index] = inner_of(t[rank_index], a_mult_sram[rank_index], {a_shift});",
        f"                    rank_index <= rank_index + {rank_bits}'d1;",
        "                    if (rank_index == LAST_RANK) begin",
        f"                        row <= {row_bits}'d0;",
        "                        state <= B_WALK;",
        "                    end",
        "                end",
        "                B_WALK: begin",
        "                    b_word <= b_sram[row];",
        "                    b_row <= row;",
        "                    b_valid <= 1'b1;",
        f"                    row <= row + {row_bits}'d1;",
        "                    if (row == LAST_ROW) state <= B_LAST;",
        "                end",
        "                B_LAST: begin                  // the last row's term is formed",
        "                    b_valid <= 1'b0;",
        "                    done <= 1'b1;",
        "                    state <= IDLE;",
        "                end",
        "                default: state <= IDLE;",
        "            endcase",
        "        end",
        "        if (rst) begin",
        "            state <= IDLE;",
        "            a_valid <= 1'b0;",
        "            b_valid <= 1'b0;",
        "        end",
        "    end",
        "    /* verilator lint_on BLKSEQ */",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"), Port("input", "x", cols * x_bits),
             Port("output", "done", reg=True), Port("output", "term", rows * widths.term, reg=True)]
    comment = (f"§11 low-rank path of {matrix_name} (docs/arithmetic.md), rank {rank}, constants from its "
               "adapter SRAM.\nT_i = round(b_mult_i sum_j b_ij sat16(round(a_mult_j sum_k a_jk x_k 2^-a_shift)) 2^-b_shift)")
    return {name: module(name, ports, "\n".join(body), comment)}
