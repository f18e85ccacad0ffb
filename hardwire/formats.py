"""Number formats a die stores (the die's vocabulary: written by freeze, read by `hardwire.die`):
integer weight codes, their scales, and activation formats.

A weight matrix W [rows=out, cols=in] is cut into groups of `group` consecutive input columns in
each row (per-output-channel when `group` is None: one group per row). Each group has one scale
(and, when asymmetric, one zero point); a weight is stored as a signed `bits`-bit code and means

    w = (code - zero) * scale          (zero = 0 when symmetric)

exactly, in float32. Scales are themselves stored in a stated format (the chip holds them too):

- `fp16`  IEEE binary16 (16 bits per group)
- `bf16`  bfloat16 (16 bits per group)
- `e4m4`  an unsigned 8-bit small float, value = (1 + m/16) * 2^(e - 15) * tensor_multiplier,
          e = code >> 4, m = code & 15, with one float32 `tensor_multiplier` per tensor.

Every stored scale is rounded *up* to the next representable value, so no code ever clips and
round-to-nearest keeps |w - w_hat| <= scale / 2.

Codes (and zero points) are packed into a little-endian bit stream: value k occupies bits
[k*bits, (k+1)*bits) counting from bit 0 of byte 0, two's complement, row-major. See
docs/die-format.md.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from hardwire.errors import BadPlan

WEIGHT_BITS = range(2, 9)
GROUP_SIZES = range(16, 257)
SCALE_FORMATS = ("fp16", "bf16", "e4m4")
ACTIVATION_FORMATS = {"int8": 8, "int16": 16}

_PACK_CHUNK = 1 << 20          # values packed per step (a multiple of 8 keeps chunks byte aligned)


# -- scale formats -------------------------------------------------------------------------------

def scale_bits(scale_format: str) -> int:
    return 8 if scale_format == "e4m4" else 16


def _e4m4_decode(codes: np.ndarray, multiplier: np.float32) -> np.ndarray:
    exponent = (codes >> 4).astype(np.int32) - 15
    mantissa = (codes & 15).astype(np.float32)
    return (np.float32(1) + mantissa / np.float32(16)) * np.ldexp(np.float32(1), exponent).astype(np.float32) \
        * np.float32(multiplier)


def _e4m4_encode_nearest(ratio: np.ndarray) -> np.ndarray:
    """ratio = scale / multiplier in (0, 1.9375]; returns codes, nearest in the linear domain."""
    safe = np.maximum(ratio, np.float32(2.0 ** -15))
    exponent = np.clip(np.floor(np.log2(safe)), -15, 0).astype(np.int32)
    mantissa = np.rint((safe / np.ldexp(1.0, exponent) - 1) * 16).astype(np.int32)
    carry = mantissa >= 16
    exponent, mantissa = exponent + carry, np.where(carry, 0, mantissa)
    over = exponent > 0
    exponent, mantissa = np.where(over, 0, exponent), np.where(over, 15, np.clip(mantissa, 0, 15))
    return ((exponent + 15) << 4 | mantissa).astype(np.uint8)


def encode_scales(scales: np.ndarray, scale_format: str,
                  multiplier: float | None = None) -> tuple[np.ndarray, np.float32 | None]:
    """Stored form of non-negative float scales, each rounded up to a representable value.

    Returns (stored array, tensor multiplier or None). e4m4 takes the multiplier given (GPTQ fixes
    it before the last group is known) or else the largest scale. Zero scales (all-zero groups)
    stay zero for fp16/bf16 and become the smallest e4m4 value."""
    scales = np.ascontiguousarray(scales, dtype=np.float32)
    if scale_format == "fp16":
        stored = scales.astype(np.float16)
        low = stored.astype(np.float32) < scales
        stored[low] = np.nextafter(stored[low], np.float16(np.inf))
        return stored, None
    if scale_format == "bf16":
        bits = (scales.view(np.uint32) >> 16).astype(np.uint16)   # truncation: never above
        low = (bits.astype(np.uint32) << 16).view(np.float32) < scales
        return np.where(low, bits + np.uint16(1), bits).astype(np.uint16), None
    if scale_format == "e4m4":
        if multiplier is None:
            largest = float(scales.max()) if scales.size else 0.0
            multiplier = largest if largest > 0 else 1.0
        multiplier = np.float32(multiplier)
        codes = _e4m4_encode_nearest(scales / multiplier)
        low = (_e4m4_decode(codes, multiplier) < scales) & (codes < 0xFF)
        return np.where(low, codes + np.uint8(1), codes).astype(np.uint8), multiplier
    raise BadPlan(f"unknown scale format {scale_format!r}; expected one of {', '.join(SCALE_FORMATS)}")


def decode_scales(stored: np.ndarray, scale_format: str, multiplier=None) -> np.ndarray:
    """Float32 value of stored scales (what the dequantized weight multiplies by)."""
    if scale_format == "fp16":
        return stored.astype(np.float32)
    if scale_format == "bf16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    if scale_format == "e4m4":
        return _e4m4_decode(stored, np.float32(multiplier))
    raise BadPlan(f"unknown scale format {scale_format!r}; expected one of {', '.join(SCALE_FORMATS)}")


# -- weight formats ------------------------------------------------------------------------------

FORMAT_PATTERN = re.compile(r"^w?(?P<bits>\d+)(?:g(?P<group>\d+))?(?P<asym>a)?(?:-(?P<scale>[a-z0-9]+))?$")


@dataclass(frozen=True)
class WeightFormat:
    bits: int                     # code width, 2..8, signed two's complement
    group: int | None = None      # input columns per scale; None = one scale per output row
    symmetric: bool = True        # False: a `bits`-bit zero point per group
    scale_format: str = "fp16"    # fp16 | bf16 | e4m4

    def __post_init__(self):
        if self.bits not in WEIGHT_BITS:
            raise BadPlan(f"weight bits must be in 2..8, got {self.bits}")
        if self.group is not None and self.group not in GROUP_SIZES:
            raise BadPlan(f"group size must be in 16..256 (or omitted for per-channel scales), got {self.group}")
        if self.scale_format not in SCALE_FORMATS:
            raise BadPlan(f"unknown scale format {self.scale_format!r}; expected one of {', '.join(SCALE_FORMATS)}")

    @classmethod
    def parse(cls, text: str) -> "WeightFormat":
        """`w4`, `w4g32`, `w3g32a` (asymmetric), `w3g64-e4m4` (8-bit scales); the leading w is optional."""
        match = FORMAT_PATTERN.match(text.strip())
        if not match:
            raise BadPlan(f"cannot read weight format {text!r}; expected w<bits>[g<group>][a][-<scale format>], "
                          f"e.g. w8, w4g32, w3g32a, w3g64-e4m4")
        group = match["group"]
        return cls(bits=int(match["bits"]), group=int(group) if group else None,
                   symmetric=match["asym"] is None, scale_format=match["scale"] or "fp16")

    @property
    def name(self) -> str:
        return (f"w{self.bits}" + (f"g{self.group}" if self.group else "") + ("" if self.symmetric else "a")
                + ("" if self.scale_format == "fp16" else f"-{self.scale_format}"))

    @property
    def code_min(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def code_max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def groups(self, cols: int) -> int:
        return 1 if self.group is None else -(-cols // self.group)

    def group_width(self, cols: int) -> int:
        return cols if self.group is None else self.group

    def storage_bits(self, shape: tuple[int, int]) -> int:
        """ROM bits for a matrix of this shape: codes, scales, zero points, multiplier."""
        rows, cols = shape
        groups = rows * self.groups(cols)
        bits = rows * cols * self.bits + groups * scale_bits(self.scale_format)
        if not self.symmetric:
            bits += groups * self.bits
        if self.scale_format == "e4m4":
            bits += 32
        return bits

    def to_dict(self) -> dict:
        return {"name": self.name, "bits": self.bits, "group": self.group, "symmetric": self.symmetric,
                "scale_format": self.scale_format, "scale_bits": scale_bits(self.scale_format)}


@dataclass
class QuantizedTensor:
    """A matrix in a weight format. Unpacked here; packed only on disk."""

    format: WeightFormat
    codes: np.ndarray              # int8 [rows, cols], in [code_min, code_max]
    stored_scales: np.ndarray      # [rows, groups]: float16 | uint16 (bf16 bits) | uint8 (e4m4)
    scale_multiplier: float | None # float32 per tensor (e4m4 only)
    zeros: np.ndarray | None       # int8 [rows, groups] zero points (asymmetric only)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    @property
    def scales(self) -> np.ndarray:
        """float32 [rows, groups]: the exact values the codes are multiplied by."""
        return decode_scales(self.stored_scales, self.format.scale_format, self.scale_multiplier)

    def dequantize(self) -> np.ndarray:
        rows, cols = self.shape
        width = self.format.group_width(cols)
        codes = self.codes.astype(np.float32)
        if self.zeros is not None:
            codes = codes - expand_groups(self.zeros.astype(np.float32), width, cols)
        return codes * expand_groups(self.scales, width, cols)

    def storage_bits(self) -> int:
        return self.format.storage_bits(self.shape)


def expand_groups(per_group: np.ndarray, width: int, cols: int) -> np.ndarray:
    """[rows, groups] -> [rows, cols]: each group's value under each of its `width` columns."""
    return np.repeat(per_group, width, axis=1)[:, :cols]


