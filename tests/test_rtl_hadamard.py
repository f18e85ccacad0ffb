"""§12 the online Walsh–Hadamard block in Verilog (Icarus) against the golden block, bit for bit, at
its widths' extremes (the smallest block, 2, and the largest the generator makes, HADAMARD_MAX_BLOCK;
8- and 16-bit activations), alone and inside SwiGLU; cycles against hardwire.datapath."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hardwire import arithmetic as ar
from hardwire.datapath import DesignPoint, SwiGLU, hadamard_latency
from hardwire.golden import forward as golden
from hardwire.golden.hadamard import hadamard_transform
from hardwire.rtl.blocks.token_scale import wide_bits
from hardwire.rtl.emit import overrides
from hardwire.rtl.sim import pack_vector, run_icarus, unpack_vector

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                reason="Icarus Verilog (iverilog, vvp) is not installed")


def clamped_vectors(rng, count: int, bits: int) -> list[np.ndarray]:
    """SwiGLU's clamped wide values: random, zero, all +clamp (the largest sum), all -clamp, and
    alternating signs (the largest difference)."""
    clamp = 1 << (bits + ar.TOKEN_CLAMP_BITS)
    return [rng.integers(-clamp, clamp + 1, count), rng.integers(-300, 301, count), np.zeros(count, np.int64),
            np.full(count, clamp), np.full(count, -clamp), np.where(np.arange(count) % 2 == 0, clamp, -clamp)]


@pytest.mark.parametrize("count, bits, block", [(6, 8, 2), (512, 8, ar.HADAMARD_MAX_BLOCK), (8, 16, 2),
                                                (ar.HADAMARD_MAX_BLOCK, 16, ar.HADAMARD_MAX_BLOCK)])
def test_hadamard_block_equals_golden(tmp_path, count, bits, block):
    from hardwire.rtl.blocks.hadamard import hadamard_module
    rng = np.random.default_rng(block + bits)
    name, text = hadamard_module(count, bits, block)
    wb = wide_bits(bits)
    vectors = clamped_vectors(rng, count, bits)
    results = run_icarus({name: text}, name, [("wide_in", count * wb)], [("wide_out", count * wb)],
                         [[pack_vector(v, wb)] for v in vectors], workdir=tmp_path)
    clamp = 1 << (bits + ar.TOKEN_CLAMP_BITS)
    for v, result in zip(vectors, results):
        expected = v.astype(np.int64)
        hadamard_transform(expected, block, bits)
        expected = np.clip(expected, -clamp, clamp)           # the quantizer's clamp, at the block's output
        assert unpack_vector(result[0], wb, count) == list(expected)
        assert result[-1] == hadamard_latency(count, block)


def test_swiglu_with_the_transform_equals_golden(tmp_path):
    from hardwire.rtl.blocks.swiglu import swiglu_module, swiglu_name
    from tests.test_rtl_blocks import edge_vectors
    rng = np.random.default_rng(12)
    ffn, act_bits, block = 20, 8, 4
    index_mult, index_shift = 5000000, 26
    mult, shift = 6000000, 44
    modules = swiglu_module(ffn, act_bits, ar.sigmoid_table(), per_cycle=4, hadamard_block=block)
    constants = overrides(index_mult=(index_mult, 64), index_shift=(index_shift, 8), mult=(mult, 64), shift=(shift, 8))
    gates = edge_vectors(rng, ffn, 16)
    ups = edge_vectors(rng, ffn, 16)[::-1]
    results = run_icarus(modules, swiglu_name(ffn, act_bits, 4, block), [("gate", ffn * 16), ("up", ffn * 16)],
                         [("x", ffn * act_bits), ("mu", 4), ("e", 4)],
                         [[pack_vector(g, 16), pack_vector(u, 16)] for g, u in zip(gates, ups)],
                         workdir=tmp_path, parameters=constants)
    for g, u, result in zip(gates, ups, results):
        expected = np.empty(ffn, np.int64)
        scale = golden.swiglu_hadamard(g.astype(np.int64), u.astype(np.int64), index_mult, index_shift, mult, shift,
                                       act_bits, ar.sigmoid_table(), block, expected)
        assert unpack_vector(result[0], act_bits, ffn) == list(expected)
        assert (result[1], result[2]) == tuple(int(v) for v in scale)
        block_model = SwiGLU(name="swiglu", stage="", ffn_dim=ffn, hadamard_block=block)
        assert result[-1] == block_model.latency(DesignPoint(norm_per_cycle=4), exponent=int(scale[1]))


# -- end to end: a die frozen with the transform, golden = RTL ------------------------------------

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")


@needs_verilator
@pytest.mark.slow
def test_die_with_the_online_transform_equals_golden_bit_for_bit(tmp_path, cache_dir):
    import subprocess

    from hardwire.die import open_die
    from hardwire.rtl.top import RtlOptions, generate
    from tests.golden_dies import RandomModel
    from tests.test_rtl_e2e import SHAPES, SMALL, golden_and_rtl_logits, write_test_die
    path = write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path / "tiny_had.die", "w8:had")
    die = open_die(path)
    assert die.manifest["transforms"]["online_hadamard"]["block"] == 8          # ffn 24 = 8 * 3
    design = generate(die, options=RtlOptions(**SMALL))
    assert any(name.startswith("hw_hadamard_24x8_n8") for name in design.modules)
    design.write(tmp_path / "rtl")
    lint = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "hw_chip", *design.files()],
                          cwd=tmp_path / "rtl", capture_output=True, text=True)
    assert lint.returncode == 0 and "%Warning" not in lint.stderr, lint.stderr[-3000:]
    ids = [1, 5, 9, 2, 31, 7, 3, 3]
    golden, rtl = golden_and_rtl_logits(path, ids, RtlOptions(**SMALL))
    np.testing.assert_array_equal(rtl, golden)


@needs_verilator
@pytest.mark.slow
def test_stories260k_with_the_online_transform_greedy_32_tokens_equal_golden(tmp_path_factory, cache_dir):
    from hardwire.die import open_die
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.engine import RtlEngine
    from tests.test_rtl_e2e import assert_greedy_and_logits_equal, stories_die
    die = open_die(stories_die(tmp_path_factory, "w4g32:had"))
    assert die.manifest["transforms"]["online_hadamard"]["block"] == 4            # ffn 172 = 4 * 43
    assert_greedy_and_logits_equal(GoldenEngine(die), RtlEngine(die))


@needs_verilator
@pytest.mark.slow
def test_a_patch_on_a_die_with_the_online_transform_equals_patched_golden_bit_for_bit(tmp_path, cache_dir):
    """The chip's w_down adapter reads the transformed codes, as the golden model's does (§11, §12)."""
    from hardwire.datapath import AdapterDesign
    from hardwire.die import open_die
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.top import PATCH_ADAPTERS, RtlOptions
    from tests.golden_dies import RandomModel
    from tests.test_rtl_adapter import random_patch, rtl_logits
    from tests.test_rtl_e2e import SHAPES, write_test_die
    die = open_die(write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path / "tiny_had.die", "w8:had"))
    patch = random_patch(die, tmp_path / "had.patch", {"layers.0.w_down": 3}, seed=5)
    ids = [1, 5, 9, 2, 31, 7]
    golden = GoldenEngine(die, patch=patch).forward_integer(ids)
    assert (golden != GoldenEngine(die).forward_integer(ids)).any()          # the patch changes the logits
    options = RtlOptions(weights_per_lane=1024, adapters=AdapterDesign(4, PATCH_ADAPTERS.targets))
    rtl, _, _ = rtl_logits(die, ids, options, patch.path)
    np.testing.assert_array_equal(rtl, golden)
