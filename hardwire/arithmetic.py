"""The integer arithmetic of the chip's datapath: every width, every primitive, every table
(docs/arithmetic.md).

This is the one definition the golden model (`hardwire.golden`), the table builder
(`hardwire.freeze.tables`) and the Verilog generator (`hardwire.rtl`) all import, so a width
cannot differ between them. Every function here is one block of the datapath, named after it,
with the widths of docs/arithmetic.md. The `@njit` functions are the integer arithmetic itself
(they run inside the golden token step and take and return only integers); the `*_table` and
`fixed_multiplier` functions run once, at freeze time, and are the only place a float becomes an
integer constant.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# §2.1 Points of the datapath
RESIDUAL_BITS = 32                  # the residual stream h, the logits, the wo / w_down outputs
INTERNAL_BITS = 16                  # q, k, v, gate, up (§5–§7)
KV_BITS = 16                        # default KV-cache width (§6.1); 8 halves the SRAM, costs quality
LOGIT_FRAC_BITS = 12                # logits are int32 in units of 2^-12 (§9)

# §1 Fixed-point multipliers: a positive real r becomes (m, k) with r ~= m * 2^-k and
# m in [2^(bits-1), 2^bits]. Most sites use 23-bit multipliers (relative error <= 2^-23).
MULTIPLIER_BITS = 23
SCORE_MULTIPLIER_BITS = 15          # §6: scores reach 40 bits, so the multiplier is kept at 15

# §4 RMSNorm
NORM_INPUT_BITS = 23                # residual values are pre-shifted to fit 23 bits (+ sign)
NORM_OUTPUT_FRAC_BITS = 23          # h / rms in Q0.23
RSQRT_TABLE_SIZE = 192              # indexed by the top bits of a 16-bit normalised mantissa
RECIPROCAL_TABLE_SIZE = 256

# §5 RoPE
ROPE_FRAC_BITS = 14                 # cos, sin in Q1.14 (int16)

# §6 Softmax: exponents in Q.8 of log2 units, exp2 of the fraction from a 256-entry Q0.15 table
EXP2_FRAC_BITS = 8
EXP2_ONE = 1 << 15
EXP2_TABLE_SIZE = 1 << EXP2_FRAC_BITS
EXP2_MAX_SHIFT = 16                 # 2^-16 * 2^15 < 1: such a weight is 0
RECIPROCAL_FRAC_BITS = 39           # §6.3 the reciprocal of the weight sum is r * 2^-(39 + n)
ATTENTION_AVERAGE_FRAC_BITS = 8     # the softmax-weighted average of V keeps 8 extra bits

# §7 SiLU: sigmoid sampled every 2^-6 on [-16, 16), Q0.15 values
SIGMOID_STEP_BITS = 6
SIGMOID_RANGE = 16
SIGMOID_TABLE_SIZE = 2 * SIGMOID_RANGE << SIGMOID_STEP_BITS
SIGMOID_FRAC_BITS = 15              # sigmoid values in Q0.15
SIGMOID_ONE = 1 << SIGMOID_FRAC_BITS

# §2.2 Token scale: matmul inputs are produced with TOKEN_FRAC_BITS extra fraction bits below
# their calibrated scale s, then rounded to the activation width with the finest step
# (mu / 8) * 2^-e * s, mu in [8, 16), e in [0, 8], at which this token's largest value fits.
TOKEN_FRAC_BITS = 8
TOKEN_MANTISSA_BITS = 3
TOKEN_MAX_EXPONENT = 8
TOKEN_RECIPROCAL_BITS = 16
TOKEN_RECIPROCALS = np.array([round((1 << TOKEN_RECIPROCAL_BITS) / mu) for mu in range(8, 16)], dtype=np.int64)
TOKEN_CLAMP_BITS = 9                # |w| >= 2^(bits + 9) saturates at every step: w is clamped there
TOKEN_GUARD_BITS = 7                # §3.2 extra fraction bits kept before the mantissa multiply
TOKEN_PRODUCT_LIMIT_BITS = 59

# §12 Online Walsh–Hadamard transform: block-diagonal, blocks of the largest power of two dividing
# the vector's width, at most HADAMARD_MAX_BLOCK (the RTL transforms one block a cycle, so the
# block sets the butterfly count: (n/2) log2 n; 256 covers every FFN width of the Llama family's
# power-of-two factor that matters, 14336 = 2^11 * 7 and 11008 = 2^8 * 43, at 1024 butterflies).
HADAMARD_MAX_BLOCK = 256

# -- §1 integer primitives -----------------------------------------------------------------------

@njit(cache=True, nogil=True)
def rshift_round(x, shift):
    """x * 2^-shift rounded half up (add half, arithmetic shift); a left shift when shift <= 0."""
    x = np.int64(x)
    if shift > 0:
        return (x + (np.int64(1) << (shift - 1))) >> shift
    return x << (-shift)


@njit(cache=True, nogil=True)
def saturate(x, bits):
    """Clamp to the symmetric signed range [-(2^(bits-1) - 1), 2^(bits-1) - 1]."""
    limit = (np.int64(1) << (bits - 1)) - 1
    if x > limit:
        return limit
    if x < -limit:
        return -limit
    return np.int64(x)


@njit(cache=True, nogil=True)
def token_quantize(wide, bits, out):
    """§2.2 wide: values in units of s * 2^-8. Picks the smallest step mu * 2^(5 - e) (in those
    units; mu in [8, 16), e in [8..0]) with round(max|wide| / step) <= 2^(bits-1) - 1, division by
    mu through a 16-bit reciprocal; writes out = sat(round(wide * R[mu] * 2^-(21 - e))) and
    returns (mu, e)."""
    # |w| >= 2^(bits+9) saturates at every step (|w| R[mu] 2^-(21-e) >= 2.1 * 2^(bits-1)), and a largest
    # value that large fits no step: clamping there first changes no result and keeps every product
    # within int64 (and the hardware's products narrow).
    clamp = np.int64(1) << (bits + TOKEN_CLAMP_BITS)
    largest = np.int64(0)
    for i in range(wide.size):
        largest = max(largest, abs(wide[i]))
    largest = min(largest, clamp)
    limit = (np.int64(1) << (bits - 1)) - 1
    shift_base = TOKEN_RECIPROCAL_BITS + TOKEN_FRAC_BITS - TOKEN_MANTISSA_BITS
    mu, e = np.int64(15), np.int64(0)
    for candidate_e in range(TOKEN_MAX_EXPONENT, -1, -1):
        found = False
        for candidate_mu in range(8, 16):
            if rshift_round(largest * TOKEN_RECIPROCALS[candidate_mu - 8], shift_base - candidate_e) <= limit:
                mu, e, found = np.int64(candidate_mu), np.int64(candidate_e), True
                break
        if found:
            break
    reciprocal_mu = TOKEN_RECIPROCALS[mu - 8]
    for i in range(wide.size):
        w = min(max(wide[i], -clamp), clamp)
        out[i] = saturate(rshift_round(w * reciprocal_mu, shift_base - e), bits)
    return mu, e


@njit(cache=True, nogil=True)
def bit_length(v):
    """Position of the leading one of v >= 0 (0 for 0): a leading-zero counter in hardware."""
    v = np.int64(v)
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


@njit(cache=True, nogil=True)
def rsqrt(v, table):
    """§4.2 Reciprocal square root of v >= 1: returns (y, t) with 1/sqrt(v) ~= y * 2^-(30 + t).

    v is normalised by an even shift to m in [2^14, 2^16), a 192-entry table gives 2^30/sqrt(m)
    to ~0.4 %, one Newton step y(3 - m y^2)/2 brings it to < 3e-5."""
    t = (bit_length(v) - 15) >> 1
    m = np.int64(v) >> (2 * t) if t >= 0 else np.int64(v) << (-2 * t)
    y = np.int64(table[(m >> 8) - 64])
    p = (y * y) >> 15
    e = (np.int64(3) << 45) - m * p
    y = (y * (e >> 16)) >> 30
    return y, t


@njit(cache=True, nogil=True)
def reciprocal(v, table):
    """§6.3 Reciprocal of v >= 2^15: returns (r, n) with 1/v ~= r * 2^-(39 + n).

    v = m * 2^n with m in [2^15, 2^16); a 256-entry table gives 2^39/m, one Newton step
    r(2 - m r) refines it."""
    n = bit_length(v) - 16
    m = np.int64(v) >> n
    r = np.int64(table[(m >> 7) - 256])
    e = (np.int64(1) << 40) - m * r
    r = (r * (e >> 8)) >> 31
    return r, n


@njit(cache=True, nogil=True)
def exp2_negative(d, table):
    """§6.2 2^(-d / 2^8) * 2^15 for d >= 0 (Q.8 log2 units): table of the fraction, shift of the
    integer part; 0 once the shift reaches 16."""
    whole = d >> EXP2_FRAC_BITS
    if whole >= EXP2_MAX_SHIFT:
        return np.int64(0)
    return np.int64(table[d & (EXP2_TABLE_SIZE - 1)]) >> whole


@njit(cache=True, nogil=True)
def sigmoid_lookup(index, table):
    """§7 sigmoid of index * 2^-6, clamped to the table's [-16, 16) range, in Q0.15."""
    half = SIGMOID_TABLE_SIZE // 2
    if index < -half:
        index = -half
    elif index > half - 1:
        index = half - 1
    return np.int64(table[index + half])


