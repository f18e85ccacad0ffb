"""GGUF import and export.

The reference files here are written by `write_llama_cpp_gguf`, a test-local converter that follows
llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute for q/k, rope_freqs for Llama 3.1, no
permutation for qwen2) using only the `gguf` package and the safetensors file — none of hardwire's
code — so loading it checks our layout against llama.cpp's, not against ourselves.
"""
from __future__ import annotations

import dataclasses
import json
import math
import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from safetensors.numpy import load_file

from hardwire.errors import BadCheckpoint, UnsupportedModel
from hardwire.model.gguf_format import llama3_rope_factors, load_gguf, rope_scaling_from_factors, write_gguf
from hardwire.model.load import Model, load
from hardwire.model.reference import teacher_forced_logits
from hardwire.model.spec import ModelSpec, RopeScaling
from tests.helpers_models import KINDS, make_hf_checkpoint

IDS = [1, 5, 77, 3, 120, 9, 64, 31, 2, 100, 17, 45]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: make_hf_checkpoint(root, kind) for kind in KINDS}


# -- an independent llama.cpp-style converter --------------------------------------------------------

def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp LlamaModel.permute: rotate-half rows -> interleaved pairs, per head."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def llama_cpp_rope_factors(config: dict, head_dim: int) -> np.ndarray:
    """llama.cpp LlamaModel.generate_extra_tensors, with the band taken from the config."""
    rope = config["rope_parameters"]
    base = rope["rope_theta"]
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    factors = []
    for freq in freqs.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


HF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm", "self_attn.q_proj.weight": "wq",
    "self_attn.k_proj.weight": "wk", "self_attn.v_proj.weight": "wv", "self_attn.o_proj.weight": "wo",
    "self_attn.q_proj.bias": "bq", "self_attn.k_proj.bias": "bk", "self_attn.v_proj.bias": "bv",
    "post_attention_layernorm.weight": "ffn_norm", "mlp.gate_proj.weight": "w_gate",
    "mlp.up_proj.weight": "w_up", "mlp.down_proj.weight": "w_down",
}
CANONICAL_TO_GGUF = {
    "attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
    "wv": "attn_v.weight", "wo": "attn_output.weight", "bq": "attn_q.bias", "bk": "attn_k.bias",
    "bv": "attn_v.bias", "ffn_norm": "ffn_norm.weight", "w_gate": "ffn_gate.weight",
    "w_up": "ffn_up.weight", "w_down": "ffn_down.weight",
}


def hf_tensors_by_canonical_name(folder: Path) -> dict[str, np.ndarray]:
    tensors = {}
    for name, array in load_file(folder / "model.safetensors").items():
        if name == "model.embed_tokens.weight":
            tensors["embed"] = array
        elif name == "model.norm.weight":
            tensors["final_norm"] = array
        elif name == "lm_head.weight":
            tensors["output"] = array
        else:
            _, _, layer, rest = name.split(".", 3)
            tensors[f"layers.{layer}.{HF_LAYER_NAMES[rest]}"] = array
    return tensors


def gguf_name(canonical: str) -> str:
    fixed = {"embed": "token_embd.weight", "final_norm": "output_norm.weight", "output": "output.weight"}
    if canonical in fixed:
        return fixed[canonical]
    _, layer, leaf = canonical.split(".")
    return f"blk.{layer}.{CANONICAL_TO_GGUF[leaf]}"


