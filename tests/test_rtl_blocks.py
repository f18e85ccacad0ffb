"""Each generated block, simulated with Icarus Verilog, equals its golden primitive bit for bit.

Inputs are random plus the edge cases the arithmetic has to survive: zero, the largest magnitudes
(saturation), and values at the ends of the tables. The reference is the golden model's own function
(`hardwire.golden.forward` / `.matvec`), never a re-implementation. Each block's cycles from start to
done equal what `hardwire.datapath` counts for it (the chip estimate's formula).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hardwire import arithmetic as ar
from hardwire.datapath import RTL_POINT, Attention, DesignPoint, Embed, Norm, Rope, SwiGLU
from hardwire.golden import forward as golden
from hardwire.golden.matvec import matvec, pack_matrix
from hardwire.rtl.emit import overrides
from hardwire.rtl.sim import pack_vector, run_icarus, unpack_vector

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                reason="Icarus Verilog (iverilog, vvp) is not installed")


def edge_vectors(rng, count: int, bits: int, extra: int = 4) -> list[np.ndarray]:
    """Random vectors of symmetric `bits`-bit integers, then zero, +max, -max, alternating max."""
    limit = (1 << (bits - 1)) - 1
    vectors = [rng.integers(-limit, limit + 1, count) for _ in range(extra)]
    vectors += [np.zeros(count, np.int64), np.full(count, limit), np.full(count, -limit),
                np.where(np.arange(count) % 2 == 0, limit, -limit)]
    return vectors


# -- §3 matvec ------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["rom_mac", "hardwired"])
@pytest.mark.parametrize("bits,group,symmetric,bias", [(8, None, True, False), (4, 16, False, True), (3, 24, True, False)])
def test_matvec_equals_golden(tmp_path, style, bits, group, symmetric, bias):
    from hardwire.datapath import DesignPoint, Matrix
    from hardwire.rtl.blocks.matvec import IntMatrix, matvec_modules
    rng = np.random.default_rng(bits)
    rows, cols, x_bits, out_bits = 9, 40, 8, 16
    groups = 1 if group is None else -(-cols // group)
    low, high = -(1 << (bits - 1)), (1 << (bits - 1))
    codes = rng.integers(low, high, (rows, cols))
    codes[0] = high - 1                                 # a row of the largest code: saturates
    codes[1] = 0                                        # a row of zeros
    zeros = None if symmetric else rng.integers(low, high, (rows, groups))
    mult = rng.integers(1 << 22, 1 << 23, (rows, groups))
    shifts = rng.integers(18, 26, rows)
    shifts[2] = 0                                       # no shift; k <= 0 is a left shift
    shifts[3] = -2
    biases = rng.integers(-3000, 3000, rows) if bias else None
    matrix = IntMatrix("test.w", codes, zeros, group, mult, shifts, biases)
    # 120 weights per lane: 3 row blocks of 40 columns, 3 lanes, 3 requantizer drain steps
    plan = Matrix("test.w", rows, cols).plan(DesignPoint(weight_style=style, weights_per_lane=120))
    modules = matvec_modules(matrix, x_bits, out_bits, style, lanes=plan.lanes)
    xs = edge_vectors(rng, cols, x_bits)
    scales = [(int(rng.integers(8, 16)), int(rng.integers(0, 9))) for _ in xs]
    scales[0] = (15, 8)                                 # the finest token scale
    scales[1] = (8, 0)                                  # the coarsest
    results = run_icarus(modules, "hw_matvec_test_w", [("x", cols * x_bits), ("mu", 4), ("e", 4)],
                         [("y", rows * out_bits)],
                         [[pack_vector(x, x_bits), mu, e] for x, (mu, e) in zip(xs, scales)], workdir=tmp_path)
    packed = pack_matrix(codes.astype(np.int8), None if zeros is None else zeros.astype(np.int8), bits, group,
                         mult, shifts, biases)
    for x, scale, result in zip(xs, scales, results):
        expected = matvec(packed, x.astype(np.int16), scale, out_bits)
        assert unpack_vector(result[0], out_bits, rows) == list(expected)
        assert result[-1] == plan.cycles    # start to done, as hardwire.datapath counts it for the estimate


# -- §4 RMSNorm ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim,per_cycle,out_bits", [(20, 6, 8), (16, 16, 16)])
def test_rmsnorm_equals_golden(tmp_path, dim, per_cycle, out_bits):
    from hardwire.rtl.blocks.rmsnorm import rmsnorm_standalone, rsqrt_table_module
    rng = np.random.default_rng(dim)
    mult = rng.integers(-(1 << 23), 1 << 23, dim)
    shift, eps = 30, 12345
    modules = dict([rsqrt_table_module(ar.rsqrt_table())])
    modules.update(rmsnorm_standalone("test.norm", mult, shift, eps, dim, out_bits, per_cycle))
    hs = edge_vectors(rng, dim, 32) + [rng.integers(-1000, 1000, dim), rng.integers(-3, 4, dim)]
    results = run_icarus(modules, "hw_rmsnorm_test_norm", [("h", dim * 32)],
                         [("x", dim * out_bits), ("mu", 4), ("e", 4)], [[pack_vector(h, 32)] for h in hs],
                         workdir=tmp_path)
    norm, point = Norm(name="test.norm", stage="", dim=dim), DesignPoint(norm_per_cycle=per_cycle)
    for h, result in zip(hs, results):
        expected = np.empty(dim, np.int64)
        scale = golden.rmsnorm(h.astype(np.int64), mult.astype(np.int64), shift, np.int64(eps), out_bits,
                               ar.rsqrt_table(), expected)
        assert unpack_vector(result[0], out_bits, dim) == list(expected)
        assert (result[1], result[2]) == tuple(int(v) for v in scale)
        assert result[-1] == norm.latency(point, exponent=int(scale[1]))      # hardwire.datapath's count


# -- §2.2 token scale -------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 8, 16])
def test_fit_thresholds_are_the_last_magnitude_whose_rounded_product_fits(bits):
    """T(e, mu) fits and T + 1 does not, by the golden model's own rounding, at every (e, mu)."""
    from hardwire.rtl.blocks.token_scale import SHIFT_BASE, fit_thresholds
    limit = (1 << (bits - 1)) - 1
    table = fit_thresholds(bits)
    assert len(table) == 9 * 8
    for (e, mu), t in table.items():
        r = ar.TOKEN_RECIPROCALS[mu - 8]
        assert ar.rshift_round(np.int64(t) * r, SHIFT_BASE - e) <= limit
        assert ar.rshift_round(np.int64(t + 1) * r, SHIFT_BASE - e) > limit


