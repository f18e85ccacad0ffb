"""`hardwire synth`: Yosys maps a block of the generated design to generic cells and reports them."""
from __future__ import annotations

import json
import shutil

import pytest

from hardwire.rtl.synth import parse_stat
from tests.test_rtl_e2e import SHAPES, RandomModel, write_test_die

needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")

STAT = """
=== hw_matvec_x ===

   Number of wires:                100
   Number of wire bits:            900
   Number of public wires:          10
   Number of public wire bits:     300
   Number of memories:               0
   Number of memory bits:            0
   Number of processes:              0
   Number of cells:                 17
     $_ANDNOT_                       9
     $_DFFE_PP_                      3
     $_SDFF_PP0_                     2
     $_XOR_                          2
     hw_kv_sram                      1
"""


def test_stat_parser_counts_cells_by_type_and_flip_flops():
    report = parse_stat(STAT)
    assert report["cells"] == 17
    assert report["cells_by_type"] == {"$_ANDNOT_": 9, "$_DFFE_PP_": 3, "$_SDFF_PP0_": 2, "$_XOR_": 2,
                                       "hw_kv_sram": 1}
    assert report["flip_flops"] == 5


@needs_yosys
def test_synth_of_one_matvec_reports_cells_and_flip_flops(tmp_path, cli):
    die = write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path / "tiny.die", "w8")
    proc = cli("synth", die, "--block", "hw_matvec_layers_0_wk", "--weights-per-lane", "1024", "--json", timeout=900)
    report = json.loads(proc.stdout)
    assert report["top"] == "hw_matvec_layers_0_wk"
    assert report["cells"] == sum(report["cells_by_type"].values())
    # the lane's partial and accumulator registers, the counters, the held sums and the outputs
    assert report["flip_flops"] > 16 * 8


@needs_yosys
def test_synth_names_the_modules_when_the_block_is_unknown(tmp_path, cli):
    die = write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path / "tiny.die", "w8")
    proc = cli("synth", die, "--block", "hw_nonexistent", expect=2)
    assert "hw_layer_0" in proc.stderr and "Traceback" not in proc.stderr


def test_a_block_is_synthesized_from_its_own_modules_only(tmp_path):
    from hardwire.rtl.synth import reachable_modules
    from hardwire.rtl.top import RtlOptions, generate
    from hardwire.die import open_die
    die = open_die(write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path / "tiny.die", "w8"))
    modules = generate(die, None, RtlOptions()).modules
    wk = reachable_modules(modules, "hw_matvec_layers_0_wk")
    # w8 is per-channel: the row-constants ROM carries each row's scale, there is no group-scale ROM
    assert sorted(wk) == sorted(f"hw_matvec_layers_0_wk{suffix}" for suffix in ("", "_codes", "_rows"))
    layer = reachable_modules(modules, "hw_layer_0")
    assert "hw_layer_0" in layer and "hw_matvec_layers_0_w_down" in layer and "hw_kv_sram" in layer
    assert not any(name.startswith(("hw_layer_1", "hw_matvec_layers_1", "hw_matvec_embed")) for name in layer)
    # leaves first, as Yosys reads them
    assert layer.index("hw_matvec_layers_0_wq_codes") < layer.index("hw_matvec_layers_0_wq") < layer.index("hw_layer_0")
