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


def test_child_instances_are_counted_with_their_parameters():
    from hardwire.rtl.synth import Instance, child_instances
    text = """
    hw_norm #(.shift(8'sh25)) a (.clk(clk), .h(h));
    hw_norm #(.shift(8'sh25)) b (.clk(clk), .h(h));
    hw_norm #(.shift(8'sh1c))
        c (.clk(clk), .h(h));
    hw_matvec_x wq (.clk(clk));
    """
    counted = child_instances(text)
    assert counted == {Instance("hw_norm", "#(.shift(8'sh25))"): 2, Instance("hw_norm", "#(.shift(8'sh1c))"): 1,
                       Instance("hw_matvec_x", ""): 1}


ADDER = """module hw_add (
    input wire clk,
    input wire [7:0] a,
    output reg [7:0] y
);
    parameter signed [7:0] k = 8'sd0;
    always @(posedge clk) y <= a * k + 8'd1;
endmodule
"""
PARENT = """module hw_parent (
    input wire clk,
    input wire [7:0] a,
    output reg [7:0] y
);
    wire [7:0] p, q, r;
    hw_add #(.k(8'sh05)) first (.clk(clk), .a(a), .y(p));
    hw_add #(.k(8'sh05)) second (.clk(clk), .a(a ^ 8'h5a), .y(q));
    hw_add #(.k(8'sh1c))
        third (.clk(clk), .a(a), .y(r));
    always @(posedge clk) y <= p + q + r;
endmodule
"""


@needs_yosys
def test_bottom_up_sums_each_distinct_block_over_its_instances(tmp_path):
    """A parent with three instances of one block (two with the same constant): bottom-up runs the
    block once per distinct constant and the parent's own adder alone, and the totals match one
    flattened run of the same design."""
    from hardwire.rtl.synth import _bottom_up, parse_stat, run_yosys, synthesis_plan
    modules = {"hw_add": ADDER, "hw_parent": PARENT}
    for name, text in modules.items():
        (tmp_path / f"{name}.v").write_text(text)
    split = _bottom_up(modules, synthesis_plan(modules, "hw_parent"), "hw_parent", tmp_path, jobs=2, timeout_s=300)
    flat = run_yosys(tmp_path / "flat", ["../hw_add.v", "../hw_parent.v"], "hw_parent", [], 300)
    blocks = {(b["module"], b["parameters"], b["role"]): b for b in split["blocks"]}
    assert set(blocks) == {("hw_add", "#(.k(8'sh05))", "block"), ("hw_add", "#(.k(8'sh1c))", "block"),
                           ("hw_parent", "", "own logic")}
    assert blocks[("hw_add", "#(.k(8'sh05))", "block")]["instances"] == 2
    # a multiply by 5 (two adders) and by 28 differ; the parent's own cells exclude the black boxes
    assert blocks[("hw_add", "#(.k(8'sh05))", "block")]["cells"] != blocks[("hw_add", "#(.k(8'sh1c))", "block")]["cells"]
    assert split["cells"] == sum(b["cells"] * b["instances"] for b in split["blocks"])
    # registers: 8 + 8 for the x5 blocks, 6 for the x28 one (a * 28 + 1 ends in binary 01, two
    # constant bits), 8 for the sum. Flattened, synthesis also optimizes across the blocks and may
    # keep fewer: bottom-up is the upper bound.
    assert split["flip_flops"] == 8 + 8 + 6 + 8
    assert flat["flip_flops"] <= split["flip_flops"]
    assert abs(split["cells"] - flat["cells"]) <= 0.15 * flat["cells"], (split["cells"], flat["cells"])
    assert parse_stat((tmp_path / "flat" / "stat.txt").read_text())["cells"] == flat["cells"]


