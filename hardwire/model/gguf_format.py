"""GGUF (llama.cpp) checkpoints: open one as a streaming `Model`, write a `Model` as one.

What llama.cpp does to a Hugging Face checkpoint, and what we undo on load (and redo on write):
- GGUF lists a tensor's dimensions fastest-first (`ne`), so a [out, in] matrix is stored with
  ne = [in, out]; the bytes are the same row-major [out, in] array.
- For the `llama` architecture (which is also what llama.cpp calls Mistral) the converter permutes
  the rows of q and k (weights and biases) from Hugging Face's rotate-half RoPE pairs (j, j + d/2)
  into interleaved pairs (2j, 2j + 1), per head: q with the query heads, k with the key/value heads
  (`LlamaModel.permute` in llama.cpp's convert_hf_to_gguf.py / conversion/llama.py). `qwen2` is not
  permuted: llama.cpp runs it with NeoX (rotate-half) RoPE.
- Llama 3.1 RoPE scaling is stored as a tensor `rope_freqs.weight` of per-frequency divisors, not
  as parameters. We recover the `RopeScaling` that reproduces those divisors (see
  `rope_scaling_from_factors`) and refuse the file when none does.

The header is parsed here rather than with `gguf.GGUFReader`: the reader builds two numpy views
per metadata array element (about 10 s and 400 MB for a 150k-token vocabulary on a small machine)
and trusts every count and length in the file. `read_header` checks each length against the bytes
that remain before using it, so a corrupt or hostile header fails at once with a clear message and
no large allocation. The `gguf` package still supplies the constants, (de)quantization and writer.
"""
from __future__ import annotations

import dataclasses
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from hardwire.errors import BadCheckpoint, BadConfig, UnsupportedModel
from hardwire.model.load import Model, half_rotary_from_interleaved, interleaved_from_half_rotary
from hardwire.model.spec import ModelSpec, RopeScaling

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
ARCH_OF_FAMILY = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
PERMUTED_ARCHS = ("llama",)           # architectures whose q/k rows llama.cpp interleaves

# Bounds for header fields. Real files stay far below them (the largest vocabularies are ~262k
# tokens); they exist so that a count in a corrupt header cannot make us allocate or loop for long.
MAX_KEY_BYTES = 1 << 16
MAX_TENSOR_NAME_BYTES = 256
MAX_ARRAY_ELEMENTS = 1 << 24
MAX_STRING_ARRAY_ELEMENTS = 1 << 22
MAX_TENSOR_DIMS = 4
MAX_TENSOR_ELEMENTS = 1 << 40
INTEGER_TYPES = (GGMLQuantizationType.I8, GGMLQuantizationType.I16, GGMLQuantizationType.I32,
                 GGMLQuantizationType.I64)

_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}

# Canonical tensor name (see ModelSpec.tensor_shapes) -> GGUF name.
GLOBAL_TENSOR_NAMES = {"embed": "token_embd.weight", "final_norm": "output_norm.weight",
                       "output": "output.weight"}
LAYER_TENSOR_NAMES = {
    "attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
    "wv": "attn_v.weight", "wo": "attn_output.weight", "bq": "attn_q.bias", "bk": "attn_k.bias",
    "bv": "attn_v.bias", "ffn_norm": "ffn_norm.weight", "w_gate": "ffn_gate.weight",
    "w_up": "ffn_up.weight", "w_down": "ffn_down.weight",
}
ROPE_FREQS_TENSOR = "rope_freqs.weight"

# ModelSpec field -> metadata key (after "{arch}."), to name the key a bad value came from.
SPEC_FIELD_KEYS = {
    "hidden_dim": "embedding_length", "layers": "block_count", "heads": "attention.head_count",
    "kv_heads": "attention.head_count_kv", "head_dim": "attention.key_length",
    "ffn_dim": "feed_forward_length", "max_context": "context_length", "rope_theta": "rope.freq_base",
    "norm_eps": "attention.layer_norm_rms_epsilon",
}