@njit(cache=True, nogil=True)
def hadamard_butterflies(values, block):
    """§12 values <- H_n values for each block of n = `block` consecutive entries, in place (Sylvester
    order, no normalisation): log2 n stages of (a, b) -> (a + b, a - b) on pairs `half` apart.
    Exact: each stage adds one bit to the largest magnitude."""
    half = 1
    while half < block:
        for start in range(0, values.size, 2 * half):
            for i in range(start, start + half):
                a, b = values[i], values[i + half]
                values[i], values[i + half] = a + b, a - b
        half *= 2


def hadamard_input_bits(bits: int) -> int:
    """§12 Signed width of the transform's inputs: SwiGLU's wide values clamped to ±2^(bits+9)
    (the token quantizer's clamp, §2.2), bits + 11."""
    return bits + TOKEN_CLAMP_BITS + 2


def hadamard_output_bits(bits: int, block: int) -> int:
    """§12 Signed width after log2(block) stages: |v| <= n 2^(bits+9), one bit more per stage."""
    return hadamard_input_bits(bits) + (block.bit_length() - 1)


def hadamard_block(width: int) -> int:
    """§12 The block n of the online transform of a `width`-vector: its largest power-of-two
    factor, at most HADAMARD_MAX_BLOCK (1 for an odd width: no transform)."""
    return min(width & -width, HADAMARD_MAX_BLOCK)


