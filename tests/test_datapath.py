"""The datapath (hardwire.datapath): one description of the token step, so the chip estimate at the
generated RTL's design point takes exactly the cycles the simulated RTL takes, token by token.

The RTL side is the Verilator simulation of the generated chip (cycles from the token's transfer to
the next token offered, per token); the estimate side is the sum of the datapath's block cycles,
each token quantizer at the exponent the golden model picks for that token (the only data-dependent
part: it tries exponents from the finest down).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hardwire.chip import estimate, load_chip, model_preset
from hardwire.chip.arch import ChipConfig, chip_from_dict
from hardwire.datapath import RTL_POINT, Attention, DesignPoint, MatVec, Norm, SwiGLU, build, predicted_cycles
from hardwire.errors import BadConfig
from hardwire.golden.engine import token_exponents
from tests.golden_dies import RandomModel
from tests.test_rtl_e2e import SHAPES, SMALL, stories_die, write_test_die

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")


def simulated_cycles(die_path, ids, options):
    """Cycles per token of `ids` stepped through the RTL from position 0, and the die."""
    from hardwire.die import open_die
    from hardwire.rtl.engine import RtlEngine
    die = open_die(die_path)
    engine = RtlEngine(die, options=options)
    try:
        engine.forward_integer(ids)
        return die, list(engine.cycles), engine.tables
    finally:
        engine.close()


def assert_estimate_equals_rtl(die, tables, options, ids, cycles):
    point = options.design_point(die, tables)
    step = build(die, point)
    exponents = token_exponents(die, ids, tables)
    assert predicted_cycles(step, exponents) == cycles
    # the chip estimate at that point is the same blocks in one stage (the RTL's sequential schedule),
    # charging each quantizer its worst case without the data (all nine exponents tried): an upper
    # bound, 2 cycles high per exponent below the chosen e, which the quantizer never tries
    quantizers = sum(b.quantizes for b in step.blocks)
    for position, (token_cycles, token_exponents_) in enumerate(zip(cycles, exponents)):
        result = estimate(die, ChipConfig(point=point), context=position + 1, prompt_tokens=0, users=1)
        assert [s.blocks for s in result.stages] == [step.blocks]
        assert len(token_exponents_) == quantizers
        assert result.to_json()["cycles_per_token"] == token_cycles + 2 * sum(token_exponents_.values())


# -- the estimate predicts the RTL -------------------------------------------------------------------

@needs_verilator
def test_estimate_at_the_rtl_design_point_equals_simulated_cycles_of_a_random_gqa_die(tmp_path, cache_dir):
    from hardwire.rtl.top import RtlOptions
    shape = SHAPES["tiny-gqa"]            # GQA 2:1; 12 tokens fill most of its 16 positions
    die_path = write_test_die(RandomModel(shape, seed=3), tmp_path / "tiny.die", "w8")
    options = RtlOptions(**SMALL)         # a design point other than the default: 1024 weights per lane, ...
    ids = [int(i) for i in np.random.default_rng(4).integers(0, shape.vocab_size, 12)]
    die, cycles, tables = simulated_cycles(die_path, ids, options)
    assert len(set(cycles)) > 1           # the attention scans grow with the context
    assert_estimate_equals_rtl(die, tables, options, ids, cycles)


@needs_verilator
@pytest.mark.slow          # a stories260K Verilator build takes about two minutes
def test_estimate_at_the_rtl_design_point_equals_simulated_cycles_of_stories260k_w8(tmp_path_factory, cache_dir):
    from hardwire.die import open_die
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.top import RtlOptions
    path = stories_die(tmp_path_factory, "w8")
    ids = [1] + GoldenEngine(open_die(path)).generate([1], max_tokens=15, stop_at_eos=False).ids[:15]
    die, cycles, tables = simulated_cycles(path, ids, RtlOptions())
    assert 8000 < cycles[0] < 8200        # measured: 8,068 from BOS (docs/rtl.md)
    assert_estimate_equals_rtl(die, tables, RtlOptions(), ids, cycles)


# -- one description, both users -----------------------------------------------------------------

def test_the_rtl_takes_each_matvecs_lanes_from_the_datapath(tmp_path):
    from hardwire.die import open_die
    from hardwire.rtl.top import RtlOptions, generate
    die = open_die(write_test_die(RandomModel(SHAPES["gqa-untied"], seed=5), tmp_path / "gqa.die", "w8"))
    for weights_per_lane in (32, 256):
        options = RtlOptions(weights_per_lane=weights_per_lane)
        modules = generate(die, None, options).modules
        step = build(die, options.point)
        for m in step.matrices():
            text = modules["hw_matvec_" + m.name.replace(".", "_")]
            assert f"localparam integer LANES = {step.plan(m.name).lanes};" in text
            assert f"{step.plan(m.name).cycles} cycles per product" in text


def test_design_point_names_are_shared_by_chip_files_and_rtl_options():
    from hardwire.rtl.top import RtlOptions
    assert RtlOptions(style="rom").point.weight_style == "rom_mac" == RtlOptions().point.weight_style
    assert RtlOptions().point == RTL_POINT
    hc1 = load_chip("hc1")
    assert isinstance(hc1.point, DesignPoint) and hc1.weights_per_lane == hc1.point.weights_per_lane == 256
    assert hc1.point.schedule == "layer_pipeline"
    assert chip_from_dict({"weight_style": "rom", "norm_per_cycle": 8}).point.weight_style == "rom_mac"
    assert hc1.replace(weights_per_lane=512).point.weights_per_lane == 512
    assert ChipConfig(point=RTL_POINT).to_dict()["schedule"] == "sequential"
    # the bundled `rtl` chip file is the generator's point (at the bundled dies' 16-bit KV cache)
    assert load_chip("rtl").point == RTL_POINT.replace(kv_bits=16, kv_sram_mib=1.0)


def test_rtl_options_refuse_what_the_generator_cannot_build():
    from hardwire.rtl.top import RtlOptions
    with pytest.raises(BadConfig, match="weight_style"):
        RtlOptions(style="multiply_select_add")
    with pytest.raises(BadConfig, match="attention_positions_per_cycle"):
        RtlOptions(attention_positions_per_cycle=8)
    with pytest.raises(BadConfig, match="schedule"):
        RtlOptions(point=load_chip("hc1").point.replace(weight_style="rom_mac", split_rows=False,
                                                         rope_heads_per_cycle=1, attention_heads_per_cycle=1,
                                                         attention_positions_per_cycle=1, logits_per_cycle=1))


# -- schedules -----------------------------------------------------------------------------------

def test_sequential_latency_is_the_sum_of_the_blocks_and_the_pipeline_keeps_its_stages():
    spec = model_preset("stories260k")
    sequential = estimate(spec, ChipConfig(point=RTL_POINT), context=40)
    assert [s.name for s in sequential.stages] == ["token"]
    assert sequential.to_json()["cycles_per_token"] == build(spec, RTL_POINT).cycles(40)
    hc1 = load_chip("hc1")
    pipelined = estimate(spec, hc1, context=40)
    step = build(spec, hc1.point)
    assert [s.name for s in pipelined.stages] == [name for name, _ in step.stages()]
    assert [s.name for s in pipelined.stages][:6] == ["embed", "L0.qkv", "L0.attention", "L0.wo", "L0.gate_up",
                                                       "L0.down"]
    for stage in pipelined.stages:
        assert stage.cycles(40) == sum(b.cycles(hc1.point, 40) for b in stage.blocks)
    assert pipelined.to_json()["cycles_per_token"] == step.cycles(40)


def test_blocks_scale_with_their_design_point_widths():
    spec = model_preset("llama-3.1-8b")
    narrow, wide = DesignPoint(), DesignPoint(norm_per_cycle=4096, attention_positions_per_cycle=8,
                                              attention_heads_per_cycle=32)
    norm = next(b for b in build(spec, narrow).blocks if isinstance(b, Norm))
    attention = next(b for b in build(spec, narrow).blocks if isinstance(b, Attention))
    swiglu = next(b for b in build(spec, narrow).blocks if isinstance(b, SwiGLU))
    # 3 passes of 512 chunks + 5, and the quantizer's 2 passes + 2 x 9 exponents + 1
    assert norm.latency(narrow) == 3 * 512 + 5 + 2 * 512 + 18 + 1
    assert norm.latency(wide) == 3 + 5 + 2 + 18 + 1
    assert swiglu.latency(wide) == 4 + 1 + 2 * 4 + 18 + 1        # 14,336 = 4 chunks of 3,584
    # two scans of ceil(1024 / 8) reads + 2 each, one cycle for the 32 heads, quantizer 2 + 18 + 1
    assert attention.latency(wide, context=1024) == 2 + 2 * (128 + 2) + 1 + 21 + 1
    assert attention.latency(wide, context=1025) == attention.latency(wide, context=1024) + 2


def test_a_long_row_splits_over_lanes_only_where_the_point_allows():
    spec = model_preset("llama-3.1-8b")
    q = next(b for b in build(spec, RTL_POINT).blocks if isinstance(b, MatVec)).matrices[0]
    whole = q.plan(RTL_POINT)                       # the RTL: one lane walks a whole 4,096-column row
    assert (whole.lanes, whole.lanes_per_row, whole.walk) == (4096, 1, 4096)
    split = q.plan(RTL_POINT.replace(split_rows=True))
    assert (split.lanes, split.lanes_per_row, split.walk, split.tree) == (16 * 4096, 16, 256, 4)
    # the requantizers drain a block's rows in about one walk: 16 of them, 256 cycles
    assert (split.requantizers, split.drain, split.cycles) == (16, 256, 256 + 4 + 256 + 3)
