"""The golden model is exactly docs/arithmetic.md: checked against a slow second implementation
written here from the spec alone (plain Python integers, which cannot overflow, so any int64
overflow in the fast path shows up as a mismatch), on random dies of several shapes."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardwire import arithmetic as ar
from hardwire.freeze.tables import build_tables, measure_ranges
from hardwire.golden.engine import GoldenEngine
from hardwire.golden.forward import STEP_BLOCKS, GoldenTransformer
from hardwire.golden.matvec import matvec, matvec_batch, pack_matrix
from hardwire.golden.sample import IntegerSampler, SplitMix64
from hardwire.model.reference import KVCache
from hardwire.model.spec import ModelSpec
from tests.golden_dies import MemoryDie, RandomModel

ROOT = Path(__file__).resolve().parent.parent


# -- the slow reference: docs/arithmetic.md, one Python integer at a time -----------------------

def r_shift(x: int, s: int) -> int:                       # §1.1
    return (x + (1 << (s - 1))) >> s if s > 0 else x << -s


def sat(x: int, bits: int) -> int:                         # §1.2
    limit = (1 << (bits - 1)) - 1
    return max(-limit, min(limit, x))


def ref_rsqrt(v: int, table) -> tuple[int, int]:           # §4.2
    t = (v.bit_length() - 15) // 2
    m = v >> (2 * t) if t >= 0 else v << (-2 * t)
    y = int(table[(m >> 8) - 64])
    e = 3 * 2 ** 45 - m * ((y * y) >> 15)
    return (y * (e >> 16)) >> 30, t


def ref_reciprocal(v: int, table) -> tuple[int, int]:      # §6.3
    n = v.bit_length() - 16
    m = v >> n
    r = int(table[(m >> 7) - 256])
    return (r * ((2 ** 40 - m * r) >> 8)) >> 31, n


def ref_token_quantize(wide: list[int], bits: int) -> tuple[list[int], tuple[int, int]]:   # §2.2
    largest, limit = max(abs(w) for w in wide), (1 << (bits - 1)) - 1
    reciprocals = [round(65536 / mu) for mu in range(8, 16)]
    chosen = (15, 0)
    for e in range(8, -1, -1):
        fits = [mu for mu in range(8, 16) if r_shift(largest * reciprocals[mu - 8], 21 - e) <= limit]
        if fits:
            chosen = (fits[0], e)
            break
    mu, e = chosen
    return [sat(r_shift(w * reciprocals[mu - 8], 21 - e), bits) for w in wide], chosen


def ref_matvec(q, mult, shift, bias, x, scale, out_bits):      # §3
    mu, e = scale
    rows, cols = q.codes.shape
    width = q.format.group_width(cols)
    out = []
    for i in range(rows):
        acc = 0
        for g in range(q.format.groups(cols)):
            zero = 0 if q.zeros is None else int(q.zeros[i, g])
            partial = sum((int(q.codes[i, j]) - zero) * x[j] for j in range(g * width, min(cols, (g + 1) * width)))
            acc += int(mult[i, g]) * partial
        guarded = sat(r_shift(acc, int(shift[i]) + e - 7), 59)
        out.append(sat(r_shift(guarded * mu, 10) + (int(bias[i]) if bias is not None else 0), out_bits))
    return out


def ref_rmsnorm(h, mult, shift, eps, bits, table):         # §4
    pre = max(0, max(abs(v) for v in h).bit_length() - 23)
    total = sum((v >> pre) ** 2 for v in h) + r_shift(eps, 2 * pre)
    y, t = ref_rsqrt(max(total, 1), table)
    wide = [r_shift(r_shift((v >> pre) * y, t + 7) * int(c), shift - 8) for v, c in zip(h, mult)]
    return ref_token_quantize(wide, bits)


def ref_rope(x, heads, head_dim, cos, sin):                # §5
    half, out = head_dim // 2, list(x)
    for h in range(heads):
        for j in range(half):
            a, b, c, s = x[h * head_dim + j], x[h * head_dim + half + j], int(cos[j]), int(sin[j])
            out[h * head_dim + j] = sat(r_shift(a * c - b * s, 14), 16)
            out[h * head_dim + half + j] = sat(r_shift(b * c + a * s, 14), 16)
    return out


def ref_exp2(d: int, table) -> int:                        # §6.2
    return 0 if d >> 8 >= 16 else int(table[d & 255]) >> (d >> 8)


def ref_attention(q, keys, values, first, spec, score, out_mult, bits, tables):   # §6
    hd, group = spec.head_dim, spec.heads // spec.kv_heads
    score, out_mult = [int(v) for v in score], [int(v) for v in out_mult]
    wide = []
    for h in range(spec.heads):
        g = h // group
        z = {t: r_shift(sum(q[h * hd + d] * keys[t][g][d] for d in range(hd)) * score[0], score[1])
             for t in range(first, len(keys))}
        top = max(z.values())
        weights = {t: ref_exp2(top - z[t], tables["exp2_table"]) for t in z}
        total = sum(weights.values())
        r, n = ref_reciprocal(total, tables["reciprocal_table"])
        for d in range(hd):
            mixed = sum(weights[t] * values[t][g][d] for t in z)
            average = r_shift((mixed >> n) * r, 31)
            wide.append(r_shift(average * out_mult[0], out_mult[1] - 8))
    return ref_token_quantize(wide, bits)


def ref_swiglu(gate, up, index_mult, mult, bits, table):   # §7
    index_mult, mult = [int(v) for v in index_mult], [int(v) for v in mult]
    wide = []
    for g, u in zip(gate, up):
        index = max(-1024, min(1023, r_shift(g * index_mult[0], index_mult[1])))
        silu = r_shift(g * int(table[index + 1024]), 15)
        wide.append(r_shift(silu * u * mult[0], mult[1] - 8))
    return ref_token_quantize(wide, bits)


class SlowGolden:
    """The whole token step from the spec, with lists of Python ints."""

    def __init__(self, die, tables):
        self.die, self.t, self.spec = die, tables, die.spec
        self.keys = [[] for _ in range(self.spec.layers)]
        self.values = [[] for _ in range(self.spec.layers)]

    def linear(self, name, x, scale, bits):
        t = self.t
        return ref_matvec(self.die.quantized(name), t[name + ".mult"], t[name + ".shift"], t.get(name + ".bias"),
                          x, scale, bits)

    def norm(self, name, h):
        t = self.t
        return ref_rmsnorm(h, t[name + ".mult"], int(t[name + ".shift"][0]), int(t["norm_eps"][0]),
                           int(t["activation_bits"][0]), t["rsqrt_table"])

    def step(self, token: int) -> list[int]:
        spec, t = self.spec, self.t
        pos = len(self.keys[0])
        bits, kv_bits = int(t["activation_bits"][0]), int(t["kv_bits"][0])
        embed = self.die.quantized("embed")
        width = embed.format.group_width(spec.hidden_dim)
        h = []
        for i in range(spec.hidden_dim):
            zero = 0 if embed.zeros is None else int(embed.zeros[token, i // width])
            value = (int(embed.codes[token, i]) - zero) * int(t["embed.lookup_mult"][token, i // width])
            h.append(sat(r_shift(value, int(t["embed.lookup_shift"][token])), 32))
        first = 0 if spec.sliding_window is None else max(0, pos + 1 - spec.sliding_window)
        for layer in range(spec.layers):
            p = f"layers.{layer}."
            x, scale = self.norm(p + "attn_norm", h)
            q = ref_rope(self.linear(p + "wq", x, scale, 16), spec.heads, spec.head_dim,
                         t["rope_cos"][pos], t["rope_sin"][pos])
            k = ref_rope(self.linear(p + "wk", x, scale, 16), spec.kv_heads, spec.head_dim,
                         t["rope_cos"][pos], t["rope_sin"][pos])
            v = self.linear(p + "wv", x, scale, 16)
            to_cache = [sat(r_shift(value, 16 - kv_bits), kv_bits) for value in k + v]
            hd = spec.head_dim
            self.keys[layer].append([to_cache[g * hd:(g + 1) * hd] for g in range(spec.kv_heads)])
            self.values[layer].append([to_cache[spec.kv_dim + g * hd:spec.kv_dim + (g + 1) * hd]
                                       for g in range(spec.kv_heads)])
            o, scale = ref_attention(q, self.keys[layer], self.values[layer], first, spec, t[p + "score_mult"],
                                     t[p + "attention_out_mult"], bits, t)
            h = [sat(a + b, 32) for a, b in zip(h, self.linear(p + "wo", o, scale, 32))]
            x, scale = self.norm(p + "ffn_norm", h)
            gate, up = self.linear(p + "w_gate", x, scale, 16), self.linear(p + "w_up", x, scale, 16)
            d, scale = ref_swiglu(gate, up, t[p + "sigmoid_index_mult"], t[p + "swiglu_mult"], bits,
                                  t["sigmoid_table"])
            h = [sat(a + b, 32) for a, b in zip(h, self.linear(p + "w_down", d, scale, 32))]
        x, scale = self.norm("final_norm", h)
        return self.linear(spec.classifier, x, scale, 32)


# -- dies of several shapes ---------------------------------------------------------------------

SHAPES = {
    "mha-untied": dict(hidden_dim=32, layers=2, heads=4, kv_heads=4, head_dim=8, ffn_dim=48, vocab_size=64),
    "gqa-tied-bias": dict(hidden_dim=48, layers=2, heads=4, kv_heads=2, head_dim=16, ffn_dim=80, vocab_size=96,
                          tied_embeddings=True, qkv_bias=True, family="qwen2"),
    "mqa-window": dict(hidden_dim=32, layers=1, heads=4, kv_heads=1, head_dim=8, ffn_dim=40, vocab_size=50,
                       sliding_window=5, family="mistral"),
}
FORMATS = {"mha-untied": ("w8", "int8", 16), "gqa-tied-bias": ("w4g16", "int8", 8),
           "mqa-window": ("w3g16a", "int16", 16)}


def make_die(shape: str, seed: int = 0, **spec_overrides):
    fields = dict(family="llama", max_context=32)
    fields.update(SHAPES[shape], **spec_overrides)
    spec = ModelSpec(**fields)
    fmt, activations, kv_bits = FORMATS[shape]
    die = MemoryDie(RandomModel(spec, seed), fmt, activations)
    ranges = measure_ranges(die, [list(np.random.default_rng(seed).integers(0, spec.vocab_size, 16))])
    return die, build_tables(spec, die, ranges, kv_bits=kv_bits)


@pytest.fixture(scope="module", params=list(SHAPES))
def die_and_tables(request):
    return make_die(request.param)


def test_golden_step_equals_slow_integer_reference(die_and_tables):
    die, tables = die_and_tables
    ids = list(np.random.default_rng(3).integers(0, die.spec.vocab_size, 9))
    fast = GoldenTransformer(die, tables).forward(ids)
    slow = SlowGolden(die, tables)
    for row, token in enumerate(ids):
        assert fast[row].tolist() == slow.step(int(token)), f"token {row} differs"


def every_split_on_one_and_two_threads(monkeypatch):
    """Yields 1, then 2 where numba has two threads, set as the thread count, with every matrix
    and context counted large enough to split; the thread count is put back after."""
    import numba
    import hardwire.golden.forward as forward_module
    import hardwire.golden.matvec as matvec_module
    monkeypatch.setattr(matvec_module, "PARALLEL_MIN_WEIGHTS", 0)
    monkeypatch.setattr(forward_module, "PARALLEL_MIN_ATTENTION", 0)
    threads = numba.get_num_threads()
    try:
        for count in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(count)
            yield count
    finally:
        numba.set_num_threads(threads)


def test_the_one_call_step_equals_the_block_by_block_step_on_one_and_two_threads(die_and_tables, monkeypatch):
    """`step` runs a whole token in one compiled call (`step_compiled`); a traced step goes block by
    block through `run_users`. With every matrix and context counted large, the second thread
    splits each product's row blocks and each attention's heads."""
    die, tables = die_and_tables
    ids = list(np.random.default_rng(4).integers(0, die.spec.vocab_size, 12))
    blockwise = GoldenTransformer(die, tables).forward(ids, trace=lambda name, value: None)
    for count in every_split_on_one_and_two_threads(monkeypatch):
        transformer = GoldenTransformer(die, tables)
        assert transformer.compiled_layers is not None
        assert np.array_equal(transformer.forward(ids), blockwise), f"{count} thread(s)"


def test_the_one_call_batched_step_equals_the_block_by_block_batched_step_on_one_and_two_threads(die_and_tables,
                                                                                               monkeypatch):
    """A batch of users untraced and unpatched runs as one compiled call (`step_batch_compiled`);
    with `compiled_layers` off it goes block by block through `run_users`. Users at different
    positions; with every matrix and context counted large, the second thread splits the products'
    row blocks and the per-user blocks' users."""
    die, tables = die_and_tables
    rng = np.random.default_rng(12)
    prompts = [list(rng.integers(0, die.spec.vocab_size, 1 + i % 4)) for i in range(5)]
    steps = [[int(t) for t in rng.integers(0, die.spec.vocab_size, len(prompts))] for _ in range(3)]

    def decode(transformer):
        caches = [KVCache() for _ in prompts]
        for cache, ids in zip(caches, prompts):
            for token in ids:
                transformer.step_batch([int(token)], [cache])
        return [transformer.step_batch(tokens, caches) for tokens in steps]

    blockwise_transformer = GoldenTransformer(die, tables)
    blockwise_transformer.compiled_layers = None
    blockwise = decode(blockwise_transformer)
    for count in every_split_on_one_and_two_threads(monkeypatch):
        transformer = GoldenTransformer(die, tables)
        assert transformer.compiled_layers is not None
        for step, (together, expected) in enumerate(zip(decode(transformer), blockwise)):
            assert all(np.array_equal(a, b) for a, b in zip(together, expected)), (count, step)