def hadamard_orthonormal(x: np.ndarray, block: int) -> np.ndarray:
    """§12 The float transform Q x along the last axis (Q = H_n / sqrt(n) per block: orthonormal
    and symmetric, so Q Q = I): the offline fold into weights and the float reference of a die."""
    x = np.asarray(x)
    wide = np.array(x, dtype=np.float64).reshape(-1)
    hadamard_butterflies(wide, block)                # float butterflies: the same stages as the integers
    return (wide.reshape(x.shape) / math.sqrt(block)).astype(x.dtype if x.dtype.kind == "f" else np.float64)


# -- freeze-time constants (the only floats) ----------------------------------------------------

def fixed_multiplier(ratio: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """(m, k) with m * 2^-k the nearest such value to `ratio` >= 0, m in [2^(bits-1), 2^bits]
    (m = k = 0 for ratio 0). Exact float64 arithmetic, so the same on every IEEE machine."""
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"a multiplier must be finite and >= 0, got {ratio}")
    if ratio == 0:
        return 0, 0
    _, exponent = math.frexp(ratio)                 # ratio = f * 2^exponent, f in [0.5, 1)
    shift = bits - exponent
    return int(round(math.ldexp(ratio, shift))), shift


def shared_shift_multipliers(ratios: np.ndarray, bits: int = MULTIPLIER_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `ratios` [rows, groups] one shift and a multiplier per group: the row's largest
    ratio gets a `bits`-bit multiplier, the others share its shift. Returns (m [rows, groups]
    int64, k [rows] int64)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    largest = ratios.max(axis=1)
    shifts = np.zeros(len(ratios), dtype=np.int64)
    positive = largest > 0
    _, exponents = np.frexp(largest[positive])
    shifts[positive] = bits - exponents
    multipliers = np.rint(np.ldexp(ratios, shifts[:, None].astype(np.int32))).astype(np.int64)
    return multipliers, shifts


def rsqrt_table() -> np.ndarray:
    """2^30 / sqrt(m) at the midpoint of each 256-wide mantissa interval, m in [2^14, 2^16)."""
    midpoints = (np.arange(RSQRT_TABLE_SIZE, dtype=np.float64) + 64.5) * 256
    return np.rint(2.0 ** 30 / np.sqrt(midpoints)).astype(np.int32)


def reciprocal_table() -> np.ndarray:
    """2^39 / m at the midpoint of each 128-wide mantissa interval, m in [2^15, 2^16)."""
    midpoints = (np.arange(RECIPROCAL_TABLE_SIZE, dtype=np.float64) + 256.5) * 128
    return np.rint(2.0 ** 39 / midpoints).astype(np.int32)


def exp2_table() -> np.ndarray:
    """2^15 * 2^(-f/256) for f in [0, 256)."""
    f = np.arange(EXP2_TABLE_SIZE, dtype=np.float64)
    return np.rint(EXP2_ONE * np.exp2(-f / EXP2_TABLE_SIZE)).astype(np.int32)


def sigmoid_table() -> np.ndarray:
    """2^15 * sigmoid(x) for x = i * 2^-6, i in [-1024, 1024)."""
    half = SIGMOID_TABLE_SIZE // 2
    x = np.arange(-half, half, dtype=np.float64) / (1 << SIGMOID_STEP_BITS)
    return np.rint(SIGMOID_ONE / (1.0 + np.exp(-x))).astype(np.int32)


def rope_tables(inverse_frequencies: np.ndarray, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [positions, head_dim/2] in Q1.14 (int16) of the angles p * f, f the model's
    RoPE inverse frequencies (`hardwire.model.reference.rope_inverse_frequencies`), in float64."""
    angles = np.outer(np.arange(positions, dtype=np.float64), inverse_frequencies)
    one = 1 << ROPE_FRAC_BITS
    return (np.rint(np.cos(angles) * one).astype(np.int16), np.rint(np.sin(angles) * one).astype(np.int16))