@pytest.mark.parametrize("bits", [8, 16])
def test_token_quantize_equals_golden_at_every_threshold(tmp_path, bits):
    """Vectors whose largest magnitude sits at T(e, mu) and T(e, mu) + 1 for every (e, mu), so each
    compare is exercised on both sides, plus zero, tiny, around the clamp, huge (>= 2^49, where an
    unclamped product would overflow int64) and random vectors, of either sign. The block sees them
    clamped to +-2^(bits+9), as its producers hand them over: that this changes no output is the
    claim under test."""
    from hardwire.datapath import token_quantize_latency
    from hardwire.rtl.blocks.token_scale import fit_thresholds, token_quantize_module, wide_bits
    count, per = 6, 4
    rng = np.random.default_rng(bits)
    largest = sorted({v for t in fit_thresholds(bits).values() for v in (t, t + 1)})
    vectors = []
    clamp = 1 << (bits + ar.TOKEN_CLAMP_BITS)     # |w| beyond it saturates at every step; both sides clamp
    for k, top in enumerate(largest + [0, 1, clamp - 1, clamp, clamp + 1, 1 << 49, (1 << 62) - 1]):
        v = rng.integers(-top, top + 1, count) if top else np.zeros(count, np.int64)
        v[k % count] = top if k % 2 else -top
        vectors.append(v.astype(np.int64))
    vectors += [rng.integers(-(1 << 40), 1 << 40, count) for _ in range(4)]
    # a small largest (a fine step) with one element just inside, at and past the clamp: with
    # largest = clamp the step is coarse, so also vectors mixing small values with +-clamp +- 1
    vectors += [np.array([5, -clamp - 1, clamp + 1, clamp - 1, -clamp, 3], np.int64),
                np.array([(1 << 62) - 1, -(1 << 62), 1, -1, 0, 7], np.int64)]
    name, text = token_quantize_module(count, bits, per)
    # the block takes its producer's clamped values (clamp_wide); golden gets the raw ones
    width = wide_bits(bits)
    results = run_icarus({name: text}, name, [("wide", count * width)], [("x", count * bits), ("mu", 4), ("e", 4)],
                         [[pack_vector(np.clip(v, -clamp, clamp), width)] for v in vectors], workdir=tmp_path)
    scales = set()
    for v, result in zip(vectors, results):
        expected = np.empty(count, np.int64)
        mu, e = ar.token_quantize(v.copy(), bits, expected)
        assert (result[1], result[2]) == (int(mu), int(e)), f"largest {np.abs(v).max()}"
        assert unpack_vector(result[0], bits, count) == list(expected)
        assert result[-1] == token_quantize_latency(count, per, int(e))     # one CHOOSE, DECIDE pair per e tried
        scales.add((int(mu), int(e)))
    assert len(scales) == 9 * 8      # every (mu, e) was chosen by some vector


