"""Freeze II: the offline transforms (residual rotation, activation-aware scaling), the clip search,
and the plan grammar that names them. Tiny random models; the float forward pass is the reference."""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses  # noqa: E402

import numpy as np
import pytest

import hardwire

from hardwire.errors import BadPlan
from hardwire.formats import WeightFormat, group_view
from hardwire.freeze.calibrate import LayerRunner
from hardwire.freeze.freezer import Calibration, freeze
from hardwire.freeze.plan import BEST_METHODS, Choice, parse_plan
from hardwire.freeze.quantize import quantize_rtn, searched_scales
from hardwire.freeze.transforms import (AWQ_INPUTS, RotatedWeights, fold_channel_scales, rotation_matrix,
                                        search_channel_scales, source_spec, unrotate)
from hardwire.measure.quality import evaluate
from hardwire.model.reference import teacher_forced_logits
from hardwire.model.spec import ModelSpec
from tests.test_freeze import SyntheticModel


def random_model(seed=0, hidden=32, tied=False, bias=True) -> SyntheticModel:
    spec = ModelSpec(family="qwen2" if bias else "llama", hidden_dim=hidden, layers=2, heads=4, kv_heads=2,
                     head_dim=8, ffn_dim=40, vocab_size=64, max_context=64, qkv_bias=bias,
                     tied_embeddings=tied)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in spec.tensor_shapes().items():
        if name.endswith("norm"):     # gains far from one, so folding them is exercised
            weights[name] = rng.uniform(0.2, 3.0, shape).astype(np.float32)
        else:
            weights[name] = (rng.standard_normal(shape) * (0.1 if len(shape) == 1 else 0.3)).astype(np.float32)
    return SyntheticModel(spec, weights)


# -- rotation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [32, 48, 64, 7])
def test_rotation_is_orthogonal_and_fixed_by_its_seed(width):
    q = rotation_matrix(width, 3)
    np.testing.assert_allclose(q @ q.T, np.eye(width), atol=1e-12)
    np.testing.assert_array_equal(q, rotation_matrix(width, 3))
    assert not np.allclose(q, rotation_matrix(width, 4))


@pytest.mark.parametrize("tied, hidden, bias", [(False, 32, True), (True, 32, False), (True, 48, True)])
def test_rotated_model_has_the_float_models_logits(tied, hidden, bias):
    model = random_model(hidden=hidden, tied=tied, bias=bias)
    rotated = RotatedWeights(model)
    assert rotated.spec.tied_embeddings is False          # a tied table becomes table + classifier
    assert source_spec(rotated.spec, {"rotation": rotated.record()}) == model.spec
    np.testing.assert_array_equal(rotated.tensor("layers.1.ffn_norm"), np.ones(hidden, np.float32))
    ids = list(np.random.default_rng(1).integers(0, 64, 20))
    expected = teacher_forced_logits(model, ids)
    got = teacher_forced_logits(rotated, ids)
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())


def test_unrotate_takes_the_residual_stream_back():
    x = np.random.default_rng(2).standard_normal((5, 48)).astype(np.float32)
    record = {"rotation": {"width": 48, "seed": 0, "source_tied_embeddings": True}}
    rotated = (x.astype(np.float64) @ rotation_matrix(48, 0)).astype(np.float32)
    np.testing.assert_allclose(unrotate(rotated, record), x, atol=1e-5)
    assert unrotate(x, None) is x


# -- activation-aware scaling ---------------------------------------------------------------------

@pytest.mark.parametrize("source", list(AWQ_INPUTS))
def test_folded_channel_scales_leave_the_layer_output_unchanged(source):
    model = random_model(bias=True)
    spec, prefix = model.spec, "layers.0."
    weights = {prefix + n: model.weights[prefix + n] for n in spec.layer_tensor_shapes()}
    x = np.random.default_rng(4).standard_normal((12, spec.hidden_dim)).astype(np.float32)
    expected = LayerRunner(spec, 0, dict(weights), 12)(x)
    width = weights[prefix + AWQ_INPUTS[source][0]].shape[1]
    scales = np.random.default_rng(5).uniform(0.25, 4.0, width)
    if source == "wo":     # query heads reading one kv head share its scales
        from hardwire.freeze.transforms import kv_channel_groups
        scales = scales[kv_channel_groups(spec)]
    fold_channel_scales(spec, prefix, weights, source, scales)
    changed = [n for n in weights if not np.array_equal(weights[n], model.weights[n])]
    assert len(changed) >= 2
    np.testing.assert_allclose(LayerRunner(spec, 0, weights, 12)(x), expected, rtol=1e-4, atol=1e-5)


