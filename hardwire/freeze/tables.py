"""Every integer constant the golden model (and the RTL) reads, built once at freeze time.

`build_tables(spec, die, ranges)` turns the die's float scales, norm weights, biases and the
calibrated activation ranges (`measure_ranges`) into the fixed-point multipliers, shifts and lookup
tables of docs/arithmetic.md §10. It is the only place the datapath's constants come from floats;
after it, the token step is integers only. The freezer stores the result in the die
(`freeze_tables`); `hardwire.golden.tables.tables_for(die)` reads it back.

Names: scalars are 1-element int64 arrays; `{matrix}.mult` [rows, groups] and `{matrix}.shift`
[rows] are the §3 requantization of each matrix; `layers.{i}.{point}.*` the per-layer constants.
"""
from __future__ import annotations

import math

import numpy as np

from hardwire import arithmetic as ar
from hardwire.arithmetic import INTERNAL_BITS, KV_BITS, LOGIT_FRAC_BITS
from hardwire.die import (GOLDEN_TABLES_FILE, TABLES_VERSION, Die, FrozenWeights, float_input_transforms,
                          online_hadamard_block)
from hardwire.formats import ACTIVATION_FORMATS
from hardwire.freeze.calibrate import LayerRunner
from hardwire.model.reference import FloatTransformer, rmsnorm, rope_inverse_frequencies
from hardwire.model.spec import ModelSpec, Weights

RESIDUAL_HEADROOM = 4              # the calibrated residual absmax uses 1/4 of the int32 range
MAX_RESIDUAL_FRAC_BITS = 24
RANGE_STEPS_PER_OCTAVE = 4         # ranges are rounded up to 2^(n/4): a tiny calibration
                                   # difference between machines cannot change a table
# Headroom over the calibrated absmax of each 16-bit internal point (its cost: one bit of 15).
MARGINS = {"q": 2.0, "k": 1.25, "v": 1.25, "gate": 2.0, "up": 2.0}
ATTENTION_INPUTS = ("wq", "wk", "wv")
FFN_INPUTS = ("w_gate", "w_up")


def rounded_range(absmax: float) -> float:
    """absmax rounded up to the grid 2^(n/4) (0 stays 0)."""
    if not absmax > 0:
        return 0.0
    return 2.0 ** (math.ceil(math.log2(absmax) * RANGE_STEPS_PER_OCTAVE) / RANGE_STEPS_PER_OCTAVE)


# -- calibration of the internal points ---------------------------------------------------------

def measure_ranges(model: Weights, sequences) -> dict[str, float]:
    """Absmax of every point of the datapath whose scale the die does not already hold.

    Runs the float reference of `model` (a Model or a Die: anything with `.spec` and `.tensor`)
    over `sequences` (lists of token ids). Keys: `residual`, `{matmul}` (matmul inputs, used when a
    die has no activation scales), and per layer `layers.{i}.q|k|v|gate|up`. For q and k the range
    is the largest RoPE pair norm, which bounds the rotated value at every position."""
    spec = model.spec
    ranges: dict[str, float] = {}

    def record(key: str, value: float) -> None:
        ranges[key] = max(ranges.get(key, 0.0), float(value))

    def pair_norm(x: np.ndarray, heads: int) -> float:
        x = x.reshape(len(x), heads, spec.head_dim)
        half = spec.head_dim // 2
        return float(np.sqrt(x[..., :half] ** 2 + x[..., half:] ** 2).max())

    class Probe(FloatTransformer):
        def linear(self, name, x, capture):
            y = super().linear(name, x, capture)
            record(name, np.abs(x).max())
            prefix, _, short = name.rpartition(".")
            if short in ("wq", "wk", "wv") and spec.qkv_bias:
                y_b = y + self.weights[f"{prefix}.b{short[1]}"]
            else:
                y_b = y
            if short == "wq":
                record(f"{prefix}.q", pair_norm(y_b, spec.heads))
            elif short == "wk":
                record(f"{prefix}.k", pair_norm(y_b, spec.kv_heads))
            elif short == "wv":
                record(f"{prefix}.v", np.abs(y_b).max())
            elif short == "w_gate":
                record(f"{prefix}.gate", np.abs(y).max())
            elif short == "w_up":
                record(f"{prefix}.up", np.abs(y).max())
            return y

    # Layer by layer over all sequences, as the freezer calibrates: memory stays near one layer's
    # weights plus the sequences' residual streams, whatever the model's size.
    capacity = max(len(s) for s in sequences)
    embed = model.tensor("embed")
    streams = [embed[np.asarray(ids, dtype=np.int64)] for ids in sequences]
    del embed
    online = float_input_transforms(model)
    for index in range(spec.layers):
        weights = {f"layers.{index}.{n}": model.tensor(f"layers.{index}.{n}") for n in spec.layer_tensor_shapes()}
        runner = LayerRunner(spec, index, weights, capacity, transformer_class=Probe, input_transforms=online)
        for x in streams:
            record("residual", np.abs(x).max())
        streams = [runner(x) for x in streams]
        for x in streams:
            record("residual", np.abs(x).max())
        del runner, weights
    final_norm = model.tensor("final_norm")
    head = spec.classifier
    for x in streams:
        record(head, np.abs(rmsnorm(x, final_norm, spec.norm_eps)).max())
    return ranges


