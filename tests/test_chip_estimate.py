"""The analytic chip estimate: the HC1 reproduction, physics sanity, presets, CLI contract."""
from __future__ import annotations

import json
import math

import pytest

from hardwire.chip import estimate, load_chip, model_preset
from hardwire.chip.arch import ChipConfig, chip_from_dict
from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec

HC1 = {"tokens_per_s": 17000, "area_mm2": 815, "transistors": 53e9, "power_w_low": 200, "power_w_high": 250}


@pytest.fixture(scope="module")
def hc1_json(tmp_path_factory):
    import subprocess, sys, os
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "hardwire.cli", "estimate", "--preset", "llama-3.1-8b",
                           "--chip", "hc1", "--json"], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- the one chip that exists ------------------------------------------------------------------

def test_hc1_json_has_the_contract_keys(hc1_json):
    for key in ("tokens_per_s", "latency_us_per_token", "ttft_ms", "area_mm2", "area_breakdown_mm2",
                "transistors", "power_w", "energy_per_token_j", "max_users", "chips", "cost_per_mtok_usd"):
        assert key in hc1_json
    assert hc1_json["context"] == 1024


# Issue 18's bands around the published figures: tokens/s per user within ±35% of 17,000 (the published
# range runs from 14.4k sustained demos to ~20k bursts); area, transistors and power within ±20%. No
# constant is moved to land in them. Since the vector logic is priced from our own synthesis
# (docs/chip-model.md §8.1), hc1's assumed 4,096 elements per cycle of norm, SwiGLU, RoPE and softmax
# lanes cost ~51 B transistors, the die passes the reticle and the area and transistor checks
# miss (§8.2): they stay here as the published targets, expected to fail until the model or the
# assumption changes for a stated reason.
MISSES_SINCE_VECTOR_LOGIC = pytest.mark.xfail(
    strict=True, reason="measured: 2 dies, 1,451 mm² (+78%), 112 B transistors (+111%): "
           "the fitted vector logic at hc1's 4,096 elements per cycle (docs/chip-model.md §8.2)")


def test_hc1_tokens_per_s_within_35_percent_of_published(hc1_json):
    assert abs(hc1_json["tokens_per_s"] / HC1["tokens_per_s"] - 1) <= 0.35


def test_hc1_power_within_20_percent_of_the_published_range(hc1_json):
    # per card at full load (as many users as the KV SRAM holds at 1k context)
    assert 0.80 * HC1["power_w_low"] <= hc1_json["power_w"] <= 1.20 * HC1["power_w_high"]


@MISSES_SINCE_VECTOR_LOGIC
def test_hc1_fits_one_die_as_published(hc1_json):
    assert hc1_json["chips"] == 1 and hc1_json["fits_reticle"]


@MISSES_SINCE_VECTOR_LOGIC
def test_hc1_area_within_20_percent_of_published(hc1_json):
    assert abs(hc1_json["area_mm2"] / HC1["area_mm2"] - 1) <= 0.20


@MISSES_SINCE_VECTOR_LOGIC
def test_hc1_transistors_within_20_percent_of_published(hc1_json):
    assert abs(hc1_json["transistors"] / HC1["transistors"] - 1) <= 0.20


def test_hc1_speed_matches_a_back_of_envelope_pipeline_count():
    # Independent count: 32 layers × (4 matrix-vector products, each a walk of 256 ROM rows and a
    # drain of its rows by requantizers sized to keep up with a walk, about 256 cycles more, + two
    # attention passes over 1024 positions at 8 per cycle) at 1 GHz, ignoring the few-cycle fills.
    chip, spec = load_chip("hc1"), model_preset("llama-3.1-8b")
    cycles = 32 * (4 * (256 + 256) + 2 * 1024 / 8)
    assert estimate(spec, chip).tokens_per_s == pytest.approx(1e9 / cycles, rel=0.12)