def test_channel_scale_search_helps_inputs_with_outlier_channels():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    x[:, :4] *= 30                                         # a few very active channels
    w = rng.standard_normal((48, 64)).astype(np.float32)
    fmt = WeightFormat.parse("w3g32")
    scales, alpha = search_channel_scales(x[:1000], [(w, fmt)])
    held = x[1000:]
    error = lambda approx, s: np.linalg.norm(held / s @ approx.T - held @ w.T)      # noqa: E731
    plain = error(quantize_rtn(w, fmt).dequantize(), np.ones(64))
    scaled = error(quantize_rtn(w * scales[None, :].astype(np.float32), fmt).dequantize(), scales)
    assert alpha > 0 and scaled < 0.8 * plain, (alpha, scaled, plain)


# -- clip search ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["w3g32", "w4g32", "w3g32a", "w4"])
def test_clip_search_never_rounds_a_group_worse(name):
    fmt = WeightFormat.parse(name)
    w = (np.random.default_rng(7).standard_t(3, (40, 96))).astype(np.float32)    # heavy tails
    groups = group_view(w, fmt.group_width(96))

    def group_error(q):
        return np.sum((groups - group_view(q.dequantize(), fmt.group_width(96))) ** 2, axis=-1)

    plain, clipped = group_error(quantize_rtn(w, fmt)), group_error(quantize_rtn(w, fmt, clip=True))
    assert np.all(clipped <= plain * (1 + 1e-3) + 1e-9)    # (stored scales round up: a hair of slack)
    assert clipped.sum() < 0.95 * plain.sum()
    ideal, _ = searched_scales(groups, fmt)
    assert ideal.shape == groups.shape[:2]


# -- plans ----------------------------------------------------------------------------------------

def test_plans_name_methods_in_any_order_and_best():
    assert parse_plan("w3g32:rot+gptq").default == Choice(WeightFormat(3, 32), "gptq", ("rot",))
    assert parse_plan("w3g32:gptq+rot").default.name == "w3g32:rot+gptq"
    assert parse_plan("w4g32:awq").default == Choice(WeightFormat(4, 32), "rtn", ("awq",))
    assert parse_plan("w4g32:clip+awq+rtn").default.name == "w4g32:awq+clip"
    best = parse_plan("w4g32:best")
    assert best.default == Choice.parse("w4g32:" + "+".join(BEST_METHODS)) and best.source == "w4g32:best"
    mix = parse_plan("mix:3g32:rot+gptq,6g32,avg=3.5")
    assert [c.name for c in mix.default.choices] == ["w3g32:rot+gptq", "w6g32"] and mix.rotated
    assert not parse_plan("mix:3g32:gptq,6g32,avg=3.5").rotated
    assert parse_plan("mix:3g32:best,6g32:best,avg=3.5").default.choices[1].name.startswith("w6g32:")
    # the older names, and with them the older dies' ids, are unchanged
    assert [parse_plan(p).default.name for p in ("w8", "w4g32:gptq", "w3g32a")] == ["w8", "w4g32:gptq", "w3g32a"]


@pytest.mark.parametrize("text, message", [
    ("w4g32:foo", "unknown quantizer or transform 'foo'"), ("w4g32:rot+spin", "'spin'"),
    ("w4g32:rtn+gptq", "two quantizers"), ("w4g32:rot++gptq", "unknown quantizer or transform ''"),
    ("mix:3g32:rot+nope,6g32,avg=3.5", "'nope'"),
])
def test_unknown_methods_are_refused(text, message):
    with pytest.raises(BadPlan, match=message):
        parse_plan(text)


