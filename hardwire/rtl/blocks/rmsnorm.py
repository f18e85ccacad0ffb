"""§4 RMSNorm (docs/arithmetic.md): x_i = sat(round(round(h_i / sqrt(sum h^2 + eps) * 2^23) * C_i * 2^-shift)).

Golden: `hardwire.golden.forward.rmsnorm` with §4.2 `hardwire.arithmetic.rsqrt`. The block walks
the residual vector h (32-bit elements) `per_cycle` elements at a time, three times:

1. the largest |h_i|, which fixes the pre-shift that keeps h_i within 23 bits;
2. the sum of squares of the pre-shifted values;
3. (after one cycle of rsqrt: a leading-one count, a 192-entry table, one Newton step) the wide
   outputs, each scaled by its constant C_i from a ROM of one word per chunk;

then §2.2 token_quantize rounds them to the activation width with this token's scale (mu, e).
Cycles: 3 * ceil(dim / per_cycle) + 4, plus token_quantize's.
"""
from __future__ import annotations

import numpy as np

from hardwire.arithmetic import MULTIPLIER_BITS, RESIDUAL_BITS, TOKEN_FRAC_BITS
from hardwire.rtl.blocks.token_scale import clamp_function, quantizer_instance, token_quantize_module, wide_bits
from hardwire.datapath import chunk_plan
from hardwire.rtl.emit import (BIT_LENGTH, RSHIFT_ROUND, Fsm, Port, case_rom, clear_pulses, index_bits, last_value,
                               literal, module, overrides, pack_fields, parameters, sext, signed_bits, word_read,
                               word_write, wrap_count)



def rsqrt_table_module(table: np.ndarray) -> tuple[str, str]:
    """§4.2 the 192-entry table 2^30 / sqrt(m) (shared by every norm)."""
    name = "hw_rsqrt_table"
    return name, case_rom(name, [int(v) for v in table], 32, "§4.2 rsqrt table: 2^30 / sqrt(m), m in [2^14, 2^16).")


# C_i in the ROM word: 23-bit multipliers (freeze/tables._norm_tables), |C_i| <= 2^23, and a sign
MULT_BITS = MULTIPLIER_BITS + 2


def rmsnorm_name(dim: int, out_bits: int, per_cycle: int) -> str:
    per, _ = chunk_plan(dim, per_cycle)
    return f"hw_rmsnorm_{dim}x{out_bits}_p{per}"


def rmsnorm_rom(name: str, mult: np.ndarray, dim: int, per_cycle: int) -> dict[str, str]:
    """The norm's constants C_i, one ROM word per chunk, read by the shared `hw_rmsnorm`."""
    per, chunks = chunk_plan(dim, per_cycle)
    if signed_bits(int(mult.min()), int(mult.max())) > MULT_BITS:
        raise ValueError(f"{name}: norm multipliers exceed {MULT_BITS} bits")
    words = [pack_fields([int(mult[c * per + p]) if c * per + p < dim else 0 for p in range(per)], MULT_BITS)
             for c in range(chunks)]
    rom_name = "hw_rmsnorm_" + name.replace(".", "_") + "_mult"
    return {rom_name: case_rom(rom_name, words, per * MULT_BITS, f"§4 {name}: C_i = g_i sqrt(dim) / s_out, {per} per word.")}