# Custom keys written next to rope_freqs.weight so our own files round-trip the exact parameters;
# llama.cpp ignores keys it does not know.
ROPE_SCALING_KEYS = {"factor": "hardwire.rope_scaling.factor",
                     "low_freq_factor": "hardwire.rope_scaling.low_freq_factor",
                     "high_freq_factor": "hardwire.rope_scaling.high_freq_factor",
                     "original_max_position": "hardwire.rope_scaling.original_context_length"}


def gguf_tensor_name(canonical: str) -> str:
    if canonical in GLOBAL_TENSOR_NAMES:
        return GLOBAL_TENSOR_NAMES[canonical]
    _, layer, leaf = canonical.split(".")
    return f"blk.{layer}.{LAYER_TENSOR_NAMES[leaf]}"


def reorder_rope_rows(values: np.ndarray, canonical: str, spec: ModelSpec, reorder) -> np.ndarray:
    """Apply `reorder` (half_rotary_from_interleaved or its inverse) to the rows of q/k weights
    and biases, per query head for q and per key/value head for k; other tensors pass."""
    heads = {"wq": spec.heads, "bq": spec.heads, "wk": spec.kv_heads, "bk": spec.kv_heads}
    leaf = canonical.rsplit(".", 1)[-1]
    if leaf not in heads:
        return values
    return reorder(values.reshape(values.shape[0], -1), heads[leaf]).reshape(values.shape)


# -- the container: header parsing with every length checked ---------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]      # numpy order (slowest first): [out, in] for a matrix; GGUF ne reversed
    start: int                  # absolute byte offset of the data in the file
    nbytes: int


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, object]     # ints, floats, bools, strs; arrays as np.ndarray or list[str]
    tensors: dict[str, TensorInfo]
    data_start: int


class _Cursor:
    """Reads little-endian GGUF fields from a buffer, refusing any read past its end."""

    def __init__(self, buffer, path: Path):
        self.buffer = buffer
        self.size = len(buffer)
        self.position = 0
        self.path = path

    def remaining(self) -> int:
        return self.size - self.position

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining():
            raise BadCheckpoint(f"{what} needs {count} bytes at offset {self.position}, but the file "
                                f"has only {self.size} bytes (truncated or corrupt header)",
                                path=self.path)
        data = self.buffer[self.position:self.position + count]
        self.position += count
        return data

    def scalar(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, bytes_each: int, limit: int) -> int:
        value = self.scalar("<Q", what)
        if value > limit or value * bytes_each > self.remaining():
            raise BadCheckpoint(f"{what} claims {value} entries; at most {limit} are allowed and the "
                                f"{self.remaining()} bytes left hold at most "
                                f"{self.remaining() // bytes_each} (truncated or corrupt header)",
                                path=self.path)
        return value

    def string(self, what: str, limit: int) -> str:
        length = self.scalar("<Q", f"{what} (length)")
        if length > limit or length > self.remaining():
            raise BadCheckpoint(f"{what} claims a string of {length} bytes; at most "
                                f"{min(limit, self.remaining())} are possible here "
                                "(truncated or corrupt header)", path=self.path)
        raw = self.take(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadCheckpoint(f"{what} is not valid UTF-8", path=self.path) from None

    def value(self, value_type: int, key: str):
        if value_type in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[GGUFValueType(value_type)], f"metadata {key!r}")
        if value_type == GGUFValueType.STRING:
            return self.string(f"metadata {key!r}", self.remaining())
        if value_type != GGUFValueType.ARRAY:
            raise BadCheckpoint(f"metadata {key!r} has unknown value type {value_type}", path=self.path)
        item_type = self.scalar("<I", f"metadata {key!r} (array type)")
        if item_type in _SCALAR_FORMATS:
            fmt = _SCALAR_FORMATS[GGUFValueType(item_type)]
            size = struct.calcsize(fmt)
            length = self.count(f"metadata {key!r} (array length)", size, MAX_ARRAY_ELEMENTS)
            raw = self.take(length * size, f"metadata {key!r}")
            return np.frombuffer(raw, dtype=np.dtype(fmt)).copy()
        if item_type == GGUFValueType.STRING:
            length = self.count(f"metadata {key!r} (array length)", 8, MAX_STRING_ARRAY_ELEMENTS)
            return [self.string(f"metadata {key!r}[{i}]", self.remaining()) for i in range(length)]
        if item_type == GGUFValueType.ARRAY:
            raise UnsupportedModel(f"metadata {key!r} is an array of arrays, which hardwire (like "
                                   "llama.cpp) does not read", path=self.path)
        raise BadCheckpoint(f"metadata {key!r} is an array of unknown type {item_type}", path=self.path)


