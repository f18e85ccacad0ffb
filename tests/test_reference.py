"""The float reference equals Hugging Face transformers and llama2.c on real and random checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hardwire
from hardwire.model.hf import spec_from_config
from hardwire.runtime.engine import make_engine
from tests.helpers_models import KINDS, make_hf_checkpoint, make_hf_model

torch = pytest.importorskip("torch")
DATA = Path(__file__).parent / "data"


def transformers_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def transformers_greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_forced_logits_and_greedy_match_transformers(tmp_path, kind):
    reference = make_hf_model(kind, seed=1)
    folder = tmp_path / kind
    reference.save_pretrained(folder, safe_serialization=True)
    ids = [int(i) for i in np.random.default_rng(7).integers(0, 128, size=32)]

    engine = make_engine(folder)
    ours = engine.logits(ids)
    theirs = transformers_logits(reference, ids)
    assert ours.shape == theirs.shape == (32, 128)
    assert np.abs(ours - theirs).max() < 1e-4
    assert np.std(theirs) > 0.1          # the comparison is not between near-constant logits

    greedy = engine.generate(ids[:4], max_tokens=32, stop_at_eos=False).ids
    assert greedy == transformers_greedy(reference, ids[:4], 32)


def test_incremental_decode_equals_teacher_forcing(tmp_path):
    engine = make_engine(make_hf_checkpoint(tmp_path, "llama-gqa-tied"))
    ids = [3, 17, 99, 4, 5, 60, 2, 127]
    full = engine.logits(ids)
    engine.reset()
    steps = np.concatenate([engine.forward([i]) for i in ids])
    np.testing.assert_allclose(steps, full, atol=1e-5)



@pytest.mark.parametrize("kind", KINDS)
def test_decode_steps_match_transformers_logits_at_every_position(tmp_path, kind):
    """One token at a time through the float engine (q|k|v and gate|up stacked, one product each)
    gives transformers' logits of the whole sequence; Mistral's window is made shorter than the
    sequence so that steps past it drop the oldest keys."""
    overrides = {"sliding_window": 6} if kind == "mistral" else {}
    reference = make_hf_model(kind, seed=3, **overrides)
    folder = tmp_path / kind
    reference.save_pretrained(folder, safe_serialization=True)
    ids = [int(i) for i in np.random.default_rng(11).integers(0, 128, size=16)]
    engine = make_engine(folder)
    steps = np.concatenate([engine.forward([i]) for i in ids])
    theirs = transformers_logits(reference, ids)
    assert np.abs(steps - theirs).max() < 1e-4
    assert np.std(theirs) > 0.1


def test_float_engine_keeps_each_matrix_once_as_rows_of_its_stack(tmp_path):
    """The stacked layout adds no copy: each of q, k, v (gate, up) is a view of its stack's rows,
    holding the checkpoint's values, and the stack is one contiguous float32 matrix."""
    folder = make_hf_checkpoint(tmp_path, "qwen2-bias")
    model, transformer = hardwire.load(folder), make_engine(folder).transformer
    for index in range(model.spec.layers):
        for names in (("wq", "wk", "wv"), ("w_gate", "w_up")):
            stack = transformer.stacks[f"layers.{index}.{names[0]}"]
            assert stack.dtype == np.float32 and stack.flags.c_contiguous
            assert stack.shape[0] == sum(model.tensor(f"layers.{index}.{n}").shape[0] for n in names)
            for name in names:
                view = transformer.weights[f"layers.{index}.{name}"]
                assert np.shares_memory(view, stack)
                np.testing.assert_array_equal(view, model.tensor(f"layers.{index}.{name}"))

def test_sharded_and_half_precision_checkpoints_load_exactly(tmp_path):
    reference = make_hf_model("llama-mha", seed=2)
    sharded = tmp_path / "sharded"
    reference.save_pretrained(sharded, safe_serialization=True, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").exists()
    model = hardwire.load(sharded)
    state = reference.state_dict()
    np.testing.assert_array_equal(model.tensor("layers.1.w_down"),
                                  state["model.layers.1.mlp.down_proj.weight"].numpy())
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
        half = tmp_path / name
        reference.to(dtype).save_pretrained(half, safe_serialization=True)
        loaded = hardwire.load(half)
        expected = reference.state_dict()["model.layers.0.mlp.up_proj.weight"].float().numpy()
        np.testing.assert_array_equal(loaded.tensor("layers.0.w_up"), expected)
        reference.float()


def test_rope_parameters_and_legacy_rope_scaling_layouts_give_one_spec(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    base = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009]}
    legacy = {**base, "rope_theta": 500000.0, "rope_scaling": scaling}          # published 3.1 config
    modern = {**base, "rope_parameters": {**scaling, "rope_theta": 500000.0}}   # transformers 5
    a, b = spec_from_config(legacy, tmp_path), spec_from_config(modern, tmp_path)
    assert a == b
    assert a.rope_scaling.factor == 8.0 and a.rope_theta == 500000.0 and a.head_dim == 128
    assert a.eos_id == 128001