def test_every_intermediate_of_a_step_is_an_integer_vector(die_and_tables):
    die, tables = die_and_tables
    seen = []
    GoldenTransformer(die, tables).forward([1, 2, 3], trace=lambda name, value: seen.append((name, value)))
    assert len(seen) > 10
    for name, value in seen:
        assert np.issubdtype(value.dtype, np.integer), f"{name} is {value.dtype}"
    assert all(np.issubdtype(v.dtype, np.integer) for k, v in tables.items()), "tables must be integer"


def test_golden_logits_track_the_float_model(die_and_tables):
    die, tables = die_and_tables
    from hardwire.model.reference import FloatTransformer
    ids = list(np.random.default_rng(5).integers(0, die.spec.vocab_size, 12))
    golden = GoldenEngine(die, tables=tables).logits(ids)
    reference = FloatTransformer(die.spec, die.tensor).forward(ids)
    error = np.abs(golden - reference).max() / np.abs(reference).max()
    assert error < 0.15, f"relative logit error {error:.3f}"


# -- blocks at their edges ----------------------------------------------------------------------

def test_primitives_round_half_up_and_saturate_symmetrically():
    assert [ar.rshift_round(v, 1) for v in (-3, -2, -1, 1, 2, 3)] == [-1, -1, 0, 1, 1, 2]
    assert ar.rshift_round(5, -3) == 40
    assert ar.saturate(200, 8) == 127 and ar.saturate(-200, 8) == -127 and ar.saturate(-128, 8) == -127


