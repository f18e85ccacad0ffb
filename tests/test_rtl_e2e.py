"""The generated chip computes exactly what the golden model computes: same tokens, same integer logits.

Dies here are frozen with the real freezer (random small models of several shapes calibrated on random
ids, and the bundled stories260K); the RTL is simulated with Verilator (and once with Icarus).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from hardwire.model.spec import ModelSpec
from tests.golden_dies import RandomModel

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")


# -- dies for tests ---------------------------------------------------------------------------------

def write_test_die(model, path: Path, plan: str) -> Path:
    """Freeze `model` (random weights) by `plan` with the real freezer, calibrated on random ids."""
    from hardwire.freeze.freezer import Calibration, freeze
    from hardwire.freeze.plan import parse_plan

    rng = np.random.default_rng(1)
    spec = model.spec
    sequences = [[int(i) for i in rng.integers(0, spec.vocab_size, spec.max_context)] for _ in range(4)]
    freeze(model, parse_plan(plan), path, Calibration(sequences, {"source": "random ids"}))
    return path


SHAPES = {
    # the default-suite die: GQA 2:1, untied, no bias; small enough to compile in well under a minute
    "tiny-gqa": ModelSpec(family="llama", hidden_dim=16, layers=1, heads=2, kv_heads=1, head_dim=8, ffn_dim=24,
                          vocab_size=32, max_context=16),
    # GQA 2:1, untied, no bias, two layers
    "gqa-untied": ModelSpec(family="llama", hidden_dim=32, layers=2, heads=4, kv_heads=2, head_dim=8, ffn_dim=48,
                            vocab_size=64, max_context=64),
    # MQA, tied embeddings, qkv bias, head_dim != hidden/heads, sliding window
    "mqa-tied-bias": ModelSpec(family="qwen2", hidden_dim=24, layers=1, heads=2, kv_heads=1, head_dim=16, ffn_dim=40,
                               vocab_size=48, max_context=32, tied_embeddings=True, qkv_bias=True, sliding_window=5),
}
# Few lanes and narrow norms: less logic, so Verilator compiles the test dies quickly.
SMALL = dict(weights_per_lane=1024, norm_per_cycle=2, embed_per_cycle=4)


def golden_and_rtl_logits(die_path: Path, ids: list[int], options=None):
    from hardwire.die import open_die
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.engine import RtlEngine

    die = open_die(die_path)
    golden = GoldenEngine(die).forward_integer(ids)
    engine = RtlEngine(die, options=options)
    try:
        rtl = engine.forward_integer(ids)
    finally:
        engine.close()
    return golden, rtl


@pytest.fixture(scope="module")
def tiny_die(tmp_path_factory):
    return write_test_die(RandomModel(SHAPES["tiny-gqa"], seed=3), tmp_path_factory.mktemp("dies") / "tiny.die", "w8")


# -- tests ------------------------------------------------------------------------------------------

@needs_verilator
@pytest.mark.parametrize("gate_clocks", [True, False], ids=["gated-stage-clocks", "one-clock"])
def test_tiny_die_logits_equal_golden_bit_for_bit(tiny_die, cache_dir, gate_clocks):
    from hardwire.rtl.top import RtlOptions
    golden, rtl = golden_and_rtl_logits(tiny_die, [1, 5, 9, 2, 31, 7],
                                        RtlOptions(weights_per_lane=1024, gate_clocks=gate_clocks))
    np.testing.assert_array_equal(rtl, golden)


@needs_verilator
def test_sim_command_prints_run_json_plus_cycles(tiny_die, cache_dir, cli):
    import json
    proc = cli("sim", tiny_die, "--ids", "1,4", "--max-tokens", "5", "--weights-per-lane", "1024", "--json",
               timeout=900)
    out = json.loads(proc.stdout)
    for key in ("ids", "text", "prompt_ids", "stop_reason", "chip", "cycles", "cycles_per_token"):
        assert key in out
    run = json.loads(cli("run", tiny_die, "--ids", "1,4", "--max-tokens", "5", "--backend", "golden", "--json").stdout)
    assert out["ids"] == run["ids"]
    assert out["cycles"] == sum(out["cycles_per_token"]) > 0


@needs_verilator
@pytest.mark.parametrize("gating", ["--clock-gating", "--no-clock-gating"])
def test_generated_design_passes_verilator_lint_with_all_warnings(tiny_die, tmp_path, cli, gating):
    import subprocess
    cli("rtl", tiny_die, "-o", tmp_path / "rtl", gating)
    assert ("hw_clock_gate" in (tmp_path / "rtl" / "hw_chip.v").read_text()) == (gating == "--clock-gating")
    files = (tmp_path / "rtl" / "files.f").read_text().split()
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "hw_chip", *files],
                          cwd=tmp_path / "rtl", capture_output=True, text=True)
    assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[-3000:]


@needs_verilator
@pytest.mark.slow
@pytest.mark.parametrize("shape,plan,tokens", [("gqa-untied", "w8", 10), ("mqa-tied-bias", "w4g16a", 12)])
def test_random_dies_of_other_shapes_equal_golden(tmp_path, cache_dir, shape, plan, tokens):
    from hardwire.rtl.top import RtlOptions
    die = write_test_die(RandomModel(SHAPES[shape], seed=5), tmp_path / f"{shape}.die", plan)
    ids = [int(i) for i in np.random.default_rng(2).integers(0, SHAPES[shape].vocab_size, tokens)]
    golden, rtl = golden_and_rtl_logits(die, ids, RtlOptions(**SMALL))
    np.testing.assert_array_equal(rtl, golden)


def assert_greedy_and_logits_equal(golden, engine, tokens: int = 32):
    """`tokens` greedy tokens from BOS, token for token, then teacher-forced over the same positions:
    every logit, the final ones included, bit for bit. Returns the greedy ids."""
    expected = golden.generate([1], max_tokens=tokens, stop_at_eos=False)
    try:
        got = engine.generate([1], max_tokens=tokens, stop_at_eos=False)
        assert got.ids == expected.ids
        sequence = [1] + got.ids[:-1]
        engine.reset()
        rtl = engine.forward_integer(sequence)
    finally:
        engine.close()
    golden.reset()
    np.testing.assert_array_equal(rtl, golden.forward_integer(sequence))
    return got.ids


def stories_die(tmp_path_factory, plan: str) -> Path:
    from hardwire.freeze.commands import load_calibration
    from hardwire.freeze.freezer import freeze
    from hardwire.freeze.plan import parse_plan
    from hardwire.model.load import load
    model = load(None)
    path = tmp_path_factory.mktemp("stories") / "stories260K.die"
    freeze(model, parse_plan(plan), path, load_calibration(model, None, 4096))
    return path


@needs_verilator
@pytest.mark.slow
@pytest.mark.parametrize("plan", ["w8", "mix:3g32,6g32,avg=4.5"])
def test_stories260k_greedy_32_tokens_equal_golden(tmp_path_factory, cache_dir, plan):
    """The acceptance check: 32 greedy tokens from BOS, token for token, and the final logits bit for bit."""
    from hardwire.die import open_die
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.engine import RtlEngine
    die = open_die(stories_die(tmp_path_factory, plan))
    assert_greedy_and_logits_equal(GoldenEngine(die), RtlEngine(die))


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")
def test_icarus_simulation_of_the_whole_chip_generates_the_golden_tokens(tiny_die, cli):
    import json
    sim = json.loads(cli("sim", tiny_die, "--ids", "1,4", "--max-tokens", "3", "--simulator", "icarus",
                         "--weights-per-lane", "1024", "--json", timeout=900).stdout)
    run = json.loads(cli("run", tiny_die, "--ids", "1,4", "--max-tokens", "3", "--backend", "golden", "--json").stdout)
    assert sim["ids"] == run["ids"] and sim["simulator"] == "icarus"
    assert len(sim["cycles_per_token"]) == 2 + 3 - 1
