"""§6 attention (docs/arithmetic.md): KV cache, scores, base-2 softmax, normalised weighted sum of V.

Golden: `hardwire.golden.forward.to_cache` and `attention`, with §6.2 `exp2_negative` and §6.3
`reciprocal` of `hardwire.golden.arithmetic`. Per layer:

1. WRITE: k and v of this token, rounded to the cache width (§6.1), go into the two KV SRAMs at `pos`.
2. SCAN1: positions first..pos are read one per cycle (all heads at once); each head keeps its
   largest score z = round(q.k * m_s * 2^-k_s).
3. SCAN2: the same positions again: e = exp2_negative(largest - z) from a 256-entry table per head,
   the head's weight sum and its weighted sums of V accumulate.
4. NORMALIZE: one head per cycle: reciprocal of the weight sum (table + Newton step), then each
   wide output round(round((total >> n) r 2^-31) m_o 2^-(k_o - 8));
5. §2.2 token_quantize of all heads' outputs to the activation width.

Cycles: 2 * (positions attended + 2) + heads + 2. The SRAMs (`hw_kv_sram`) are a behavioural model
with one write and one registered read port; a back-end flow replaces them with SRAM macros.
"""
from __future__ import annotations

import numpy as np

from hardwire.golden.arithmetic import TOKEN_FRAC_BITS
from hardwire.rtl.blocks.token_scale import token_quantize_module
from hardwire.rtl.emit import (BIT_LENGTH, RSHIFT_ROUND, SATURATE, Port, case_rom, index_bits, module, parameters,
                               word_write)

INTERNAL_BITS = 16
EXP2_FRAC_BITS = 8
AVERAGE_SHIFT = 39 - 8          # §6.3: 2^-39 of the reciprocal, 8 extra bits kept in the average


def kv_sram_module(positions: int, width: int) -> tuple[str, str]:
    name = "hw_kv_sram"
    addr = index_bits(positions)
    body = "\n".join([
        f"    reg [{width - 1}:0] cells [0:{positions - 1}];",
        "    always @(posedge clk) begin",
        "        if (write) cells[write_addr] <= write_data;",
        "        read_data <= cells[read_addr];",
        "    end",
    ])
    ports = [Port("input", "clk"), Port("input", "write"), Port("input", "write_addr", addr),
             Port("input", "write_data", width), Port("input", "read_addr", addr),
             Port("output", "read_data", width, reg=True)]
    return name, module(name, ports, body, f"§6.1 KV-cache SRAM model: {positions} positions x {width} bits.")


def reciprocal_table_module(table: np.ndarray) -> tuple[str, str]:
    name = "hw_reciprocal_table"
    return name, case_rom(name, [int(v) for v in table], 32, "§6.3 2^39 / m, m in [2^15, 2^16).")


def attention_name(heads: int, kv_heads: int, head_dim: int) -> str:
    return f"hw_attention_{heads}x{kv_heads}x{head_dim}"