def test_stories260k_greedy_reproduces_llama2c_run_c(tmp_path):
    """200 greedy tokens from BOS decode to the start of the story llama2.c's run.c prints."""
    expected = (DATA / "stories260K_llama2c_greedy.txt").read_text()
    engine = make_engine()                      # the bundled model
    result = engine.generate([1], max_tokens=200)
    assert len(result.ids) == 200
    assert result.stop_reason == "length"
    assert len(result.text) > 400
    assert expected.startswith(result.text)


def test_cli_run_json_matches_engine(cli):
    out = cli("run", "--ids", "1", "--max-tokens", "20", "--json")
    payload = json.loads(out.stdout)
    assert payload["ids"] == make_engine().generate([1], max_tokens=20).ids
    assert payload["text"].startswith("Once upon a time")


def step_by_step(transformer, ids) -> np.ndarray:
    transformer.reset()
    return np.concatenate([transformer.forward([i]) for i in ids])


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_decode_step_equals_the_numpy_step(tmp_path, kind):
    """The engine's one-token step (stacked products, compiled blocks between them) against the
    same model's numpy step, from a cache of 4 positions that has to grow twice; Mistral's window
    is shorter than the sequence."""
    from hardwire.model.reference import StackedTransformer
    overrides = {"sliding_window": 5} if kind == "mistral" else {}
    model = hardwire.load(make_hf_checkpoint(tmp_path, kind, seed=4, **overrides))
    ids = [int(i) for i in np.random.default_rng(5).integers(0, 128, size=12)]
    fused = StackedTransformer(model.spec, model.tensor, capacity=4)
    numpy_step = StackedTransformer(model.spec, model.tensor, capacity=4)
    numpy_step.fused_decode = False
    ours, theirs = step_by_step(fused, ids), step_by_step(numpy_step, ids)
    assert hasattr(fused, "_decode_buffers") and not hasattr(numpy_step, "_decode_buffers")
    assert fused.capacity >= 12 and fused.position == 12
    np.testing.assert_allclose(fused.keys[:, :12], numpy_step.keys[:, :12], atol=1e-5)
    np.testing.assert_allclose(fused.values[:, :12], numpy_step.values[:, :12], atol=1e-5)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.std(theirs) > 0.1


@pytest.mark.parametrize("matrix", ["w_down", "wq"])
def test_decode_step_applies_online_transforms(tmp_path, matrix):
    """A die's online input transform is per matrix. On w_down (the Hadamard of plan method `had`)
    the compiled step applies it to that product's input; on a stacked matrix (wq shares its
    product with wk, wv) the step falls back to the numpy layer. Either way the logits are the
    per-matrix reference's with the same transform."""
    from hardwire.model.reference import FloatTransformer, StackedTransformer
    model = hardwire.load(make_hf_checkpoint(tmp_path, "qwen2-bias", seed=6))
    calls = []

    def halve(x):                      # any function of the input will do; this one changes the result
        calls.append(x.shape)
        return x * np.float32(0.5)
    transforms = {f"layers.{i}.{matrix}": halve for i in range(model.spec.layers)}
    ids = [5, 9, 77, 3]
    stacked = StackedTransformer(model.spec, model.tensor, input_transforms=transforms)
    ours = step_by_step(stacked, ids)
    assert len(calls) == model.spec.layers * len(ids)
    assert hasattr(stacked, "_decode_buffers") == (matrix == "w_down")     # compiled step or fallback
    theirs = step_by_step(FloatTransformer(model.spec, model.tensor, input_transforms=transforms), ids)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    plain = step_by_step(StackedTransformer(model.spec, model.tensor), ids)
    assert np.abs(plain - ours).max() > 1e-2           # the transform did change the logits


def test_decode_step_rejects_an_out_of_range_token(tmp_path):
    engine = make_engine(make_hf_checkpoint(tmp_path, "llama-mha"))
    with pytest.raises(ValueError, match="token ids"):
        engine.transformer.forward([128])
    assert engine.transformer.position == 0


def test_numba_products_give_the_numpy_step(tmp_path):
    """The decode step with numba's row-parallel matrix-vector product in place of BLAS (the
    alternative the bench measures), and that product alone on row counts that are not a multiple
    of its block of rows."""
    from hardwire.model.decode_kernels import row_parallel_matvec
    from hardwire.model.reference import StackedTransformer
    rng = np.random.default_rng(8)
    for rows in (1, 3, 6, 9):
        matrix, vector = rng.standard_normal((rows, 33), np.float32), rng.standard_normal(33, np.float32)
        out = np.full(rows, np.nan, np.float32)
        row_parallel_matvec(matrix, vector, out)
        np.testing.assert_allclose(out, matrix.astype(np.float64) @ vector, rtol=1e-5, atol=1e-5)
    model = hardwire.load(make_hf_checkpoint(tmp_path, "llama-gqa-tied", seed=9))
    ids = [7, 100, 3, 64, 12]
    with_numba = StackedTransformer(model.spec, model.tensor)
    with_numba.matvec = row_parallel_matvec
    numpy_step = StackedTransformer(model.spec, model.tensor)
    numpy_step.fused_decode = False
    theirs = step_by_step(numpy_step, ids)
    assert np.abs(step_by_step(with_numba, ids) - theirs).max() < 1e-5
    assert np.std(theirs) > 0.1
