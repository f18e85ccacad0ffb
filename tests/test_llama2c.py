"""llama2.c checkpoints: versioned headers (v1 float32, v2 Q8_0) load the same model as the legacy file.

The test reads the legacy file with its own offsets (llama2.c `legacy_export` order) and writes v1/v2
files in `version1_export`/`version2_export` order, independently of hardwire's reader.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

import hardwire
import hardwire.errors
from hardwire.model.load import bundled_model_path

DIM, HIDDEN, LAYERS, HEADS, KV, VOCAB, SEQ = 64, 172, 5, 8, 4, 512, 512
HEAD = DIM // HEADS


def legacy_tensors() -> dict[str, np.ndarray]:
    raw = np.fromfile(bundled_model_path(), dtype="<f4", offset=28)
    order = [("tok", (VOCAB, DIM)), ("att_norm", (LAYERS, DIM)), ("wq", (LAYERS, DIM, DIM)),
             ("wk", (LAYERS, KV * HEAD, DIM)), ("wv", (LAYERS, KV * HEAD, DIM)), ("wo", (LAYERS, DIM, DIM)),
             ("ffn_norm", (LAYERS, DIM)), ("w1", (LAYERS, HIDDEN, DIM)), ("w2", (LAYERS, DIM, HIDDEN)),
             ("w3", (LAYERS, HIDDEN, DIM)), ("norm", (DIM,)), ("cos", (SEQ, HEAD // 2)), ("sin", (SEQ, HEAD // 2))]
    out, at = {}, 0
    for name, shape in order:
        n = int(np.prod(shape))
        out[name] = raw[at:at + n].reshape(shape)
        at += n
    assert at == raw.size          # shared classifier: nothing after the RoPE tables
    return out


def versioned_header(version: int, group_size: int | None = None) -> bytes:
    header = struct.pack("<Ii7iB", 0x616B3432, version, DIM, HIDDEN, LAYERS, HEADS, KV, VOCAB, SEQ, 1)
    if group_size is not None:
        header += struct.pack("<i", group_size)
    return header + b"\0" * (256 - len(header))


def test_version1_file_loads_same_weights_as_legacy(tmp_path):
    t = legacy_tensors()
    parts = [*t["att_norm"], *t["ffn_norm"], t["norm"], t["tok"], *t["wq"], *t["wk"], *t["wv"], *t["wo"],
             *t["w1"], *t["w2"], *t["w3"]]
    path = tmp_path / "v1.bin"
    path.write_bytes(versioned_header(1) + b"".join(np.ascontiguousarray(p, "<f4").tobytes() for p in parts))
    legacy, v1 = hardwire.load(), hardwire.load(path)
    assert v1.spec == legacy.spec
    for name in legacy.spec.tensor_shapes():
        np.testing.assert_array_equal(v1.tensor(name), legacy.tensor(name))


def test_version2_q8_file_loads_within_quantization_error(tmp_path):
    t, group = legacy_tensors(), 64
    quantized = [t["tok"], *t["wq"], *t["wk"], *t["wv"], *t["wo"], *t["w1"], *t["w2"], *t["w3"]]
    codes, scales = [], []
    for w in quantized:
        groups = w.reshape(-1, group)
        scale = np.abs(groups).max(axis=1) / 127.0
        codes.append(np.round(groups / scale[:, None]).astype(np.int8).tobytes())
        scales.append(scale.astype("<f4").tobytes())
    floats = b"".join(np.ascontiguousarray(p, "<f4").tobytes() for p in [*t["att_norm"], *t["ffn_norm"], t["norm"]])
    path = tmp_path / "v2.bin"
    path.write_bytes(versioned_header(2, group) + floats + b"".join(codes) + b"".join(scales))
    legacy, v2 = hardwire.load(), hardwire.load(path)
    assert v2.dtypes["layers.0.wq"] == "Q8_0"
    for name in legacy.spec.tensor_shapes():
        a, b = legacy.tensor(name), v2.tensor(name)
        step = np.abs(a).max() / 127.0
        assert np.abs(a - b).max() <= step * 0.5 + 1e-6, name
    # the quantized model still tells the same story for a while
    assert hardwire.engine(v2).generate([1], max_tokens=24).ids == hardwire.engine(legacy).generate([1], max_tokens=24).ids


@pytest.mark.parametrize("cut", [255, 300, 1000])
def test_truncated_versioned_file_is_rejected(tmp_path, cut):
    path = tmp_path / "v1.bin"
    path.write_bytes((versioned_header(1) + b"\0" * 4096)[:cut])
    with pytest.raises(hardwire.errors.BadCheckpoint, match="v1.bin"):
        hardwire.load(path)
