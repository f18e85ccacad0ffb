"""A patch in the RTL (docs/arithmetic.md §11): the low-rank block equals the golden adapter term, and
a patched chip equals the patched golden model bit for bit.

The block's constants come from its adapter SRAM, loaded by the simulator at start from the images
`hardwire.rtl.blocks.adapter.sram_image` lays out; the reference is the golden model's own
`adapter_term` (`apply_adapter`), never a re-implementation.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hardwire.adapters import ADAPTER_A_MULT_BITS, ADAPTER_B_MULT_BITS, CODE_LIMIT, MAX_RANK, TARGETS, Adapter
from hardwire.datapath import LowRank
from hardwire.golden.adapter import adapter_inner, apply_adapter
from hardwire.rtl.blocks.adapter import SRAM_PLUSARG, adapter_module, adapter_name, term_bits, write_sram_images
from hardwire.rtl.sim import pack_vector, run_icarus, unpack_vector

icarus = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                            reason="Icarus Verilog (iverilog, vvp) is not installed")


def random_adapter(rng, target: str, rank: int, rows: int, cols: int, a_shift: int, b_shift: int) -> Adapter:
    return Adapter(target, rng.integers(-CODE_LIMIT, CODE_LIMIT + 1, (rank, cols)).astype(np.int8),
                   rng.integers(0, 1 << ADAPTER_A_MULT_BITS, rank).astype(np.int64), a_shift,
                   rng.integers(-CODE_LIMIT, CODE_LIMIT + 1, (rows, rank)).astype(np.int8),
                   rng.integers(0, 1 << ADAPTER_B_MULT_BITS, rows).astype(np.int64), b_shift)


def extreme_adapter(target: str, rank: int, rows: int, cols: int, a_shift: int, b_shift: int, sign: int = 1) -> Adapter:
    """Largest codes and multipliers everywhere (alternating signs in B): t' saturates unless a_shift
    is large, and |T| reaches its bound when b_shift is 0."""
    b = np.where(np.arange(rank) % 2 == 0, CODE_LIMIT, -CODE_LIMIT)[None, :].repeat(rows, axis=0) * sign
    return Adapter(target, np.full((rank, cols), CODE_LIMIT, np.int8),
                   np.full(rank, (1 << ADAPTER_A_MULT_BITS) - 1, np.int64), a_shift, b.astype(np.int8),
                   np.full(rows, (1 << ADAPTER_B_MULT_BITS) - 1, np.int64), b_shift)


def input_vectors(rng, cols: int, bits: int) -> list[np.ndarray]:
    limit = (1 << (bits - 1)) - 1
    return [rng.integers(-limit, limit + 1, cols), np.zeros(cols, np.int64), np.full(cols, limit),
            np.full(cols, -limit), np.where(np.arange(cols) % 2 == 0, limit, -limit)]


def simulate(tmp_path, adapter: Adapter | None, rows: int, cols: int, rank: int, x_bits: int, xs, load: bool = True):
    """The block's terms (and cycles) for each x, its SRAM loaded with `adapter` (None: zeros)."""
    name = "test.w"
    write_sram_images(tmp_path, {name: (rows, cols)}, rank, {name: adapter} if adapter is not None else {})
    bits = term_bits(cols, rank, x_bits)
    results = run_icarus(adapter_module(name, rows, cols, rank, x_bits), adapter_name(name), [("x", cols * x_bits)],
                         [("term", rows * bits)], [[pack_vector(x, x_bits)] for x in xs], workdir=tmp_path,
                         plusargs=(f"+{SRAM_PLUSARG}",) if load else ())
    return [(unpack_vector(r[0], bits, rows), r[-1]) for r in results]


def random_case(a_shift: int, b_shift: int):
    return lambda rng, rank, rows, cols: random_adapter(rng, "test.w", rank, rows, cols, a_shift, b_shift)


def extreme_case(a_shift: int, b_shift: int, sign: int = 1):
    return lambda rng, rank, rows, cols: extreme_adapter("test.w", rank, rows, cols, a_shift, b_shift, sign)