def read_header(path: Path, buffer) -> GGUFHeader:
    """Parse and bounds-check the header of the GGUF file whose bytes are `buffer`."""
    cursor = _Cursor(buffer, path)
    magic = cursor.take(4, "magic")
    if magic != GGUF_MAGIC:
        raise BadCheckpoint(f"expected GGUF magic {GGUF_MAGIC!r}, found {magic!r}", path=path)
    version = cursor.scalar("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 16) in SUPPORTED_VERSIONS:
            raise UnsupportedModel("big-endian GGUF files are not supported", path=path)
        raise UnsupportedModel(f"GGUF version {version}; supported versions are {SUPPORTED_VERSIONS}",
                               path=path)
    tensor_count = cursor.scalar("<Q", "tensor count")
    kv_count = cursor.count("metadata count", 13, 1 << 20)    # smallest entry: 8 + 0 + 4 + 1 bytes
    metadata: dict[str, object] = {}
    for index in range(kv_count):
        key = cursor.string(f"metadata key #{index}", MAX_KEY_BYTES)
        value_type = cursor.scalar("<I", f"metadata {key!r} (type)")
        if key in metadata:
            raise BadCheckpoint(f"metadata key {key!r} appears twice", path=path)
        metadata[key] = cursor.value(value_type, key)

    # smallest tensor info: name length 8 + dims count 4 + one dim 8 + type 4 + offset 8 bytes
    if tensor_count > (1 << 20) or tensor_count * 32 > cursor.remaining():
        raise BadCheckpoint(f"tensor count claims {tensor_count} tensors, more than the "
                            f"{cursor.remaining()} bytes left can describe (truncated or corrupt header)",
                            path=path)
    raw_infos = []
    for index in range(tensor_count):
        name = cursor.string(f"tensor #{index} name", MAX_TENSOR_NAME_BYTES)
        n_dims = cursor.scalar("<I", f"tensor {name} (dimension count)")
        if not 1 <= n_dims <= MAX_TENSOR_DIMS:
            raise BadCheckpoint(f"tensor {name} has {n_dims} dimensions, expected 1 to {MAX_TENSOR_DIMS}",
                                path=path)
        ne = [cursor.scalar("<Q", f"tensor {name} (dimensions)") for _ in range(n_dims)]
        type_code = cursor.scalar("<I", f"tensor {name} (type)")
        offset = cursor.scalar("<Q", f"tensor {name} (offset)")
        raw_infos.append((name, ne, type_code, offset))

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not (type(alignment) is int and 0 < alignment <= 1 << 20 and alignment & (alignment - 1) == 0):
        raise BadCheckpoint(f"expected a power of two, got {alignment!r}", path=path,
                            field="general.alignment")
    data_start = -(-cursor.position // alignment) * alignment

    tensors: dict[str, TensorInfo] = {}
    expected_offset = 0
    for name, ne, type_code, offset in raw_infos:
        if name in tensors:
            raise BadCheckpoint(f"tensor {name} appears twice", path=path)
        try:
            ggml_type = GGMLQuantizationType(type_code)
            block_size, type_size = GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise BadCheckpoint(f"tensor {name} has unknown type code {type_code}", path=path) from None
        if min(ne) < 1 or math.prod(ne) > MAX_TENSOR_ELEMENTS:
            raise BadCheckpoint(f"tensor {name} has dimensions {ne}; each must be >= 1 and the product "
                                f"at most {MAX_TENSOR_ELEMENTS}", path=path)
        if ne[0] % block_size:
            raise BadCheckpoint(f"tensor {name} rows of {ne[0]} values are not a whole number of "
                                f"{ggml_type.name} blocks of {block_size}", path=path)
        nbytes = math.prod(ne) // block_size * type_size
        # llama.cpp's rule: tensor data is laid out in header order, each at the running size padded
        # to the alignment, so an offset anywhere else (overlapping, gapped, reordered) is corrupt.
        if offset != expected_offset:
            raise BadCheckpoint(f"tensor {name} data offset {offset} differs from {expected_offset}, the "
                                f"aligned end of the tensors before it", path=path)
        expected_offset += -(-nbytes // alignment) * alignment
        start = data_start + offset
        if start + nbytes > cursor.size:
            raise BadCheckpoint(f"tensor {name} data ends at byte {start + nbytes}, past the end of the "
                                f"file ({cursor.size} bytes): the file is truncated", path=path)
        tensors[name] = TensorInfo(name, ggml_type, tuple(reversed(ne)), start, nbytes)
    return GGUFHeader(version, metadata, tensors, data_start)


def decode_tensor(buffer, info: TensorInfo) -> np.ndarray:
    """The tensor's values as a new float32 array in numpy order (dequantized)."""
    raw = np.frombuffer(buffer, dtype=np.uint8, count=info.nbytes, offset=info.start)
    byte_shape = gguf.quants.quant_shape_to_byte_shape(info.shape, info.ggml_type)
    values = gguf.quants.dequantize(raw.reshape(byte_shape), info.ggml_type)
    # F32 "dequantizes" to a view of the mapping: copy it, never hand out views into the file.
    is_view = info.ggml_type == GGMLQuantizationType.F32
    return np.array(values, dtype=np.float32, copy=True if is_view else None)


def can_dequantize(ggml_type: GGMLQuantizationType) -> bool:
    _, type_size = GGML_QUANT_SIZES[ggml_type]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), ggml_type)
    except NotImplementedError:
        return False
    return True


# -- metadata -> ModelSpec --------------------------------------------------------------------------

def shortest_float32(value: float) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it, so that a config's
    1e-5, stored as float32, reads back as 1e-5 and not 9.99999974738e-06. Other values pass."""
    single = np.float32(value)
    return float(str(single)) if float(single) == value else value


class _Metadata:
    """Typed access to metadata values; every failure names the key."""

    def __init__(self, metadata: dict[str, object], path: Path):
        self.values = metadata
        self.path = path

    def get(self, key: str, kind: type, default: object = ...) -> object:
        if key not in self.values:
            if default is ...:
                raise BadCheckpoint(f"missing metadata key (expected {kind.__name__})", path=self.path,
                                    field=key)
            return default
        value = self.values[key]
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is not kind:
            raise BadCheckpoint(f"expected {kind.__name__}, got {type(value).__name__} {value!r:.80}",
                                path=self.path, field=key)
        return value

    def integer(self, key: str, default: object = ...) -> int:
        return self.get(key, int, default)

    def real(self, key: str, default: object = ...) -> float:
        value = self.get(key, float, default)
        return value if value is None else shortest_float32(value)


def _spec_from_header(header: GGUFHeader, path: Path) -> ModelSpec:
    meta = _Metadata(header.metadata, path)
    arch = meta.get("general.architecture", str)
    if arch not in PERMUTED_ARCHS + ("qwen2",):
        raise UnsupportedModel(f"architecture {arch!r}; supported: llama (also Mistral), qwen2",
                               path=path, field="general.architecture")
    if meta.integer(f"{arch}.expert_count", 0) > 0:
        raise UnsupportedModel("mixture-of-experts models are not supported", path=path,
                               field=f"{arch}.expert_count")
    scaling_type = meta.get(f"{arch}.rope.scaling.type", str, "none")
    scaling_factor = meta.real(f"{arch}.rope.scaling.factor", None)
    if scaling_type != "none" or scaling_factor not in (None, 0.0, 1.0):
        raise UnsupportedModel(f"RoPE scaling {scaling_type!r} (factor {scaling_factor}); only Llama 3.1 "
                               "scaling (rope_freqs.weight) is supported", path=path,
                               field=f"{arch}.rope.scaling.type")

    hidden = meta.integer(f"{arch}.embedding_length")
    heads = meta.integer(f"{arch}.attention.head_count")
    head_dim = meta.integer(f"{arch}.attention.key_length", hidden // heads if heads > 0 else 0)
    if "token_embd.weight" not in header.tensors:
        raise BadCheckpoint("missing tensor token_embd.weight (the embedding)", path=path)
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    vocab_size = len(tokens) if isinstance(tokens, list) else \
        meta.integer(f"{arch}.vocab_size", header.tensors["token_embd.weight"].shape[0])
    fields = dict(
        family=arch, hidden_dim=hidden, layers=meta.integer(f"{arch}.block_count"), heads=heads,
        kv_heads=meta.integer(f"{arch}.attention.head_count_kv", heads), head_dim=head_dim,
        ffn_dim=meta.integer(f"{arch}.feed_forward_length"), vocab_size=vocab_size,
        max_context=meta.integer(f"{arch}.context_length"),
        rope_theta=meta.real(f"{arch}.rope.freq_base", 10000.0),
        norm_eps=meta.real(f"{arch}.attention.layer_norm_rms_epsilon"),
        tied_embeddings="output.weight" not in header.tensors,
        qkv_bias="blk.0.attn_q.bias" in header.tensors,
        bos_id=meta.integer("tokenizer.ggml.bos_token_id", None),
        eos_id=meta.integer("tokenizer.ggml.eos_token_id", None),
    )
    try:
        spec = ModelSpec(**fields)
    except BadConfig as e:
        key = {"bos_id": "tokenizer.ggml.bos_token_id", "eos_id": "tokenizer.ggml.eos_token_id",
               "vocab_size": "tokenizer.ggml.tokens / token_embd.weight"}.get(e.field)
        key = key or (f"{arch}.{SPEC_FIELD_KEYS[e.field]}" if e.field in SPEC_FIELD_KEYS else e.field)
        raise BadCheckpoint(str(e).split(": ", 1)[-1], path=path, field=key) from None
    for key in (f"{arch}.attention.value_length", f"{arch}.rope.dimension_count"):
        if meta.integer(key, head_dim) != head_dim:
            raise UnsupportedModel(f"{meta.values[key]} differs from the head dimension {head_dim} "
                                   "(partial RoPE or a separate value size is not supported)",
                                   path=path, field=key)

    if ROPE_FREQS_TENSOR in header.tensors:
        if arch not in PERMUTED_ARCHS:
            raise UnsupportedModel(f"{ROPE_FREQS_TENSOR} in a {arch} model", path=path)
        info = header.tensors[ROPE_FREQS_TENSOR]
        if info.shape != (head_dim // 2,) or info.ggml_type not in (
                GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            raise BadCheckpoint(f"tensor {ROPE_FREQS_TENSOR} is {info.ggml_type.name} {info.shape}, "
                                f"expected a float vector of {head_dim // 2}", path=path)
    return spec   # Llama 3.1 scaling is filled in by _open, which reads rope_freqs.weight


# -- Llama 3.1 RoPE scaling <-> rope_freqs.weight ----------------------------------------------------

def llama3_rope_factors(spec: ModelSpec) -> np.ndarray:
    """What llama.cpp stores in rope_freqs.weight: per frequency, unscaled / scaled frequency."""
    from hardwire.model.reference import rope_inverse_frequencies
    unscaled = rope_inverse_frequencies(dataclasses.replace(spec, rope_scaling=None))
    return (unscaled / rope_inverse_frequencies(spec)).astype(np.float32)


def rope_scaling_from_factors(factors: np.ndarray, spec: ModelSpec,
                              stored: RopeScaling | None = None) -> RopeScaling | None:
    """The `RopeScaling` whose llama3 divisors equal `factors`, or None when all are 1.

    The divisors depend on the parameters only through `factor` (the largest divisor) and the band
    edges original_max_position / {high,low}_freq_factor, and a model has few frequencies, so
    several parameter sets give the same divisors. Candidates, each checked against the tensor:
    the parameters `write_gguf` stores; Meta's Llama 3.1 values (low 1, high 4, context 8192);
    low 1, high 4 with the context the band divisors imply; band edges solved from the divisors
    (context 8192). Raises UnsupportedModel when none reproduces the tensor.
    """
    factors = np.asarray(factors, dtype=np.float64)
    if np.allclose(factors, 1.0, rtol=0, atol=1e-6):
        return None
    factor = float(np.float32(factors.max()))
    from hardwire.model.reference import rope_inverse_frequencies
    wavelength = 2 * np.pi / rope_inverse_frequencies(dataclasses.replace(spec, rope_scaling=None))
    unscaled = factors <= 1 + 1e-6
    fully_scaled = factors >= factor * (1 - 1e-6)
    band = ~unscaled & ~fully_scaled
    # inside the band 1/divisor = (1 - s)/factor + s, s = (context/wavelength - low) / (high - low)
    smooth = (1 / factors[band] - 1 / factor) / (1 - 1 / factor)

    candidates = [stored, RopeScaling(factor, 1.0, 4.0, 8192)]
    if band.any():
        context = float(np.median(wavelength[band] * (1 + 3 * smooth)))
        candidates.append(RopeScaling(factor, 1.0, 4.0, max(1, round(context))))
    candidates.append(_llama3_band_for(wavelength, unscaled, fully_scaled, band, smooth, factor))
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            scaled = dataclasses.replace(spec, rope_scaling=candidate)
        except BadConfig:
            continue
        if np.allclose(llama3_rope_factors(scaled), factors, rtol=1e-5, atol=1e-6):
            return candidate
    raise UnsupportedModel(f"{ROPE_FREQS_TENSOR} does not match Llama 3.1 RoPE scaling for any "
                           f"parameters tried (largest divisor {factor:g}, {int(band.sum())} divisors "
                           "inside the band)")


def _llama3_band_for(wavelength, unscaled, fully_scaled, band, smooth, factor) -> RopeScaling | None:
    """Band edges (as low/high factors of a context of 8192) that give `smooth` inside the band
    and leave the other frequencies outside it. Works in u = 1/wavelength, where s is linear:
    s = (u - u_low) / (u_high - u_low), with max(u of fully scaled) < u_low <= u_high < min(u of
    unscaled)."""
    u = 1 / wavelength
    top = u[unscaled].min() if unscaled.any() else 2 * u.max()
    bottom = u[fully_scaled].max() if fully_scaled.any() else u.min() / 2
    if band.sum() >= 2:
        slope, intercept = np.polyfit(u[band], smooth, 1)
        if slope <= 0:
            return None
        u_low = -intercept / slope
        u_high = u_low + 1 / slope
    elif band.sum() == 1:
        # One equation, two unknowns: put u_high close enough above the band point that u_low
        # stays above `bottom`.
        point, s = u[band][0], smooth[0]
        if not 0 < s < 1:
            return None
        step = min((top - point) / 2, (point - bottom) * (1 - s) / (2 * s))
        u_high = point + step
        u_low = point - s * step / (1 - s)
    else:
        u_low, u_high = bottom + (top - bottom) / 3, bottom + 2 * (top - bottom) / 3
    if not bottom < u_low < u_high < top:
        return None
    return RopeScaling(factor, float(8192 * u_low), float(8192 * u_high), 8192)


def _stored_rope_scaling(metadata: dict[str, object]) -> RopeScaling | None:
    values = {field: metadata.get(key) for field, key in ROPE_SCALING_KEYS.items()}
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values.values()):
        return None
    return RopeScaling(factor=shortest_float32(values["factor"]),
                       low_freq_factor=shortest_float32(values["low_freq_factor"]),
                       high_freq_factor=shortest_float32(values["high_freq_factor"]),
                       original_max_position=int(values["original_max_position"]))


# -- load -------------------------------------------------------------------------------------------

def _load_tokenizer(metadata: dict[str, object], path: Path, vocab_size: int,
                    tokenizer: str | os.PathLike | None):
    """The tokenizer from an explicit file, else the one in the GGUF metadata (None if absent)."""
    from hardwire.model.tokenizer import load_tokenizer, tokenizer_from_gguf
    if tokenizer is not None:
        return load_tokenizer(tokenizer, vocab_size)
    return tokenizer_from_gguf(metadata, path)


def load_gguf(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Model:
    """Open a GGUF file (memory-mapped) as a `Model`; tensors are read and dequantized on demand."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 4 + 4 + 8 + 8:
                raise BadCheckpoint(f"file of {size} bytes is too short for a GGUF header", path=path)
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise BadCheckpoint(f"cannot read: {e.strerror}", path=path) from None

    def close():
        try:
            buffer.close()
        except BufferError:    # an array still views the mapping; it is released with that array
            pass

    try:
        model = _open(path, buffer, tokenizer)
    except BaseException:
        close()
        raise
    model.close = close
    return model


def _open(path: Path, buffer, tokenizer) -> Model:
    header = read_header(path, buffer)
    for ggml_type in sorted({info.ggml_type for info in header.tensors.values()} - set(INTEGER_TYPES)):
        if not can_dequantize(ggml_type):
            example = next(n for n, info in header.tensors.items() if info.ggml_type == ggml_type)
            raise UnsupportedModel(f"tensor {example} has type {ggml_type.name}, which the installed "
                                   "gguf package cannot dequantize", path=path)
    spec = _spec_from_header(header, path)
    if ROPE_FREQS_TENSOR in header.tensors:
        factors = decode_tensor(buffer, header.tensors[ROPE_FREQS_TENSOR])
        try:
            scaling = rope_scaling_from_factors(factors, spec, _stored_rope_scaling(header.metadata))
        except UnsupportedModel as e:
            raise UnsupportedModel(str(e), path=path) from None
        spec = dataclasses.replace(spec, rope_scaling=scaling)

    names = {canonical: gguf_tensor_name(canonical) for canonical in spec.tensor_shapes()}
    for canonical, shape in spec.tensor_shapes().items():
        info = header.tensors.get(names[canonical])
        if info is None:
            raise BadCheckpoint(f"missing tensor {names[canonical]} (expected shape {list(shape)})",
                                path=path)
        if info.shape != shape:
            raise BadCheckpoint(f"tensor {info.name} has shape {list(info.shape)} (GGUF ne "
                                f"{list(reversed(info.shape))}), expected {list(shape)}", path=path)
        if info.ggml_type in INTEGER_TYPES:
            raise BadCheckpoint(f"tensor {info.name} has integer type {info.ggml_type.name}; weights "
                                "must be a float or quantized type", path=path)
    unused = sorted(set(header.tensors) - set(names.values()) - {ROPE_FREQS_TENSOR}
                    - {n for n in header.tensors if n.endswith(".attn_rot_embd")})
    if unused:
        raise UnsupportedModel(f"tensors hardwire does not know how to use: {', '.join(unused[:5])}"
                               + (f" and {len(unused) - 5} more" if len(unused) > 5 else ""), path=path)

    def read_tensor(canonical: str) -> np.ndarray:
        values = decode_tensor(buffer, header.tensors[names[canonical]])
        if spec.family in PERMUTED_ARCHS:
            values = reorder_rope_rows(values, canonical, spec, half_rotary_from_interleaved)
        return values

    return Model(spec=spec, path=path, format="gguf", read_tensor=read_tensor,
                 tokenizer=_load_tokenizer(header.metadata, path, spec.vocab_size, tokenizer),
                 dtypes={c: header.tensors[n].ggml_type.name for c, n in names.items()})


# -- write ------------------------------------------------------------------------------------------

WRITE_TYPES = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16,
               "bf16": GGMLQuantizationType.BF16, "q8_0": GGMLQuantizationType.Q8_0,
               "q4_0": GGMLQuantizationType.Q4_0}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
              "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}