def test_hc1_users_are_bounded_by_kv_sram():
    # 256 MiB ÷ (K and V × 32 layers × 8 heads × 128 dims × 1 byte × 1024 positions) = 4 users
    result = estimate(model_preset("llama-3.1-8b"), load_chip("hc1"), context=1024)
    assert result.max_users == (256 * 2**20) // (2 * 32 * 8 * 128 * 1024)


# -- physics sanity ------------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["multiply_select_add", "rom_mac"])
def test_halving_weight_bits_halves_weight_storage(style):
    spec = model_preset("llama-3.2-1b")
    base = load_chip("hc1").replace(weight_style=style, high_precision_fraction=0.0)
    wide = estimate(spec, base.replace(weight_bits=8)).area_breakdown_mm2()["weight_storage"]
    narrow = estimate(spec, base.replace(weight_bits=4)).area_breakdown_mm2()["weight_storage"]
    assert narrow / wide == pytest.approx(0.5, abs=0.05)


def test_doubling_clock_doubles_speed_and_raises_dynamic_power():
    spec, chip = model_preset("llama-3.2-1b"), load_chip("hc1")
    slow, fast = estimate(spec, chip, users=1), estimate(spec, chip.replace(clock_ghz=2.0), users=1)
    assert fast.tokens_per_s / slow.tokens_per_s == pytest.approx(2.0, rel=0.01)
    assert fast.power_breakdown_w["dynamic"] == pytest.approx(2 * slow.power_breakdown_w["dynamic"], rel=0.01)
    assert fast.power_w > slow.power_w


def test_doubling_layers_doubles_weight_area():
    # a tiny vocabulary so the embedding does not dilute the ratio
    shape = dict(family="llama", hidden_dim=1024, heads=16, kv_heads=4, head_dim=64, ffn_dim=4096,
                 vocab_size=256, max_context=4096)
    chip = load_chip("hc1")
    one = estimate(ModelSpec(layers=8, **shape), chip).area_breakdown_mm2()["weight_storage"]
    two = estimate(ModelSpec(layers=16, **shape), chip).area_breakdown_mm2()["weight_storage"]
    assert two / one == pytest.approx(2.0, rel=0.02)


def test_longer_context_lowers_speed_and_users():
    spec, chip = model_preset("llama-3.1-8b"), load_chip("hc1")
    short, long = estimate(spec, chip, context=512), estimate(spec, chip, context=4096)
    assert long.tokens_per_s < short.tokens_per_s
    assert long.max_users < short.max_users
    assert long.ttft_ms == estimate(spec, chip, context=512).ttft_ms   # TTFT depends on the prompt only


def test_70b_at_n6_needs_several_chips_each_within_the_reticle():
    # Weights alone: 70.6e9 × 3.3 bits ÷ 4 bits per transistor ÷ 75 MTr/mm² ≈ 770 mm², nearly a
    # reticle before any lane, SRAM or I/O — so several dies.
    result = estimate(model_preset("llama-3.1-70b"), load_chip("hc1").replace(node="N6"))
    assert result.partition.chips >= 4
    assert result.partition.fits_reticle
    one_chip = estimate(model_preset("llama-3.1-8b"), load_chip("hc1"))
    assert result.latency_us_per_token > one_chip.latency_us_per_token      # more layers, plus links


def test_hardwired_multipliers_cost_far_more_area_than_rom():
    spec = model_preset("smollm2-135m")
    rom = estimate(spec, load_chip("hc1"))
    wired = estimate(spec, load_chip("hc1").replace(weight_style="hardwired"))
    assert wired.area_mm2 > 3 * rom.area_mm2
    assert wired.tokens_per_s > rom.tokens_per_s


def test_newer_node_is_smaller():
    spec, chip = model_preset("llama-3.2-3b"), load_chip("hc1")
    areas = [estimate(spec, chip.replace(node=n)).area_mm2 for n in ("N16", "N7", "N5", "N3")]
    assert areas == sorted(areas, reverse=True)