def rmsnorm_module(dim: int, out_bits: int, eps: int, per_cycle: int = 8) -> dict[str, str]:
    """Modules {name: text}: the shared norm `hw_rmsnorm_<dim>x<bits>` and its token_quantize. Each
    norm instance brings its own multiplier ROM (`rmsnorm_rom`) and shift."""
    module_name = rmsnorm_name(dim, out_bits, per_cycle)
    per, chunks = chunk_plan(dim, per_cycle)
    mult_bits = MULT_BITS
    tq_name, tq_text = token_quantize_module(dim, out_bits, per_cycle)
    modules = {tq_name: tq_text}
    chunk_bits = index_bits(chunks)
    r = RESIDUAL_BITS
    wb = wide_bits(out_bits)
    fsm = Fsm(("IDLE", "LARGEST", "PRESHIFT", "SQUARES", "EPS", "RSQRT", "OUTPUT", "QUANTIZE"))
    body = [
        *parameters(("shift", 8)),
        f"    // {dim} elements, {per} per cycle: {3 * chunks + 3} cycles.",
        "".join(fsm.localparams(per_line=6)),         # one line (as generated so far: no break after RSQRT)
        last_value("LAST_CHUNK", chunks - 1, chunk_bits),
        f"    localparam signed [63:0] EPS_BASE = {literal(eps, 64, True)};",
        f"    wire signed [7:0] out_shift = shift - 8'sd{TOKEN_FRAC_BITS};",
        *quantizer_instance(tq_name, dim * wb, "   // u_i C_i in units of s * 2^-8, clamped, before the token scale",
                            "x"),
        fsm.declaration(),
        f"    reg [{chunk_bits - 1}:0] chunk;",
        "    reg [63:0] largest;",
        "    reg [6:0] pre;                // the pre-shift: h >> pre fits 23 bits + sign",
        "    reg signed [63:0] total;",
        "    reg signed [63:0] y;          // rsqrt(total) = y * 2^-(30 + t)",
        "    reg signed [7:0] t;",
        "    assign mult_addr = chunk;",
        "    wire [7:0] rsqrt_index;",
        "    wire [31:0] rsqrt_entry;",
        "    hw_rsqrt_table rsqrt_table (.addr(rsqrt_index), .data(rsqrt_entry));",
        "",
        RSHIFT_ROUND, BIT_LENGTH,
        "    // §4.2 rsqrt of v = max(total, 1): v = m 4^t with m in [2^14, 2^16) (EPS registers m and t),",
        "    // the table entry for m (RSQRT), one Newton step. Registers and blocking temporaries of the",
        "    // state machine, so a simulator evaluates the chain only in those two cycles.",
        "    reg [16:0] m;                 // in [2^14, 2^16)",
        "    /* verilator lint_off UNUSEDSIGNAL */  // rs_m: only bits [16:0] are kept (m < 2^16 by the shift)",
        "    reg signed [63:0] rs_v, rs_m;",
        "    /* verilator lint_on UNUSEDSIGNAL */",
        "    reg [7:0] rs_amount;",
        "    reg signed [7:0] rs_t;",
        "    reg signed [63:0] rs_y0, rs_p, rs_newton;",
        "    assign rsqrt_index = m[15:8] - 8'd64;        // m >> 8 is in [64, 256)",
        "",
    ]
    word = per * r

    def element(chunk: str, k: str) -> str:         # h_i, element k of a chunk (32 bits, signed)
        return f"$signed({chunk}[{k} * {r} +: {r}])"

    next_chunk = wrap_count("chunk", "LAST_CHUNK", chunk_bits)
    # LARGEST, PRESHIFT: the pre-shift that keeps h narrow; SQUARES: the sum of squares; EPS, RSQRT: the
    # reciprocal square root; OUTPUT: the scaled elements; QUANTIZE: the token quantizer's pass.
    arms = [
        *fsm.arm("IDLE", [fsm.goto("LARGEST"), f"chunk <= {chunk_bits}'d0;", "largest <= 64'd0;"], when="start"),
        *fsm.arm("LARGEST", [
            "chunk_max = largest;",
            f"for (k = 0; k < {per}; k = k + 1)",
            "begin",
            f"    size = magnitude({element('h_now', 'k')});",
            f"    if ({{{63 - r}'d0, size}} > chunk_max) chunk_max = {{{63 - r}'d0, size}};",
            "end",
            "largest <= chunk_max;",
            next_chunk,
            f"if (chunk == LAST_CHUNK) {fsm.goto('PRESHIFT')}"]),
        *fsm.arm("PRESHIFT", ["pre <= bit_length(largest) > 7'd23 ? bit_length(largest) - 7'd23 : 7'd0;",
                              "total <= 64'sd0;", fsm.goto("SQUARES")],
                 comment="pre = max(0, bit_length(largest) - 23)"),
        *fsm.arm("SQUARES", [
            "chunk_sum = 64'sd0;",
            f"for (k = 0; k < {per}; k = k + 1)",
            "    chunk_sum = chunk_sum + $signed({15'd0, products[k * 49 +: 49]});   // a square: >= 0",
            "total <= total + chunk_sum;",
            next_chunk,
            f"if (chunk == LAST_CHUNK) {fsm.goto('EPS')}"]),
        *fsm.arm("EPS", [
            "rs_v = total + rshift_round(EPS_BASE, $signed({pre, 1'b0}));",
            "if (rs_v < 64'sd1) rs_v = 64'sd1;",
            "rs_t = $signed({1'b0, bit_length(rs_v)}) - 8'sd15 >>> 1;",
            "rs_amount = rs_t[7] ? 8'd0 - rs_t : rs_t;",
            "rs_m = rs_t[7] ? rs_v <<< (rs_amount << 1) : rs_v >>> (rs_amount << 1);",
            "m <= rs_m[16:0];",
            "t <= rs_t;",
            fsm.goto("RSQRT")]),
        *fsm.arm("RSQRT", [
            "rs_y0 = {32'h0, rsqrt_entry};",
            "rs_p = (rs_y0 * rs_y0) >>> 15;",
            "rs_newton = (64'sd3 <<< 45) - $signed({47'd0, m}) * rs_p;",
            "y <= (rs_y0 * (rs_newton >>> 16)) >>> 30;",
            fsm.goto("OUTPUT")]),
        *fsm.arm("OUTPUT", [
            f"for (j = 0; j < {per}; j = j + 1)",
            f"    wide_now[j * {wb} +: {wb}] = clamp_wide(element_wide($signed(products[j * 49 +: 49]), "
            f"mult_word[j * {mult_bits} +: {mult_bits}], t, out_shift));",
            *word_write("wide", chunks, per * wb, "chunk", "wide_now", ""),
            next_chunk,
            "if (chunk == LAST_CHUNK) begin",
            f"    {fsm.goto('QUANTIZE')}",
            "    go_quantize <= 1'b1;",
            "end"]),
        *fsm.arm("QUANTIZE", [fsm.goto("IDLE"), "done <= 1'b1;"], when="quantize_done"),
    ]

    # per-lane logic
    body += [
        "    // The arithmetic is in functions of single elements called from the clocked blocks, so a",
        "    // simulator evaluates it only in the cycles it is used (a function of a whole chunk makes",
        "    // verilated code clear its wide temporaries in every cycle).",
        f"    function [{r}:0] magnitude;       // |h_i| <= 2^{r - 1}",
        f"        input signed [{r - 1}:0] h_i;",
        f"        magnitude = h_i < {r}'sd0 ? {r + 1}'d0 - {{h_i[{r - 1}], h_i}} : {{1'b0, h_i}};",
        "    endfunction",
        "    // One 24 x 25 multiplier per lane serves two passes: (h >> pre)^2 in SQUARES (< 2^46) and",
        "    // (h >> pre) y in OUTPUT, y < 2^24 (2^30 / sqrt(m), m >= 2^14); |h >> pre| < 2^23 by the choice",
        "    // of pre.",
        "    function signed [48:0] lane_product;",
        f"        input signed [{r - 1}:0] h_i;",
        "        input [6:0] pre_shift;",
        "        input squaring;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // y < 2^24: its upper bits are zero",
        "        input signed [63:0] y_in;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        /* verilator lint_off UNUSEDSIGNAL */  // narrowed to the bound above; the upper bits copy the sign",
        f"        reg signed [{r - 1}:0] value;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        reg signed [23:0] h_narrow;",
        "        reg signed [24:0] operand;",
        "        begin",
        "            value = h_i >>> pre_shift;",
        "            h_narrow = value[23:0];",
        "            operand = squaring ? {h_narrow[23], h_narrow} : $signed(y_in[24:0]);",
        "            lane_product = h_narrow * operand;",
        "        end",
        "    endfunction",
        clamp_function(out_bits),
        "    function signed [63:0] element_wide;    // round(round((h_i >> pre) y 2^-(t+7)) C_i 2^-(K-8))",
        "        input signed [48:0] hy;              // (h_i >> pre) y, from lane_product",
        f"        input [{mult_bits - 1}:0] multiplier;",
        "        input signed [7:0] t_in;",
        "        input signed [7:0] out_shift_in;",
        f"        reg signed [{mult_bits - 1}:0] c_i;",
        "        // |u| = |h| / rms in Q0.23 <= sqrt(dim) 2^23 < 2^39: the product with C_i stays narrow.",
        "        /* verilator lint_off UNUSEDSIGNAL */  // narrowed to the bound above; the upper bits copy the sign",
        "        reg signed [63:0] u;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        reg signed [39:0] u_small;",
        "        begin",
        "            c_i = multiplier;",
        f"            u = rshift_round({sext('hy', 49, 64)}, t_in + 8'sd7);",
        "            u_small = u[39:0];",
        "            element_wide = rshift_round(u_small * c_i, out_shift_in);",
        "        end",
        "    endfunction",
        "    integer j, k;",
        f"    reg [{word - 1}:0] h_now;  // the chunk of h being scanned or scaled",
        f"    reg [{per * wb - 1}:0] wide_now;",
        f"    reg [{per * 49 - 1}:0] products;   // each lane's lane_product in SQUARES and OUTPUT",
        "    reg [63:0] chunk_max;",
        f"    reg [{r}:0] size;",
        "    reg signed [63:0] chunk_sum;",
        "    // h_now, products, wide_now, chunk_max, size, chunk_sum and rs_* are blocking temporaries of this block;",
        "    // `wide` is written with blocking writes too (a non-blocking write to part of a wide vector makes",
        "    // verilated code copy all of it twice in every cycle): the quantizer reads it only from the",
        "    // cycle after the last chunk is written, so the result is that of non-blocking writes. All",
        "    // three passes read the chunk through the one multiplexer below.",
        "    /* verilator lint_off BLKSEQ */",
        "    always @(posedge clk) begin",
        f"        {clear_pulses('done')}",
        f"        {clear_pulses('go_quantize')}",
        "        // The temporaries are set in every cycle (zero where unused), so synthesis sees no state to",
        "        // hold in them: a temporary written only in some states would become flip-flops.",
        f"        wide_now = {per * wb}'d0;",
        "        if (state == LARGEST || state == SQUARES || state == OUTPUT) begin",
        *word_read("h", chunks, word, "chunk", "h_now", "            "),
        "        end else begin",
        f"            h_now = {word}'d0;",
        "        end",
        "        if (state == SQUARES || state == OUTPUT) begin",
        f"            for (k = 0; k < {per}; k = k + 1)",
        f"                products[k * 49 +: 49] = lane_product({element('h_now', 'k')}, pre, state == SQUARES, y);",
        "        end else begin",
        f"            products = {per * 49}'d0;",
        "        end",
        *fsm.clocked(arms),
        "    end",
        "    /* verilator lint_on BLKSEQ */",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"), Port("input", "h", dim * r),
             Port("output", "mult_addr", chunk_bits), Port("input", "mult_word", per * mult_bits),
             Port("output", "done", reg=True), Port("output", "x", dim * out_bits),
             Port("output", "mu", 4), Port("output", "e", 4)]
    modules[module_name] = module(module_name, ports, "/*verilator no_inline_module*/\n" + "\n".join(body),
                                  "§4 RMSNorm (docs/arithmetic.md), shared by every norm of this width.")
    return modules


