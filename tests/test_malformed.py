"""Broken checkpoints give exit code 2 and one clear line — no traceback, hang or huge allocation.

Each case runs the real command in a subprocess capped at 1 GiB of address space beyond Python's own
needs and a short timeout, so an attempt to allocate what a corrupt header claims fails the test.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from hardwire.model.load import bundled_model_path

ROOT = Path(__file__).resolve().parent.parent
MEMORY_CAP = 3 << 30


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def inspect_fails(path: Path, *needles: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "hardwire.cli", "inspect", str(path)], capture_output=True,
                          text=True, timeout=60, env=env, preexec_fn=limited)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- llama2.c -------------------------------------------------------------------------------------
def test_truncated_llama2c_checkpoint(tmp_path):
    data = bundled_model_path().read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[: len(data) // 2])
    inspect_fails(bad, "cut.bin", "truncated", str(len(data)))


def test_llama2c_header_with_absurd_dimensions(tmp_path):
    bad = tmp_path / "huge.bin"
    bad.write_bytes(struct.pack("<7i", 1 << 30, 1 << 30, 1 << 20, 8, 8, 32000, 256) + b"\0" * 1024)
    inspect_fails(bad, "huge.bin", "hidden_dim")


def test_llama2c_header_with_zero_heads(tmp_path):
    bad = tmp_path / "zero.bin"
    bad.write_bytes(struct.pack("<7i", 64, 172, 5, 0, 4, 512, 512) + b"\0" * 64)
    inspect_fails(bad, "zero.bin", "n_heads")


def test_llama2c_versioned_header_with_unknown_version(tmp_path):
    bad = tmp_path / "v9.bin"
    header = struct.pack("<Ii7iB", 0x616B3432, 9, 64, 172, 5, 8, 4, 512, 512, 1)
    bad.write_bytes(header + b"\0" * (256 - len(header)))
    inspect_fails(bad, "v9.bin", "version")


def test_pickle_checkpoint_is_refused_not_loaded(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x04\x95 this would be a pickle")
    inspect_fails(bad, "model.pt", "safetensors")
    zipped = tmp_path / "consolidated.bin"
    zipped.write_bytes(b"PK\x03\x04 a torch zip archive")
    inspect_fails(zipped, "consolidated.bin", "pickle")


def test_missing_file(tmp_path):
    inspect_fails(tmp_path / "nope.gguf", "nope.gguf", "no such file")


# -- Hugging Face folders -------------------------------------------------------------------------
CONFIG = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 16, "max_position_embeddings": 32,
          "rms_norm_eps": 1e-5, "tie_word_embeddings": True}


def tiny_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (16, 8), "model.norm.weight": (8,)}
    for short, shape in {"input_layernorm.weight": (8,), "post_attention_layernorm.weight": (8,),
                         "self_attn.q_proj.weight": (8, 8), "self_attn.k_proj.weight": (8, 8),
                         "self_attn.v_proj.weight": (8, 8), "self_attn.o_proj.weight": (8, 8),
                         "mlp.gate_proj.weight": (16, 8), "mlp.up_proj.weight": (16, 8),
                         "mlp.down_proj.weight": (8, 16)}.items():
        shapes[f"model.layers.0.{short}"] = shape
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def hf_folder(tmp_path: Path, config=None, tensors=None) -> Path:
    folder = tmp_path / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG if config is None else config))
    save_file(tiny_tensors() if tensors is None else tensors, str(folder / "model.safetensors"))
    return folder


def test_tiny_hf_folder_is_valid(tmp_path, cli):
    out = cli("inspect", hf_folder(tmp_path), "--json")
    assert json.loads(out.stdout)["parameters"] == sum(a.size for a in tiny_tensors().values())


def test_hf_missing_tensor(tmp_path):
    tensors = tiny_tensors()
    del tensors["model.layers.0.mlp.up_proj.weight"]
    inspect_fails(hf_folder(tmp_path, tensors=tensors), "model.safetensors", "mlp.up_proj.weight")


def test_hf_tensor_of_wrong_shape(tmp_path):
    tensors = tiny_tensors()
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((4, 8), np.float32)
    inspect_fails(hf_folder(tmp_path, tensors=tensors), "k_proj", "[4, 8]", "[8, 8]")


def test_hf_tensor_of_wrong_dtype(tmp_path):
    tensors = tiny_tensors()
    tensors["model.layers.0.mlp.gate_proj.weight"] = np.zeros((16, 8), np.int32)
    inspect_fails(hf_folder(tmp_path, tensors=tensors), "gate_proj", "I32")


def test_hf_unknown_architecture(tmp_path):
    inspect_fails(hf_folder(tmp_path, config={**CONFIG, "model_type": "gpt2"}), "config.json", "model_type", "gpt2")


def test_hf_config_field_out_of_range(tmp_path):
    inspect_fails(hf_folder(tmp_path, config={**CONFIG, "num_key_value_heads": 3}), "config.json", "kv_heads")
    inspect_fails(hf_folder(tmp_path, config={**CONFIG, "vocab_size": 10**12}), "vocab_size")
    inspect_fails(hf_folder(tmp_path, config={**CONFIG, "hidden_size": "8"}), "hidden_size", "integer")


def test_hf_config_not_json(tmp_path):
    folder = hf_folder(tmp_path)
    (folder / "config.json").write_text("{not json")
    inspect_fails(folder, "config.json", "JSON")


def test_safetensors_header_bomb(tmp_path):
    folder = hf_folder(tmp_path)
    with open(folder / "model.safetensors", "r+b") as f:
        f.write(struct.pack("<Q", 1 << 60))
    inspect_fails(folder, "model.safetensors", "header length")


def test_safetensors_truncated(tmp_path):
    folder = hf_folder(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    inspect_fails(folder, "model.safetensors", "truncated")


def test_safetensors_offsets_claiming_huge_tensor(tmp_path):
    folder = hf_folder(tmp_path)
    header = {"model.norm.weight": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}}
    blob = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 64)
    inspect_fails(folder, "model.safetensors", "truncated")


def test_folder_with_only_pytorch_pickle(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    inspect_fails(folder, "pickled", "safetensors")


def test_nan_weights_are_reported_when_read(tmp_path, cli):
    tensors = tiny_tensors()
    tensors["model.layers.0.mlp.down_proj.weight"][0, 0] = np.nan
    folder = hf_folder(tmp_path, tensors=tensors)
    proc = cli("run", folder, "--ids", "1,2", "--max-tokens", "2", expect=2)
    assert "NaN" in proc.stderr and "layers.0.w_down" in proc.stderr


# -- config.json field types (checked in process: the same `main` the command runs) ---------------
def refused(capsys, *args) -> str:
    """Run the `hardwire` command in this process; it must exit 2 with one line on stderr."""
    from hardwire.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    return lines[0]


@pytest.mark.parametrize("field, value", [
    ("hidden_size", "8"), ("hidden_size", None), ("hidden_size", [8]), ("hidden_size", 8.0),
    ("hidden_size", True), ("num_attention_heads", 0), ("num_attention_heads", -2),
    ("num_key_value_heads", 0), ("num_key_value_heads", -1), ("num_key_value_heads", "2"),
    ("intermediate_size", {"a": 1}), ("vocab_size", None), ("max_position_embeddings", "32"),
    ("rms_norm_eps", "1e-5"), ("rms_norm_eps", None), ("rope_theta", [10000]), ("rope_theta", False),
    ("tie_word_embeddings", "false"), ("tie_word_embeddings", "true"), ("tie_word_embeddings", 1),
    ("tie_word_embeddings", None), ("bos_token_id", 1.5), ("bos_token_id", "1"), ("eos_token_id", [2.0]),
    ("eos_token_id", -1), ("head_dim", "4"), ("sliding_window", "16"), ("hidden_act", 3),
    ("rope_scaling", "llama3"), ("rope_scaling", [1]), ("attention_bias", "false"),
])
def test_config_field_of_the_wrong_type_is_refused_naming_it(tmp_path, capsys, field, value):
    line = refused(capsys, "inspect", hf_folder(tmp_path, config={**CONFIG, field: value}))
    assert "config.json" in line and field in line, line


@pytest.mark.parametrize("text", ['{"hidden_size": NaN}', '{"rms_norm_eps": Infinity}',
                                  '{"rms_norm_eps": -Infinity}', '{"a": 1, "a": 2}'])
def test_config_with_non_standard_json_is_refused(tmp_path, capsys, text):
    folder = hf_folder(tmp_path)
    (folder / "config.json").write_text(text)
    assert "config.json" in refused(capsys, "inspect", folder)


def test_deeply_nested_json_is_a_clean_error_not_a_recursion_error(tmp_path, capsys):
    folder = hf_folder(tmp_path)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nests 100000 levels" in refused(capsys, "inspect", folder)
    deep = '{"x": ' * 5000 + "1" + "}" * 5000
    header = deep.encode()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    assert "model.safetensors" in refused(capsys, "inspect", folder)


def test_brackets_inside_strings_do_not_count_as_nesting():
    from hardwire.jsonfile import json_depth, parse_json

    assert json_depth(b'{"a": "[[[[{{{{\\"[[", "b": [1, [2]]}') == 3
    assert parse_json('{"k": "' + "[" * 1000 + '"}', "x") == {"k": "[" * 1000}


# -- safetensors byte ranges ----------------------------------------------------------------------
def raw_safetensors(path: Path, entries: dict, data_bytes: int, header_pad: int = 0) -> None:
    blob = json.dumps(entries).encode() + b" " * header_pad
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * data_bytes)


def f32(begin, count):
    return {"dtype": "F32", "shape": [count], "data_offsets": [begin, begin + 4 * count]}


@pytest.mark.parametrize("entries, data_bytes, needle", [
    ({"a": f32(0, 4), "b": f32(8, 4)}, 32, "overlaps"),
    ({"a": f32(0, 4), "b": f32(20, 4)}, 36, "gap"),
    ({"a": f32(0, 4), "b": f32(16, 4)}, 40, "data section has 40 bytes"),
    ({"a": f32(4, 4)}, 20, "gap"),
    ({"a": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}, 16, "unknown dtype"),
    ({"a": {"dtype": 4, "shape": [4], "data_offsets": [0, 16]}}, 16, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, 16, "bad shape"),
    ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, 4, "bad shape"),
    ({"a": f32(0, 4), "__metadata__": {"k": 1}}, 16, "__metadata__"),
])
def test_safetensors_byte_ranges_must_tile_the_data_exactly(tmp_path, capsys, entries, data_bytes, needle):
    folder = hf_folder(tmp_path)
    raw_safetensors(folder / "model.safetensors", entries, data_bytes)
    line = refused(capsys, "inspect", folder)
    assert "model.safetensors" in line and needle in line, line


def test_safetensors_header_length_must_be_exact(tmp_path, capsys):
    folder = hf_folder(tmp_path)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    for wrong in (length - 1, length + 4):
        data[:8] = struct.pack("<Q", wrong)
        path.write_bytes(bytes(data))
        assert "model.safetensors" in refused(capsys, "inspect", folder)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors", 7,
                                   None, "model.bin", ".."])
def test_shard_index_values_must_be_file_names_in_the_folder(tmp_path, capsys, shard):
    folder = hf_folder(tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    weight_map = {name: "model-00001-of-00001.safetensors" for name in tiny_tensors()}
    weight_map["model.norm.weight"] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    line = refused(capsys, "inspect", folder)
    assert "model.safetensors.index.json" in line and "model.norm.weight" in line, line


def test_sharded_folder_with_plain_names_is_read(tmp_path, cli):
    folder = hf_folder(tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    weight_map = {name: "model-00001-of-00001.safetensors" for name in tiny_tensors()}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    out = cli("inspect", folder, "--json")
    assert json.loads(out.stdout)["parameters"] == sum(a.size for a in tiny_tensors().values())


# -- checkpoints people actually have: embeddings padded past the tokenizer -----------------------
def padded_vocab_folder(tmp_path: Path) -> Path:
    """The tiny model (16 embedding rows) with a 10-piece tokenizer, as Qwen2.5 pads 151,665 pieces
    to 151,936 rows."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = hf_folder(tmp_path, config={**CONFIG, "bos_token_id": 1, "eos_token_id": 2})
    pieces = ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "g"]
    tokenizer = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_rows_past_the_tokenizer_are_never_sampled(tmp_path):
    import hardwire
    from hardwire.model.load import TokenizerNote

    with pytest.warns(TokenizerNote, match="10 pieces and the model 16 embedding rows"):
        model = hardwire.load(padded_vocab_folder(tmp_path))
    engine = hardwire.engine(model)
    for seed in range(20):
        result = engine.generate([1, 3, 4], max_tokens=12, temperature=2.0, seed=seed, stop_at_eos=False)
        assert all(0 <= i < 10 for i in result.ids), result.ids
        assert isinstance(result.text, str)


def test_a_short_tokenizer_is_one_note_on_the_command_line(tmp_path, cli):
    proc = cli("run", padded_vocab_folder(tmp_path), "--prompt", "a b", "-n", "8", "-t", "2", "--seed", "4")
    notes = proc.stderr.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("hardwire: note:") and "never sampled" in notes[0]


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, []])
def test_add_bos_token_must_be_a_boolean(tmp_path, capsys, value):
    import shutil

    from hardwire.model.load import resolve_model_path

    folder = tmp_path / "task"
    shutil.copytree(resolve_model_path("task-small"), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": value}))
    line = refused(capsys, "inspect", folder)
    assert "tokenizer_config.json" in line and "add_bos_token" in line, line