# -- presets -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, parameters", [
    ("llama-3.1-8b", 8_030_261_248), ("llama-3.1-70b", 70_553_706_496), ("llama-3.2-1b", 1_235_814_400),
    ("llama-3.2-3b", 3_212_749_824), ("qwen2.5-0.5b", 494_032_768), ("smollm2-135m", 134_515_008),
])
def test_presets_have_the_published_parameter_counts(name, parameters):
    assert model_preset(name).parameter_count() == pytest.approx(parameters, rel=1e-3)


def test_small_presets_match_their_checkpoint_headers():
    s15 = model_preset("stories15m")
    assert (s15.hidden_dim, s15.layers, s15.heads, s15.ffn_dim, s15.vocab_size) == (288, 6, 6, 768, 32000)
    s260 = model_preset("stories260k")
    assert (s260.hidden_dim, s260.layers, s260.heads, s260.kv_heads, s260.ffn_dim, s260.vocab_size,
            s260.tied_embeddings) == (64, 5, 8, 4, 172, 512, True)
    assert model_preset("qwen2.5-0.5b").qkv_bias and model_preset("llama-3.2-1b").head_dim == 64


# -- configuration errors ------------------------------------------------------------------------

def test_bad_chip_fields_raise_badconfig():
    with pytest.raises(BadConfig, match="clock_ghz"):
        ChipConfig(clock_ghz=-1.0)
    with pytest.raises(BadConfig, match="unknown chip field"):
        chip_from_dict({"clock_mhz": 1000})
    with pytest.raises(BadConfig, match="node"):
        ChipConfig(node="N2")
    with pytest.raises(BadConfig, match="weights_per_lane"):
        chip_from_dict({"weights_per_lane": 2.5})
    with pytest.raises(BadConfig):
        estimate(model_preset("stories260k"), ChipConfig(), context=0)


