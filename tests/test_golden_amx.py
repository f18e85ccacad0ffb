"""The AMX tile-product kernel (hardwire.golden.amx) against the vpdpbusd kernel and §3 itself."""
from __future__ import annotations

import numpy as np
import pytest

from hardwire.formats import WeightFormat
from hardwire.freeze.quantize import quantize_rtn
from hardwire.golden import amx
from hardwire.golden import matvec as kernels
from hardwire.golden.matvec import accumulate, matvec_batch, pack_matrix
from tests.test_golden import ref_matvec

needs_amx = pytest.mark.skipif(not amx.AMX, reason="no AMX-INT8 here (CPU without it, or the OS refused the tile "
                                                     "data): matvec runs the vpdpbusd or portable kernel instead")
MULTIPLIER_LIMIT = 1 << 23      # §1.3: multipliers are at most 2^23


def extreme_case(rng, fmt: str, rows: int, cols: int, users: int):
    """A packed matrix of `fmt` whose first rows hold the largest and the smallest codes and whose
    multipliers reach their bound, with users' int8 vectors of which the first two are all -128
    and all +127 (the widest partial sums of either sign)."""
    q = quantize_rtn(rng.standard_normal((rows, cols)).astype(np.float32), WeightFormat.parse(fmt))
    largest = (1 << (q.format.bits - 1)) - 1
    q.codes[0], q.codes[1] = largest, -largest - 1
    mult = rng.integers(0, MULTIPLIER_LIMIT + 1, (rows, q.format.groups(cols)))   # §1.3: positive, at most 2^23
    mult[0] = MULTIPLIER_LIMIT
    shift, bias = rng.integers(18, 30, rows), rng.integers(-500, 500, rows)
    matrix = pack_matrix(q.codes, q.zeros, q.format.bits, q.format.group, mult, shift, bias)
    xs = rng.integers(-128, 128, (users, cols))
    xs[0], xs[1:2] = -128, 127
    return q, mult, shift, bias, matrix, xs


def vpdpbusd_sums(matrix, xs, monkeypatch):
    """The sums of the existing kernels (vpdpbusd where the CPU has it, else portable)."""
    with monkeypatch.context() as patch:
        patch.setattr(amx, "AMX", False)
        return accumulate(matrix, xs)


@needs_amx
@pytest.mark.parametrize("fmt, rows, cols", [
    ("w4g32", 37, 100),         # partial last group, rows not a multiple of 16, an odd number of row blocks
    ("w8g32", 37, 100),
    ("w4", 50, 768),            # per-channel: K = 64 per tile product, 12 products a group
    ("w8", 33, 2048),           # the widest group of the 110M shape (FFN down), 32 products
    ("w8", 20, 100),            # W = 112: K = 16
    ("w4g16a", 37, 100),        # zero points: a correction per row
    ("w8g32a", 10, 64),         # zero points in a single row block
    ("w8g32a", 40, 96),
    ("w3g17", 19, 70),          # groups padded from 17 to 32 columns
])
def test_tile_products_give_the_vpdpbusd_kernels_sums_at_the_extremes(fmt, rows, cols, monkeypatch):
    rng = np.random.default_rng(11)
    for users in (amx.MIN_USERS, 16, 33, 40):   # one tile, a pair, a pair and a one-user tile, padding
        _, _, _, _, matrix, xs = extreme_case(rng, fmt, rows, cols, users)
        assert amx.pays(users, kernels.ROW_BLOCK)
        assert np.array_equal(accumulate(matrix, xs), vpdpbusd_sums(matrix, xs, monkeypatch)), (fmt, users)


@needs_amx
def test_tile_products_are_exact_for_a_few_users_too(monkeypatch):
    """The kernel itself (below the batch where matvec picks it): a single, partly filled user tile."""
    rng = np.random.default_rng(3)
    for users in (1, 5):
        _, _, _, _, matrix, xs = extreme_case(rng, "w4g32", 37, 100, users)
        padded, removed, _ = kernels._prepare(xs.astype(np.int64), matrix.group, matrix.group_width, matrix.groups,
                                              matrix.offset, matrix.zeros)
        sums = np.empty((users, matrix.row_blocks * kernels.ROW_BLOCK), dtype=np.int64)
        amx.rows_amx(padded.astype(np.int8), removed.astype(np.int32), matrix.data, matrix.multiplier_bytes,
                     matrix.group_width, matrix.nibbles, matrix.offset, sums, parallel=False)
        assert np.array_equal(sums[:, :matrix.rows], vpdpbusd_sums(matrix, xs, monkeypatch))