def rmsnorm_standalone(name: str, mult: np.ndarray, shift: int, eps: int, dim: int, out_bits: int,
                       per_cycle: int = 8) -> dict[str, str]:
    """One norm with its ROM and shift wired in, as `hw_rmsnorm_<name>` (h -> x, mu, e): for unit
    tests and single-block synthesis."""
    per, chunks = chunk_plan(dim, per_cycle)
    modules = {**rmsnorm_module(dim, out_bits, eps, per_cycle), **rmsnorm_rom(name, mult, dim, per_cycle)}
    wrapper = "hw_rmsnorm_" + name.replace(".", "_")
    chunk_bits = index_bits(chunks)
    body = "\n".join([
        f"    wire [{chunk_bits - 1}:0] addr;",
        f"    wire [{per * MULT_BITS - 1}:0] word;",
        f"    {wrapper}_mult rom (.addr(addr), .data(word));",
        f"    {rmsnorm_name(dim, out_bits, per_cycle)} {overrides(shift=(shift, 8))} norm (.clk(clk), .rst(rst), .start(start),",
        "        .h(h), .mult_addr(addr), .mult_word(word), .done(done), .x(x), .mu(mu), .e(e));",
    ])
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"), Port("input", "h", dim * RESIDUAL_BITS),
             Port("output", "done"), Port("output", "x", dim * out_bits), Port("output", "mu", 4), Port("output", "e", 4)]
    modules[wrapper] = module(wrapper, ports, body, f"§4 RMSNorm {name} with its constants.")
    return modules