def test_cli_rejects_bad_input_with_one_line(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('node = "N6"\nclock_ghz = "fast"\n')
    for args in (["--preset", "gpt-5"], ["--preset", "stories260k", "--chip", bad],
                 ["--preset", "stories260k", "--node", "N1"], ["--preset", "stories260k", "--chip", "nope"]):
        proc = cli("estimate", *args, expect=2)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_cli_table_and_plot(cli, tmp_path):
    png = tmp_path / "chip.png"
    proc = cli("estimate", "--preset", "stories15m", "--plot", png)
    assert "tokens/s per user" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_weight_bits_override_and_chip_file(cli, tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text('name = "mine"\nnode = "N5"\nweight_style = "rom_mac"\nweight_bits = 4\nkv_sram_mib = 32\n')
    four = json.loads(cli("estimate", "--preset", "llama-3.2-1b", "--chip", toml, "--json").stdout)
    two = json.loads(cli("estimate", "--preset", "llama-3.2-1b", "--chip", toml, "--weight-bits", "2",
                         "--json").stdout)
    assert four["node"] == "N5" and four["chips"] >= 1
    assert two["area_breakdown_mm2"]["weight_storage"] == pytest.approx(
        four["area_breakdown_mm2"]["weight_storage"] / 2, rel=0.01)
    assert math.isfinite(two["cost_per_mtok_usd"])


def test_a_dies_recorded_formats_set_the_weight_bits():
    # A die manifest records each matrix's format; 3-bit for 900 weights and 6-bit for 100 is the
    # hc1-style mix: base 3, wide 6 for 10% of the weights.
    from types import SimpleNamespace
    from hardwire.chip.commands import die_weight_formats, resolve_chip
    die = SimpleNamespace(manifest={"tensors": {
        "layers.0.wq": {"kind": "quantized", "shape": [30, 30], "format": {"bits": 3}},
        "layers.0.wk": {"kind": "quantized", "shape": [10, 10], "format": {"bits": 6}},
        "layers.0.attn_norm": {"kind": "float32", "shape": [30]}}})
    formats = die_weight_formats(die)
    assert formats == {3: 900, 6: 100}
    chip = resolve_chip("hc1", None, None, None, formats)
    assert (chip.weight_bits, chip.high_precision_bits) == (3, 6)
    assert chip.mean_weight_bits == pytest.approx(3 * 0.9 + 6 * 0.1)


# -- the fit chip: the template sized for the model ----------------------------------------------

def test_the_bundled_model_gets_a_chip_sized_for_it(cli):
    out = json.loads(cli("estimate", "--json").stdout)
    assert out["chip"] == "fit" and out["fit"]["template"] == "hc1"
    assert out["area_mm2"] < 20 and out["context"] == 512          # stories260K's own maximum context
    assert out["max_users"] == out["fit"]["users"] == 4


def test_llama_8b_defaults_to_hc1_exactly_as_the_preset(cli):
    default = json.loads(cli("estimate", "--preset", "llama-3.1-8b", "--json").stdout)
    named = json.loads(cli("estimate", "--preset", "llama-3.1-8b", "--chip", "hc1", "--json").stdout)
    assert default == named and "fit" not in default


def test_a_context_beyond_the_models_maximum_is_refused(cli):
    for command in ("estimate", "economics"):
        proc = cli(command, "--preset", "stories260k", "--context", "513", expect=2)
        assert "context" in proc.stderr and "512" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_fit_keeps_the_template_and_sizes_kv_sram_for_the_stated_users():
    from hardwire.chip.fit import fit_chip, lora_sram_mib
    spec, hc1 = model_preset("stories15m"), load_chip("hc1")
    one, eight = fit_chip(spec, users=1, context=256), fit_chip(spec, users=8, context=256)
    assert eight.kv_sram_mib == pytest.approx(8 * one.kv_sram_mib)
    # 2 (K and V) x 6 layers x 288 x 8 bits per position, 256 positions
    assert one.kv_sram_mib * 8 * 2**20 == 2 * 6 * 288 * 8 * 256
    assert estimate(spec, eight, context=256).max_users == 8
    for field in ("node", "weight_style", "weight_bits", "clock_ghz", "weights_per_lane", "schedule"):
        assert getattr(eight, field) == getattr(hc1, field)
    # hc1's 32 MiB of LoRA SRAM was sized by the same rule: rank-8, 8-bit adapters on 8B are ~21 MB
    assert lora_sram_mib(model_preset("llama-3.1-8b")) * 2**20 == pytest.approx(21.0e6, rel=0.01)


# -- mixtures of experts ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, total, active", [
    # published: gpt-oss model card (116.8 B / 5.1 B, 20.9 B / 3.6 B); Mistral (46.7 B / 12.9 B, the
    # latter counting the 0.13 B embedding table, which active_parameter_count leaves out)
    ("gpt-oss-120b", 116.8e9, 5.1e9), ("gpt-oss-20b", 20.9e9, 3.6e9), ("mixtral-8x7b", 46.7e9, 12.9e9 - 32000 * 4096),
])
def test_moe_presets_have_the_published_total_and_active_parameters(name, total, active):
    spec = model_preset(name)
    assert spec.parameter_count() == pytest.approx(total, rel=0.01)
    assert spec.active_parameter_count() == pytest.approx(active, rel=0.02)


def test_a_dense_specs_record_is_unchanged_by_the_expert_fields():
    # die manifests (and so die hashes) of dense models carry no expert fields
    spec = model_preset("stories260k")
    assert "experts" not in spec.to_dict() and ModelSpec.from_dict(spec.to_dict()) == spec
    moe = model_preset("gpt-oss-20b")
    assert ModelSpec.from_dict(moe.to_dict()) == moe


def test_moe_fields_are_validated():
    base = model_preset("gpt-oss-20b")
    for changes, field in (({"experts_per_token": 33}, "experts_per_token"), ({"expert_ffn_dim": 0}, "expert_ffn_dim"),
                           ({"experts": 0}, "experts")):
        with pytest.raises(BadConfig) as e:
            ModelSpec.from_dict({**base.to_dict(), **changes})
        assert e.value.field == field