# -- table construction -------------------------------------------------------------------------

def _scalar(value: int) -> np.ndarray:
    return np.array([int(value)], dtype=np.int64)


def _pair(ratio: float, bits: int = ar.MULTIPLIER_BITS) -> np.ndarray:
    return np.array(ar.fixed_multiplier(ratio, bits), dtype=np.int64)


def activation_format_bits(die: FrozenWeights) -> int:
    info = die.manifest.get("activations") or {}
    return ACTIVATION_FORMATS.get(info.get("format", "int8"), ACTIVATION_FORMATS["int8"])


def input_scale(die_scales: dict[str, float], ranges: dict[str, float], names: list[str], bits: int) -> float:
    """Scale of a matmul input shared by `names`: the die's calibrated scale (the largest among
    matrices reading the same vector), else absmax / (2^(bits-1) - 1) from `ranges`."""
    given = [die_scales[n] for n in names if n in die_scales]
    if given:
        return float(max(given))
    absmax = max(ranges.get(n, 0.0) for n in names)
    if not absmax > 0:
        raise ValueError(f"no activation scale or calibration range for {names[0]}")
    return rounded_range(absmax) / ((1 << (bits - 1)) - 1)


def internal_scale(ranges: dict[str, float], key: str, point: str) -> float:
    absmax = rounded_range(ranges.get(key, 0.0) * MARGINS[point])
    return (absmax if absmax > 0 else 1.0) / ((1 << (INTERNAL_BITS - 1)) - 1)


def _matrix_tables(tables: dict, die, name: str, in_scale: float, out_scale: float,
                   bias: np.ndarray | None = None) -> None:
    """§3 multipliers m_ig * 2^-k_i = s_w[i, g] * s_in / s_out, and the bias in output units."""
    scales = np.asarray(die.quantized(name).scales, dtype=np.float64)
    mult, shift = ar.shared_shift_multipliers(scales * (in_scale / out_scale))
    tables[f"{name}.mult"] = mult
    tables[f"{name}.shift"] = shift
    if bias is not None:
        tables[f"{name}.bias"] = np.rint(np.asarray(bias, dtype=np.float64) / out_scale).astype(np.int64)


def _norm_tables(tables: dict, die, spec: ModelSpec, name: str, out_scale: float) -> None:
    """§4: C_i = g_i * sqrt(dim) / s_out as signed 24-bit multipliers with one shift."""
    ratio = np.asarray(die.tensor(name), dtype=np.float64) * math.sqrt(spec.hidden_dim) / out_scale
    mult, shift = ar.shared_shift_multipliers(np.abs(ratio)[None, :])
    tables[f"{name}.mult"] = (np.sign(ratio) * mult[0]).astype(np.int64)
    tables[f"{name}.shift"] = _scalar(ar.NORM_OUTPUT_FRAC_BITS + shift[0])


