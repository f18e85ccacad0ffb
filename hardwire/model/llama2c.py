"""llama2.c checkpoints (`.bin`): the legacy header (7 int32) and the versioned header
("ak42" magic; version 1 = float32, version 2 = Q8_0 groups).

llama2.c trains with interleaved RoPE pairs, so q/k rows are reordered to the rotate-half layout
on read. Every size is checked against the file length before anything is mapped.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from hardwire.errors import BadCheckpoint, BadConfig
from hardwire.model.load import Model, half_rotary_from_interleaved
from hardwire.model.tokenizer import find_tokenizer, load_tokenizer
from hardwire.model.spec import ModelSpec

MAGIC = 0x616B3432          # "ak42" read as a little-endian uint32
VERSIONED_HEADER_BYTES = 256
LEGACY_HEADER_BYTES = 28
FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")


def _spec(params: dict, shared_classifier: bool, path: Path) -> ModelSpec:
    dim, heads = params["dim"], params["n_heads"]
    for field in FIELDS:
        if params[field] <= 0:
            raise BadConfig(f"expected a positive integer, got {params[field]}", path=path, field=field)
    if dim % heads:
        raise BadConfig(f"dim={dim} is not divisible by n_heads={heads}", path=path, field="n_heads")
    try:
        return ModelSpec(family="llama", hidden_dim=dim, layers=params["n_layers"], heads=heads,
                         kv_heads=params["n_kv_heads"], head_dim=dim // heads,
                         ffn_dim=params["hidden_dim"], vocab_size=params["vocab_size"],
                         max_context=params["seq_len"], rope_theta=10000.0, norm_eps=1e-5,
                         tied_embeddings=shared_classifier, bos_id=1, eos_id=2)
    except BadConfig as e:
        raise BadConfig(str(e).split(": ", 1)[-1], path=path, field=e.field) from None


def _layout(spec: ModelSpec, version: int) -> list[tuple[str, tuple[int, ...]]]:
    """(canonical name or padding tag, shape) in file order for float32 sections."""
    L, shapes = spec.layers, spec.layer_tensor_shapes()

    def per_layer(short):
        return [(f"layers.{i}.{short}", shapes[short]) for i in range(L)]

    half = spec.head_dim // 2
    if version == 0:
        order = [("embed", (spec.vocab_size, spec.hidden_dim)), *per_layer("attn_norm"), *per_layer("wq"),
                 *per_layer("wk"), *per_layer("wv"), *per_layer("wo"), *per_layer("ffn_norm"),
                 *per_layer("w_gate"), *per_layer("w_down"), *per_layer("w_up"),
                 ("final_norm", (spec.hidden_dim,)),
                 ("#freq_cos", (spec.max_context, half)), ("#freq_sin", (spec.max_context, half))]
    else:
        order = [*per_layer("attn_norm"), *per_layer("ffn_norm"), ("final_norm", (spec.hidden_dim,)),
                 ("embed", (spec.vocab_size, spec.hidden_dim)), *per_layer("wq"), *per_layer("wk"),
                 *per_layer("wv"), *per_layer("wo"), *per_layer("w_gate"), *per_layer("w_down"),
                 *per_layer("w_up")]
    if not spec.tied_embeddings:
        order.append(("output", (spec.vocab_size, spec.hidden_dim)))
    return order


def load_llama2c(path: Path, tokenizer=None) -> Model:
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(VERSIONED_HEADER_BYTES)
    if len(head) < LEGACY_HEADER_BYTES:
        raise BadCheckpoint(f"file of {size} bytes is too short for a llama2.c header "
                            f"({LEGACY_HEADER_BYTES} bytes)", path=path)
    (magic,) = struct.unpack_from("<I", head, 0)
    group_size = None
    if magic == MAGIC:
        if len(head) < VERSIONED_HEADER_BYTES:
            raise BadCheckpoint("truncated inside the 256-byte versioned header", path=path)
        version = struct.unpack_from("<i", head, 4)[0]
        if version not in (1, 2):
            raise BadCheckpoint(f"llama2.c format version {version} is not supported; expected 1 or 2",
                                path=path, field="version")
        params = dict(zip(FIELDS, struct.unpack_from("<7i", head, 8)))
        shared = bool(head[36])
        if version == 2:
            group_size = struct.unpack_from("<i", head, 37)[0]
        data_start = VERSIONED_HEADER_BYTES
    else:
        version = 0
        params = dict(zip(FIELDS, struct.unpack_from("<7i", head, 0)))
        shared = params["vocab_size"] > 0
        params["vocab_size"] = abs(params["vocab_size"])
        data_start = LEGACY_HEADER_BYTES
    spec = _spec(params, shared, path)

    offsets: dict[str, tuple[int, tuple[int, ...], str]] = {}   # name -> (byte offset, shape, kind)
    position = data_start
    if version in (0, 1):
        for name, shape in _layout(spec, version):
            offsets[name] = (position, shape, "f32")
            position += 4 * math.prod(shape)
    else:
        if group_size is None or group_size <= 0:
            raise BadConfig(f"expected a positive group size, got {group_size}", path=path, field="group_size")
        layout = _layout(spec, 2)
        float_part = [(n, s) for n, s in layout if n.endswith("norm")]
        quant_part = [(n, s) for n, s in layout if not n.endswith("norm")]
        for name, shape in float_part:
            offsets[name] = (position, shape, "f32")
            position += 4 * math.prod(shape)
        for name, shape in quant_part:
            if math.prod(shape) % group_size:
                raise BadConfig(f"tensor {name} of {math.prod(shape)} values is not a multiple of the "
                                f"group size {group_size}", path=path, field="group_size")
            offsets[name] = (position, shape, "q8")
            position += math.prod(shape)
        for name, shape in quant_part:      # all scales follow all int8 codes
            offsets[name + "#scale"] = (position, (math.prod(shape) // group_size,), "f32")
            position += 4 * math.prod(shape) // group_size
    if position != size:
        raise BadCheckpoint(f"header (dim={spec.hidden_dim}, layers={spec.layers}, vocab={spec.vocab_size}, "
                            f"version {version}) implies {position} bytes, the file has {size} "
                            f"({'truncated' if size < position else 'trailing data'})", path=path)

    data = np.memmap(path, dtype=np.uint8, mode="r")

    def raw(name):
        offset, shape, kind = offsets[name]
        dtype = np.int8 if kind == "q8" else np.dtype("<f4")
        return np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset), shape, kind

    def read_tensor(canonical: str) -> np.ndarray:
        values, shape, kind = raw(canonical)
        if kind == "q8":
            scales, _, _ = raw(canonical + "#scale")
            values = (values.reshape(-1, group_size).astype(np.float32) * scales[:, None]).reshape(-1)
        array = np.array(values, dtype=np.float32).reshape(shape)
        if canonical.endswith(".wq"):
            array = half_rotary_from_interleaved(array, spec.heads)
        elif canonical.endswith(".wk"):
            array = half_rotary_from_interleaved(array, spec.kv_heads)
        return array

    storage = "Q8_0" if version == 2 else "F32"
    dtypes = {n: ("F32" if n.endswith("norm") else storage) for n in spec.tensor_shapes()}
    tok = load_tokenizer(tokenizer, spec.vocab_size) if tokenizer is not None \
        else find_tokenizer(path, spec.vocab_size)
    return Model(spec=spec, path=path, format="llama2c", read_tensor=read_tensor, tokenizer=tok,
                 dtypes=dtypes, close=lambda: getattr(data, "_mmap", None) and data._mmap.close())