@needs_amx
@pytest.mark.slow               # compiling the parallel build takes 10-15 s
def test_row_block_pairs_split_over_threads_give_the_same_sums(monkeypatch):
    """The parallel build cuts the pairs of row blocks into runs, each on a thread with its own tile
    configuration; three runs over seven blocks (one unpaired) must not change a sum."""
    rng = np.random.default_rng(8)
    monkeypatch.setattr(amx, "get_num_threads", lambda: 3)
    for fmt in ("w4g32", "w8g16a"):
        _, _, _, _, matrix, xs = extreme_case(rng, fmt, 100, 64, 20)
        padded, removed, _ = kernels._prepare(xs.astype(np.int64), matrix.group, matrix.group_width, matrix.groups,
                                              matrix.offset, matrix.zeros)
        sums = np.empty((len(xs), matrix.row_blocks * kernels.ROW_BLOCK), dtype=np.int64)
        amx.rows_amx(padded.astype(np.int8), removed.astype(np.int32), matrix.data, matrix.multiplier_bytes,
                     matrix.group_width, matrix.nibbles, matrix.offset, sums, parallel=True)
        assert np.array_equal(sums[:, :matrix.rows], vpdpbusd_sums(matrix, xs, monkeypatch)), fmt


@needs_amx
def test_a_batch_through_tile_products_is_section_3_for_every_user():
    rng = np.random.default_rng(5)
    for fmt in ("w4g32", "w8g16a"):
        q, mult, shift, bias, matrix, xs = extreme_case(rng, fmt, 21, 70, amx.MIN_USERS + 1)
        scales = [(int(rng.integers(8, 16)), int(rng.integers(0, 9))) for _ in xs]
        together = matvec_batch(matrix, xs, scales, 16)
        for user, (x, scale) in enumerate(zip(xs, scales)):
            assert together[user].tolist() == ref_matvec(q, mult, shift, bias, x.tolist(), scale, 16), (fmt, user)


@needs_amx
def test_the_one_call_batched_product_requantizes_in_the_tile_kernel_as_section_3(monkeypatch):
    """`matvec_batch_compiled` requantizes each pass's sums inside the tile kernel where the rows
    fill whole blocks, and after it where they do not: §3 for every user either way, with shifts
    that make the first rounding a left shift, saturating products and outputs, both output
    widths, on one thread and with the row blocks split over two."""
    import numba
    rng = np.random.default_rng(21)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_WEIGHTS", 0)
    for fmt, rows in (("w8", 48), ("w4", 32), ("w4g32", 64), ("w8g16a", 48), ("w8", 37)):
        q, mult, _, _, _, xs = extreme_case(rng, fmt, rows, 100, 33)
        shift, bias = rng.integers(0, 30, rows), rng.integers(-(1 << 20), 1 << 20, rows)
        shift[:4] = 0                       # k + e - 7 < 0: the first rounding shifts left
        matrix = pack_matrix(q.codes, q.zeros, q.format.bits, q.format.group, mult, shift, bias)
        scales = np.array([(rng.integers(8, 16), rng.integers(0, 9)) for _ in xs], dtype=np.int64)
        for out_bits in (16, 32):
            expected = [ref_matvec(q, mult, shift, bias, x.tolist(), (int(mu), int(e)), out_bits)
                        for x, (mu, e) in zip(xs, scales)]
            assert max(abs(v) for row in expected for v in row) == (1 << (out_bits - 1)) - 1     # saturates
            for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
                together = kernels.matvec_batch_compiled(kernels.compiled_fields(matrix), xs.astype(np.int64), scales,
                                                         threads, out_bits)
                assert together.tolist() == expected, (fmt, rows, out_bits, threads)


@needs_amx
def test_extras_reach_the_requantization_inside_the_tile_kernel():
    """matvec_batch requantizes inside the AMX kernel; a patch's adapter terms (extras) must be
    added to the sums first, exactly as the one-user matvec adds them."""
    rng = np.random.default_rng(8)
    for fmt in ("w4g32", "w8g32a"):
        _, _, _, _, matrix, xs = extreme_case(rng, fmt, 37, 100, 33)
        scales = [(int(rng.integers(8, 16)), int(rng.integers(0, 9))) for _ in xs]
        extras = [None if user % 3 == 0 else rng.integers(-(1 << 40), 1 << 40, matrix.rows) for user in range(len(xs))]
        together = matvec_batch(matrix, xs, scales, 16, extras)
        for user, (x, scale, extra) in enumerate(zip(xs, scales, extras)):
            assert together[user].tolist() == kernels.matvec(matrix, x, scale, 16, extra).tolist(), (fmt, user)
        assert not np.array_equal(together, matvec_batch(matrix, xs, scales, 16)), fmt     # the extras count


