"""§2.2 token scale (docs/arithmetic.md): a vector of wide values (units of s * 2^-8) rounded to the
activation width with the finest step mu * 2^(5 - e), mu in [8, 16), e in [0, 8], that fits this
token's largest value; division by mu through a 16-bit reciprocal R[mu].

    out_i = sat(round(wide_i * R[mu] * 2^-(21 - e)))

Golden: `hardwire.arithmetic.token_quantize`. Two passes over the buffered wide vector,
`per_cycle` elements a cycle: the largest magnitude, then the choice of (mu, e), one e per cycle from
the finest (all 8 mu compared at once, two cycles per exponent: the largest magnitude against a
constant threshold per (e, mu), `fit_thresholds`), then the outputs. Cycles:
2 * ceil(count / per_cycle) + 1 + 2 * the number of exponents tried (at most 9).
"""
from __future__ import annotations

from hardwire import arithmetic as ar
from hardwire.datapath import chunk_plan
from hardwire.rtl.emit import Fsm, Port, clear_pulses, index_bits, last_value, module, word_read, word_write, wrap_count

SHIFT_BASE = ar.TOKEN_RECIPROCAL_BITS + ar.TOKEN_FRAC_BITS - ar.TOKEN_MANTISSA_BITS


def fit_thresholds(bits: int) -> dict[tuple[int, int], int]:
    """{(e, mu): T}: the largest |w| whose step mu * 2^(5 - e) fits, i.e. the largest L >= 0 with
    rshift_round(L * R[mu], 21 - e) <= 2^(bits-1) - 1. The product is monotone in L, so the fit test
    is `max|w| <= T`: a compare with a constant instead of a 64 x 14 multiplier (the "72-way
    compare" of docs/arithmetic.md §2.2). Exact: with s = 21 - e > 0,
    (L R + 2^(s-1)) >> s <= limit  <=>  L R <= (limit + 1) 2^s - 2^(s-1) - 1."""
    limit = (1 << (bits - 1)) - 1
    table = {}
    for e in range(ar.TOKEN_MAX_EXPONENT + 1):
        s = SHIFT_BASE - e
        assert s > 0
        for mu, reciprocal in zip(range(8, 16), ar.TOKEN_RECIPROCALS):
            table[(e, mu)] = (((limit + 1) << s) - (1 << (s - 1)) - 1) // int(reciprocal)
    return table


def wide_bits(bits: int) -> int:
    """Width of each value a producer (norm, attention, SwiGLU) hands token_quantize: clamped to
    +-2^(bits+9). Exact: every threshold T(e, mu) is below 2^(bits+8), so a clamped largest chooses
    the same step, and beyond the clamp the output saturates at every step (golden token_quantize
    clamps there too). Instead of 64 bits per element in the producer's buffer and the quantizer."""
    return bits + ar.TOKEN_CLAMP_BITS + 2


def clamp_function(bits: int) -> str:
    """`clamp_wide`: a producer's 64-bit wide value to `wide_bits(bits)` bits, clamped to +-2^(bits+9)."""
    w, c = wide_bits(bits), 1 << (bits + ar.TOKEN_CLAMP_BITS)
    return "\n".join([
        f"    // §2.2 a wide value clamped to +-2^{bits + ar.TOKEN_CLAMP_BITS}, where every token step saturates (exact)",
        f"    function [{w - 1}:0] clamp_wide;",
        "        input signed [63:0] cw_value;",
        f"        clamp_wide = cw_value > 64'sd{c} ? {w}'sd{c} : cw_value < -64'sd{c} ? -{w}'sd{c} : cw_value[{w - 1}:0];",
        "    endfunction",
    ])


def token_quantize_name(count: int, bits: int, per_cycle: int) -> str:
    return f"hw_token_quantize_{count}x{bits}_p{per_cycle}"


def quantizer_instance(name: str, wide_width: int, wide_comment: str, out: str) -> list[str]:
    """A block's own token quantizer `name` (`quantize`): the block fills `wide` (`wide_width` bits;
    `wide_comment` follows its declaration), pulses `go_quantize`, and the quantizer writes `out`, mu
    and e, then pulses `quantize_done`."""
    return [
        "    reg go_quantize;",
        "    wire quantize_done;",
        f"    reg [{wide_width - 1}:0] wide;{wide_comment}",
        *quantizer_wiring(name, out),
    ]


def quantizer_wiring(name: str, out: str) -> list[str]:
    """The instance `quantize` of token quantizer `name`: started by `go_quantize`, reading `wide`,
    writing `out`, mu and e, pulsing `quantize_done` (declared by the block around it)."""
    return [
        f"    {name} quantize (.clk(clk), .rst(rst), .start(go_quantize), .wide(wide), .done(quantize_done),",
        f"        .x({out}), .mu(mu), .e(e));",
    ]