def test_rsqrt_and_reciprocal_are_accurate_over_their_whole_range():
    rsqrt_table, reciprocal_table = ar.rsqrt_table(), ar.reciprocal_table()
    for v in [1, 2, 3, 1000, 2 ** 20 + 7, 3 ** 30, 2 ** 62 - 1] + list(range(16384, 65536, 997)):
        y, t = ar.rsqrt(v, rsqrt_table)
        assert (y, t) == ref_rsqrt(v, rsqrt_table)
        assert abs(y * 2.0 ** -(30 + t) * math.sqrt(v) - 1) < 3e-5
    for v in [2 ** 15, 2 ** 15 + 1, 99991, 2 ** 40 + 3, 2 ** 55]:
        r, n = ar.reciprocal(v, reciprocal_table)
        assert (r, n) == ref_reciprocal(v, reciprocal_table)
        assert abs(r * 2.0 ** -(39 + n) * v - 1) < 1e-5


def test_token_quantize_uses_the_finest_step_that_fits_and_saturates_beyond():
    out = np.empty(3, np.int64)
    small = np.array([3, -2, 1], np.int64)               # fits at the finest step
    assert ar.token_quantize(small, 8, out) == (8, 8) and out.tolist() == [3, -2, 1]
    huge = np.array([1 << 40, -(1 << 40), 5], np.int64)  # beyond the coarsest step: saturates
    assert ar.token_quantize(huge, 8, out) == (15, 0) and out.tolist() == [127, -127, 0]
    for wide in (np.array([1000, -37, 12], np.int64), np.array([123456, 1, -99999], np.int64)):
        scale = ar.token_quantize(wide, 8, out)
        assert (out.tolist(), scale) == ref_token_quantize(wide.tolist(), 8)
        assert np.abs(out).max() >= 64                    # the chosen step uses the range