def build_tables(spec: ModelSpec, die: FrozenWeights, ranges: dict[str, float],
                 kv_bits: int = KV_BITS) -> dict[str, np.ndarray]:
    """All integer constants of docs/arithmetic.md for `die` (quantized codes + scales + norms) and
    the calibrated `ranges` of `measure_ranges`."""
    if kv_bits not in (8, 16):
        raise ValueError(f"kv_bits must be 8 or 16, got {kv_bits}")
    act_bits = activation_format_bits(die)
    die_scales = die.activation_scales()
    residual_range = rounded_range(ranges["residual"]) * RESIDUAL_HEADROOM
    frac_bits = min(MAX_RESIDUAL_FRAC_BITS, 31 - math.ceil(math.log2(residual_range)))
    residual_scale = 2.0 ** -frac_bits
    logit_scale = 2.0 ** -LOGIT_FRAC_BITS
    eps_base = min(round(spec.hidden_dim * spec.norm_eps / residual_scale ** 2), 1 << 62)
    cos, sin = ar.rope_tables(rope_inverse_frequencies(spec), spec.max_context)
    tables: dict[str, np.ndarray] = {
        "version": _scalar(TABLES_VERSION),
        "activation_bits": _scalar(act_bits),
        "kv_bits": _scalar(kv_bits),
        "residual_frac_bits": _scalar(frac_bits),
        "logit_frac_bits": _scalar(LOGIT_FRAC_BITS),
        "norm_eps": _scalar(max(1, eps_base)),
        "rsqrt_table": ar.rsqrt_table(),
        "reciprocal_table": ar.reciprocal_table(),
        "exp2_table": ar.exp2_table(),
        "sigmoid_table": ar.sigmoid_table(),
        "rope_cos": cos,
        "rope_sin": sin,
    }
    embed = die.quantized("embed")
    mult, shift = ar.shared_shift_multipliers(np.asarray(embed.scales, np.float64) / residual_scale)
    tables["embed.lookup_mult"], tables["embed.lookup_shift"] = mult, shift

    cache_shift = INTERNAL_BITS - kv_bits
    # §12: with the online transform SwiGLU's wide values are H_n x in units of s_down * 2^-8, so x
    # itself is produced in units of sqrt(n) s_down * 2^-8 (the 1/sqrt(n) of Q folded here).
    down_unit = math.sqrt(online_hadamard_block(die.manifest))
    for i in range(spec.layers):
        p = f"layers.{i}."
        attn_in = input_scale(die_scales, ranges, [p + n for n in ATTENTION_INPUTS], act_bits)
        attn_out = input_scale(die_scales, ranges, [p + "wo"], act_bits)
        ffn_in = input_scale(die_scales, ranges, [p + n for n in FFN_INPUTS], act_bits)
        down_in = input_scale(die_scales, ranges, [p + "w_down"], act_bits)
        s = {point: internal_scale(ranges, p + point, point) for point in MARGINS}
        _norm_tables(tables, die, spec, p + "attn_norm", attn_in)
        for short, point in (("wq", "q"), ("wk", "k"), ("wv", "v")):
            bias = die.tensor(f"{p}b{short[1]}") if spec.qkv_bias else None
            _matrix_tables(tables, die, p + short, attn_in, s[point], bias)
        key_cache, value_cache = s["k"] * 2 ** cache_shift, s["v"] * 2 ** cache_shift
        tables[p + "score_mult"] = _pair(s["q"] * key_cache * math.log2(math.e) / math.sqrt(spec.head_dim)
                                         * 2 ** ar.EXP2_FRAC_BITS, ar.SCORE_MULTIPLIER_BITS)
        tables[p + "attention_out_mult"] = _pair(value_cache / (2 ** ar.ATTENTION_AVERAGE_FRAC_BITS * attn_out))
        _matrix_tables(tables, die, p + "wo", attn_out, residual_scale)
        _norm_tables(tables, die, spec, p + "ffn_norm", ffn_in)
        _matrix_tables(tables, die, p + "w_gate", ffn_in, s["gate"])
        _matrix_tables(tables, die, p + "w_up", ffn_in, s["up"])
        tables[p + "sigmoid_index_mult"] = _pair(s["gate"] * (1 << ar.SIGMOID_STEP_BITS))
        tables[p + "swiglu_mult"] = _pair(s["gate"] * s["up"] / (down_in * down_unit))
        _matrix_tables(tables, die, p + "w_down", down_in, residual_scale)

    head = spec.classifier
    final_in = input_scale(die_scales, ranges, [head], act_bits)
    _norm_tables(tables, die, spec, "final_norm", final_in)
    _matrix_tables(tables, die, head, final_in, logit_scale)
    return {k: np.ascontiguousarray(v) for k, v in tables.items()}


# -- stored in the die -------------------------------------------------------------------------

def freeze_tables(writer, spec: ModelSpec, activations: dict, sequences, kv_bits: int = KV_BITS,
                  transforms: dict | None = None) -> dict:
    """For the freezer, before `writer.commit`: builds the tables from the die being written
    (its weight files and `activations.safetensors` must already be written), stores them as
    GOLDEN_TABLES_FILE and returns the manifest entry to add under GOLDEN_TABLES_KEY (both in
    `hardwire.die`).

    `activations` is the manifest's "activations" entry; `sequences` the calibration token ids;
    `transforms` the manifest's "transforms" entry (the online ones change the tables and the
    float reference that calibrates them)."""
    view = Die(writer.partial, {"spec": spec.to_dict(), "tensors": writer.tensors, "activations": activations,
                                **({"transforms": transforms} if transforms else {})})
    tables = build_tables(spec, view, measure_ranges(view, sequences), kv_bits=kv_bits)
    writer.write_arrays(GOLDEN_TABLES_FILE, tables)
    return {"file": GOLDEN_TABLES_FILE, "version": TABLES_VERSION, "kv_bits": kv_bits}