@pytest.mark.slow
@needs_yosys
def test_bottom_up_synthesis_agrees_with_one_flattened_run(tmp_path):
    """A whole tiny layer bottom-up (each block alone with its constants, then the layer's own logic
    with the blocks as black boxes) against one flattened run: they agree up to what synthesis
    finds across block boundaries."""
    from hardwire.die import open_die
    from hardwire.rtl.synth import synthesize
    from hardwire.rtl.top import RtlOptions
    die = open_die(write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path / "tiny.die", "w8"))
    # one norm and SwiGLU element per cycle keeps the flattened run to minutes (at 8 per cycle the
    # norms' 64-bit lanes alone are ~0.5 M cells, whatever the model's size)
    options = RtlOptions(weights_per_lane=1024, norm_per_cycle=1)
    flat = synthesize(die, options, block="hw_layer_0", flat=True)
    split = synthesize(die, options, block="hw_layer_0", jobs=2)
    assert flat["method"] == "flat" and split["method"] == "bottom-up"
    roles = {(b["module"], b["role"]) for b in split["blocks"]}
    assert ("hw_layer_0", "own logic") in roles and ("hw_matvec_layers_0_wq", "block") in roles
    assert split["cells"] == sum(split["cells_by_type"].values())
    assert split["cells"] == sum(b["cells"] * b["instances"] for b in split["blocks"])
    assert split["cells_by_type"].get("hw_kv_sram") == flat["cells_by_type"].get("hw_kv_sram") == 2
    assert abs(split["cells"] - flat["cells"]) <= 0.05 * flat["cells"], (split["cells"], flat["cells"])
    assert abs(split["flip_flops"] - flat["flip_flops"]) <= 0.05 * flat["flip_flops"]


def test_the_bottom_up_plan_splits_a_layer_down_to_its_parameterised_blocks(tmp_path):
    from hardwire.die import open_die
    from hardwire.rtl.synth import synthesis_plan
    from hardwire.rtl.top import RtlOptions, generate
    die = open_die(write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path / "tiny.die", "w8"))
    modules = generate(die, None, RtlOptions()).modules
    whole, split = synthesis_plan(modules, "hw_layer_0")
    # the layer is split (its own logic alone, its blocks as black boxes) ...
    assert split == {"hw_layer_0": 1}
    # ... a matvec stays whole with its ROM tables; blocks with constants are synthesized whole,
    # each once per distinct set of constants
    assert whole[next(i for i in whole if i.module == "hw_matvec_layers_0_wq")] == 1
    assert not any(i.module.endswith(("_codes", "_rows")) for i in whole)
    norms = [i for i in whole if i.module.startswith("hw_rmsnorm_") and i.parameters]
    assert sum(whole[i] for i in norms) == 2 and all(i.parameters.startswith("#(.shift(") for i in norms)
    assert not any(i.module == "hw_kv_sram" for i in whole)


@needs_yosys
@pytest.mark.slow
def test_a_whole_stories260k_layer_synthesizes_near_the_chip_estimate(tmp_path_factory):
    """One whole stories260K w8 layer (ROM style, 256 weights per lane), bottom-up, against the chip
    estimate for the same layer. Measured: the seven matvecs 1.7x the estimate's weight storage plus
    MAC lanes alone; the whole layer within 20% of the estimate with its vector logic (cost terms
    fitted on other dies, docs/chip-model.md §8). The bands catch a datapath that falls back to
    64-bit products or loses its lanes."""
    from hardwire.chip.arch import GENERIC_CELL_T
    from hardwire.die import open_die
    from hardwire.rtl.synth import layer_estimate, synthesize
    from hardwire.rtl.top import RtlOptions
    from tests.test_rtl_e2e import stories_die
    die = open_die(stories_die(tmp_path_factory, "w8"))
    report = synthesize(die, RtlOptions(), block="hw_layer_0", jobs=2)
    assert report["method"] == "bottom-up"
    predicted, transistors = layer_estimate(die, RtlOptions().point.weights_per_lane)
    matvec_cells = sum(b["cells"] * b["instances"] for b in report["blocks"] if b["module"].startswith("hw_matvec_"))
    matvec_estimate = (transistors["weight_storage"] + transistors["mac_select"]) / GENERIC_CELL_T
    assert {b["module"] for b in report["blocks"] if b["module"].startswith("hw_matvec_")} == {
        f"hw_matvec_layers_0_{name}" for name in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")}
    assert 1.0 < matvec_cells / matvec_estimate < 2.5
    assert 0.8 < report["cells"] / predicted < 1.2
    # registers that must survive synthesis: the matvecs' lanes and holding arrays (22,144 bits), the
    # residual stream (2,048), the norm, SwiGLU and attention buffers; ~39 k measured (generator 21)
    assert report["flip_flops"] > 30_000
