"""§7 SwiGLU (docs/arithmetic.md): silu(g) = round(g * sigmoid(g) * 2^-15); x = token_quantize(round(silu(g) * u * m * 2^-(k - 8))).

Golden: `hardwire.golden.forward.swiglu` with `sigmoid_lookup` of `hardwire.arithmetic`:
sigmoid is read from a 2048-entry Q0.15 table at index round(g * m_i * 2^-k_i), clamped to the
table. `per_cycle` elements per cycle, each with its own table port; then §2.2 token_quantize.
A die with §12's online transform (`hadamard_block` > 1; golden `swiglu_hadamard`) has the
transform (rtl/blocks/hadamard.py) between the wide buffer and the quantizer.
Cycles: ceil(ffn / per_cycle) + 1, plus the transform's (ffn / n + 1), plus token_quantize's.
"""
from __future__ import annotations

import numpy as np

from hardwire.arithmetic import INTERNAL_BITS, SIGMOID_FRAC_BITS, SIGMOID_TABLE_SIZE, TOKEN_FRAC_BITS
from hardwire.rtl.blocks.hadamard import hadamard_module
from hardwire.rtl.blocks.token_scale import (clamp_function, quantizer_instance, quantizer_wiring, token_quantize_module,
                                             wide_bits)
from hardwire.datapath import chunk_plan
from hardwire.rtl.emit import (RSHIFT_ROUND, Port, index_bits, last_value, module, parameters, stepped_always,
                               word_read, word_write)

SIGMOID_HALF = SIGMOID_TABLE_SIZE // 2


def swiglu_name(ffn: int, act_bits: int, per_cycle: int, hadamard_block: int = 1) -> str:
    per, _ = chunk_plan(ffn, per_cycle)
    return f"hw_swiglu_{ffn}x{act_bits}_p{per}" + (f"_h{hadamard_block}" if hadamard_block > 1 else "")


def transform_stage(ffn: int, act_bits: int, hadamard_block: int, quantizer: str) -> tuple[str, str, list[str]]:
    """(the transform's module name, its text, the lines wiring it): SwiGLU fills `raw` and pulses
    `go_transform`; the transform writes `wide` and its `done` starts the quantizer `quantizer`."""
    name, text = hadamard_module(ffn, act_bits, hadamard_block)
    wb = wide_bits(act_bits)
    lines = [
        "    reg go_transform;",
        "    wire go_quantize, quantize_done;",
        f"    reg [{ffn * wb - 1}:0] raw;        // silu(g) u m in units of sqrt(n) s * 2^-8, clamped (§12)",
        f"    wire [{ffn * wb - 1}:0] wide;      // H_n raw, clamped: the quantizer's input",
        f"    {name} transform (.clk(clk), .rst(rst), .start(go_transform), .wide_in(raw), .done(go_quantize),",
        "        .wide_out(wide));",
        *quantizer_wiring(quantizer, "x"),
    ]
    return name, text, lines