def attention_module(heads: int, kv_heads: int, head_dim: int, positions: int, kv_bits: int,
                     act_bits: int, exp2_table: np.ndarray) -> dict[str, str]:
    """The attention block shared by every layer; each layer wires in its own constants (score and
    output multipliers) and has its own KV SRAMs inside its instance."""
    module_name = attention_name(heads, kv_heads, head_dim)
    group = heads // kv_heads
    w = INTERNAL_BITS
    kv_width = kv_heads * head_dim * kv_bits
    pos_bits = index_bits(positions)
    head_bits = index_bits(heads)
    cache_shift = INTERNAL_BITS - kv_bits
    hd = head_dim
    tq_name, tq_text = token_quantize_module(heads * hd, act_bits, hd)
    body = [
        *parameters(("score_mult", 64), ("score_shift", 8), ("out_mult", 64), ("out_shift", 8)),
        f"    // {heads} heads ({kv_heads} KV heads) of {head_dim}, KV cache {positions} x {kv_bits} bits.",
        "    localparam [2:0] IDLE = 3'd0, WRITE = 3'd1, SCAN1 = 3'd2, SCAN2 = 3'd3, NORMALIZE = 3'd4, QUANTIZE = 3'd5;",
        f"    localparam [{head_bits - 1}:0] LAST_HEAD = {head_bits}'d{heads - 1};",
        f"    wire signed [7:0] out_shift_wide = out_shift - 8'sd{TOKEN_FRAC_BITS};",
        "    reg go_quantize;",
        "    wire quantize_done;",
        f"    reg [{heads * hd * 64 - 1}:0] wide;     // the heads' averages in units of s * 2^-8",
        f"    {tq_name} quantize (.clk(clk), .rst(rst), .start(go_quantize), .wide(wide), .done(quantize_done),",
        "        .x(out), .mu(mu), .e(e));",
        "    reg [2:0] state;",
        f"    reg [{pos_bits - 1}:0] t;            // the position being read",
        "    reg issuing;                 // t is a valid read address",
        "    reg valid;                   // the SRAMs' read data belongs to a position",
        f"    reg [{head_bits - 1}:0] head;        // NORMALIZE: the head being written",
        RSHIFT_ROUND, SATURATE, BIT_LENGTH,
        "",
        "    // The arithmetic is in functions of single elements called from the clocked block, so a",
        "    // simulator evaluates it only in the cycles it is used (for a function of a whole vector,",
        "    // verilated code clears the wide temporaries in every cycle).",
        "    // §6.1 a 16-bit value to the KV-cache width: sat(rshift_round(x, 16 - kv_bits), kv_bits)",
        f"    function [{kv_bits - 1}:0] to_cache;",
        f"        input [{w - 1}:0] x;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // saturated to the cache width: upper bits copy the sign",
        "        reg signed [63:0] cached;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        f"            cached = saturate(rshift_round({{{{{64 - w}{{x[{w - 1}]}}}}, x}}, 8'sd{cache_shift}), 7'd{kv_bits});",
        f"            to_cache = cached[{kv_bits - 1}:0];",
        "        end",
        "    endfunction",
        "    // §6.2 the score z of head h at the position being read: round((q . k) m_s 2^-k_s)",
        "    function signed [63:0] score;",
        "        input integer h;",
        "        integer d;",
        "        reg signed [63:0] dot;",
        "        begin",
        "            dot = 64'sd0;",
        f"            for (d = 0; d < {hd}; d = d + 1)",
        f"                dot = dot + $signed({{{{{64 - w}{{q[(h * {hd} + d) * {w} + {w - 1}]}}}}, q[(h * {hd} + d) * {w} +: {w}]}}) *",
        f"                            $signed({{{{{64 - kv_bits}{{key_row[((h / {group}) * {hd} + d) * {kv_bits} + {kv_bits - 1}]}}}}, "
        f"key_row[((h / {group}) * {hd} + d) * {kv_bits} +: {kv_bits}]}});",
        "            score = rshift_round(dot * score_mult, score_shift);",
        "        end",
        "    endfunction",
        "    // §6.2 EXP2[f] = round(2^15 2^(-f/256)), and exp2_negative(d) = EXP2[d & 255] >> (d >> 8), 0 past 2^-16",
        "    function [15:0] exp2_entry;",
        "        input [7:0] f;",
        "        begin",
        "            case (f)",
        *[f"                8'd{i}: exp2_entry = 16'd{int(v)};" for i, v in enumerate(exp2_table)],
        "                default: exp2_entry = 16'd0;",
        "            endcase",
        "        end",
        "    endfunction",
        "    function signed [16:0] exp2_negative;     // at most 2^15: 17 bits signed",
        "        input signed [63:0] d;",
        "        begin",
        f"            if (d[63:{EXP2_FRAC_BITS + 4}] != {60 - EXP2_FRAC_BITS}'d0) exp2_negative = 17'sd0;",
        f"            else exp2_negative = $signed({{1'b0, exp2_entry(d[{EXP2_FRAC_BITS - 1}:0]) >> d[{EXP2_FRAC_BITS + 3}:{EXP2_FRAC_BITS}]}});",
        "        end",
        "    endfunction",
        "    // §6.2 element d of head h's V row at the position being read",
        "    function signed [63:0] v_element;",
        "        input integer h;",
        "        input integer d;",
        "        begin",
        f"            v_element = $signed({{{{{64 - kv_bits}{{value_row[((h / {group}) * {hd} + d) * {kv_bits} + {kv_bits - 1}]}}}}, "
        f"value_row[((h / {group}) * {hd} + d) * {kv_bits} +: {kv_bits}]}});",
        "        end",
        "    endfunction",
        "",
        f"    reg [{kv_width - 1}:0] key_new;",
        f"    reg [{kv_width - 1}:0] value_new;",
        f"    wire [{kv_width - 1}:0] key_row;",
        f"    wire [{kv_width - 1}:0] value_row;",
        "    wire write = state == WRITE;",
        "    hw_kv_sram keys (.clk(clk), .write(write), .write_addr(pos), .write_data(key_new), .read_addr(t),"
        " .read_data(key_row));",
        "    hw_kv_sram values (.clk(clk), .write(write), .write_addr(pos), .write_data(value_new), .read_addr(t),"
        " .read_data(value_row));",
        "",
        f"    reg signed [63:0] largest [0:{heads - 1}];           // each head's largest score",
        f"    reg signed [63:0] sums [0:{heads - 1}];              // each head's weight sum",
        f"    reg signed [63:0] totals [0:{heads * hd - 1}];      // each head's weighted sums of V, element h * {hd} + d",
        "",
        "    // §6.3 reciprocal of the selected head's weight sum v >= 2^15: v = m 2^n, table, one Newton step",
        "    wire signed [63:0] v_sum = sums[head];",
        "    wire [6:0] n = bit_length(v_sum) - 7'd16;",
        "    wire signed [63:0] m = v_sum >>> n;",
        "    wire [31:0] r_entry;",
        "    hw_reciprocal_table reciprocal_table (.addr(m[14:7]), .data(r_entry));  // (m >> 7) - 256",
        "    wire signed [63:0] r0 = {32'h0, r_entry};",
        "    wire signed [63:0] r_error = (64'sd1 <<< 40) - m * r0;",
        "    wire signed [63:0] r = (r0 * (r_error >>> 8)) >>> 31;",
        "    // §6.3 a wide output round(round((A_d >> n) r 2^-31) m_o 2^-(k_o - 8))",
        "    function signed [63:0] normalize;",
        "        input signed [63:0] total;",
        "        input [6:0] shift_n;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // r < 2^25 (below): its upper bits copy the sign",
        "        input signed [63:0] reciprocal_r;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        input signed [63:0] multiplier;",
        "        input signed [7:0] shift;",
        f"        // Operand widths from the bounds (the products stay narrow for synthesis): |A_d| < 2^{kv_bits - 1} v",
        f"        // and v < 2^(n + 16), so |A_d >> n| < 2^{kv_bits + 15}; r ~ 2^39 / m < 2^25; |average| < "
        f"2^{kv_bits + 15} 2^25 2^-31 = 2^{kv_bits + 9}.",
        "        /* verilator lint_off UNUSEDSIGNAL */  // narrowed to the bounds above; the upper bits copy the sign",
        "        reg signed [63:0] shifted, average;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        f"        reg signed [{kv_bits + 17}:0] shifted_narrow;",
        "        reg signed [34:0] r_narrow;",
        f"        reg signed [{kv_bits + 11}:0] average_narrow;",
        "        begin",
        "            shifted = total >>> shift_n;",
        f"            shifted_narrow = shifted[{kv_bits + 17}:0];",
        "            r_narrow = reciprocal_r[34:0];",
        f"            average = rshift_round(shifted_narrow * r_narrow, 8'sd{AVERAGE_SHIFT});",
        f"            average_narrow = average[{kv_bits + 11}:0];",
        "            normalize = rshift_round(average_narrow * multiplier, shift);",
        "        end",
        "    endfunction",
        "",
        "    integer h, d;",
        "    reg signed [63:0] z;",
        "    reg signed [16:0] weight;",
        f"    reg [{hd * 64 - 1}:0] wide_now;     // the head being normalized",
        "    // The per-head arrays are written with blocking assignments inside loops (Verilator 5.006 rejects",
        "    // non-blocking array writes in loops it does not unroll); they are read only in this block, each",
        "    // element before its write, so the result is that of non-blocking writes. z and weight are",
        "    // per-iteration temporaries, wide_now a per-cycle one. `wide` too is written with blocking writes (a non-blocking write to",
        "    // part of a wide vector makes verilated code copy all of it twice in every cycle); the quantizer",
        "    // reads it only from the cycle after its last head is written; likewise key_new and value_new,",
        "    // which the SRAMs read in the next state.",
        "    /* verilator lint_off BLKSEQ */",
        "    always @(posedge clk) begin",
        "        done <= 1'b0;",
        "        go_quantize <= 1'b0;",
        "        valid <= issuing;",
        "        if (rst) begin",
        "            state <= IDLE;",
        "            issuing <= 1'b0;",
        "        end else begin",
        "            if (issuing) begin",
        f"                t <= t + {pos_bits}'d1;",
        "                if (t == pos) issuing <= 1'b0;",
        "            end",
        "            case (state)",
        "                IDLE: if (start) begin",
        "                    state <= WRITE;",
        f"                    for (d = 0; d < {kv_heads * hd}; d = d + 1) begin",
        f"                        key_new[d * {kv_bits} +: {kv_bits}] = to_cache(k[d * {w} +: {w}]);",
        f"                        value_new[d * {kv_bits} +: {kv_bits}] = to_cache(v[d * {w} +: {w}]);",
        "                    end",
        "                end",
        "                WRITE: begin",
        "                    state <= SCAN1;",
        "                    t <= first;",
        "                    issuing <= 1'b1;",
        f"                    for (h = 0; h < {heads}; h = h + 1) begin",
        "                        largest[h] = -(64'sd1 <<< 62);",
        "                        sums[h] = 64'sd0;",
        f"                        for (d = 0; d < {hd}; d = d + 1) totals[h * {hd} + d] = 64'sd0;",
        "                    end",
        "                end",
        "                SCAN1: begin",
        "                    if (valid)",
        f"                        for (h = 0; h < {heads}; h = h + 1) begin",
        "                            z = score(h);",
        "                            if (z > largest[h]) largest[h] = z;",
        "                        end",
        "                    if (!issuing && !valid) begin",
        "                        state <= SCAN2;",
        "                        t <= first;",
        "                        issuing <= 1'b1;",
        "                    end",
        "                end",
        "                SCAN2: begin",
        "                    if (valid)",
        f"                        for (h = 0; h < {heads}; h = h + 1) begin",
        "                            weight = exp2_negative(largest[h] - score(h));",
        "                            sums[h] = sums[h] + {{47{weight[16]}}, weight};",
        f"                            for (d = 0; d < {hd}; d = d + 1)",
        f"                                totals[h * {hd} + d] = totals[h * {hd} + d] + weight * v_element(h, d);",
        "                        end",
        "                    if (!issuing && !valid) begin",
        "                        state <= NORMALIZE;",
        f"                        head <= {head_bits}'d0;",
        "                    end",
        "                end",
        "                NORMALIZE: begin",
        f"                    for (d = 0; d < {hd}; d = d + 1)",
        f"                        wide_now[d * 64 +: 64] = normalize(totals[head * {hd} + d], n, r, out_mult, out_shift_wide);",
        *word_write("wide", heads, hd * 64, "head", "wide_now", "                    "),
        f"                    head <= head + {head_bits}'d1;",
        "                    if (head == LAST_HEAD) begin",
        "                        state <= QUANTIZE;",
        "                        go_quantize <= 1'b1;",
        "                    end",
        "                end",
        "                QUANTIZE: if (quantize_done) begin",
        "                    state <= IDLE;",
        "                    done <= 1'b1;",
        "                end",
        "                default: state <= IDLE;",
        "            endcase",
        "        end",
        "    end",
        "    /* verilator lint_on BLKSEQ */",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"),
             Port("input", "pos", pos_bits), Port("input", "first", pos_bits),
             Port("input", "q", heads * hd * w), Port("input", "k", kv_heads * hd * w),
             Port("input", "v", kv_heads * hd * w), Port("output", "done", reg=True),
             Port("output", "out", heads * hd * act_bits), Port("output", "mu", 4), Port("output", "e", 4)]
    return {tq_name: tq_text, module_name: module(module_name, ports, "/*verilator no_inline_module*/\n" + "\n".join(body),
                                                  "§6 attention (docs/arithmetic.md), one instance per layer.")}