def test_matvec_saturates_and_keeps_int16_activations_exact():
    rng = np.random.default_rng(0)
    codes = rng.integers(-128, 128, (6, 300)).astype(np.int8)
    codes[0] = 127                                        # worst-case row: every product at its maximum
    x = np.full(300, 32767, np.int64)
    matrix = pack_matrix(codes, None, 8, None, np.full((6, 1), 1 << 22), np.full(6, 0))
    y = matvec(matrix, x, (8, 0), 16)
    assert y[0] == 32767                                  # saturated, not wrapped
    exact = [sat(r_shift(sat(r_shift(sum(int(c) * 32767 for c in row) * (1 << 22), -7), 59) * 8, 10), 16)
             for row in codes]
    assert y.tolist() == exact


def test_nibble_packing_matches_signed_codes_with_zero_points_and_odd_groups():
    from hardwire.formats import WeightFormat
    from hardwire.freeze.quantize import quantize_rtn
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((5, 70)).astype(np.float32)
    for fmt in ("w4g16a", "w3g17", "w2", "w6g32a"):
        q = quantize_rtn(weight, WeightFormat.parse(fmt))
        mult = rng.integers(1 << 22, 1 << 23, (5, q.format.groups(70)))
        shift = np.full(5, 20)
        x = rng.integers(-127, 128, 70)
        fast = matvec(pack_matrix(q.codes, q.zeros, q.format.bits, q.format.group, mult, shift), x, (11, 3), 32)
        assert fast.tolist() == ref_matvec(q, mult, shift, None, x.tolist(), (11, 3), 32), fmt