def swiglu_module(ffn: int, act_bits: int, sigmoid_table: np.ndarray, per_cycle: int = 8,
                  hadamard_block: int = 1) -> dict[str, str]:
    """The SwiGLU block shared by every layer; each layer wires in its own multipliers. The sigmoid
    table (§7, 2048 entries of 2^15 sigmoid(i 2^-6), i in [-1024, 1024)) is a `case` function, one
    copy per element lane. `hadamard_block` > 1: §12's transform before the quantizer."""
    module_name = swiglu_name(ffn, act_bits, per_cycle, hadamard_block)
    per, chunks = chunk_plan(ffn, per_cycle)
    chunk_bits = index_bits(chunks)
    w = INTERNAL_BITS
    wb = wide_bits(act_bits)
    tq_name, tq_text = token_quantize_module(ffn, act_bits, per_cycle)
    extra: dict[str, str] = {}
    if hadamard_block > 1:
        transform_name, transform_text, wiring = transform_stage(ffn, act_bits, hadamard_block, tq_name)
        extra[transform_name] = transform_text
        buffer, go_next = "raw", "go_transform"
    else:
        wiring = quantizer_instance(tq_name, ffn * wb,
                                    "        // silu(g) u m in units of s * 2^-8, clamped, before the token scale", "x")
        buffer, go_next = "wide", "go_quantize"
    body = [
        *parameters(("index_mult", 64), ("index_shift", 8), ("mult", 64), ("shift", 8)),
        f"    // {ffn} elements, {per} per cycle: {chunks + 1} cycles.",
        last_value("LAST_CHUNK", chunks - 1, chunk_bits),
        f"    wire signed [7:0] wide_shift = shift - 8'sd{TOKEN_FRAC_BITS};",
        *wiring,
        "    reg running;",
        f"    reg [{chunk_bits - 1}:0] chunk;",
        RSHIFT_ROUND,
        clamp_function(act_bits),
        "    // §7 2^15 sigmoid(i 2^-6), entry i + 1024",
        "    function [15:0] sigmoid;",
        "        input [10:0] address;",
        "        begin",
        "            case (address)",
        *[f"                11'd{i}: sigmoid = 16'd{int(v)};" for i, v in enumerate(sigmoid_table) if int(v)],
        "                default: sigmoid = 16'd0;",
        "            endcase",
        "        end",
        "    endfunction",
        "    // One element: silu(g) u m in units of s * 2^-8 (a function of single elements, so a simulator",
        "    // evaluates it only in the cycles it is used)",
        "    function signed [63:0] swiglu_element;",
        f"        input [{w - 1}:0] g;",
        f"        input [{w - 1}:0] u;",
        "        reg signed [63:0] g_wide, u_wide, index, silu;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // clamped to 11 bits: upper bits copy the sign",
        "        reg signed [63:0] clamped;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        f"            g_wide = {{{{{64 - w}{{g[{w - 1}]}}}}, g}};",
        f"            u_wide = {{{{{64 - w}{{u[{w - 1}]}}}}, u}};",
        "            index = rshift_round(g_wide * index_mult, index_shift);",
        f"            clamped = index < -64'sd{SIGMOID_HALF} ? -64'sd{SIGMOID_HALF} :",
        f"                      index > 64'sd{SIGMOID_HALF - 1} ? 64'sd{SIGMOID_HALF - 1} : index;",
        f"            silu = rshift_round(g_wide * $signed({{48'h0, sigmoid(clamped[10:0] + 11'd{SIGMOID_HALF})}}), 8'sd{SIGMOID_FRAC_BITS});",
        "            swiglu_element = rshift_round(silu * u_wide * mult, wide_shift);",
        "        end",
        "    endfunction",
        "    integer i;",
        f"    reg [{per * w - 1}:0] gate_now, up_now;",
        f"    reg [{per * wb - 1}:0] wide_now;",
        "    // `wide` is written with blocking assignments (a non-blocking write to part of a wide vector",
        "    // makes verilated code copy all of it twice in every cycle); only the quantizer reads it, from",
        "    // the cycle after the last chunk, so the result is that of non-blocking writes. gate_now,",
        "    // up_now and wide_now are temporaries of this block.",
        "    /* verilator lint_off BLKSEQ */",
        *stepped_always("chunk", chunk_bits, "LAST_CHUNK", go_next, [
            *word_read("gate", chunks, per * w, "chunk", "gate_now", "            "),
            *word_read("up", chunks, per * w, "chunk", "up_now", "            "),
            f"            for (i = 0; i < {per}; i = i + 1)",
            f"                wide_now[i * {wb} +: {wb}] = clamp_wide(swiglu_element(gate_now[i * {w} +: {w}], "
            f"up_now[i * {w} +: {w}]));",
            *word_write(buffer, chunks, per * wb, "chunk", "wide_now", "            "),
        ], every_cycle=[
            "        // temporaries set in every cycle (zero where unused): synthesis then holds no state in them",
            f"        gate_now = {per * w}'d0;",
            f"        up_now = {per * w}'d0;",
            f"        wide_now = {per * wb}'d0;",
        ]),
        "    /* verilator lint_on BLKSEQ */",
        "    assign done = quantize_done;",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"),
             Port("input", "gate", ffn * w),
             Port("input", "up", ffn * w), Port("output", "done"), Port("output", "x", ffn * act_bits),
             Port("output", "mu", 4), Port("output", "e", 4)]
    return {tq_name: tq_text, **extra, module_name: module(module_name, ports, "/*verilator no_inline_module*/\n" + "\n".join(body),
                                                  "§7 SwiGLU (docs/arithmetic.md), one instance per layer.")}