# -- the dispatch (every machine) -----------------------------------------------------------------

def test_tile_products_are_chosen_only_with_amx_enough_users_and_16_row_blocks(monkeypatch):
    monkeypatch.setattr(amx, "AMX", True)
    assert amx.pays(amx.MIN_USERS, 16) and amx.pays(32, 16)
    assert not amx.pays(amx.MIN_USERS - 1, 16)
    assert not amx.pays(32, 8)                  # 256-bit packing: a row block is half a B tile
    monkeypatch.setattr(amx, "AMX", False)
    assert not amx.pays(32, 16)


class Chosen(Exception):
    pass


def refuse(*args, **kwargs):
    raise Chosen


def test_without_amx_a_large_batch_takes_the_existing_kernels_and_stays_exact(monkeypatch):
    monkeypatch.setattr(amx, "AMX", False)
    monkeypatch.setattr(amx, "rows_amx", refuse)
    rng = np.random.default_rng(2)
    q, mult, shift, bias, matrix, xs = extreme_case(rng, "w4g32", 21, 70, 32)
    scales = [(11, 3)] * len(xs)
    together = matvec_batch(matrix, xs, scales, 16)
    for user in (0, 1, 31):
        assert together[user].tolist() == ref_matvec(q, mult, shift, bias, xs[user].tolist(), (11, 3), 16)


def test_int16_activations_never_reach_tile_products(monkeypatch):
    """Tile products take s8 activations; wider ones go to the portable int64 kernel."""
    monkeypatch.setattr(amx, "AMX", True)
    monkeypatch.setattr(amx, "rows_amx", refuse)
    rng = np.random.default_rng(4)
    q, mult, shift, bias, matrix, xs = extreme_case(rng, "w8g32", 21, 70, 32)
    xs[2] = 32767
    together = matvec_batch(matrix, xs, [(11, 3)] * len(xs), 16)
    assert together[2].tolist() == ref_matvec(q, mult, shift, bias, xs[2].tolist(), (11, 3), 16)


@pytest.mark.skipif(not kernels.VNNI or kernels.ROW_BLOCK != amx.TILE_ROWS,
                    reason="tile products are offered only on the vpdpbusd path with 16-row blocks")
def test_a_large_int8_batch_is_offered_to_tile_products_where_they_pay(monkeypatch):
    monkeypatch.setattr(amx, "AMX", True)
    monkeypatch.setattr(amx, "rows_amx", refuse)
    rng = np.random.default_rng(6)
    *_, matrix, xs = extreme_case(rng, "w4g32", 21, 70, amx.MIN_USERS)
    with pytest.raises(Chosen):
        accumulate(matrix, xs)
    accumulate(matrix, xs[:amx.MIN_USERS - 1])      # fewer users: the vpdpbusd kernel, no tile products


@needs_amx
def test_a_batched_step_through_tile_products_gives_every_user_the_logits_of_decoding_alone(monkeypatch):
    from hardwire.freeze.tables import build_tables, measure_ranges
    from hardwire.golden.forward import GoldenTransformer
    from hardwire.model.reference import KVCache
    from hardwire.model.spec import ModelSpec
    from tests.golden_dies import MemoryDie, RandomModel
    from tests.test_golden import SHAPES
    spec = ModelSpec(family="llama", max_context=32, **SHAPES["mha-untied"])
    die = MemoryDie(RandomModel(spec, 5), "w4g32", "int8")
    tables = build_tables(spec, die, measure_ranges(die, [list(range(16))]))
    rng = np.random.default_rng(9)
    tokens = [int(t) for t in rng.integers(0, spec.vocab_size, amx.MIN_USERS + 1)]
    import hardwire.golden.matvec as matvec_module
    assert matvec_module._TILES and len(tokens) >= amx.MIN_USERS   # the one-call step's rule for tile products
    transformer = GoldenTransformer(die, tables)
    together = transformer.step_batch(tokens, [KVCache() for _ in tokens])      # one compiled call
    blockwise_transformer = GoldenTransformer(die, tables)
    blockwise_transformer.compiled_layers = None          # block by block, through `amx.rows_amx`
    tile_calls, tile_products = [], amx.rows_amx
    monkeypatch.setattr(amx, "rows_amx", lambda *args, **kw: (tile_calls.append(1), tile_products(*args, **kw)))
    blockwise = blockwise_transformer.step_batch(tokens, [KVCache() for _ in tokens])
    assert tile_calls                                     # that step did go through tile products
    for token, row, block_row in zip(tokens, together, blockwise):
        transformer.reset()
        alone = transformer.forward([token])[-1].tolist()
        assert row.tolist() == alone and block_row.tolist() == alone