@pytest.mark.parametrize("kernel", ["vnni", "portable"])
def test_every_users_batched_matvec_equals_the_reference_on_both_kernels(kernel, monkeypatch):
    """Nine users (two tiles of four and one alone), rows that do not fill a row block, groups
    that do not fill a vector, extreme int8 and int16 activations: each user's row is §3 exactly."""
    import hardwire.golden.matvec as kernels
    from hardwire.formats import WeightFormat
    from hardwire.freeze.quantize import quantize_rtn
    if kernel == "vnni" and not kernels.VNNI:
        pytest.skip("this CPU has no u8 x s8 dot-product instruction; the portable kernel runs instead")
    monkeypatch.setattr(kernels, "VNNI", kernel == "vnni")
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((37, 100)).astype(np.float32)
    for fmt in ("w4g32", "w8g32", "w4g16a", "w8", "w3g17", "w8g32a"):
        q = quantize_rtn(weight, WeightFormat.parse(fmt))
        q.codes[0] = (1 << (q.format.bits - 1)) - 1        # a row of largest codes: widest partial sums
        mult = rng.integers(1 << 22, 1 << 23, (37, q.format.groups(100)))
        mult[1] = 1 << 23                                  # §1.3's largest multiplier (its top byte is 0x80)
        shift, bias = rng.integers(18, 30, 37), rng.integers(-500, 500, 37)
        matrix = pack_matrix(q.codes, q.zeros, q.format.bits, q.format.group, mult, shift, bias)
        for x_bits in (8, 16):
            largest = (1 << (x_bits - 1)) - 1
            xs = [rng.integers(-largest, largest + 1, 100) for _ in range(9)]
            xs[0][:] = -largest - 1                           # int8's -128 (or int16's -32768) everywhere
            scales = [(int(rng.integers(8, 16)), int(rng.integers(0, 9))) for _ in xs]
            together = matvec_batch(matrix, xs, scales, 16)
            for user, (x, scale) in enumerate(zip(xs, scales)):
                expected = ref_matvec(q, mult, shift, bias, x.tolist(), scale, 16)
                assert together[user].tolist() == expected, (fmt, x_bits, user)
                assert matvec(matrix, x, scale, 16).tolist() == expected, (fmt, x_bits, user)   # one user's path