def write_llama_cpp_gguf(folder: Path, path: Path, ggml_type: Q = Q.F32, metadata: dict | None = None,
                         drop: tuple[str, ...] = (), replace: dict | None = None,
                         extra: dict | None = None) -> Path:
    """Convert an HF folder as llama.cpp would. `metadata` {key: (value, GGUFValueType) or None}
    overrides or removes keys; `drop` removes tensors; `replace` {gguf name: array} substitutes;
    `extra` {gguf name: array} adds."""
    config = json.loads((folder / "config.json").read_text())
    arch = "qwen2" if config["model_type"] == "qwen2" else "llama"
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config["rope_parameters"]
    keys = {
        f"{arch}.context_length": (config["max_position_embeddings"], V.UINT32),
        f"{arch}.embedding_length": (config["hidden_size"], V.UINT32),
        f"{arch}.block_count": (config["num_hidden_layers"], V.UINT32),
        f"{arch}.feed_forward_length": (config["intermediate_size"], V.UINT32),
        f"{arch}.attention.head_count": (heads, V.UINT32),
        f"{arch}.attention.head_count_kv": (kv_heads, V.UINT32),
        f"{arch}.rope.freq_base": (rope["rope_theta"], V.FLOAT32),
        f"{arch}.attention.layer_norm_rms_epsilon": (config["rms_norm_eps"], V.FLOAT32),
        f"{arch}.rope.dimension_count": (head_dim, V.UINT32),
        f"{arch}.vocab_size": (config["vocab_size"], V.UINT32),
        "general.file_type": (int(ggml_type), V.UINT32),
        "tokenizer.ggml.bos_token_id": (config["bos_token_id"], V.UINT32),
        "tokenizer.ggml.eos_token_id": (config["eos_token_id"], V.UINT32),
    }
    if config.get("head_dim") and config["head_dim"] != config["hidden_size"] // heads:
        keys[f"{arch}.attention.key_length"] = (head_dim, V.UINT32)
        keys[f"{arch}.attention.value_length"] = (head_dim, V.UINT32)
    keys.update(metadata or {})

    writer = gguf.GGUFWriter(path, arch)
    for key, entry in keys.items():
        if entry is not None:
            writer.add_key_value(key, entry[0], entry[1])
    tensors = {gguf_name(c): a for c, a in hf_tensors_by_canonical_name(folder).items()}
    if rope.get("rope_type") == "llama3":
        tensors = {"rope_freqs.weight": llama_cpp_rope_factors(config, head_dim), **tensors}
    tensors.update(extra or {})
    for name, array in tensors.items():
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            array = llama_cpp_permute(array, heads if ".attn_q." in name else kv_heads)
        array = (replace or {}).get(name, array)
        if name in drop:
            continue
        if array.ndim == 1 or ggml_type == Q.F32 or not np.issubdtype(array.dtype, np.floating):
            writer.add_tensor(name, array)
        elif ggml_type == Q.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, ggml_type), raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def hf_logits(folder: Path, ids: list[int], round_to_f16: bool = False) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if round_to_f16:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.ndim == 2:
                    parameter.copy_(parameter.half().float())
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