def test_the_estimate_stores_every_expert_but_runs_only_the_chosen_ones():
    import dataclasses
    from hardwire.chip.fit import fit_chip
    spec = model_preset("gpt-oss-20b")
    double = dataclasses.replace(spec, experts=64)           # twice the experts, the same 4 per token
    chip = fit_chip(spec)
    one, two = estimate(spec, chip), estimate(double, chip)
    # 32 more experts and 32 more router rows per layer, 1/4 transistor per stored bit
    expert_bits = 32 * (spec.expert_weights() + 2880) * spec.layers * chip.mean_weight_bits / 4
    added = two.transistor_breakdown()["weight_storage"] - one.transistor_breakdown()["weight_storage"]
    assert added == pytest.approx(expert_bits, rel=1e-6)
    assert two.area_mm2 > 1.7 * one.area_mm2 and two.partition.chips > one.partition.chips
    # same active path: the same cycles per token on each chip, and the same dynamic energy but the links
    assert two.tokens_per_s == pytest.approx(one.tokens_per_s, rel=0.05)
    assert two.token_energy_j["weights"] == pytest.approx(one.token_energy_j["weights"], rel=0.01)
    # a dense model as large as all the experts would spend far more per token
    dense = dataclasses.replace(spec, experts=0, experts_per_token=0, expert_ffn_dim=0, ffn_dim=32 * 2880)
    assert estimate(dense, fit_chip(dense)).token_energy_j["weights"] > 5 * one.token_energy_j["weights"]


def test_gpt_oss_120b_needs_several_chips_and_estimates_fast(cli):
    import time
    start = time.perf_counter()
    out = json.loads(cli("estimate", "--preset", "gpt-oss-120b", "--json").stdout)
    assert out["chips"] > 1 and all(a <= 858 for a in out["area_per_chip_mm2"])
    assert out["active_parameters"] < out["parameters"] / 20
    spec = model_preset("gpt-oss-120b")
    from hardwire.chip.fit import fit_chip
    start = time.perf_counter()
    estimate(spec, fit_chip(spec))
    assert time.perf_counter() - start < 1.0


def test_moe_checkpoints_are_still_refused_naming_the_missing_support(cli, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "mixtral", "num_local_experts": 8}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    proc = cli("estimate", tmp_path, expect=2)
    assert "mixture-of-experts" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# -- HNLPU: gpt-oss-120b metal-embedded over 16 chips at 5 nm (docs/chip-model.md §4.1) --------------
# The paper's figures (arXiv 2508.16151 v2, Table 1 and 2): aggregate tokens/s at 2K context, tokens
# per joule of the whole system, silicon over its 16 chips.
HNLPU = {"tokens_per_s": 249_960, "tokens_per_j": 36.226, "area_mm2": 13_232, "chips": 16}


@pytest.fixture(scope="module")
def hnlpu_json(tmp_path_factory):
    import os, subprocess, sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "hardwire.cli", "estimate", "--chip", "hnlpu", "--preset",
                           "gpt-oss-120b", "--context", "2048", "--json"], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_hnlpu_preset_runs_with_its_published_configuration(hnlpu_json, cli):
    assert hnlpu_json["chips"] == HNLPU["chips"] and hnlpu_json["node"] == "N5"
    assert hnlpu_json["weight_style"] == "metal_embedded" and hnlpu_json["mean_weight_bits"] == 4
    assert hnlpu_json["context"] == 2048 and hnlpu_json["lanes_per_layer"] == 0
    # without --context the chip's own default_context applies: the 2K the paper evaluates at
    default = json.loads(cli("estimate", "--chip", "hnlpu", "--preset", "gpt-oss-120b", "--json").stdout)
    assert default["context"] == 2048
    assert default["aggregate_tokens_per_s"] == hnlpu_json["aggregate_tokens_per_s"]
    assert "at context 2,048" in cli("estimate", "--chip", "hnlpu", "--preset", "gpt-oss-120b").stdout
    # never beyond the model's maximum, and other chips keep 1,024
    assert json.loads(cli("estimate", "--chip", "hnlpu", "--preset", "stories260k", "--json").stdout)["context"] == 512
    assert json.loads(cli("estimate", "--chip", "hc1", "--preset", "gpt-oss-120b", "--json").stdout)["context"] == 1024