def test_packing_refuses_a_multiplier_wider_than_its_three_bytes():
    codes = np.ones((4, 32), np.int8)
    with pytest.raises(ValueError, match="multiplier"):
        pack_matrix(codes, None, 8, None, np.full((4, 1), 1 << 24), np.zeros(4))


@pytest.mark.parametrize("fmt", ["w4g32", "w8g32"])
def test_a_batched_step_gives_every_user_the_logits_of_decoding_alone(fmt):
    spec = ModelSpec(family="llama", max_context=32, **SHAPES["mha-untied"])
    die = MemoryDie(RandomModel(spec, 5), fmt, "int8")
    tables = build_tables(spec, die, measure_ranges(die, [list(range(16))]))
    rng = np.random.default_rng(9)
    prompts = [list(rng.integers(0, spec.vocab_size, 1 + i % 5)) for i in range(9)]
    last = [int(t) for t in rng.integers(0, spec.vocab_size, len(prompts))]
    transformer = GoldenTransformer(die, tables)
    caches = [KVCache() for _ in prompts]
    for cache, ids in zip(caches, prompts):                 # each user's prompt, at its own position
        for token in ids:
            transformer.step_batch([int(token)], [cache])
    together = transformer.step_batch(last, caches)
    for ids, token, row in zip(prompts, last, together):
        transformer.reset()
        assert row.tolist() == transformer.forward(ids + [token])[-1].tolist()


def test_residual_saturates_instead_of_wrapping():
    from hardwire.golden.forward import residual_add
    h = np.array([2 ** 31 - 10, -(2 ** 31) + 10, 5], np.int64)
    residual_add(h, np.array([100, -100, 1], np.int64))
    assert h.tolist() == [2 ** 31 - 1, -(2 ** 31) + 1, 6]


def test_extreme_residual_scale_still_matches_the_reference():
    die, tables = make_die("mha-untied", seed=2)
    tables = dict(tables)
    tables["embed.lookup_shift"] = tables["embed.lookup_shift"] - 12      # embeddings 4096x too large
    fast = GoldenTransformer(die, tables).forward([3, 4, 5])
    slow = SlowGolden(die, tables)
    assert [row.tolist() for row in fast] == [slow.step(t) for t in (3, 4, 5)]


# -- sampling and determinism -------------------------------------------------------------------

def test_splitmix64_matches_its_published_first_outputs():
    rng = SplitMix64(1234567)
    assert [rng.next() for _ in range(3)] == [6457827717110365317, 3203168211198807973, 9817491932198370423]