def group_view(weight: np.ndarray, width: int) -> np.ndarray:
    """[rows, groups, width] view of a matrix, the last group zero-padded."""
    rows, cols = weight.shape
    groups = -(-cols // width)
    if groups * width != cols:
        padded = np.zeros((rows, groups * width), dtype=weight.dtype)
        padded[:, :cols] = weight
        weight = padded
    return weight.reshape(rows, groups, width)


def ideal_scales(groups: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray | None]:
    """Unrounded scale (and the group minimum, for asymmetric) of each group [..., width]."""
    if fmt.symmetric:
        return np.max(np.abs(groups), axis=-1) / np.float32(fmt.code_max), None
    low = np.minimum(groups.min(axis=-1), 0)
    high = np.maximum(groups.max(axis=-1), 0)
    return (high - low) / np.float32((1 << fmt.bits) - 1), low


def zero_points(low: np.ndarray, scales: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    safe = np.where(scales > 0, scales, 1)
    return np.clip(np.rint(fmt.code_min - low / safe), fmt.code_min, fmt.code_max).astype(np.int8)


def quantize_values(values: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None,
                    fmt: WeightFormat) -> np.ndarray:
    """Nearest code for each value under given (stored) scales; broadcasting shapes."""
    safe = np.where(scales > 0, scales, np.float32(np.inf))
    codes = np.rint(values / safe)
    if zeros is not None:
        codes = codes + zeros
    return np.clip(codes, fmt.code_min, fmt.code_max).astype(np.int8)


# -- packing -------------------------------------------------------------------------------------

def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Signed `bits`-bit values -> uint8 bit stream (little-endian bit order, two's complement)."""
    flat = np.ascontiguousarray(codes).reshape(-1)
    if bits == 8:
        return flat.astype(np.int8).view(np.uint8).copy()
    mask = np.uint8((1 << bits) - 1)
    out = np.empty(math.ceil(flat.size * bits / 8), dtype=np.uint8)
    for start in range(0, flat.size, _PACK_CHUNK):
        chunk = flat[start:start + _PACK_CHUNK].astype(np.int8).view(np.uint8) & mask
        stream = np.unpackbits(chunk[:, None], axis=1, bitorder="little")[:, :bits].reshape(-1)
        packed = np.packbits(stream, bitorder="little")
        offset = start * bits // 8
        out[offset:offset + packed.size] = packed
    return out


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_codes`: int8 [count]."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size != math.ceil(count * bits / 8):
        raise ValueError(f"{packed.size} bytes cannot hold exactly {count} {bits}-bit values")
    if bits == 8:
        return packed.view(np.int8).copy()
    out = np.empty(count, dtype=np.int8)
    weights = (1 << np.arange(bits, dtype=np.int16)).astype(np.int16)
    sign = np.int16(1 << (bits - 1))
    for start in range(0, count, _PACK_CHUNK):
        n = min(_PACK_CHUNK, count - start)
        first = start * bits // 8
        stream = np.unpackbits(packed[first:first + math.ceil(n * bits / 8)], bitorder="little")
        values = stream[:n * bits].reshape(n, bits).astype(np.int16) @ weights
        out[start:start + n] = np.where(values >= sign, values - 2 * sign, values).astype(np.int8)
    return out


# -- activation formats --------------------------------------------------------------------------

def activation_bits(name: str) -> int:
    if name not in ACTIVATION_FORMATS:
        raise BadPlan(f"unknown activation format {name!r}; expected one of {', '.join(ACTIVATION_FORMATS)}")
    return ACTIVATION_FORMATS[name]


def activation_scale(absmax: float, name: str) -> float:
    """Per-tensor symmetric scale: absmax maps to the largest code (127 for int8)."""
    largest = (1 << (activation_bits(name) - 1)) - 1
    return float(np.float32(absmax / largest)) if absmax > 0 else 1.0


def fake_quantize_activations(x: np.ndarray, scale: float, name: str) -> np.ndarray:
    """x rounded to the activation grid (saturating), back in float: what the datapath sees."""
    largest = (1 << (activation_bits(name) - 1)) - 1
    s = np.float32(scale)
    return np.clip(np.rint(x / s), -largest, largest).astype(np.float32) * s