def test_hnlpu_tokens_per_s_falls_within_a_factor_of_two_of_the_paper(hnlpu_json):
    # measured: 480,538 aggregate tokens/s (1.92x; our layer pipeline moves a token over 15 chip
    # boundaries, HNLPU runs collectives over 4 or 16 chips in every layer)
    speed = hnlpu_json["aggregate_tokens_per_s"] / HNLPU["tokens_per_s"]
    assert 1.5 < speed <= 2.0                # above the paper, as docs/chip-model.md §4.1 explains


@pytest.mark.xfail(strict=True, reason="measured 36,265 mm² (2.74x): the template's 4,096-wide vector units "
                                       "priced from our RTL's lanes (19,913 mm², docs/chip-model.md §4.1); "
                                       "16,967 mm² (1.28x) with the former 5% allowance")
def test_hnlpu_area_falls_within_a_factor_of_two_of_the_paper(hnlpu_json):
    assert 0.5 <= hnlpu_json["area_mm2"] / HNLPU["area_mm2"] <= 2.0


def test_hnlpu_tokens_per_joule_is_outside_the_factor_of_two(hnlpu_json):
    # measured 81.4 tokens/J (2.25x; 124.5 before the vector logic's leakage was priced): ~2x the
    # tokens, and no HBM, attention buffer or CXL engine power beyond our SRAM reads and 5 pJ/bit
    # links (docs/chip-model.md §4.1)
    ratio = 1 / hnlpu_json["energy_per_token_j"] / HNLPU["tokens_per_j"]
    assert 2.0 < ratio < 5.0


def test_hnlpu_dies_exceed_the_reticle_at_our_metal_embedded_density():
    # 36,265 mm² over 16 dies is 2,267 mm² a die even split perfectly, over the 858 mm² reticle (16,967
    # and 1,060 with the former 5% allowance)
    spec, chip = model_preset("gpt-oss-120b"), load_chip("hnlpu")
    forced = estimate(spec, chip, context=2048)
    assert not forced.partition.fits_reticle and forced.area_mm2 / 16 > 858
    auto = estimate(spec, chip.replace(chips=0), context=2048)
    # with the vector logic priced (section 8.1) even a layer alone (~1,000 mm²) is over the reticle
    assert auto.partition.chips >= spec.layers and not auto.partition.fits_reticle


def test_metal_embedded_weights_take_095_of_the_sram_that_would_hold_them():
    # HNLPU Fig. 12: a 1024x128 FP4 product metal-embedded is 0.95x the area of a 64 KB SRAM holding
    # the same weights, cell-embedded 14.3x: the paper's 15x density
    from hardwire.chip.estimate import matrix_blocks
    from hardwire.datapath import Matrix
    chip = load_chip("hnlpu")
    metal = matrix_blocks([Matrix("w", 128, 1024)], chip)
    sram = chip.process.sram_area_mm2(1024 * 128 * 4)
    assert metal.total_area_mm2 == pytest.approx(0.95 * sram, rel=1e-9)
    assert metal.area_mm2["weight_storage"] == 0          # the weights are wires, not cells
    cells = matrix_blocks([Matrix("w", 128, 1024)], chip.replace(weight_style="hardwired"))
    assert cells.total_area_mm2 > 15 * metal.total_area_mm2   # our cell-embedding costs more than theirs


def test_a_metal_embedded_product_takes_its_input_bits_plus_its_adder_tree():
    # bit-serial inputs, one bit a cycle, into a carry-save tree over the 2,880 inputs (12 levels), + 3
    from hardwire.datapath import Matrix
    chip = load_chip("hnlpu")
    assert Matrix("w", 2880, 2880).plan(chip.point).cycles == 8 + 12 + 3
    assert Matrix("w", 2880, 2880).plan(chip.point.replace(activation_bits=16)).cycles == 16 + 12 + 3
    assert Matrix("w", 2880, 4096).plan(chip.point).cycles == 8 + 12 + 3
    assert Matrix("w", 2880, 4097).plan(chip.point).cycles == 8 + 13 + 3