def test_integer_sampling_follows_temperature_and_top_p():
    tables = {"exp2_table": ar.exp2_table(), "logit_frac_bits": np.array([12])}
    logits = np.array([0, 4096 * 3, 4096 * 2, -4096 * 10], np.int64)
    assert IntegerSampler(tables, 0.0, 1.0, 0)(logits) == 1
    narrow = IntegerSampler(tables, 1.0, 0.5, 7)
    assert {narrow(logits) for _ in range(50)} == {1}
    wide = IntegerSampler(tables, 1.0, 1.0, 7)
    counts = np.bincount([wide(logits) for _ in range(2000)], minlength=4)
    p = np.exp([0, 3, 2, -10]) / np.exp([0, 3, 2, -10]).sum()
    assert np.all(np.abs(counts / 2000 - p) < 0.04)


def test_generation_is_deterministic_per_seed_and_differs_across_seeds(die_and_tables):
    die, tables = die_and_tables
    engine = GoldenEngine(die, tables=tables)
    first = engine.generate([1, 2], max_tokens=12, temperature=1.0, seed=11, stop_at_eos=False).ids
    again = engine.generate([1, 2], max_tokens=12, temperature=1.0, seed=11, stop_at_eos=False).ids
    other = [engine.generate([1, 2], max_tokens=12, temperature=1.0, seed=s, stop_at_eos=False).ids
             for s in (12, 13, 14)]
    assert first == again
    assert any(o != first for o in other)


SUBPROCESS = """
import json, sys
sys.path.insert(0, {root!r})
from tests.test_golden import make_die
from hardwire.golden.engine import GoldenEngine
die, tables = make_die("gqa-tied-bias")
engine = GoldenEngine(die, tables=tables)
out = {{"logits": engine.forward_integer([1, 5, 9]).tolist(),
        "ids": engine.generate([1, 5], max_tokens=10, temperature=0.8, top_p=0.9, seed=int(sys.argv[1]),
                               stop_at_eos=False).ids}}
print(json.dumps(out))
"""


def test_two_processes_produce_the_same_logits_and_tokens():
    script = SUBPROCESS.format(root=str(ROOT))
    runs = [json.loads(subprocess.run([sys.executable, "-c", script, "5"], capture_output=True, text=True,
                                      check=True, cwd=ROOT).stdout) for _ in range(2)]
    assert runs[0] == runs[1]
    die, tables = make_die("gqa-tied-bias")
    here = GoldenEngine(die, tables=tables)
    assert here.forward_integer([1, 5, 9]).tolist() == runs[0]["logits"]


# -- a real die, end to end ---------------------------------------------------------------------

def test_golden_backend_opens_a_die_directory_and_greedy_decodes(stories_die):
    from hardwire.runtime.engine import make_engine
    engine = make_engine(stories_die.path, backend="golden")
    float_engine = make_engine(stories_die.path, backend="float")
    prompt = [1] + engine.tokenizer.encode("Once upon a time", bos=False)
    golden_ids = engine.generate(prompt, max_tokens=24).ids
    float_ids = float_engine.generate(prompt, max_tokens=24).ids
    assert sum(a == b for a, b in zip(golden_ids, float_ids)) >= 16
    logits = engine.logits(prompt)
    assert logits.dtype == np.float32 and logits.shape == (len(prompt), engine.spec.vocab_size)


def test_golden_backend_refuses_a_float_checkpoint():
    import hardwire
    from hardwire.errors import BadConfig
    with pytest.raises(BadConfig, match="freeze"):
        GoldenEngine(hardwire.load())


def copy_without_tables(die, path: Path) -> Path:
    """A valid die (ids and hashes consistent) with every file of `die` but its datapath tables, as
    a hardwire from before the tables were stored wrote it."""
    from hardwire.die import GOLDEN_TABLES_FILE, GOLDEN_TABLES_KEY, DieWriter
    with DieWriter(path) as writer:
        for relative in die.manifest["files"]:
            if relative != GOLDEN_TABLES_FILE:
                writer.copy_file(die.path / relative, relative)
        writer.tensors = die.manifest["tensors"]
        writer.commit({k: v for k, v in die.manifest.items()
                       if k not in ("format", "format_version", "id", "tensors", "files", GOLDEN_TABLES_KEY)})
    return path