def storage_type(canonical: str, shape: tuple[int, ...], dtype: str) -> GGMLQuantizationType:
    """Vectors (norms, biases) stay F32 as in llama.cpp. In q4_0 files the embedding and classifier
    are Q8_0 (llama.cpp would use Q6_K for the classifier, which the gguf package cannot produce);
    a matrix whose rows are not whole blocks of 32 falls back to F16, as llama-quantize does."""
    chosen = WRITE_TYPES[dtype]
    if len(shape) == 1:
        return GGMLQuantizationType.F32
    if chosen == GGMLQuantizationType.Q4_0 and canonical in ("embed", "output"):
        chosen = GGMLQuantizationType.Q8_0
    block_size = GGML_QUANT_SIZES[chosen][0]
    return chosen if shape[-1] % block_size == 0 else GGMLQuantizationType.F16


def _encode(values: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    return gguf.quants.quantize(np.ascontiguousarray(values, dtype=np.float32), ggml_type)


def write_gguf(model: Model, path: str | os.PathLike, dtype: str = "f32") -> Path:
    """Write `model` as a GGUF file llama.cpp can run (given a tokenizer), one tensor at a time.

    llama / mistral are written as arch "llama" with q/k rows interleaved; qwen2 as "qwen2".
    Llama 3.1 scaling becomes rope_freqs.weight (plus hardwire.rope_scaling.* keys with the exact
    parameters). A sliding window shorter than the context becomes the declared context. The file
    appears at `path` only when complete.
    """
    if dtype not in WRITE_TYPES:
        raise BadConfig(f"expected one of {', '.join(WRITE_TYPES)}, got {dtype!r}", field="dtype")
    spec = model.spec
    arch = ARCH_OF_FAMILY[spec.family]
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    plan = [(gguf_tensor_name(c), c, shape, storage_type(c, shape, dtype))
            for c, shape in spec.tensor_shapes().items()]
    if spec.rope_scaling is not None:
        plan.insert(0, (ROPE_FREQS_TENSOR, None, (spec.head_dim // 2,), GGMLQuantizationType.F32))

    writer = gguf.GGUFWriter(temporary, arch)
    try:
        _add_metadata(writer, spec, dtype)
        if model.tokenizer is not None:     # it also writes the bos/eos ids
            from hardwire.model.tokenizer import add_tokenizer_to_gguf
            add_tokenizer_to_gguf(model.tokenizer, writer)
        else:
            if spec.bos_id is not None:
                writer.add_bos_token_id(spec.bos_id)
            if spec.eos_id is not None:
                writer.add_eos_token_id(spec.eos_id)
        for name, _, shape, ggml_type in plan:
            block_size, type_size = GGML_QUANT_SIZES[ggml_type]
            writer.add_tensor_info(name, shape, np.dtype(np.float32),
                                   math.prod(shape) // block_size * type_size, raw_dtype=ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, canonical, shape, ggml_type in plan:
            if canonical is None:
                values = llama3_rope_factors(spec)
            else:
                values = model.tensor(canonical)
                if arch in PERMUTED_ARCHS:
                    values = reorder_rope_rows(values, canonical, spec, interleaved_from_half_rotary)
            writer.write_tensor_data(_encode(values, ggml_type))
        writer.close()
        os.replace(temporary, path)
    except BaseException:
        writer.close()
        temporary.unlink(missing_ok=True)
        raise
    return path


def _add_metadata(writer: gguf.GGUFWriter, spec: ModelSpec, dtype: str) -> None:
    writer.add_file_type(FILE_TYPES[dtype])
    if dtype in ("q8_0", "q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # GGUF llama/qwen2 have no sliding-window attention; within a context no longer than the
    # window, full attention is the same computation, so that is the context we declare.
    writer.add_context_length(min(spec.max_context, spec.sliding_window or spec.max_context))
    writer.add_embedding_length(spec.hidden_dim)
    writer.add_block_count(spec.layers)
    writer.add_feed_forward_length(spec.ffn_dim)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_key_length(spec.head_dim)
    writer.add_value_length(spec.head_dim)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(spec.norm_eps)
    writer.add_vocab_size(spec.vocab_size)
    if spec.rope_scaling is not None:
        for field, key in ROPE_SCALING_KEYS.items():
            value = getattr(spec.rope_scaling, field)
            if field == "original_max_position":
                writer.add_uint32(key, value)
            else:
                writer.add_float32(key, value)
