"""The patch's low-rank path in the datapath and the chip estimate (docs/chip-model.md §7).

The blocks' cycles at the RTL's design point are checked against the simulated RTL in
tests/test_rtl_adapter.py; here: the blocks a design has, their SRAM against the patch file's own
count, and that the estimate charges their cycles, lanes and energy (and refuses a patch that does
not fit the chip).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from hardwire.adapters import TARGETS, Adapter
from hardwire.datapath import NO_ADAPTERS, RTL_POINT, AdapterDesign, LowRank, build
from hardwire.model.spec import ModelSpec

SPEC = ModelSpec(family="llama", hidden_dim=64, layers=2, heads=4, kv_heads=2, head_dim=16, ffn_dim=160,
                 vocab_size=96, max_context=64)


def test_each_targeted_matrix_of_every_layer_gets_a_low_rank_block_before_it():
    design = AdapterDesign(rank=8, targets=("w_down", "wq"))
    step = build(SPEC, RTL_POINT, design)
    assert [(b.name, b.rows, b.cols) for b in step.low_rank()] == [
        ("layers.0.wq", 64, 64), ("layers.0.w_down", 64, 160), ("layers.1.wq", 64, 64), ("layers.1.w_down", 64, 160)]
    plain = build(SPEC, RTL_POINT)
    # wq's product now waits for its block (64 + 8 + 64 + 3 cycles); w_down's likewise (160 + 8 + 64 + 3)
    qkv = {b.name: b for b in step.blocks}["layers.0.qkv"]
    wq = plain.plan("layers.0.wq").cycles
    assert qkv.latency(RTL_POINT) == max(139 + wq, plain.plan("layers.0.wk").cycles)
    assert step.cycles(5) - plain.cycles(5) == 2 * (max(139 + wq, wq) - wq + 235)


def test_a_block_holds_exactly_the_sram_of_an_adapter_at_its_rank():
    """LowRank's SRAM bits against the patch file's own count (hardwire.adapters.Adapter.sram_bits)."""
    rank, rows, cols = 6, 40, 24
    adapter = Adapter("layers.0.wq", np.zeros((rank, cols), np.int8), np.zeros(rank, np.int64), 0,
                      np.zeros((rows, rank), np.int8), np.zeros(rows, np.int64), 0)
    assert LowRank("layers.0.wq", rows, cols, rank).sram_bits() == adapter.sram_bits()


def test_a_chip_block_walks_as_many_elements_a_cycle_as_keep_it_within_a_lane_walk():
    design = AdapterDesign(rank=8, targets=TARGETS, per_cycle=None)
    block = design.block("layers.0.w_down", 4096, 14336, weights_per_lane=256)
    assert block.per_cycle == 56 and block.lanes == 8 * 56
    assert block.cycles == 256 + 8 + 74 + 3


def test_rtl_options_refuse_a_low_rank_block_wider_than_one_element():
    from hardwire.errors import BadConfig
    from hardwire.rtl.top import RtlOptions
    with pytest.raises(BadConfig):
        RtlOptions(adapters=AdapterDesign(4, ("wq",), per_cycle=2))
    with pytest.raises(BadConfig):
        AdapterDesign(rank=257, targets=("wq",))


def test_the_estimate_charges_the_blocks_cycles_lanes_and_energy():
    from hardwire.chip.arch import load_chip
    from hardwire.chip.estimate import estimate
    chip = load_chip("hc1").replace(schedule="sequential")
    design = AdapterDesign(rank=8, targets=("wq", "wv"), per_cycle=None)
    plain, patched = estimate(SPEC, chip, context=16), estimate(SPEC, chip, context=16, adapters=design)
    cost = patched.low_rank
    assert cost.blocks_per_layer == 2 and cost.extra_cycles_per_token > 0
    assert patched.to_json()["cycles_per_token"] == plain.to_json()["cycles_per_token"] + cost.extra_cycles_per_token
    lanes = patched.area_breakdown_mm2()["mac_select"] - plain.area_breakdown_mm2()["mac_select"]
    assert lanes == pytest.approx(cost.area_mm2_per_layer * SPEC.layers)
    assert patched.token_energy_j["adapters"] == cost.energy_per_token_j > 0
    assert "adapters" not in plain.to_json() and patched.to_json()["adapters"]["rank"] == 8
    assert estimate(SPEC, chip, context=16, adapters=NO_ADAPTERS).to_json() == plain.to_json()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hardwire.die import open_die
    from tests.golden_dies import RandomModel
    from tests.test_rtl_e2e import SHAPES, write_test_die
    from tests.test_rtl_adapter import random_patch
    directory = tmp_path_factory.mktemp("estimate-patch")
    die = open_die(write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), directory / "tiny.die", "w8"))
    small = random_patch(die, directory / "small.patch", {"layers.0.wq": 2, "layers.0.w_up": 2}, seed=1)
    large = random_patch(die, directory / "large.patch", {f"layers.0.{t}": 16 for t in TARGETS}, seed=1)
    return die, small, large


def test_estimate_command_prices_a_patch_and_refuses_one_over_the_sram(tiny, cli):
    die, small, large = tiny
    out = json.loads(cli("estimate", die.path, "--patch", small.path, "--json").stdout)
    assert out["adapters"]["rank"] == 2 and out["adapters"]["targets"] == ["wq", "w_up"]
    plain = json.loads(cli("estimate", die.path, "--json").stdout)
    assert out["cycles_per_token"] == plain["cycles_per_token"] + out["adapters"]["extra_cycles_per_token"]
    refused = cli("estimate", die.path, "--patch", large.path, expect=2)
    assert "SRAM" in refused.stderr or "sram" in refused.stderr


def test_a_patch_of_a_higher_rank_gets_the_default_blocks_at_its_rank_class(tmp_path):
    from hardwire.adapters import Patch
    from hardwire.rtl.top import PATCH_ADAPTERS, RtlOptions, default_adapters

    def patch_of(rank):
        adapter = Adapter("layers.0.wv", np.zeros((rank, 4), np.int8), np.zeros(rank, np.int64), 0,
                          np.zeros((4, rank), np.int8), np.zeros(4, np.int64), 0)
        return Patch({}, {"layers.0.wv": adapter})

    assert default_adapters(patch_of(8)) == PATCH_ADAPTERS
    assert default_adapters(patch_of(17)) == AdapterDesign(32, TARGETS)
    assert RtlOptions().for_patch(patch_of(64)).adapters.rank == 64
    from hardwire.errors import BadConfig
    with pytest.raises(BadConfig, match="rank 8 at most"):
        RtlOptions(adapters=AdapterDesign(8, TARGETS)).for_patch(patch_of(9))