def test_a_die_without_datapath_tables_is_refused_with_a_way_out(stories_die, tmp_path, cli):
    from hardwire.die import open_die
    from hardwire.errors import BadDie
    old = copy_without_tables(stories_die, tmp_path / "old.die")
    with pytest.raises(BadDie, match="no datapath tables.*freeze the model again"):
        GoldenEngine(open_die(old))
    proc = cli("run", old, "--backend", "golden", "-n", "2", expect=2)
    assert "old.die" in proc.stderr and "hardwire freeze" in proc.stderr and "Traceback" not in proc.stderr
    cli("run", old, "--backend", "float", "-n", "2")           # its weights are still a model


def test_quality_scores_the_golden_backend_from_its_own_logits(stories_die):
    """`hardwire quality --backend golden` perplexity equals the NLL of the golden engine's logits,
    recomputed here, and agrees with the float model on most tokens."""
    import hardwire
    from hardwire.measure.quality import evaluate
    from hardwire.model.load import bundled_text_path
    from hardwire.model.text import read_sequences
    from hardwire.runtime.engine import make_engine
    float_model = hardwire.load()
    sequences = read_sequences(bundled_text_path(), float_model.tokenizer, limit=3, window=512)
    (golden,), reference = evaluate([stories_die], float_model, sequences, backend="golden")
    engine = make_engine(stories_die, backend="golden")
    nll = tokens = 0
    for ids in sequences:
        logits = engine.logits(ids).astype(np.float64)
        shifted = logits[:-1] - logits[:-1].max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        nll -= log_probs[np.arange(len(ids) - 1), ids[1:]].sum()
        tokens += len(ids) - 1
    assert golden["tokens"] == tokens and golden["layer_error"] is None
    assert golden["perplexity"] == pytest.approx(np.exp(nll / tokens), rel=1e-9)
    assert golden["top1_agreement"] > 0.9
    assert golden["perplexity"] < reference["perplexity"] * 1.05


def test_a_timed_one_call_batched_step_counts_every_block_and_gives_the_same_logits(die_and_tables):
    """`step_cycles` set: the one-call batched step adds each block's cycles (`cycles.read_cycles`)
    and returns the logits of the untimed step."""
    from hardwire.golden.cycles import cycles_now
    die, tables = die_and_tables
    tokens = [3, 5, 7]

    def decode(transformer):
        caches = [KVCache() for _ in tokens]
        return [transformer.step_batch(tokens, caches) for _ in range(2)]

    untimed = decode(GoldenTransformer(die, tables))
    timed_transformer = GoldenTransformer(die, tables)
    timed_transformer.step_cycles = np.zeros(len(STEP_BLOCKS), dtype=np.int64)
    started = cycles_now()
    timed = decode(timed_transformer)
    elapsed = cycles_now() - started
    for step, (a, b) in enumerate(zip(timed, untimed)):
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), step
    spent = timed_transformer.step_cycles
    if started == 0:
        pytest.skip("no cycle counter on this CPU")
    assert (spent > 0).all(), dict(zip(STEP_BLOCKS, spent))
    assert spent.sum() <= elapsed



@pytest.mark.parametrize("wrong", [np.zeros(3, np.int64), np.zeros(len(STEP_BLOCKS), np.int32),
                                   np.zeros((len(STEP_BLOCKS), 1), np.int64), [0] * len(STEP_BLOCKS)])
def test_a_wrong_step_cycles_array_is_refused_not_written_past(die_and_tables, wrong):
    die, tables = die_and_tables
    transformer = GoldenTransformer(die, tables)
    transformer.step_cycles = wrong
    with pytest.raises(ValueError, match="step_cycles"):
        transformer.step_batch([3, 5], [KVCache(), KVCache()])
