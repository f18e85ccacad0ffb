"""§6 attention (docs/arithmetic.md): KV cache, scores, base-2 softmax, normalised weighted sum of V.

Golden: `hardwire.golden.forward.to_cache` and `attention`, with §6.2 `exp2_negative` and §6.3
`reciprocal` of `hardwire.arithmetic`. Per layer:

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

from hardwire.arithmetic import (ATTENTION_AVERAGE_FRAC_BITS, EXP2_FRAC_BITS, EXP2_ONE, INTERNAL_BITS,
                                 MULTIPLIER_BITS, RECIPROCAL_FRAC_BITS, SCORE_MULTIPLIER_BITS, TOKEN_FRAC_BITS)
from hardwire.rtl.blocks.token_scale import clamp_function, quantizer_instance, token_quantize_module, wide_bits
from hardwire.rtl.emit import (BIT_LENGTH, RSHIFT_ROUND, Fsm, Port, case_rom, clear_pulses, index_bits, last_value,
                               module, parameters, sext, signed_bits, word_write)

AVERAGE_SHIFT = RECIPROCAL_FRAC_BITS - ATTENTION_AVERAGE_FRAC_BITS    # §6.3: 2^-39 of the reciprocal, 8 extra bits kept
# fixed_multiplier gives m in [2^(bits-1), 2^bits]: bits + 1 magnitude bits and a sign
SCORE_MULT_BITS = SCORE_MULTIPLIER_BITS + 2
OUT_MULT_BITS = MULTIPLIER_BITS + 2


def kv_sram_module(positions: int, width: int) -> tuple[str, str]:
    name = "hw_kv_sram"
    addr = index_bits(positions)
    body = "\n".join([
        f"    reg [{width - 1}:0] cells [0:{positions - 1}];",
        "    always @(posedge clk) begin",
        "        if (write) cells[write_addr] <= write_data;",
        "        if (read) read_data <= cells[read_addr];",
        "    end",
    ])
    ports = [Port("input", "clk"), Port("input", "write"), Port("input", "write_addr", addr),
             Port("input", "write_data", width), Port("input", "read", 1), Port("input", "read_addr", addr),
             Port("output", "read_data", width, reg=True)]
    return name, module(name, ports, body, f"§6.1 KV-cache SRAM model: {positions} positions x {width} bits, a registered read port with an enable.")


def reciprocal_table_module(table: np.ndarray) -> tuple[str, str]:
    name = "hw_reciprocal_table"
    return name, case_rom(name, [int(v) for v in table], 32, "§6.3 2^39 / m, m in [2^15, 2^16).")


def attention_name(heads: int, kv_heads: int, head_dim: int) -> str:
    return f"hw_attention_{heads}x{kv_heads}x{head_dim}"


def attention_widths(head_dim: int, positions: int, kv_bits: int) -> dict[str, int]:
    """Register and product widths of the attention datapath, from bounds that hold for every input
    (the golden model computes in int64; these are the narrowest widths that give the same values):
    |q| <= 2^15, |k|, |v| <= 2^(kv-1) - 1 (the cache saturates symmetrically), 0 <= weight <= 2^15,
    score multiplier < 2^16 (a 17-bit parameter), at most `positions` positions attended."""
    q_max = 1 << (INTERNAL_BITS - 1)
    kv_max = (1 << (kv_bits - 1)) - 1
    weight_max = EXP2_ONE                # exp2_negative(0): the largest softmax weight
    dot = head_dim * q_max * kv_max
    return {"dot": signed_bits(-dot, dot),
            "score_product": min(64, signed_bits(-(dot << 16), dot << 16)),
            "weighted": signed_bits(-weight_max * kv_max, weight_max * kv_max),
            "sum": signed_bits(0, positions * weight_max),
            "total": signed_bits(-positions * weight_max * kv_max, positions * weight_max * kv_max)}


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
    widths = attention_widths(head_dim, positions, kv_bits)
    db, pb, wb, sb, tb = (widths[k] for k in ("dot", "score_product", "weighted", "sum", "total"))
    tq_name, tq_text = token_quantize_module(heads * hd, act_bits, hd)
    wide_w = wide_bits(act_bits)
    kv_limit = (1 << (kv_bits - 1)) - 1
    if cache_shift > 0:
        rounded = f"($signed({{x[{w - 1}], x}}) + {w + 1}'sd{1 << (cache_shift - 1)}) >>> {cache_shift}"
    else:
        rounded = f"$signed({{x[{w - 1}], x}})"

    def element(vector: str, h: str, d: str) -> str:     # element d of head h's K or V row
        return f"$signed({vector}[(({h} / {group}) * {hd} + {d}) * {kv_bits} +: {kv_bits}])"

    fsm = Fsm(("IDLE", "WRITE", "SCAN1", "SCAN2", "NORMALIZE", "QUANTIZE"))
    scan_over = "!issuing && !valid"              # the last position's SRAM read is in
    arms = [
        fsm.step("IDLE", "start", "WRITE"),
        *fsm.arm("WRITE", [fsm.goto("SCAN1"), "t <= first;", "issuing <= 1'b1;"]),
        *fsm.arm("SCAN1", [fsm.goto("SCAN2"), "t <= first;", "issuing <= 1'b1;"], when=scan_over),
        *fsm.arm("SCAN2", [fsm.goto("NORMALIZE"), f"head <= {head_bits}'d0;"], when=scan_over),
        *fsm.arm("NORMALIZE", [
            f"head <= head + {head_bits}'d1;",
            "if (head == LAST_HEAD) begin",
            f"    {fsm.goto('QUANTIZE')}",
            "    go_quantize <= 1'b1;",
            "end"]),
        *fsm.arm("QUANTIZE", [fsm.goto("IDLE"), "done <= 1'b1;"], when="quantize_done"),
    ]

    body = [
        *parameters(("score_mult", SCORE_MULT_BITS), ("score_shift", 8), ("out_mult", OUT_MULT_BITS), ("out_shift", 8)),
        f"    // {heads} heads ({kv_heads} KV heads) of {head_dim}, KV cache {positions} x {kv_bits} bits.",
        *fsm.localparams(),
        last_value("LAST_HEAD", heads - 1, head_bits),
        f"    wire signed [7:0] out_shift_wide = out_shift - 8'sd{TOKEN_FRAC_BITS};",
        *quantizer_instance(tq_name, heads * hd * wide_w, "     // the heads' averages in units of s * 2^-8, clamped",
                            "out"),
        fsm.declaration(),
        f"    reg [{pos_bits - 1}:0] t;            // the position being read",
        "    reg issuing;                 // t is a valid read address",
        "    reg valid;                   // the SRAMs' read data belongs to a position",
        f"    reg [{head_bits - 1}:0] head;        // NORMALIZE: the head being written",
        RSHIFT_ROUND, BIT_LENGTH,
        "",
        "    // The arithmetic is in functions of single elements called from the clocked blocks, so a",
        "    // simulator evaluates it only in the cycles it is used (for a function of a whole vector,",
        "    // verilated code clears the wide temporaries in every cycle). Products are formed at the",
        "    // widths their bounds need (attention_widths), not at 64 bits: a 64-bit product of narrow",
        "    // operands is a 64-bit-wide multiplier array in synthesis.",
        f"    // §6.1 a 16-bit value to the KV-cache width: sat(rshift_round(x, {cache_shift}), {kv_bits}), in {w + 1} bits",
        f"    function [{kv_bits - 1}:0] to_cache;",
        f"        input [{w - 1}:0] x;",
        f"        reg signed [{w}:0] rounded;",
        "        begin",
        f"            rounded = {rounded};",
        f"            if (rounded > {w + 1}'sd{kv_limit}) rounded = {w + 1}'sd{kv_limit};",
        f"            else if (rounded < -{w + 1}'sd{kv_limit}) rounded = -{w + 1}'sd{kv_limit};",
        f"            to_cache = rounded[{kv_bits - 1}:0];",
        "        end",
        "    endfunction",
        f"    // §6.2 the score z of head h at the position being read: round((q . k) m_s 2^-k_s); |q . k| fits",
        f"    // {db} bits, times the 17-bit m_s {pb}",
        "    function signed [63:0] score;",
        "        input integer h;",
        "        integer d;",
        f"        reg signed [{db - 1}:0] dot;",
        f"        reg signed [{pb - 1}:0] product;",
        "        begin",
        f"            dot = {db}'sd0;",
        f"            for (d = 0; d < {hd}; d = d + 1)",
        f"                dot = dot + $signed(q[(h * {hd} + d) * {w} +: {w}]) * {element('key_row', 'h', 'd')};",
        "            product = dot * score_mult;",
        f"            score = rshift_round({sext('product', pb, 64)}, score_shift);",
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
        f"    // §6.2 weight times element d of head h's V row: |weight v| <= 2^15 (2^{kv_bits - 1} - 1), {wb} bits",
        f"    function signed [{wb - 1}:0] weighted;",
        "        input signed [16:0] weight_in;",
        "        input integer h;",
        "        input integer d;",
        f"        weighted = weight_in * {element('value_row', 'h', 'd')};",
        "    endfunction",
        "",
        f"    reg [{kv_width - 1}:0] key_new;",
        f"    reg [{kv_width - 1}:0] value_new;",
        f"    wire [{kv_width - 1}:0] key_row;",
        f"    wire [{kv_width - 1}:0] value_row;",
        "    wire write = state == WRITE;",
        "    hw_kv_sram keys (.clk(clk), .write(write), .write_addr(pos), .write_data(key_new), .read(issuing), .read_addr(t),"
        " .read_data(key_row));",
        "    hw_kv_sram values (.clk(clk), .write(write), .write_addr(pos), .write_data(value_new), .read(issuing), .read_addr(t),"
        " .read_data(value_row));",
        "",
        f"    // Each head's running values; NORMALIZE shifts the heads down one a cycle, so head 0 is the one",
        f"    // being normalized (a shift needs no run-time index).",
        f"    reg signed [63:0] largest [0:{heads - 1}];           // each head's largest score",
        f"    reg signed [{sb - 1}:0] sums [0:{heads - 1}];              // each head's weight sum, <= {positions} 2^15",
        f"    reg signed [{tb - 1}:0] totals [0:{heads * hd - 1}];      // weighted sums of V, element h * {hd} + d",
        "",
        "    // §6.3 reciprocal of head 0's weight sum v >= 2^15: v = m 2^n (registered in the cycle before",
        "    // the head is normalized), the table entry for m, one Newton step (in NORMALIZE).",
        "    reg [15:0] m;                 // in [2^15, 2^16)",
        "    reg [6:0] n;",
        "    wire [31:0] r_entry;",
        "    hw_reciprocal_table reciprocal_table (.addr(m[14:7]), .data(r_entry));  // (m >> 7) - 256",
        "    reg signed [63:0] r0, r_error, r;",
        "    /* verilator lint_off UNUSEDSIGNAL */  // m_next: only bits [15:0] are kept (v >> n < 2^16)",
        "    reg signed [63:0] v_sum, m_next;",
        "    /* verilator lint_on UNUSEDSIGNAL */",
        "    reg [6:0] n_next;",
        clamp_function(act_bits),
        "    // §6.3 a wide output round(round((A_d >> n) r 2^-31) m_o 2^-(k_o - 8))",
        "    function signed [63:0] normalize;",
        f"        input signed [{tb - 1}:0] total;",
        "        input [6:0] shift_n;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // r < 2^25 (below): its upper bits copy the sign",
        "        input signed [63:0] reciprocal_r;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        input signed [7:0] shift;",
        f"        // Operand widths from the bounds: |A_d| < 2^{kv_bits - 1} v and v < 2^(n + 16), so",
        f"        // |A_d >> n| < 2^{kv_bits + 15}; r ~ 2^39 / m < 2^25; |average| < 2^{kv_bits + 15} 2^25 2^-31 = 2^{kv_bits + 9}.",
        f"        /* verilator lint_off UNUSEDSIGNAL */  // narrowed to the bounds above; the upper bits copy the sign",
        f"        reg signed [{tb - 1}:0] shifted;",
        "        reg signed [63:0] average;",
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
        "            normalize = rshift_round(average_narrow * out_mult, shift);",
        "        end",
        "    endfunction",
        "",
        "    // Control: the state, the read address and when the scans end.",
        "    always @(posedge clk) begin",
        f"        {clear_pulses('done')}",
        f"        {clear_pulses('go_quantize')}",
        "        valid <= issuing;",
        *fsm.clocked(arms, on_reset=["issuing <= 1'b0;"], before_case=[
            "if (issuing) begin",
            f"    t <= t + {pos_bits}'d1;",
            "    if (t == pos) issuing <= 1'b0;",
            "end"]),
        "    end",
        "",
        "    integer h, d;",
        "    reg signed [63:0] z;",
        "    reg signed [16:0] weight;",
        f"    reg signed [{wb - 1}:0] product;",
        f"    reg [{hd * wide_w - 1}:0] wide_now;     // the head being normalized",
        "    // Blocking writes (datapath temporaries and registers read only here or in a later state):",
        "    // key_new and value_new are read by the SRAMs in WRITE, the state after they are written; the",
        "    // per-head arrays are written in loops (Verilator 5.006 rejects non-blocking array writes in",
        "    // loops it does not unroll) and read only in this block, each element before its write, or by",
        "    // the next cycle's reciprocal (m, n); `wide` is read by the quantizer only from the cycle after",
        "    // its last head is written (a non-blocking write to part of a wide vector makes verilated code",
        "    // copy all of it twice in every cycle). z, weight, product and wide_now are temporaries.",
        "    /* verilator lint_off BLKSEQ */",
        "    always @(posedge clk) begin",
        "        if (state == IDLE) begin",
        "            if (start)",
        f"                for (d = 0; d < {kv_heads * hd}; d = d + 1) begin",
        f"                    key_new[d * {kv_bits} +: {kv_bits}] = to_cache(k[d * {w} +: {w}]);",
        f"                    value_new[d * {kv_bits} +: {kv_bits}] = to_cache(v[d * {w} +: {w}]);",
        "                end",
        "        end else if (state == WRITE) begin",
        f"            for (h = 0; h < {heads}; h = h + 1) begin",
        "                largest[h] = -(64'sd1 <<< 62);",
        f"                sums[h] = {sb}'sd0;",
        f"                for (d = 0; d < {hd}; d = d + 1) totals[h * {hd} + d] = {tb}'sd0;",
        "            end",
        "        end else if (valid && (state == SCAN1 || state == SCAN2)) begin",
        "            // the scores are formed once per position and head, in both scans",
        f"            for (h = 0; h < {heads}; h = h + 1) begin",
        "                z = score(h);",
        "                if (state == SCAN1) begin",
        "                    if (z > largest[h]) largest[h] = z;",
        "                end else begin",
        "                    weight = exp2_negative(largest[h] - z);",
        f"                    sums[h] = sums[h] + {sext('weight', 17, sb)};",
        f"                    for (d = 0; d < {hd}; d = d + 1) begin",
        "                        product = weighted(weight, h, d);",
        f"                        totals[h * {hd} + d] = totals[h * {hd} + d] + {sext('product', wb, tb)};",
        "                    end",
        "                end",
        "            end",
        "        end else if (state == NORMALIZE) begin",
        "            r0 = {32'h0, r_entry};",
        "            r_error = (64'sd1 <<< 40) - $signed({48'd0, m}) * r0;",
        "            r = (r0 * (r_error >>> 8)) >>> 31;",
        f"            for (d = 0; d < {hd}; d = d + 1)",
        f"                wide_now[d * {wide_w} +: {wide_w}] = clamp_wide(normalize(totals[d], n, r, out_shift_wide));",
        *word_write("wide", heads, hd * wide_w, "head", "wide_now", "            "),
        f"            for (h = 0; h < {heads - 1}; h = h + 1) begin",
        "                sums[h] = sums[h + 1];",
        f"                for (d = 0; d < {hd}; d = d + 1) totals[h * {hd} + d] = totals[(h + 1) * {hd} + d];",
        "            end",
        "        end",
        "        // m and n of head 0's weight sum for the next cycle's normalization: after the last SCAN2",
        "        // read, and after each shift in NORMALIZE (so after this block's writes above)",
        "        if (state == NORMALIZE || (state == SCAN2 && !issuing && !valid)) begin",
        f"            v_sum = {sext('sums[0]', sb, 64)};",
        "            n_next = bit_length(v_sum) - 7'd16;",
        "            m_next = v_sum >>> n_next;",
        "            m <= m_next[15:0];",
        "            n <= n_next;",
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