def test_unknown_method_exits_2_with_one_line(tmp_path, capsys):
    from hardwire.cli import main
    assert main(["freeze", "--plan", "w4g32:rot+magic", "-o", str(tmp_path / "x.die")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "magic" in err
    assert not (tmp_path / "x.die").exists()


# -- a die frozen with every transform ------------------------------------------------------------

def test_die_with_rotation_and_scaling_matches_its_float_model(tmp_path):
    model = random_model(tied=True, bias=True)
    rng = np.random.default_rng(8)
    calibration = Calibration([list(rng.integers(0, 64, 48)) for _ in range(6)], {"source": "random ids"})
    die = freeze(model, parse_plan("w8:rot+awq+clip+gptq"), tmp_path / "r.die", calibration)
    manifest = die.manifest
    assert manifest["spec"]["tied_embeddings"] is False and manifest["transforms"]["rotation"]["seed"] == 0
    assert set(manifest["transforms"]["channel_scaling"]["alpha"]) == {
        f"layers.{i}.{s}" for i in range(2) for s in AWQ_INPUTS}
    np.testing.assert_array_equal(die.tensor("final_norm"), np.ones(32, np.float32))
    ids = calibration.sequences[0]
    (result,), _ = evaluate([die], model, [ids])
    # 8-bit codes: close to the float model (w8 without transforms: KL 0.013, layer error 0.07 here);
    # a residual stream compared in the wrong basis would be off by about sqrt(2)
    assert result["top1_agreement"] > 0.8 and result["kl_mean"] < 0.1
    assert max(result["layer_error"]) < 0.2
    # the integer datapath reads the transformed die like any other
    from hardwire.runtime.engine import make_engine
    golden = make_engine(die, backend="golden").logits(ids)
    float_die = teacher_forced_logits(die, ids)
    agreement = np.mean(golden.argmax(-1) == float_die.argmax(-1))
    assert agreement > 0.8, agreement


def test_older_plans_write_no_transform_record(tmp_path):
    model = random_model()
    calibration = Calibration([list(range(1, 40))], {"source": "ids"})
    die = freeze(model, parse_plan("w4g16:gptq"), tmp_path / "o.die", calibration)
    assert "transforms" not in die.manifest
    assert dataclasses.asdict(die.spec) == dataclasses.asdict(model.spec)


# -- calibration for a checkpoint without a tokenizer ---------------------------------------------

def test_checkpoint_without_tokenizer_freezes_from_ids_or_a_given_tokenizer(tmp_path, capsys):
    import shutil

    from hardwire.cli import main
    from hardwire.model.load import bundled_model_path

    checkpoint = tmp_path / "stories260K.bin"            # alone: no tokenizer beside it
    shutil.copyfile(bundled_model_path(), checkpoint)
    freeze_args = lambda out, *more: ["freeze", str(checkpoint), "--plan", "w8", "-o", str(tmp_path / out),  # noqa: E731
                                      *map(str, more)]
    assert main(freeze_args("a.die")) == 2
    refused = capsys.readouterr().err
    assert "--calib-ids" in refused and "--tokenizer" in refused
    ids = tmp_path / "ids.txt"
    ids.write_text("1 400 30 50 7\n\n1,20,30,40,50,60\n")
    assert main(freeze_args("b.die", "--calib-ids", ids)) == 0
    calibration = hardwire.open_die(tmp_path / "b.die").manifest["calibration"]
    assert calibration["kind"] == "token ids" and calibration["sequences"] == 2 and calibration["tokens"] == 11
    tokenizer = bundled_model_path().parent / "tok512.model"
    assert main(freeze_args("c.die", "--tokenizer", tokenizer, "--calib-tokens", 512)) == 0
    assert hardwire.open_die(tmp_path / "c.die").manifest["tokenizer"]["file"] == "tokenizer/tok512.model"
    ids.write_text("1 2 3\n1 2 999999\n")
    capsys.readouterr()
    assert main(freeze_args("d.die", "--calib-ids", ids)) == 2
    bad = capsys.readouterr().err
    assert "line 2" in bad and "999999" in bad and "ids.txt" in bad


def test_mixed_plan_measures_sensitivity_on_the_rotated_model(tmp_path):
    model = random_model(tied=True, bias=False)
    calibration = Calibration([list(range(1, 40)), list(range(20, 60))], {"source": "ids"})
    die = freeze(model, parse_plan("mix:3g16:rot,6g16:rot,avg=5"), tmp_path / "m.die", calibration,
                 sensitivity_tokens=64)
    damage = die.manifest["plan"]["sensitivity_kl"]
    # the classifier exists as its own matrix only in the rotated (untied) model
    assert set(damage["output"]) == {"w3g16:rot", "w6g16:rot"}
    assert damage["output"]["w6g16:rot"] < damage["output"]["w3g16:rot"]
    assert die.manifest["totals"]["bits_per_weight"] <= 5