# -- §8.1 embedding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("group", [None, 8])
def test_embed_lookup_equals_golden(tmp_path, group):
    from hardwire.rtl.blocks.embed import embed_module
    rng = np.random.default_rng(5)
    vocab, dim = 12, 24
    groups = 1 if group is None else dim // group
    codes = rng.integers(-128, 128, (vocab, dim))
    codes[0] = 127
    zeros = rng.integers(-8, 8, (vocab, groups)) if group else None
    mult = rng.integers(1 << 22, 1 << 23, (vocab, groups))
    shift = rng.integers(-4, 12, vocab)
    shift[1] = -20                                      # a large left shift saturates to int32
    modules = embed_module(codes, zeros, group, mult, shift, per_cycle=5)
    tokens = list(range(vocab))
    results = run_icarus(modules, "hw_embed_lookup", [("token", 4)], [("h", dim * 32)], [[t] for t in tokens],
                         workdir=tmp_path)
    z = np.zeros((vocab, groups), np.int64) if zeros is None else zeros.astype(np.int64)
    for token, result in zip(tokens, results):
        expected = np.empty(dim, np.int64)
        golden.embed_lookup(codes.astype(np.int8), z, group or dim, mult.astype(np.int64), shift.astype(np.int64),
                            token, expected)
        assert unpack_vector(result[0], 32, dim) == list(expected), token
        assert result[-1] == Embed(name="embed", stage="", vocab=vocab, dim=dim, group=group or dim).latency(
            DesignPoint(embed_per_cycle=5))


# -- §5 RoPE ------------------------------------------------------------------------------------------------

def test_rope_equals_golden(tmp_path):
    from hardwire.model.reference import rope_inverse_frequencies
    from hardwire.model.spec import ModelSpec
    from hardwire.rtl.blocks.rope import rope_module, rope_table_module
    spec = ModelSpec(family="llama", hidden_dim=16, layers=1, heads=2, kv_heads=1, head_dim=8, ffn_dim=16,
                     vocab_size=8, max_context=16)
    cos, sin = ar.rope_tables(rope_inverse_frequencies(spec), spec.max_context)
    heads = spec.heads + spec.kv_heads
    modules = dict([rope_table_module(cos, sin, spec.max_context)])
    modules.update(rope_module(heads, spec.head_dim, spec.max_context))
    rng = np.random.default_rng(7)
    xs = edge_vectors(rng, heads * spec.head_dim, 16)
    positions = [int(p) for p in rng.integers(0, spec.max_context, len(xs))]
    results = run_icarus(modules, "hw_rope", [("pos", 4), ("x", heads * spec.head_dim * 16)],
                         [("y", heads * spec.head_dim * 16)],
                         [[p, pack_vector(x, 16)] for p, x in zip(positions, xs)], workdir=tmp_path)
    for p, x, result in zip(positions, xs, results):
        expected = x.astype(np.int64).copy()
        golden.rope(expected, heads, spec.head_dim, cos[p], sin[p])
        assert unpack_vector(result[0], 16, heads * spec.head_dim) == list(expected), p
        assert result[-1] == Rope(name="rope", stage="", heads=heads, head_dim=spec.head_dim).latency(RTL_POINT)


# -- §7 SwiGLU ------------------------------------------------------------------------------------------------

