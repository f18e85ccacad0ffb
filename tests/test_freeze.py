"""Freeze: number formats, quantizers, plans, and the quality they buy on the bundled model."""
from __future__ import annotations

import os

# These models are tiny: BLAS threads only contend with each other (set before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import math  # noqa: E402
from dataclasses import dataclass, field

import numpy as np
import pytest

import hardwire
from hardwire.errors import BadPlan
from hardwire.formats import WeightFormat, decode_scales, encode_scales, pack_codes, unpack_codes
from hardwire.freeze.freezer import Calibration, freeze
from hardwire.freeze.plan import Choice, check_budget, parse_plan, resolve
from hardwire.freeze.quantize import quantize_gptq, quantize_rtn
from hardwire.measure.quality import evaluate, perplexity
from hardwire.model.load import bundled_text_path
from hardwire.model.spec import ModelSpec
from hardwire.model.text import context_windows, read_sequences


# -- formats -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", range(2, 9))
def test_packing_round_trips_every_bit_width(bits):
    rng = np.random.default_rng(bits)
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = np.concatenate([[low, high, 0, -1], rng.integers(low, high + 1, size=997)]).astype(np.int8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == math.ceil(codes.size * bits / 8)
    np.testing.assert_array_equal(unpack_codes(packed, bits, codes.size), codes)


def test_packing_is_little_endian_twos_complement():
    # 3-bit values 1, -1 (0b111), 2: bits 100 111 010 from bit 0 -> byte0 = 0b10_111_001, byte1 = 0b0
    assert pack_codes(np.array([1, -1, 2], np.int8), 3).tolist() == [0b10111001, 0b0]


@pytest.mark.parametrize("scale_format", ["fp16", "bf16", "e4m4"])
def test_stored_scales_round_up_to_representable_values(scale_format):
    scales = np.abs(np.random.default_rng(0).standard_normal(500)).astype(np.float32) * 0.01 + 1e-4
    stored, multiplier = encode_scales(scales, scale_format)
    decoded = decode_scales(stored, scale_format, multiplier)
    assert np.all(decoded >= scales)
    relative_step = {"fp16": 2 ** -10, "bf16": 2 ** -7, "e4m4": 2 ** -4}[scale_format]
    assert np.all(decoded <= scales * (1 + relative_step) * 1.0001)


@pytest.mark.parametrize("name", ["w8", "w6", "w4g32", "w3g32a", "w2g16", "w3g64-e4m4", "w5g128a-bf16"])
def test_round_to_nearest_error_is_at_most_half_a_step(name):
    fmt = WeightFormat.parse(name)
    weight = np.random.default_rng(1).standard_normal((40, 172)).astype(np.float32)   # 172: a partial group
    q = quantize_rtn(weight, fmt)
    assert q.codes.min() >= fmt.code_min and q.codes.max() <= fmt.code_max
    step = np.repeat(q.scales, fmt.group_width(172), axis=1)[:, :172]
    assert np.all(np.abs(weight - q.dequantize()) <= step / 2 * (1 + 1e-6))
    assert q.storage_bits() == fmt.storage_bits((40, 172))


def test_gptq_reduces_output_error_versus_round_to_nearest():
    rng = np.random.default_rng(2)
    mixing = rng.standard_normal((96, 96)).astype(np.float32)
    inputs = rng.standard_normal((4000, 96)).astype(np.float32) @ mixing      # correlated features
    calibration, held_out = inputs[:2000], inputs[2000:]
    weight = rng.standard_normal((64, 96)).astype(np.float32)
    for name in ("w3g32", "w4", "w3g32a"):
        fmt = WeightFormat.parse(name)
        output_error = lambda q: np.linalg.norm(held_out @ (weight - q.dequantize()).T)  # noqa: E731
        rtn = output_error(quantize_rtn(weight, fmt))
        gptq = output_error(quantize_gptq(weight, fmt, calibration.T @ calibration))
        assert gptq < 0.9 * rtn, (name, gptq, rtn)


# -- plans ---------------------------------------------------------------------------------------

def test_plan_syntax():
    assert parse_plan("w8").default == Choice(WeightFormat(8, None, True, "fp16"), "rtn")
    assert parse_plan("w4g32:gptq").default == Choice(WeightFormat(4, 32), "gptq")
    assert parse_plan("w3g32a").default.format.symmetric is False
    assert parse_plan("w3g64-e4m4").default.format.scale_format == "e4m4"
    mix = parse_plan("mix:3g32,6g32:gptq,avg=3.5").default
    assert [c.name for c in mix.choices] == ["w3g32", "w6g32:gptq"] and mix.average_bits == 3.5
    assert parse_plan("w8", activations="int16").activations == "int16"


def test_plan_file_with_overrides(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text('default = "w4g32"\nactivations = "int16"\n[overrides]\n"layers.*.w_down" = "w8"\n'
                    'embed = "w6g32:gptq"\n')
    plan = parse_plan(str(path))
    spec = hardwire.load().spec
    chosen = resolve(plan, spec)
    assert chosen["layers.3.w_down"].name == "w8" and chosen["embed"].name == "w6g32:gptq"
    assert chosen["layers.3.wq"].name == "w4g32" and plan.activations == "int16"


@pytest.mark.parametrize("text, message", [
    ("q4", "cannot read weight format"), ("w9", "2..8"), ("w1", "2..8"), ("w4g8", "16..256"),
    ("w4g512", "16..256"), ("w4g32:fp8", "unknown quantizer or transform"), ("w4g32-fp8", "unknown scale format"),
    ("mix:3g32,avg=3.5", "at least two formats"), ("mix:3g32,6g32", "needs a budget"),
    ("mix:3g32,6g32,avg=-1", "positive"), ("", "expected a plan"),
])
def test_bad_plans_are_refused_with_a_reason(text, message):
    with pytest.raises(BadPlan, match=message):
        parse_plan(text)


def test_unmeetable_budget_is_refused_before_any_work():
    spec = hardwire.load().spec
    with pytest.raises(BadPlan, match="cannot be met"):
        check_budget(parse_plan("mix:3g32,6g32,avg=3.2"), spec)      # w3g32 alone stores 3.5 bits/weight


def test_bad_plan_exits_2_with_one_line(tmp_path, capsys):
    from hardwire.cli import main
    assert main(["freeze", "--plan", "w9g32", "-o", str(tmp_path / "x.die")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "2..8" in err
    assert main(["freeze", "--plan", "mix:3g32,6g32,avg=3", "-o", str(tmp_path / "x.die")]) == 2
    assert "cannot be met" in capsys.readouterr().err
    assert not (tmp_path / "x.die").exists()


def test_mixed_allocation_spends_the_budget_where_it_helps_most():
    spec = hardwire.load().spec
    plan = parse_plan("mix:3g32,6g32,avg=3.8")
    shapes = {n: s for n, s in spec.tensor_shapes().items() if len(s) == 2}
    damage = {n: {"w3g32": 0.01, "w6g32": 0.0} for n in shapes}
    damage["layers.2.w_up"]["w3g32"] = 5.0           # by far the most sensitive
    damage["layers.0.wk"]["w3g32"] = 1.0
    chosen = resolve(plan, spec, damage)
    assert chosen["layers.2.w_up"].name == "w6g32" and chosen["layers.0.wk"].name == "w6g32"
    bits = sum(chosen[n].format.storage_bits(s) for n, s in shapes.items())
    assert bits / sum(math.prod(s) for s in shapes.values()) <= 3.8


# -- freezing and quality on real and synthetic models -------------------------------------------

@dataclass
class SyntheticModel:
    spec: ModelSpec
    weights: dict = field(default_factory=dict)
    tokenizer: object = None
    path: object = None

    def tensor(self, name):
        return self.weights[name]


def synthetic_model(seed=0) -> SyntheticModel:
    spec = ModelSpec(family="qwen2", hidden_dim=32, layers=2, heads=4, kv_heads=2, head_dim=8, ffn_dim=48,
                     vocab_size=64, max_context=64, qkv_bias=True, tied_embeddings=False)
    rng = np.random.default_rng(seed)
    weights = {n: (rng.standard_normal(s) * (1.0 if len(s) == 1 else 0.2)).astype(np.float32)
               for n, s in spec.tensor_shapes().items()}
    return SyntheticModel(spec, weights)


def test_freeze_streams_an_untied_model_with_biases_and_gptq(tmp_path):
    model = synthetic_model()
    rng = np.random.default_rng(3)
    calibration = Calibration([list(rng.integers(0, 64, 48)) for _ in range(6)], {"source": "random ids"})
    die = freeze(model, parse_plan("w4g16:gptq"), tmp_path / "s.die", calibration)
    assert die.manifest["plan"]["assignment"]["output"]["method"] == "gptq"
    assert die.manifest["plan"]["assignment"]["embed"]["method"] == "rtn"      # a lookup has no inputs
    np.testing.assert_array_equal(die.tensor("layers.1.bq"), model.weights["layers.1.bq"])
    scales = die.activation_scales()
    assert set(scales) == {n for n, s in model.spec.tensor_shapes().items() if len(s) == 2 and n != "embed"}
    ids = calibration.sequences[0]
    results, _ = evaluate([die], model, [ids])
    assert results[0]["top1_agreement"] > 0.5
    int8_inputs, _ = evaluate([die], model, [ids], act_quant=True)
    assert int8_inputs[0]["kl_mean"] != results[0]["kl_mean"] and int8_inputs[0]["top1_agreement"] > 0.5


def test_long_documents_are_scored_in_context_windows_predicting_each_token_once():
    ids = list(range(1900))
    windows = context_windows(ids, 512)
    assert [len(w) for w in windows] == [512, 512, 512, 367]
    assert all(later[0] == earlier[-1] for earlier, later in zip(windows, windows[1:]))
    assert sum(len(w) - 1 for w in windows) == len(ids) - 1
    assert context_windows(ids[:512], 512) == [ids[:512]]


@pytest.fixture(scope="module")
def bundled():
    model = hardwire.load()
    stories = read_sequences(bundled_text_path(), model.tokenizer, limit=20, window=model.spec.max_context)
    calibration = Calibration(read_sequences(bundled_text_path(), model.tokenizer, limit=6, from_end=True,
                                             window=512), {"source": "bundled, last 6"})
    return model, stories, calibration


def test_w8_die_perplexity_is_within_one_percent_of_float(bundled, tmp_path):
    model, stories, calibration = bundled
    die = hardwire.open_die(freeze(model, parse_plan("w8"), tmp_path / "w8.die", calibration).path)
    (result,), _ = evaluate([die], model, stories)
    assert abs(result["perplexity"] / result["float_perplexity"] - 1) < 0.01
    assert result["top1_agreement"] > 0.95 and result["tokens"] == sum(len(s) - 1 for s in stories)


def test_mixed_3_6_plan_beats_uniform_3_bit_at_no_more_bits(bundled, tmp_path):
    model, stories, calibration = bundled
    uniform = freeze(model, parse_plan("w3g32"), tmp_path / "u.die", calibration)
    mixed = freeze(model, parse_plan("mix:3g32-e4m4,6g32-e4m4,avg=3.5"), tmp_path / "m.die", calibration,
                   sensitivity_tokens=512)
    assert mixed.manifest["totals"]["rom_bits"] <= uniform.manifest["totals"]["rom_bits"]
    assert mixed.manifest["totals"]["bits_per_weight"] <= 3.5
    assert {a["format"] for a in mixed.manifest["plan"]["assignment"].values()} == {"w3g32-e4m4", "w6g32-e4m4"}
    results, _ = evaluate([uniform, mixed], model, stories[:8])
    assert results[1]["perplexity"] < results[0]["perplexity"]


def test_perplexity_matches_transformers_on_the_same_float_weights(bundled):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, stories, _ = bundled
    spec = model.spec
    config = transformers.LlamaConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_dim, intermediate_size=spec.ffn_dim,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim, max_position_embeddings=spec.max_context, rms_norm_eps=spec.norm_eps,
        rope_theta=spec.rope_theta, tie_word_embeddings=spec.tied_embeddings, attention_bias=False)
    hf = transformers.LlamaForCausalLM(config).eval()
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "wq": "self_attn.q_proj",
             "wk": "self_attn.k_proj", "wv": "self_attn.v_proj", "wo": "self_attn.o_proj",
             "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"}
    state = {"model.embed_tokens.weight": model.tensor("embed"), "model.norm.weight": model.tensor("final_norm")}
    for i in range(spec.layers):
        for short, hf_short in names.items():
            state[f"model.layers.{i}.{hf_short}.weight"] = model.tensor(f"layers.{i}.{short}")
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                             strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}        # tied to the embedding
    sequences = [s for s in stories if len(s) <= spec.max_context][:5]
    nll = tokens = 0.0
    with torch.no_grad():
        for ids in sequences:
            logits = hf(torch.tensor([ids])).logits[0, :-1].double()
            nll += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
            tokens += len(ids) - 1
    expected = math.exp(nll / tokens)
    assert abs(perplexity(model, sequences) / expected - 1) < 5e-5      # 4 significant digits


def test_freeze_profile_says_where_the_time_went(tmp_path, cli):
    from tests.test_malformed import padded_vocab_folder

    folder = padded_vocab_folder(tmp_path)
    text = tmp_path / "calib.txt"
    text.write_text("a b c d e f g\n\na b a b c c\n")
    proc = cli("freeze", folder, "--plan", "w8", "--calib", text, "-o", tmp_path / "tiny.die", "--profile")
    summary = [line for line in proc.stderr.splitlines() if "freeze took" in line]
    assert len(summary) == 1 and "layers" in summary[0] and "golden tables" in summary[0], proc.stderr


def test_die_id_does_not_depend_on_the_blas_thread_count(tmp_path):
    """Freeze pins BLAS to one thread, so the same checkpoint and plan give the same die on a machine
    with one core or several (a multi-threaded BLAS sums in an order set by its thread count; before
    the pin, the bundled model's w8 die had a different id with 1 and with 2 OpenBLAS threads)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    ids = []
    for threads in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(root), "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        out = tmp_path / f"t{threads}.die"
        subprocess.run([sys.executable, "-m", "hardwire.cli", "freeze", "--plan", "w8", "-o", str(out)],
                       check=True, capture_output=True, env=env, cwd=root, timeout=300)
        ids.append(hardwire.open_die(out).id)
    assert ids[0] == ids[1]


def test_die_id_does_not_depend_on_where_the_checkpoint_and_calibration_text_lie(tmp_path, cli):
    """A die's id covers its content, not the folders it was made from: the same checkpoint and
    calibration text copied to two places freeze to the same id (the absolute paths used to be in
    the manifest, so every checkout had its own ids for the same weights)."""
    import shutil

    from hardwire.die import source_checkpoint
    from tests.test_malformed import padded_vocab_folder

    ids = []
    for place in ("here", "there"):
        root = tmp_path / place / "deeper" if place == "there" else tmp_path / place
        root.mkdir(parents=True)
        folder = padded_vocab_folder(root)
        text = root / "calib.txt"
        text.write_text("a b c d e f g\n\na b a b c c\n")
        cli("freeze", folder, "--plan", "w8", "--calib", text, "-o", root / "tiny.die")
        die = hardwire.open_die(root / "tiny.die")
        ids.append(die.id)
        assert die.manifest["source"]["path"] == folder.name
        assert source_checkpoint(die) == folder                 # found beside the die, for `quality`
        shutil.rmtree(folder)                                   # the die stands alone
        assert source_checkpoint(hardwire.open_die(root / "tiny.die")) is None
        proc = cli("quality", root / "tiny.die", "--stories", "1", expect=2)
        assert "--float MODEL" in proc.stderr and "Traceback" not in proc.stderr
    assert ids[0] == ids[1]