CASES = {   # name: (hardware rank, adapter rank, rows, cols, x bits, adapter maker)
    "random": (4, 4, 6, 9, 8, random_case(30, 20)),
    "lower rank than the hardware": (5, 2, 7, 6, 8, random_case(25, 9)),
    "rank 1, shifts 0: t' saturates, T at its bound": (1, 1, 3, 8, 8, extreme_case(0, 0)),
    "largest shifts": (3, 3, 4, 5, 8, extreme_case(63, 63, -1)),
    "int16 inputs, t' rounding": (2, 2, 5, 7, 16, random_case(33, 12)),
    f"rank {MAX_RANK}, the largest a patch may have": (MAX_RANK, MAX_RANK, 3, 4, 8, random_case(6, 0)),
}


@icarus
@pytest.mark.parametrize("case", list(CASES))
def test_adapter_block_equals_golden_adapter_term(tmp_path, case):
    hardware_rank, rank, rows, cols, x_bits, make = CASES[case]
    rng = np.random.default_rng(len(case))
    adapter = make(rng, rank, rows, cols)
    adapter.check("test.w")
    xs = input_vectors(rng, cols, x_bits)
    results = simulate(tmp_path, adapter, rows, cols, hardware_rank, x_bits, xs)
    for x, (term, cycles) in zip(xs, results):
        assert term == list(apply_adapter(adapter, x))
        assert cycles == LowRank("test.w", rows, cols, hardware_rank).cycles   # as hardwire.datapath counts it


def test_edge_cases_reach_the_limits_they_name():
    """The extreme adapters above do saturate t' (shift 0) and round everything away (shift 63)."""
    x = np.full(8, 127)
    saturating = extreme_adapter("test.w", 1, 3, 8, 0, 0)
    assert list(adapter_inner(saturating, x)) == [(1 << 15) - 1]
    vanishing = extreme_adapter("test.w", 3, 4, 5, 63, 63, -1)
    assert not adapter_inner(vanishing, np.full(5, 127)).any()


@icarus
def test_adapter_block_with_an_empty_sram_adds_nothing(tmp_path):
    """No images loaded (the SRAM as it powers up in simulation) and an all-zero image: T = 0."""
    rng = np.random.default_rng(3)
    xs = input_vectors(rng, 6, 8)
    for load in (False, True):
        for term, _ in simulate(tmp_path, None, 4, 6, 3, 8, xs, load=load):
            assert term == [0] * 4


