"""§5 RoPE (docs/arithmetic.md): rotate pairs (j, j + d/2) of each head by Q1.14 cos/sin of the position.

    x_j <- sat16(round((a c - b s) * 2^-14)),   x_{j+d/2} <- sat16(round((b c + a s) * 2^-14))

Golden: `hardwire.golden.forward.rope`. One block rotates q and k together (their heads laid end to
end, q first), one head per cycle; cos and sin of the position come from a `case` ROM with one word
per position. Cycles: heads + kv_heads + 1.
"""
from __future__ import annotations

import numpy as np

from hardwire.arithmetic import INTERNAL_BITS, ROPE_FRAC_BITS
from hardwire.rtl.emit import (RSHIFT_ROUND, SATURATE, Port, case_rom, index_bits, last_value, module, pack_fields,
                               stepped_always, word_read, word_write)


def rope_table_module(cos: np.ndarray, sin: np.ndarray, positions: int) -> tuple[str, str]:
    """Word p = {sin[p, half-1..0], cos[p, half-1..0]}, 16 bits each."""
    name = "hw_rope_table"
    half = cos.shape[1]
    words = [pack_fields(list(cos[p]) + list(sin[p]), 16) for p in range(positions)]
    return name, case_rom(name, words, 2 * half * 16, f"§5 RoPE cos, sin in Q1.14 for {positions} positions.")


def rope_module(heads: int, head_dim: int, positions: int) -> dict[str, str]:
    """`hw_rope`: rotates `heads` heads (q heads then k heads) of a 16-bit vector at position `pos`."""
    name = "hw_rope"
    half = head_dim // 2
    width = heads * head_dim * INTERNAL_BITS
    head_bits = index_bits(heads)
    pos_bits = index_bits(positions)
    w = INTERNAL_BITS
    body = [
        f"    // {heads} heads of {head_dim}: {heads + 1} cycles.",
        last_value("LAST_HEAD", heads - 1, head_bits),
        "    reg running;",
        f"    reg [{head_bits - 1}:0] head;",
        f"    wire [{2 * half * 16 - 1}:0] angles;",
        "    hw_rope_table table_ (.addr(pos), .data(angles));",
        RSHIFT_ROUND, SATURATE,
        "    // one rotated element: sat16(round((a c -+ b s) 2^-14)), a function of single elements so a",
        "    // simulator evaluates it only in the cycles it is used",
        f"    function [{w - 1}:0] rotated;",
        f"        input [{w - 1}:0] a_in;",
        f"        input [{w - 1}:0] b_in;",
        "        input [15:0] c_in;",
        "        input [15:0] s_in;",
        "        input second_half;         // 0: a c - b s; 1: b c + a s",
        "        reg signed [63:0] a, b, c, s;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // saturated to 16 bits: the upper bits copy the sign",
        "        reg signed [63:0] value;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        f"            a = $signed({{{{{64 - w}{{a_in[{w - 1}]}}}}, a_in}});",
        f"            b = $signed({{{{{64 - w}{{b_in[{w - 1}]}}}}, b_in}});",
        "            c = $signed({{48{c_in[15]}}, c_in});",
        "            s = $signed({{48{s_in[15]}}, s_in});",
        f"            value = saturate(rshift_round(second_half ? b * c + a * s : a * c - b * s, 8'sd{ROPE_FRAC_BITS}), 7'd{w});",
        f"            rotated = value[{w - 1}:0];",
        "        end",
        "    endfunction",
        "    integer j;",
        f"    reg [{w - 1}:0] a_j, b_j;",
        f"    reg [{head_dim * w - 1}:0] y_now;     // the head being rotated",
        "    // y is written with blocking assignments (a non-blocking write to part of a wide vector makes",
        "    // verilated code copy all of it twice in every cycle); it is read here, each head before its",
        "    // write, and outside only after `done`, so the result is that of non-blocking writes.",
        "    /* verilator lint_off BLKSEQ */",
        *stepped_always("head", head_bits, "LAST_HEAD", "done", [
            *word_read("y", heads, head_dim * w, "head", "y_now", "            "),
            f"            for (j = 0; j < {half}; j = j + 1) begin",
            f"                a_j = y_now[j * {w} +: {w}];",
            f"                b_j = y_now[(j + {half}) * {w} +: {w}];",
            f"                y_now[j * {w} +: {w}] = rotated(a_j, b_j, angles[j * 16 +: 16], angles[({half} + j) * 16 +: 16], 1'b0);",
            f"                y_now[(j + {half}) * {w} +: {w}] = rotated(a_j, b_j, angles[j * 16 +: 16], "
            f"angles[({half} + j) * 16 +: 16], 1'b1);",
            "            end",
            *word_write("y", heads, head_dim * w, "head", "y_now", "            "),
        ], on_start=["            y = x;"]),
        "    /* verilator lint_on BLKSEQ */",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"), Port("input", "pos", pos_bits),
             Port("input", "x", width), Port("output", "done", reg=True), Port("output", "y", width, reg=True)]
    return {name: module(name, ports, "\n".join(body), "§5 RoPE (docs/arithmetic.md), one head per cycle.")}
