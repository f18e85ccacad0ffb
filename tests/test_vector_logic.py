"""The estimate's per-block vector logic against our own Yosys runs (docs/chip-model.md §8).

The measurements (tests/data/synth_blocks.json) come from `python bench/synth_blocks.py`: layer 0 of
each die synthesized block by block. The cost terms are fitted on the calibration dies only; the
checks here are on stories260K, which the fit never saw. No synthesis runs in these tests.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hardwire.chip import vector_logic as vl

MEASUREMENTS = Path(__file__).resolve().parent / "data" / "synth_blocks.json"


@pytest.fixture(scope="module")
def dies() -> dict:
    return json.loads(MEASUREMENTS.read_text())["dies"]


def test_the_check_die_is_held_out_of_a_fit_over_several_sizes(dies):
    assert vl.CHECK_DIE not in vl.FIT_DIES
    check = dies[vl.CHECK_DIE]["spec"]
    fit_shapes = {tuple(sorted(dies[d]["spec"].items())) for d in vl.FIT_DIES}
    assert tuple(sorted(check.items())) not in fit_shapes
    assert len({dies[d]["spec"]["hidden_dim"] for d in vl.FIT_DIES}) >= 2
    assert all(dies[d]["yosys"].startswith("Yosys ") for d in (*vl.FIT_DIES, vl.CHECK_DIE))


def test_the_committed_cost_terms_are_the_fit_of_the_committed_measurements(dies):
    refit = vl.calibrate([dies[d] for d in vl.FIT_DIES])
    assert set(refit) == set(vl.COST_TERMS) == set(vl.KINDS)
    for kind, term in refit.items():
        assert term.sizes == vl.COST_TERMS[kind].sizes
        assert term.cells_per == pytest.approx(vl.COST_TERMS[kind].cells_per, rel=1e-3, abs=1e-3), kind


def test_every_block_type_of_a_stories260k_layer_is_within_25_percent_of_yosys(dies):
    units = vl.predicted_units(dies[vl.CHECK_DIE])
    for kind in vl.KINDS:
        mine = [u for u in units if u["kind"] == kind]
        synthesized = sum(u["synthesized"] for u in mine)
        predicted = sum(u["predicted"] for u in mine)
        assert abs(predicted / synthesized - 1) <= 0.25, (kind, predicted, synthesized)


def test_the_chip_estimates_stories260k_layer_is_within_20_percent_of_yosys(dies):
    """Through the estimate itself: `layer_blocks` at the die's own design point (the RTL's), its
    logic (everything but SRAM) in generic cells against the synthesized layer."""
    from hardwire.chip.arch import GENERIC_CELL_T, ChipConfig
    from hardwire.chip.estimate import layer_blocks
    entry = dies[vl.CHECK_DIE]
    spec, point, _ = vl.measured_layer(entry)
    blocks = layer_blocks(spec, ChipConfig(point=point))
    logic = sum(t for key, t in blocks.transistors.items() if not key.endswith("sram")) / GENERIC_CELL_T
    assert abs(logic / entry["layer_cells"] - 1) <= 0.20, (logic, entry["layer_cells"])


def test_vector_logic_grows_with_the_lanes_that_compute_it():
    """More elements per cycle cost cells (each lane has its own multiply), more heads too."""
    from hardwire.datapath import RTL_POINT
    narrow, wide = RTL_POINT, RTL_POINT.replace(norm_per_cycle=64)
    assert vl.cells("norm", vl.norm_sizes(256, wide)) > vl.cells("norm", vl.norm_sizes(256, narrow))
    assert vl.cells("swiglu", vl.swiglu_sizes(512, wide)) > vl.cells("swiglu", vl.swiglu_sizes(512, narrow))
    assert vl.cells("attention", vl.attention_sizes(16, 8, narrow)) > vl.cells("attention", vl.attention_sizes(8, 8, narrow))


def test_fit_nonnegative_recovers_known_coefficients_and_refuses_negative_ones():
    rows = [{"a": a, "b": b, "fixed": 1} for a, b in ((1, 2), (3, 1), (5, 7), (2, 9))]
    measured = [10 * r["a"] + 3 * r["b"] + 100 for r in rows]
    assert vl.fit_nonnegative(rows, measured, ("a", "b", "fixed")) == pytest.approx((10, 3, 100))
    # a size whose best unconstrained coefficient is negative is left out, not given a negative cost
    measured = [10 * r["a"] - 3 * r["b"] + 100 for r in rows]
    assert min(vl.fit_nonnegative(rows, measured, ("a", "b", "fixed"))) >= 0


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
@pytest.mark.slow
def test_a_committed_measurement_is_what_yosys_gives_today(tmp_path, dies):
    """bench/synth_blocks.py's own path re-run on one small block of a calibration die (h32's RoPE,
    about a minute): the same count as committed, within the few percent a text change can move it."""
    from bench.synth_blocks import RTL_FIELDS, freeze_die, synthesize_some_blocks
    from hardwire.die import open_die
    from hardwire.rtl.top import RtlOptions
    die = open_die(freeze_die("h32", tmp_path))
    assert die.id == dies["h32"]["die_id"]
    report = synthesize_some_blocks(die, RtlOptions(**RTL_FIELDS.get("h32", {})), ("hw_rope",), tmp_path / "synth",
                                    log=lambda message: None)
    committed = next(b["cells"] for b in dies["h32"]["blocks"] if b["module"] == "hw_rope")
    assert report["blocks"][0]["cells"] == pytest.approx(committed, rel=0.02)