def test_swiglu_equals_golden(tmp_path):
    from hardwire.rtl.blocks.swiglu import swiglu_module, swiglu_name
    rng = np.random.default_rng(9)
    ffn, act_bits = 20, 8
    index_mult, index_shift = 5000000, 26             # gate 2^15 -> index ~2400: clamped at the table's end
    mult, shift = 6000000, 44
    modules = swiglu_module(ffn, act_bits, ar.sigmoid_table(), per_cycle=4)
    constants = overrides(index_mult=(index_mult, 64), index_shift=(index_shift, 8), mult=(mult, 64), shift=(shift, 8))
    gates = edge_vectors(rng, ffn, 16)
    ups = edge_vectors(rng, ffn, 16)[::-1]
    results = run_icarus(modules, swiglu_name(ffn, act_bits, 4), [("gate", ffn * 16), ("up", ffn * 16)],
                         [("x", ffn * act_bits), ("mu", 4), ("e", 4)],
                         [[pack_vector(g, 16), pack_vector(u, 16)] for g, u in zip(gates, ups)],
                         workdir=tmp_path, parameters=constants)
    for g, u, result in zip(gates, ups, results):
        expected = np.empty(ffn, np.int64)
        scale = golden.swiglu(g.astype(np.int64), u.astype(np.int64), index_mult, index_shift, mult, shift, act_bits,
                              ar.sigmoid_table(), expected)
        assert unpack_vector(result[0], act_bits, ffn) == list(expected)
        assert (result[1], result[2]) == tuple(int(v) for v in scale)
        assert result[-1] == SwiGLU(name="swiglu", stage="", ffn_dim=ffn).latency(DesignPoint(norm_per_cycle=4),
                                                                                  exponent=int(scale[1]))


def test_matvec_with_more_lanes_than_columns_shares_requantizers(tmp_path):
    """lanes > cols: several requantizers drain a block while the next one is computed."""
    from hardwire.rtl.blocks.matvec import IntMatrix, matvec_modules, requantizers_for
    rng = np.random.default_rng(11)
    rows, cols, lanes, x_bits, out_bits = 21, 3, 8, 8, 32
    assert requantizers_for(lanes, cols) == 3
    codes = rng.integers(-128, 128, (rows, cols))
    mult = rng.integers(1 << 22, 1 << 23, (rows, 1))
    shifts = rng.integers(10, 20, rows)
    matrix = IntMatrix("test.wide", codes, None, None, mult, shifts, None)
    modules = matvec_modules(matrix, x_bits, out_bits, "rom_mac", lanes=lanes)
    xs = edge_vectors(rng, cols, x_bits)
    results = run_icarus(modules, "hw_matvec_test_wide", [("x", cols * x_bits), ("mu", 4), ("e", 4)],
                         [("y", rows * out_bits)], [[pack_vector(x, x_bits), 11, 3] for x in xs], workdir=tmp_path)
    packed = pack_matrix(codes.astype(np.int8), None, 8, None, mult, shifts, None)
    for x, result in zip(xs, results):
        assert unpack_vector(result[0], out_bits, rows) == list(matvec(packed, x.astype(np.int16), (11, 3), out_bits))


# -- §6 attention: KV cache, scores, softmax, weighted sum ---------------------------------------