def token_quantize_module(count: int, bits: int, per_cycle: int) -> tuple[str, str]:
    name = token_quantize_name(count, bits, per_cycle)
    per, chunks = chunk_plan(count, per_cycle)
    chunk_bits = index_bits(chunks)
    w = wide_bits(bits)
    reciprocals = [int(v) for v in ar.TOKEN_RECIPROCALS]
    thresholds = fit_thresholds(bits)
    limit = (1 << (bits - 1)) - 1
    product_bits = bits + ar.TOKEN_CLAMP_BITS + 15   # |clamp * R[mu]| <= 2^(bits+22), + 2^20 rounding
    threshold_bits = max(t.bit_length() for t in thresholds.values())
    fsm = Fsm(("IDLE", "LARGEST", "CHOOSE", "DECIDE", "OUTPUT"))
    next_chunk = wrap_count("chunk", "LAST_CHUNK", chunk_bits)
    # LARGEST scans the chunks for the largest magnitude; CHOOSE, DECIDE try exponents from the top
    # until a mantissa fits; OUTPUT quantizes the chunks with the chosen scale.
    arms = [
        *fsm.arm("IDLE", [fsm.goto("LARGEST"), f"chunk <= {chunk_bits}'d0;", f"largest <= {w}'sd0;"], when="start"),
        *fsm.arm("LARGEST", [
            "chunk_max = largest;",
            f"for (k = 0; k < {per}; k = k + 1)",
            "begin",
            f"    size = magnitude(wide_now[k * {w} +: {w}]);",
            "    if (size > chunk_max) chunk_max = size;",
            "end",
            "largest <= chunk_max;",
            next_chunk,
            f"if (chunk == LAST_CHUNK) {fsm.goto('CHOOSE')}",
            f"e_try <= 4'd{ar.TOKEN_MAX_EXPONENT};"]),
        *fsm.arm("CHOOSE", ["fitted <= fit(largest, e_try);", "tried_e <= e_try;", "e_try <= e_try - 4'd1;",
                            fsm.goto("DECIDE")]),
        *fsm.arm("DECIDE", [
            "if (fitted[4] || tried_e == 4'd0) begin",
            "    mu <= fitted[3:0];",
            "    e <= tried_e;",
            "    reciprocal <= reciprocal_mu(fitted[3:0]);",
            f"    out_shift <= 8'sd{SHIFT_BASE} - $signed({{4'd0, tried_e}});",
            f"    {fsm.goto('OUTPUT')}",
            "end else begin",
            f"    {fsm.goto('CHOOSE')}",
            "end"], comment="none fits at e = 0: the coarsest step (mu, e) = (15, 0)"),
        *fsm.arm("OUTPUT", [
            f"for (j = 0; j < {per}; j = j + 1)",
            f"    x_now[j * {bits} +: {bits}] = element_out(wide_now[j * {w} +: {w}], reciprocal, out_shift);",
            *word_write("x_buffer", chunks, per * bits, "chunk", "x_now", ""),
            next_chunk,
            "if (chunk == LAST_CHUNK) begin",
            f"    {fsm.goto('IDLE')}",
            "    done <= 1'b1;",
            "end"]),
    ]
    body = [
        f"    // {count} values, {per} per cycle: {2 * chunks + 2} cycles.",
        *fsm.localparams(),
        last_value("LAST_CHUNK", chunks - 1, chunk_bits),
        fsm.declaration(),
        f"    reg [{chunk_bits - 1}:0] chunk;",
        f"    reg signed [{w - 1}:0] largest;",
        "    // R[mu] = round(2^16 / mu), mu in [8, 16): at most 2^13, 14 bits",
        "    function [13:0] reciprocal_mu;",
        "        input [3:0] m;",
        "        begin",
        "            case (m)",
        *[f"                4'd{i + 8}: reciprocal_mu = 14'd{v};" for i, v in enumerate(reciprocals)],
        "                default: reciprocal_mu = 14'd0;",
        "            endcase",
        "        end",
        "    endfunction",
        "",
        "    // The arithmetic is in functions called from the clocked block, so a simulator evaluates it",
        "    // only in the cycles it is used.",
        f"    // T(e, mu) = the largest |w| with round(|w| R[mu] 2^-(21 - e)) <= limit (fit_thresholds)",
        f"    function [{threshold_bits - 1}:0] threshold;",
        "        input [3:0] e_in;",
        "        input [3:0] m;",
        "        case ({e_in, m})",
        *[f"            8'h{e:x}{mu:x}: threshold = {threshold_bits}'d{t};" for (e, mu), t in sorted(thresholds.items())],
        f"            default: threshold = {threshold_bits}'d0;",
        "        endcase",
        "    endfunction",
        "    // {fits, mu}: the first mu in 8..15 whose step fits at exponent e_try: largest <= T(e_try, mu)",
        "    function [4:0] fit;",
        f"        input signed [{w - 1}:0] largest_in;",
        "        input [3:0] e_try;",
        "        integer m;",
        "        begin",
        "            fit = {1'b0, 4'd15};",
        "            for (m = 15; m >= 8; m = m - 1)",
        f"                if (largest_in <= $signed({{{w - threshold_bits}'d0, threshold(e_try, m[3:0])}}))",
        "                    fit = {1'b1, m[3:0]};",
        "        end",
        "    endfunction",
        f"    function signed [{w - 1}:0] magnitude;      // |value| <= 2^{bits + ar.TOKEN_CLAMP_BITS}: no overflow",
        f"        input signed [{w - 1}:0] value;",
        f"        magnitude = value < {w}'sd0 ? -value : value;",
        "    endfunction",
        f"    // out_i = sat(round(w_i R[mu] 2^-shift), {bits}); the producer clamped w_i to +-2^{bits + ar.TOKEN_CLAMP_BITS}",
        f"    // (clamp_wide), so the product needs {w} x 15 bits. shift = 21 - e is in [13, 21].",
        f"    localparam signed [{product_bits - 1}:0] LIMIT = {product_bits}'sd{limit};",
        f"    function [{bits - 1}:0] element_out;",
        f"        input signed [{w - 1}:0] value;",
        "        input [13:0] reciprocal_in;",
        "        input signed [7:0] shift_in;",
        f"        reg signed [{product_bits - 1}:0] product;     // |product| <= 2^{bits + 22}, plus 2^20 for rounding",
        "        /* verilator lint_off UNUSEDSIGNAL */  // saturated to the output width: upper bits copy the sign",
        f"        reg signed [{product_bits - 1}:0] rounded;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        "            product = value * $signed({1'b0, reciprocal_in});",
        f"            rounded = (product + ({product_bits}'sd1 <<< (shift_in - 8'sd1))) >>> shift_in;",
        f"            element_out = rounded > LIMIT ? LIMIT[{bits - 1}:0] : rounded < -LIMIT ? -LIMIT[{bits - 1}:0]"
        f" : rounded[{bits - 1}:0];",
        "        end",
        "    endfunction",
        "    reg [3:0] e_try;",
        "    reg [4:0] fitted;           // {fits, mu} at exponent tried_e",
        "    reg [3:0] tried_e;",
        "    reg [13:0] reciprocal;      // R[mu] and the output shift of the chosen scale, set with it",
        "    reg signed [7:0] out_shift;",
        f"    reg [{count * bits - 1}:0] x_buffer;",
        "    assign x = x_buffer;",
        "    integer j, k;",
        f"    reg [{per * w - 1}:0] wide_now;   // the chunk being scanned or quantized",
        f"    reg signed [{w - 1}:0] chunk_max;",
        f"    reg signed [{w - 1}:0] size;",
        f"    reg [{per * bits - 1}:0] x_now;",
        "    // wide_now, chunk_max, size and x_now are blocking temporaries of this block, and x is written",
        "    // with blocking writes too: a non-blocking write to part of a wide vector makes verilated code",
        "    // copy all of it twice in every cycle. x is read only after `done`, so the result is that of",
        "    // non-blocking writes. Both passes read the chunk through the one multiplexer below.",
        "    /* verilator lint_off BLKSEQ */",
        "    always @(posedge clk) begin",
        f"        {clear_pulses('done')}",
        "        // temporaries set in every cycle (zero where unused): synthesis then holds no state in them",
        f"        wide_now = {per * w}'d0;",
        f"        x_now = {per * bits}'d0;",
        f"        chunk_max = {w}'sd0;",
        f"        size = {w}'sd0;",
        "        if (state == LARGEST || state == OUTPUT) begin",
        *word_read("wide", chunks, per * w, "chunk", "wide_now", "            "),
        "        end",
        *fsm.clocked(arms),
        "    end",
        "    /* verilator lint_on BLKSEQ */",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"), Port("input", "wide", count * w),
             Port("output", "done", reg=True), Port("output", "x", count * bits),
             Port("output", "mu", 4, reg=True), Port("output", "e", 4, reg=True)]
    return name, module(name, ports, "/*verilator no_inline_module*/\n" + "\n".join(body), "§2.2 token scale (docs/arithmetic.md): wide -> activation width.")