# -- loading ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_f32_gguf_from_llama_cpp_layout_loads_the_exact_hf_tensors(kind, checkpoints, tmp_path):
    folder = checkpoints[kind]
    path = write_llama_cpp_gguf(folder, tmp_path / "model.gguf")
    config = json.loads((folder / "config.json").read_text())
    with load(path) as model:
        spec = model.spec
        assert model.format == "gguf"
        assert (spec.heads, spec.kv_heads, spec.layers) == (
            config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"])
        assert spec.head_dim == (config.get("head_dim") or config["hidden_size"] // spec.heads)
        assert spec.tied_embeddings == config["tie_word_embeddings"]
        assert spec.qkv_bias == (kind == "qwen2-bias")
        assert spec.family == ("qwen2" if kind == "qwen2-bias" else "llama")
        assert spec.rope_theta == config["rope_parameters"]["rope_theta"]
        assert spec.norm_eps == config["rms_norm_eps"]
        assert (spec.bos_id, spec.eos_id) == (1, 2)
        expected = hf_tensors_by_canonical_name(folder)
        assert set(spec.tensor_shapes()) == set(expected)
        for name, array in expected.items():
            assert np.array_equal(model.tensor(name), array), name
        assert set(model.dtypes.values()) == {"F32"}


def test_llama31_rope_scaling_is_recovered_from_rope_freqs(checkpoints, tmp_path):
    path = write_llama_cpp_gguf(checkpoints["llama31-rope"], tmp_path / "model.gguf")
    with load(path) as model:
        assert model.spec.rope_scaling == RopeScaling(factor=8.0, low_freq_factor=1.0,
                                                      high_freq_factor=4.0, original_max_position=1024)


def test_nonstandard_llama3_band_is_fitted_and_gives_transformers_logits(tmp_path):
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 4.0, "low_freq_factor": 2.0,
            "high_freq_factor": 16.0, "original_max_position_embeddings": 4096}
    folder = make_hf_checkpoint(tmp_path, "llama31-rope", rope_parameters=rope)
    path = write_llama_cpp_gguf(folder, tmp_path / "model.gguf")
    with load(path) as model:
        # Only one frequency lies inside the band, so the parameters are not unique; any set that
        # reproduces the stored divisors is the same model.
        assert model.spec.rope_scaling.factor == 4.0
        assert np.allclose(llama3_rope_factors(model.spec), gguf.GGUFReader(path).get_tensor(0).data,
                           rtol=1e-6)
        logits = teacher_forced_logits(model, IDS)
    assert np.abs(logits - hf_logits(folder, IDS)).max() < 1e-4


@pytest.mark.parametrize("head_dim, theta, factor, low, high, context", [
    (128, 500000.0, 8.0, 1.0, 4.0, 8192),     # Llama 3.1 8B
    (64, 500000.0, 32.0, 1.0, 4.0, 8192),     # Llama 3.2 1B
    (16, 500000.0, 8.0, 1.0, 4.0, 1024),      # one divisor inside the band
    (16, 500000.0, 4.0, 2.0, 16.0, 4096),     # one divisor inside, band ratio not 4
    (64, 10000.0, 4.0, 1.5, 6.0, 3000),       # several inside, nothing standard
    (16, 10000.0, 2.0, 1.0, 1.5, 4096),       # none inside
])
def test_llama3_scaling_is_recovered_from_llama_cpp_divisors(head_dim, theta, factor, low, high, context):
    spec = ModelSpec(family="llama", hidden_dim=2 * head_dim, layers=1, heads=2, kv_heads=2,
                     head_dim=head_dim, ffn_dim=32, vocab_size=8, max_context=131072, rope_theta=theta)
    config = {"rope_parameters": {"rope_theta": theta, "factor": factor, "low_freq_factor": low,
                                  "high_freq_factor": high, "original_max_position_embeddings": context}}
    divisors = llama_cpp_rope_factors(config, head_dim)
    scaling = rope_scaling_from_factors(divisors, spec)
    assert scaling.factor == factor
    assert np.allclose(llama3_rope_factors(dataclasses.replace(spec, rope_scaling=scaling)), divisors,
                       rtol=1e-5)
    if (low, high) == (1.0, 4.0):
        assert scaling == RopeScaling(factor, low, high, context)


def test_rope_freqs_matching_no_llama3_parameters_is_refused(checkpoints, tmp_path):
    factors = np.linspace(1.0, 3.0, 8, dtype=np.float32) ** 2
    path = write_llama_cpp_gguf(checkpoints["llama31-rope"], tmp_path / "model.gguf",
                                replace={"rope_freqs.weight": factors})
    with pytest.raises(UnsupportedModel, match="rope_freqs.weight"):
        load(path)


@pytest.mark.parametrize("kind", list(KINDS))
def test_f32_gguf_logits_match_transformers(kind, checkpoints, tmp_path):
    path = write_llama_cpp_gguf(checkpoints[kind], tmp_path / "model.gguf")
    with load(path) as model:
        logits = teacher_forced_logits(model, IDS)
    assert logits.shape == (len(IDS), 128)
    assert np.abs(logits - hf_logits(checkpoints[kind], IDS)).max() < 1e-4


def test_f16_gguf_logits_match_transformers_with_f16_rounded_weights(checkpoints, tmp_path):
    folder = checkpoints["llama31-rope"]
    path = write_llama_cpp_gguf(folder, tmp_path / "model.gguf", Q.F16)
    with load(path) as model:
        logits = teacher_forced_logits(model, IDS)
    assert np.abs(logits - hf_logits(folder, IDS, round_to_f16=True)).max() < 1e-4
    assert np.abs(logits - hf_logits(folder, IDS)).max() < 0.05


@pytest.mark.parametrize("ggml_type, error_per_max", [(Q.F16, 1 / 1024), (Q.Q8_0, 1 / 127), (Q.Q4_0, 1 / 7)])
def test_stored_types_load_as_their_gguf_dequantization(ggml_type, error_per_max, checkpoints, tmp_path):
    folder = checkpoints["qwen2-bias"]
    path = write_llama_cpp_gguf(folder, tmp_path / "model.gguf", ggml_type)
    with load(path) as model:
        for name, array in hf_tensors_by_canonical_name(folder).items():
            loaded = model.tensor(name)
            if array.ndim == 1:
                assert model.dtypes[name] == "F32" and np.array_equal(loaded, array), name
                continue
            assert model.dtypes[name] == ggml_type.name
            if ggml_type == Q.F16:
                stored = array.astype(np.float16)
            else:
                stored = gguf.quants.quantize(array, ggml_type)
            assert np.array_equal(loaded, gguf.quants.dequantize(stored, ggml_type)), name
            assert np.abs(loaded - array).max() <= error_per_max * np.abs(array).max(), name


def test_bf16_and_permuted_q8_0_tensors_load_exactly(checkpoints, tmp_path):
    folder = checkpoints["llama-gqa-tied"]
    for ggml_type in (Q.BF16, Q.Q8_0):
        path = write_llama_cpp_gguf(folder, tmp_path / f"{ggml_type.name}.gguf", ggml_type)
        with load(path) as model:
            for name, array in hf_tensors_by_canonical_name(folder).items():
                if array.ndim == 2:
                    expected = gguf.quants.dequantize(gguf.quants.quantize(array, ggml_type), ggml_type)
                    assert np.array_equal(model.tensor(name), expected), (ggml_type, name)


# -- writing ----------------------------------------------------------------------------------------

def raw_tensors(path: Path) -> tuple[dict[str, tuple], dict[str, object]]:
    """Tensor (type, ne, bytes) and metadata of a file, read with gguf.GGUFReader."""
    reader = gguf.GGUFReader(path)
    tensors = {t.name: (t.tensor_type, tuple(int(d) for d in t.shape), t.data.tobytes())
               for t in reader.tensors}
    metadata = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return tensors, metadata


@pytest.mark.parametrize("kind", list(KINDS))
def test_write_gguf_of_hf_checkpoint_matches_llama_cpp_conversion(kind, checkpoints, tmp_path):
    reference = write_llama_cpp_gguf(checkpoints[kind], tmp_path / "reference.gguf")
    with load(checkpoints[kind]) as model:
        written = write_gguf(model, tmp_path / "written.gguf", "f32")
    expected, expected_metadata = raw_tensors(reference)
    actual, metadata = raw_tensors(written)
    assert set(actual) == set(expected)
    for name in expected:
        if name == "rope_freqs.weight":   # llama.cpp computes the divisors in float32
            assert np.allclose(np.frombuffer(actual[name][2], np.float32),
                               np.frombuffer(expected[name][2], np.float32), rtol=1e-6, atol=0)
        else:
            assert actual[name] == expected[name], name
    for key in ("general.architecture", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        assert metadata[key] == expected_metadata[key]
    for key, value in expected_metadata.items():
        if key.startswith(metadata["general.architecture"] + "."):
            assert metadata[key] == pytest.approx(value), key


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0", "q4_0"])
def test_write_gguf_round_trips_through_the_loader(dtype, checkpoints, tmp_path):
    reference = write_llama_cpp_gguf(checkpoints["llama31-rope"], tmp_path / "reference.gguf")
    with load(reference) as original:
        written = write_gguf(original, tmp_path / f"{dtype}.gguf", dtype)
        with load(written) as model:
            assert model.spec == original.spec
            for name in original.spec.tensor_shapes():
                values = original.tensor(name)
                if values.ndim == 1:
                    ggml_type = Q.F32
                elif dtype == "q4_0" and name in ("embed", "output"):
                    ggml_type = Q.Q8_0
                else:
                    ggml_type = Q[dtype.upper()]
                assert model.dtypes[name] == ggml_type.name, name
                expected = gguf.quants.dequantize(gguf.quants.quantize(values, ggml_type), ggml_type)
                assert np.array_equal(model.tensor(name), expected), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["reference.gguf", f"{dtype}.gguf"])


def test_bundled_model_with_tokenizer_round_trips_through_gguf(tmp_path):
    with load() as original:       # stories260K, a llama2.c checkpoint with its tokenizer
        with load(write_gguf(original, tmp_path / "stories.gguf", "f32")) as model:
            assert model.spec == original.spec
            text = "Once upon a time, there was a little dog."
            assert model.tokenizer.encode(text) == original.tokenizer.encode(text)
            ids = original.tokenizer.encode(text)
            assert np.array_equal(teacher_forced_logits(model, ids), teacher_forced_logits(original, ids))


def test_write_gguf_leaves_nothing_behind_when_a_tensor_fails(checkpoints, tmp_path):
    reference = write_llama_cpp_gguf(checkpoints["llama-mha"], tmp_path / "reference.gguf")
    with load(reference) as model:
        def failing(name):
            if name == "layers.1.w_up":
                raise BadCheckpoint("simulated read failure")
            return model.read_tensor(name)
        broken = Model(spec=model.spec, path=model.path, format="gguf", read_tensor=failing)
        with pytest.raises(BadCheckpoint, match="simulated"):
            write_gguf(broken, tmp_path / "out.gguf", "q8_0")
    assert [p.name for p in tmp_path.iterdir()] == ["reference.gguf"]


# -- malformed files --------------------------------------------------------------------------------

def fails_fast(path: Path, error: type, match: str) -> None:
    """load(path) raises `error` matching `match` within a second, allocating under 20 MB."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as caught:
            load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 20 << 20
    assert str(path) in str(caught.value)


@pytest.fixture(scope="module")
def reference_bytes(checkpoints, tmp_path_factory) -> bytes:
    path = write_llama_cpp_gguf(checkpoints["llama-mha"], tmp_path_factory.mktemp("ref") / "m.gguf")
    return path.read_bytes()


def test_truncated_file_is_refused(reference_bytes, tmp_path):
    path = tmp_path / "truncated.gguf"
    path.write_bytes(reference_bytes[:len(reference_bytes) * 7 // 10])
    fails_fast(path, BadCheckpoint, "truncated")
    path.write_bytes(reference_bytes[:200])
    fails_fast(path, BadCheckpoint, "truncated or corrupt header")


def test_wrong_magic_is_refused(reference_bytes, tmp_path):
    path = tmp_path / "magic.gguf"
    path.write_bytes(b"GGUX" + reference_bytes[4:])
    fails_fast(path, BadCheckpoint, "magic")
    with pytest.raises(BadCheckpoint, match="magic"):
        load_gguf(path)


@pytest.mark.parametrize("key, value, vtype, match", [
    ("llama.block_count", 10**9, V.UINT32, "llama.block_count: expected an integer in"),
    ("llama.embedding_length", 2**40, V.UINT64, "llama.embedding_length: expected an integer in"),
    ("llama.attention.head_count", 0, V.UINT32, "llama.attention.head_count"),
    ("llama.context_length", "long", V.STRING, "llama.context_length: expected int, got str"),
    ("general.architecture", "gpt2", V.STRING, "architecture 'gpt2'"),
    ("llama.expert_count", 8, V.UINT32, "mixture-of-experts"),
])
def test_bad_metadata_is_refused_naming_the_key(key, value, vtype, match, checkpoints, tmp_path):
    path = write_llama_cpp_gguf(checkpoints["llama-mha"], tmp_path / "bad.gguf",
                                metadata={key: (value, vtype)})
    error = UnsupportedModel if key in ("general.architecture", "llama.expert_count") else BadCheckpoint
    fails_fast(path, error, match)


def test_missing_metadata_is_refused(checkpoints, tmp_path):
    path = write_llama_cpp_gguf(checkpoints["llama-mha"], tmp_path / "bad.gguf",
                                metadata={"llama.feed_forward_length": None})
    fails_fast(path, BadCheckpoint, "llama.feed_forward_length: missing metadata key")


@pytest.mark.parametrize("change, error, match", [
    ({"drop": ("blk.1.ffn_down.weight",)}, BadCheckpoint, "missing tensor blk.1.ffn_down.weight"),
    ({"replace": {"blk.0.attn_q.weight": np.zeros((64, 64), np.int32)}}, BadCheckpoint,
     "blk.0.attn_q.weight has integer type I32"),
    ({"replace": {"blk.0.ffn_up.weight": np.zeros((159, 64), np.float32)}}, BadCheckpoint,
     r"blk.0.ffn_up.weight has shape \[159, 64\].*expected \[160, 64\]"),
    ({"replace": {"blk.0.attn_norm.weight": np.zeros((64, 2), np.float32)}}, BadCheckpoint,
     r"blk.0.attn_norm.weight has shape \[64, 2\]"),
    ({"extra": {"blk.0.ffn_gate_exps.weight": np.zeros((4, 32), np.float32)}}, UnsupportedModel,
     "does not know how to use: blk.0.ffn_gate_exps.weight"),
])
def test_bad_tensors_are_refused_naming_the_tensor(change, error, match, checkpoints, tmp_path):
    path = write_llama_cpp_gguf(checkpoints["llama-mha"], tmp_path / "bad.gguf", **change)
    fails_fast(path, error, match)


# Hand-built headers: each claims far more than the file holds.

def gguf_string(text: bytes, claimed_length: int | None = None) -> bytes:
    return struct.pack("<Q", len(text) if claimed_length is None else claimed_length) + text


def header(kv_entries: list[bytes], tensor_infos: list[bytes] = (), kv_count: int | None = None,
           tensor_count: int | None = None) -> bytes:
    counts = struct.pack("<QQ", len(tensor_infos) if tensor_count is None else tensor_count,
                         len(kv_entries) if kv_count is None else kv_count)
    return b"GGUF" + struct.pack("<I", 3) + counts + b"".join(kv_entries) + b"".join(tensor_infos)


ARCH_ENTRY = gguf_string(b"general.architecture") + struct.pack("<I", V.STRING) + gguf_string(b"llama")

HEADER_BOMBS = {
    "array of 2^40 elements": header([ARCH_ENTRY, gguf_string(b"tokenizer.ggml.scores")
                                      + struct.pack("<IIQ", V.ARRAY, V.FLOAT32, 1 << 40) + b"\0" * 64]),
    "string array of 2^40 elements": header([gguf_string(b"tokenizer.ggml.tokens")
                                             + struct.pack("<IIQ", V.ARRAY, V.STRING, 1 << 40)]),
    "string of 2^60 bytes": header([gguf_string(b"general.name") + struct.pack("<I", V.STRING)
                                    + gguf_string(b"x" * 16, claimed_length=1 << 60)]),
    "key of 2^60 bytes": header([gguf_string(b"k", claimed_length=1 << 60)]),
    "2^60 metadata entries": header([ARCH_ENTRY], kv_count=1 << 60),
    "2^60 tensors": header([ARCH_ENTRY], tensor_count=1 << 60),
    "tensor of 2^62 elements": header([ARCH_ENTRY], [gguf_string(b"token_embd.weight")
                                                     + struct.pack("<IQQIQ", 2, 1 << 31, 1 << 31, 0, 0)]),
    "tensor with 2^31 dimensions": header([ARCH_ENTRY], [gguf_string(b"t") + struct.pack("<I", 1 << 31)]),
}


@pytest.mark.parametrize("bomb", list(HEADER_BOMBS))
def test_header_bomb_fails_fast_without_allocating(bomb, tmp_path):
    path = tmp_path / "bomb.gguf"
    path.write_bytes(HEADER_BOMBS[bomb] + b"\0" * 256)
    fails_fast(path, BadCheckpoint, "truncated or corrupt header|dimensions")


def test_nested_metadata_arrays_are_unsupported(tmp_path):
    path = tmp_path / "nested.gguf"
    path.write_bytes(header([ARCH_ENTRY, gguf_string(b"x") + struct.pack("<IIQ", V.ARRAY, V.ARRAY, 1)]))
    fails_fast(path, UnsupportedModel, "array of arrays")


def test_tiny_file_is_refused(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF\3\0\0\0")
    fails_fast(path, BadCheckpoint, "too short")


def tensor_info(name: bytes, dims: tuple[int, ...], type_code: int, offset: int) -> bytes:
    return gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) \
        + struct.pack("<IQ", type_code, offset)


@pytest.mark.parametrize("offsets, match", [
    ((0, 0), "offset 0 differs from 64"),          # the second tensor overlaps the first
    ((0, 128), "offset 128 differs from 64"),      # a gap between them
    ((64, 0), "offset 64 differs from 0"),         # out of header order
    ((0, 32), "offset 32 differs from 64"),        # not aligned
])
def test_tensor_offsets_must_be_the_running_aligned_size(offsets, match, tmp_path):
    """llama.cpp's rule: each tensor's data starts where the previous one's, padded to the
    alignment (32 bytes by default), ends. Two 16-value F32 tensors: 64 bytes each."""
    infos = [tensor_info(b"a", (16,), Q.F32, offsets[0]), tensor_info(b"b", (16,), Q.F32, offsets[1])]
    path = tmp_path / "offsets.gguf"
    path.write_bytes(header([ARCH_ENTRY], infos) + b"\0" * 512)
    fails_fast(path, BadCheckpoint, match)


def test_unknown_ggml_type_is_refused_at_open(tmp_path):
    path = tmp_path / "type.gguf"
    path.write_bytes(header([ARCH_ENTRY], [tensor_info(b"token_embd.weight", (32, 4), 9999, 0)]) + b"\0" * 512)
    fails_fast(path, BadCheckpoint, "unknown type code 9999")