def test_attention_softmax_equals_golden_over_a_sequence(tmp_path):
    """One block instance attends over a growing KV cache, position after position (GQA 2:1)."""
    from hardwire.rtl.blocks.attention import (OUT_MULT_BITS, SCORE_MULT_BITS, attention_module, attention_name,
                                               kv_sram_module, reciprocal_table_module)
    heads, kv_heads, head_dim, positions, kv_bits, act_bits = 4, 2, 4, 8, 8, 8
    score_mult, score_shift, out_mult, out_shift = 20000, 22, 9000000, 24
    modules = dict([reciprocal_table_module(ar.reciprocal_table()),
                    kv_sram_module(positions, kv_heads * head_dim * kv_bits)])
    modules.update(attention_module(heads, kv_heads, head_dim, positions, kv_bits, act_bits, ar.exp2_table()))
    rng = np.random.default_rng(13)
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    steps = []
    for p in range(positions):
        scale = 32767 if p in (2, 5) else 3000        # two positions saturate the 8-bit cache
        steps.append((rng.integers(-scale, scale + 1, q_dim), rng.integers(-scale, scale + 1, kv_dim),
                      rng.integers(-scale, scale + 1, kv_dim)))
    # the extremes the narrowed datapath is sized for (attention_widths): |q| = 2^15, the cache at its limits
    steps[6] = (np.full(q_dim, -32768), np.full(kv_dim, -32768), np.full(kv_dim, 32767))
    first = [0, 0, 0, 1, 1, 2, 0, 3]                  # a sliding window now and then
    vectors = [[p, first[p], pack_vector(q, 16), pack_vector(k, 16), pack_vector(v, 16)]
               for p, (q, k, v) in enumerate(steps)]
    constants = overrides(score_mult=(score_mult, SCORE_MULT_BITS), score_shift=(score_shift, 8),
                          out_mult=(out_mult, OUT_MULT_BITS), out_shift=(out_shift, 8))
    results = run_icarus(modules, attention_name(heads, kv_heads, head_dim),
                         [("pos", 3), ("first", 3), ("q", q_dim * 16), ("k", kv_dim * 16), ("v", kv_dim * 16)],
                         [("out", q_dim * act_bits), ("mu", 4), ("e", 4)], vectors, workdir=tmp_path,
                         parameters=constants)
    keys = np.zeros((positions, kv_heads, head_dim), np.int16)
    values = np.zeros((positions, kv_heads, head_dim), np.int16)
    for p, ((q, k, v), result) in enumerate(zip(steps, results)):
        golden.to_cache(k.astype(np.int64), 16 - kv_bits, kv_bits, keys[p].reshape(-1))
        golden.to_cache(v.astype(np.int64), 16 - kv_bits, kv_bits, values[p].reshape(-1))
        expected = np.empty(q_dim, np.int64)
        scale = golden.attention(q.astype(np.int64), keys, values, first[p], p + 1, heads, score_mult, score_shift,
                                 out_mult, out_shift, act_bits, ar.exp2_table(), ar.reciprocal_table(), expected)
        assert unpack_vector(result[0], act_bits, q_dim) == list(expected), p
        assert (result[1], result[2]) == tuple(int(v) for v in scale), p
        block = Attention(name="attention", stage="", heads=heads, kv_heads=kv_heads, head_dim=head_dim, window=None)
        assert result[-1] == block.latency(RTL_POINT, context=p - first[p] + 1, exponent=int(scale[1])), p


# -- the stage clock gate (hw_chip) ------------------------------------------------------------------

def test_clock_gate_passes_whole_high_phases_chosen_at_the_falling_edge(tmp_path):
    """gclk is clk's high phase exactly when enable was 1 at the falling edge before it, never a
    part of one, whatever enable does while clk is high (here it changes before, during and after
    the high phase)."""
    import subprocess
    from hardwire.rtl.top import clock_gate_module
    name, text = clock_gate_module()
    (tmp_path / "gate.v").write_text(text)
    rng = np.random.default_rng(7)
    # clk falls at 10k ns and rises at 10k + 5 ns; enable changes at 10k + 1..9 ns
    changes = [(cycle * 10 + int(rng.integers(1, 10)), int(rng.integers(0, 2))) for cycle in range(60)]
    steps = "\n".join(f"        #{t - p} enable = 1'b{v};" for (p, _), (t, v) in zip([(0, 0)] + changes, changes))
    (tmp_path / "tb.v").write_text(f"""`timescale 1ns/100ps
module tb;
    reg clk = 1'b1, enable = 1'b0;
    wire gclk;
    {name} dut (.clk(clk), .enable(enable), .gclk(gclk));
    initial begin #5 clk = 1'b1; forever begin #5 clk = 1'b0; #5 clk = 1'b1; end end
    initial begin
{steps}
        #20 $finish;
    end
    initial begin #0.5; forever begin $display("%0d %b %b %b", $realtime * 10, clk, enable, gclk); #1; end end
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "tb.v", "gate.v"], cwd=tmp_path, check=True)
    run = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True)
    trace = {}
    for line in run.stdout.splitlines():
        tenths, clk, enable, gclk = line.split()
        trace[int(tenths)] = (clk, enable, gclk)        # sampled at k + 0.5 ns
    assert len(trace) > 500
    passed = 0
    for tenths, (clk, _, gclk) in sorted(trace.items()):
        if clk == "0":
            assert gclk == "0", f"gclk high while clk is low at {tenths / 10} ns"
            continue
        fall = tenths // 100 * 100                       # the falling edge before this high phase
        if fall == 0:
            continue                                     # the gate's register is unknown before any fall
        enabled_then = trace[fall + 5][1]                # enable 0.5 ns after the fall (no change at 10k ns)
        assert gclk == enabled_then, (f"at {tenths / 10} ns gclk={gclk}, enable at the falling edge "
                                      f"({fall / 10} ns) was {enabled_then}")
        passed += gclk == "1"
    assert passed > 50, "the gate never passed a clock: the test did not exercise it"