@icarus
@pytest.mark.parametrize("style,group", [("rom_mac", None), ("rom_mac", 16), ("hardwired", None)])
def test_matvec_adds_the_low_rank_term_before_requantizing(tmp_path, style, group):
    """A patched matrix's requantizers add T_i to the row's accumulator, as golden matvec's `extra`."""
    from hardwire.datapath import DesignPoint, Matrix
    from hardwire.golden.matvec import matvec, pack_matrix
    from hardwire.rtl.blocks.matvec import IntMatrix, matvec_modules
    rng = np.random.default_rng(7)
    rows, cols, x_bits, out_bits, rank = 9, 40, 8, 16, 4
    groups = 1 if group is None else -(-cols // group)
    codes = rng.integers(-128, 128, (rows, cols))
    mult = rng.integers(1 << 22, 1 << 23, (rows, groups))
    shifts = rng.integers(18, 26, rows)
    shifts[2] = 0
    matrix = IntMatrix("test.w", codes, None, group, mult, shifts, None)
    bits = term_bits(cols, rank, x_bits)
    limit = (1 << (bits - 1)) - 1
    plan = Matrix("test.w", rows, cols).plan(DesignPoint(weight_style=style, weights_per_lane=120))
    modules = matvec_modules(matrix, x_bits, out_bits, style, lanes=plan.lanes, term_bits=bits)
    xs = input_vectors(rng, cols, x_bits)
    terms = [rng.integers(-(1 << 40), 1 << 40, rows), np.zeros(rows, np.int64), np.full(rows, limit),
             np.full(rows, -limit), rng.integers(-(1 << 30), 1 << 30, rows)]
    ports = [("x", cols * x_bits), ("mu", 4), ("e", 4), ("term", rows * bits)]
    results = run_icarus(modules, "hw_matvec_test_w", ports, [("y", rows * out_bits)],
                         [[pack_vector(x, x_bits), 12, 5, pack_vector(t, bits)] for x, t in zip(xs, terms)],
                         workdir=tmp_path)
    packed = pack_matrix(codes.astype(np.int8), None, 8, group, mult, shifts, None)
    changed = 0
    for x, term, result in zip(xs, terms, results):
        expected = matvec(packed, x.astype(np.int16), (12, 5), out_bits, term.astype(np.int64))
        assert unpack_vector(result[0], out_bits, rows) == list(expected)
        changed += list(expected) != list(matvec(packed, x.astype(np.int16), (12, 5), out_bits))
    assert changed >= 3     # the terms are large enough to move the outputs


# -- a patched chip ------------------------------------------------------------------------------------

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")


def random_patch(die, path, ranks: dict[str, int], seed: int, a_shift: int = 17, b_shift: int = 10):
    """A patch of random integer adapters on `ranks` (target -> rank): shifts that put T_i at the
    scale of the accumulators it joins, so the patch moves the logits without saturating them."""
    from hardwire.adapters import save_patch
    rng = np.random.default_rng(seed)
    adapters = {}
    for target, rank in ranks.items():
        rows, cols = die.quantized(target).shape
        adapters[target] = random_adapter(rng, target, rank, rows, cols, a_shift, b_shift)
    return save_patch(path, die.id, adapters, {"name": "random-test-patch"})


@pytest.fixture(scope="module")
def tiny_patched(tmp_path_factory):
    """The default suite's tiny die and a patch on four of its seven matrices, ranks 2 and 3."""
    from hardwire.die import open_die
    from tests.golden_dies import RandomModel
    from tests.test_rtl_e2e import SHAPES, write_test_die
    directory = tmp_path_factory.mktemp("patched")
    die = open_die(write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), directory / "tiny.die", "w8"))
    patch = random_patch(die, directory / "tiny.patch", {"layers.0.wq": 3, "layers.0.wv": 2, "layers.0.w_up": 3,
                                                         "layers.0.w_down": 2}, seed=4)
    return die, patch


def rtl_logits(die, ids, options, patch=None):
    from hardwire.rtl.engine import RtlEngine
    engine = RtlEngine(die, options=options, patch=patch)
    try:
        return engine.forward_integer(ids), list(engine.cycles), engine.options
    finally:
        engine.close()


TINY_IDS = [1, 5, 9, 2, 31, 7]


@needs_verilator
def test_tiny_patched_chip_equals_patched_golden_bit_for_bit(tiny_patched, cache_dir):
    from hardwire.datapath import AdapterDesign, build
    from hardwire.golden.engine import GoldenEngine, token_exponents
    from hardwire.rtl.top import PATCH_ADAPTERS, RtlOptions
    die, patch = tiny_patched
    golden = GoldenEngine(die, patch=patch).forward_integer(TINY_IDS)
    assert (golden != GoldenEngine(die).forward_integer(TINY_IDS)).any()      # the patch changes the logits
    options = RtlOptions(weights_per_lane=1024, adapters=AdapterDesign(4, PATCH_ADAPTERS.targets))
    rtl, cycles, used = rtl_logits(die, TINY_IDS, options, patch.path)
    np.testing.assert_array_equal(rtl, golden)
    # each token's cycles, low-rank blocks included, as the datapath counts them
    step = build(die, used.design_point(die, GoldenEngine(die).tables), used.adapters)
    exponents = token_exponents(die, TINY_IDS, GoldenEngine(die).tables, patch)
    assert cycles == [step.cycles(t + 1, e) for t, e in enumerate(exponents)]


@needs_verilator
def test_adapter_hardware_with_an_empty_sram_computes_the_unpatched_die(tiny_patched, cache_dir):
    """The same Verilog as the patched run (one build), no patch loaded: the die's own logits."""
    from hardwire.datapath import AdapterDesign
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.top import PATCH_ADAPTERS, RtlOptions
    die, _ = tiny_patched
    options = RtlOptions(weights_per_lane=1024, adapters=AdapterDesign(4, PATCH_ADAPTERS.targets))
    rtl, _, _ = rtl_logits(die, TINY_IDS, options)
    np.testing.assert_array_equal(rtl, GoldenEngine(die).forward_integer(TINY_IDS))


@needs_verilator
def test_sim_command_runs_a_patch_and_refuses_one_the_hardware_cannot_hold(tiny_patched, cache_dir, cli):
    import json
    die, patch = tiny_patched
    common = ("--ids", "1,4", "--max-tokens", "5", "--json")
    sim = json.loads(cli("sim", die.path, "--patch", patch.path, "--weights-per-lane", "1024", "--adapter-rank", "4",
                         *common, timeout=900).stdout)
    run = json.loads(cli("run", die.path, "--patch", patch.path, "--backend", "golden", *common).stdout)
    assert sim["ids"] == run["ids"] and sim["patch"] == patch.id
    assert sim["adapters"] == {"rank": 4, "targets": list(TARGETS), "per_cycle": 1}
    assert sim["rtl_estimate"]["exact"]
    low_rank = cli("sim", die.path, "--patch", patch.path, "--adapter-rank", "2", *common, expect=2)
    assert "--adapter-rank" in low_rank.stderr and "rank 3" in low_rank.stderr
    too_few = cli("sim", die.path, "--patch", patch.path, "--adapter-targets", "wq,wk", *common, expect=2)
    assert "--adapter-targets" in too_few.stderr and "layers.0.wv" in too_few.stderr


@needs_verilator
@pytest.mark.slow
def test_run_command_rtl_backend_runs_a_patch_as_golden_does(tiny_patched, cache_dir, cli):
    """`hardwire run --backend rtl --patch`: the default adapter hardware (PATCH_ADAPTERS)."""
    import json
    die, patch = tiny_patched
    common = ("--patch", patch.path, "--ids", "1,4", "--max-tokens", "6", "--json")
    rtl = json.loads(cli("run", die.path, "--backend", "rtl", *common, timeout=900).stdout)
    golden = json.loads(cli("run", die.path, "--backend", "golden", *common).stdout)
    assert rtl["ids"] == golden["ids"]


@needs_verilator
@pytest.mark.slow
def test_stories260k_with_a_patch_greedy_32_tokens_equal_patched_golden(tmp_path_factory, cache_dir):
    """The acceptance check with a patch: rank-8 adapters on wq, wv, w_up and w_down of every layer
    (`hardwire patch train`'s default targets), on the default adapter hardware (rank 16, every
    projection: the other three run from a zero SRAM); 32 greedy tokens from BOS, token for token,
    and every logit of the same positions bit for bit."""
    from hardwire.golden.engine import GoldenEngine
    from hardwire.die import open_die
    from hardwire.rtl.engine import RtlEngine
    from tests.test_rtl_e2e import assert_greedy_and_logits_equal, stories_die
    die = open_die(stories_die(tmp_path_factory, "w8"))
    targets = {f"layers.{i}.{short}": 8 for i in range(die.spec.layers) for short in ("wq", "wv", "w_up", "w_down")}
    patch = random_patch(die, tmp_path_factory.mktemp("patch") / "random.patch", targets, seed=5)
    ids = assert_greedy_and_logits_equal(GoldenEngine(die, patch=patch), RtlEngine(die, patch=patch))
    unpatched = GoldenEngine(die).generate([1], max_tokens=32, stop_at_eos=False)
    assert ids != unpatched.ids                              # the patch changes the greedy text


@needs_verilator
def test_a_design_with_adapter_blocks_passes_verilator_lint_with_all_warnings(tiny_patched, tmp_path, cli):
    import subprocess
    die, _ = tiny_patched
    cli("rtl", die.path, "-o", tmp_path / "rtl", "--adapter-rank", "4")
    layer = (tmp_path / "rtl" / "hw_layer_0.v").read_text()
    assert all(f"hw_adapter_layers_0_{short} {short}_low_rank" in layer for short in ("wq", "wo", "w_down"))
    files = (tmp_path / "rtl" / "files.f").read_text().split()
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "hw_chip", *files],
                          cwd=tmp_path / "rtl", capture_output=True, text=True)
    assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[-3000:]
