"""§3 matvec: weight codes times an integer activation vector, exact, then requantized.

For speed on a CPU the die's codes are repacked once at load into the layout the kernel streams:
each row is cut into its scale groups (one group per row for per-channel scales), each group
zero-padded to an even width W. Codes of <= 4 bits are stored as unsigned nibbles u = code + 8,
two per byte, byte j of a group holding columns j (low nibble) and j + W/2 (high nibble), so both
halves read the activation vector contiguously and the unpacking (mask, shift) vectorises.
Wider codes are stored as int8. The offset of 8 and any zero point are removed exactly, once
per group, through the group's activation sum (sum u x - (8 + z) sum x).

The packing is a software detail; the arithmetic (docs/arithmetic.md §3) is the die's codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import get_num_threads, njit, prange

from hardwire.arithmetic import TOKEN_GUARD_BITS, TOKEN_MANTISSA_BITS, TOKEN_PRODUCT_LIMIT_BITS, rshift_round, saturate

NIBBLE_OFFSET = 8
PARALLEL_MIN_WEIGHTS = 1 << 18


@dataclass
class PackedMatrix:
    """A weight matrix ready for `matvec` (rows may be several matrices stacked, e.g. q|k|v)."""

    rows: int
    cols: int
    group: int               # the die's group width (cols for per-channel scales)
    group_width: int         # W, even; columns of x the kernel reads = groups * W
    groups: int
    nibbles: bool
    data: np.ndarray         # [rows, groups * bytes per group]: uint8 nibble pairs, or int8 codes
    offset: int              # subtracted from every code: 8 for nibbles, else 0
    zeros: np.ndarray        # int16 [rows, groups] zero points ([0, 0] when symmetric)
    multipliers: np.ndarray  # int32 [rows, groups]   (§3 m_{i,g}, 23 bits)
    shifts: np.ndarray       # int64 [rows]           (§3 k_i)
    bias: np.ndarray         # int64 [rows], in the output's integer scale (0 without bias)

    @property
    def padded_cols(self) -> int:
        return self.groups * self.group_width

    @property
    def bytes(self) -> int:
        """Bytes a matvec streams: codes, multipliers, zero points."""
        return int(self.data.nbytes + self.multipliers.nbytes + self.zeros.nbytes)


def pack_matrix(codes: np.ndarray, zeros: np.ndarray | None, bits: int, group: int | None,
                multipliers: np.ndarray, shifts: np.ndarray, bias: np.ndarray | None = None) -> PackedMatrix:
    """Repack signed codes [rows, cols] (and zero points [rows, groups]) for `matvec`."""
    rows, cols = codes.shape
    width = cols if group is None else group
    groups = -(-cols // width)
    width += width % 2
    padded = np.zeros((rows, groups, width), dtype=np.int16)
    flat = padded.reshape(rows, groups * width)
    if group is None:
        flat[:, :cols] = codes
    else:
        for g in range(groups):
            part = codes[:, g * group:(g + 1) * group]
            padded[:, g, :part.shape[1]] = part
    zero_points = np.zeros((0, 0), dtype=np.int16) if zeros is None else zeros.astype(np.int16)
    nibbles = bits <= 4
    if nibbles:
        unsigned = (padded + NIBBLE_OFFSET).astype(np.uint8)
        half = width // 2
        data = (unsigned[:, :, :half] | (unsigned[:, :, half:] << 4)).reshape(rows, groups * half)
    else:
        data = padded.astype(np.int8).reshape(rows, groups * width)
    bias = np.zeros(rows, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    return PackedMatrix(rows, cols, cols if group is None else group, width, groups, nibbles,
                        np.ascontiguousarray(data), NIBBLE_OFFSET if nibbles else 0, zero_points,
                        np.ascontiguousarray(multipliers, dtype=np.int32),
                        np.ascontiguousarray(shifts, dtype=np.int64), bias)


def stack(matrices: list[PackedMatrix]) -> PackedMatrix:
    """One matrix whose rows are those of `matrices` (same input, same packing)."""
    first = matrices[0]
    assert can_stack(matrices)
    return PackedMatrix(sum(m.rows for m in matrices), first.cols, first.group, first.group_width, first.groups, first.nibbles,
                        np.concatenate([m.data for m in matrices]), first.offset,
                        np.concatenate([m.zeros for m in matrices]),
                        np.concatenate([m.multipliers for m in matrices]),
                        np.concatenate([m.shifts for m in matrices]), np.concatenate([m.bias for m in matrices]))


def can_stack(matrices: list[PackedMatrix]) -> bool:
    first = matrices[0]
    return all((m.cols, m.group_width, m.groups, m.nibbles, m.zeros.shape[1]) ==
               (first.cols, first.group_width, first.groups, first.nibbles, first.zeros.shape[1]) for m in matrices)


@njit(cache=True, nogil=True, inline="always")
def _dot_bytes(w, w_start, x, x_start, count):
    # w is int8 (a uint8 -> int8 conversion in the loop stops LLVM vectorising), and the explicit
    # int32 truncations let it use vpmaddwd (numba would otherwise widen every term to int64).
    # Unsigned indices: numba wraps negative indices, and that check stops vectorisation.
    w_start, x_start = np.uint64(w_start), np.uint64(x_start)
    s32 = np.int32(0)
    for j in range(np.uint64(count)):
        s32 = np.int32(s32 + np.int32(np.int32(w[w_start + j]) * np.int32(x[x_start + j])))
    return np.int64(s32)


@njit(cache=True, nogil=True, inline="always")
def _dot_nibbles(w, w_start, x, low_start, high_start, count):
    w_start, low_start, high_start = np.uint64(w_start), np.uint64(low_start), np.uint64(high_start)
    s32 = np.int32(0)
    for j in range(np.uint64(count)):
        b = np.int32(w[w_start + j])
        s32 = np.int32(s32 + np.int32(np.int32(b & 15) * np.int32(x[low_start + j]))
                       + np.int32(np.int32(b >> 4) * np.int32(x[high_start + j])))
    return np.int64(s32)


@njit(cache=True, nogil=True, inline="always")
def _dot_wide(w, w_start, x, x_start, count, nibbles):
    """The same sums in int64, for activations too wide for int32 partial sums."""
    s = np.int64(0)
    for j in range(count):
        if nibbles:
            b = np.int64(np.uint8(w[w_start + j]))
            s += (b & 15) * np.int64(x[x_start + j]) + (b >> 4) * np.int64(x[x_start + count + j])
        else:
            s += np.int64(w[w_start + j]) * np.int64(x[x_start + j])
    return s


@njit(cache=True, nogil=True, inline="always")
def _requantize(acc, shift, mantissa, exponent, bias, out_bits):
    guarded = saturate(rshift_round(acc, shift + exponent - TOKEN_GUARD_BITS), TOKEN_PRODUCT_LIMIT_BITS)
    return saturate(rshift_round(guarded * mantissa, TOKEN_GUARD_BITS + TOKEN_MANTISSA_BITS) + bias, out_bits)


# Three loops rather than one with branches inside: a branch around the dot products (nibbles or
# bytes, int32 or int64 partial sums), or a trip count computed here with `//`, a
# conditional expression in the row loop, makes LLVM give
# up vectorising them (~30x slower); the caller passes every count.
def _rows_bytes(x, corrections, data, width, multipliers, out):
    stride = min(corrections.shape[0] - 1, 1)   # 0: one correction row shared by all rows, else 1
    for i in prange(data.shape[0]):
        row = data[i]
        c = i * stride
        acc = np.int64(0)
        for g in range(multipliers.shape[1]):
            acc += np.int64(multipliers[i, g]) * (_dot_bytes(row, g * width, x, g * width, width) - corrections[c, g])
        out[i] = acc


def _rows_nibbles(x, corrections, data, width, half, multipliers, out):
    stride = min(corrections.shape[0] - 1, 1)   # 0: one correction row shared by all rows, else 1
    for i in prange(data.shape[0]):
        row = data[i]
        c = i * stride
        acc = np.int64(0)
        for g in range(multipliers.shape[1]):
            partial = _dot_nibbles(row, g * half, x, g * width, g * width + half, half)
            acc += np.int64(multipliers[i, g]) * (partial - corrections[c, g])
        out[i] = acc


def _rows_wide(x, corrections, data, width, count, nibbles, multipliers, out):
    stride = min(corrections.shape[0] - 1, 1)   # 0: one correction row shared by all rows, else 1
    for i in prange(data.shape[0]):
        row = data[i]
        c = i * stride
        acc = np.int64(0)
        for g in range(multipliers.shape[1]):
            partial = _dot_wide(row, g * count, x, g * width, count, nibbles)
            acc += np.int64(multipliers[i, g]) * (partial - corrections[c, g])
        out[i] = acc


# The same sums for several users' vectors xs [users, cols] at once (`matvec_batch`): each row's
# codes are read once for all of them, as the chip's pipeline reads its ROM once per token of each.
def _users_rows_bytes(xs, corrections, data, width, multipliers, out):
    stride = min(corrections.shape[1] - 1, 1)
    for i in prange(data.shape[0]):
        row = data[i]
        c = i * stride
        for b in range(xs.shape[0]):
            x = xs[b]
            acc = np.int64(0)
            for g in range(multipliers.shape[1]):
                acc += np.int64(multipliers[i, g]) * (_dot_bytes(row, g * width, x, g * width, width)
                                                      - corrections[b, c, g])
            out[b, i] = acc


def _users_rows_nibbles(xs, corrections, data, width, half, multipliers, out):
    stride = min(corrections.shape[1] - 1, 1)
    for i in prange(data.shape[0]):
        row = data[i]
        c = i * stride
        for b in range(xs.shape[0]):
            x = xs[b]
            acc = np.int64(0)
            for g in range(multipliers.shape[1]):
                partial = _dot_nibbles(row, g * half, x, g * width, g * width + half, half)
                acc += np.int64(multipliers[i, g]) * (partial - corrections[b, c, g])
            out[b, i] = acc


_KERNELS = {}
for _name, _body in (("bytes", _rows_bytes), ("nibbles", _rows_nibbles), ("wide", _rows_wide),
                     ("users_bytes", _users_rows_bytes), ("users_nibbles", _users_rows_nibbles)):
    _KERNELS[_name, False] = njit(cache=True, nogil=True)(_body)
    _KERNELS[_name, True] = njit(cache=True, nogil=True, parallel=True)(_body)


@njit(cache=True, nogil=True)
def _corrections(x, width, offset, zeros, rows, groups):
    """(offset + z_ig) * sum_{j in g} x_j: the code offset and zero points, removed exactly.
    One row serves all rows when there are no zero points."""
    distinct = rows if zeros.shape[0] > 0 else 1
    out = np.empty((distinct, groups), dtype=np.int64)
    for g in range(groups):
        s = np.int64(0)
        for j in range(g * width, (g + 1) * width):
            s += x[j]
        for i in range(distinct):
            zero = offset + (np.int64(zeros[i, g]) if zeros.shape[0] > 0 else np.int64(0))
            out[i, g] = zero * s
    return out


@njit(cache=True, nogil=True)
def _finish(acc, shifts, mantissa, exponent, bias, out_bits):
    out = np.empty(acc.size, dtype=np.int64)
    for i in range(acc.size):
        out[i] = _requantize(acc[i], shifts[i], mantissa, exponent, bias[i], out_bits)
    return out


def padded_input(matrix: PackedMatrix, x: np.ndarray) -> np.ndarray:
    """x laid out as the kernel reads it: int16, each group zero-padded to the even width W."""
    padded = np.zeros(matrix.padded_cols, dtype=np.int16)
    if matrix.group_width == matrix.group or matrix.groups == 1:
        padded[:matrix.cols] = x
    else:                       # odd group width: each group padded by one column
        group = matrix.group
        for g in range(matrix.groups):
            part = x[g * group:(g + 1) * group]
            padded[g * matrix.group_width:g * matrix.group_width + len(part)] = part
    return padded


def matvec_batch(matrix: PackedMatrix, xs: list[np.ndarray], scales: list[tuple[int, int]],
                 out_bits: int, extras: list | None = None) -> list[np.ndarray]:
    """`matvec` of several users' vectors, each with its own token scale: every row's codes are
    read once for all of them. The sums are integers, so each result is exactly `matvec`'s; a
    vector too wide for int32 partial sums sends them all through `matvec` one by one.
    `extras[u]`, when given and not None, is added to user u's accumulators (`matvec`)."""
    extras = extras if extras is not None else [None] * len(xs)
    if len(xs) == 1:
        return [matvec(matrix, xs[0], scales[0], out_bits, extras[0])]
    padded = np.stack([padded_input(matrix, x) for x in xs])
    if matrix.group_width * int(np.abs(padded).max(initial=0)) >= 1 << 23:
        return [matvec(matrix, x, scale, out_bits, extra) for x, scale, extra in zip(xs, scales, extras)]
    corrections = np.stack([_corrections(p, matrix.group_width, matrix.offset, matrix.zeros, matrix.rows,
                                         matrix.groups) for p in padded])
    acc = np.empty((len(xs), matrix.rows), dtype=np.int64)
    parallel = matrix.rows * matrix.padded_cols >= PARALLEL_MIN_WEIGHTS and get_num_threads() > 1
    if matrix.nibbles:
        _KERNELS["users_nibbles", parallel](padded, corrections, matrix.data, matrix.group_width,
                                            matrix.group_width // 2, matrix.multipliers, acc)
    else:
        _KERNELS["users_bytes", parallel](padded, corrections, matrix.data, matrix.group_width, matrix.multipliers,
                                          acc)
    for row, extra in zip(acc, extras):
        if extra is not None:
            row += extra
    return [_finish(row, matrix.shifts, np.int64(scale[0]), np.int64(scale[1]), matrix.bias, out_bits)
            for row, scale in zip(acc, scales)]


def matvec(matrix: PackedMatrix, x: np.ndarray, scale: tuple[int, int], out_bits: int,
           extra: np.ndarray | None = None) -> np.ndarray:
    """§3: acc_i = sum_g m_ig * sum_{j in g} (c_ij - z_ig) x_j;
    a_i = sat59(round(acc_i * 2^-(k_i + e - 7))); y_i = sat_out(round(a_i * mu * 2^-10) + b_i).

    x: integer vector of length `matrix.cols` with token scale (mu, e) (§2.2). `extra` (int64
    [rows]), when given, is added to acc before requantizing: a patch's adapter terms (§11).
    Returns int64 [rows]."""
    padded = padded_input(matrix, x)
    acc = np.empty(matrix.rows, dtype=np.int64)
    parallel = matrix.rows * matrix.padded_cols >= PARALLEL_MIN_WEIGHTS and get_num_threads() > 1
    corrections = _corrections(padded, matrix.group_width, matrix.offset, matrix.zeros, matrix.rows, matrix.groups)
    # int32 partial sums are exact while W * max|x| * 2^8 < 2^31 (codes and nibbles are < 2^8)
    if matrix.group_width * int(np.abs(padded).max(initial=0)) >= 1 << 23:
        count = matrix.group_width // 2 if matrix.nibbles else matrix.group_width
        _KERNELS["wide", parallel](padded, corrections, matrix.data, matrix.group_width, count, matrix.nibbles,
                                   matrix.multipliers, acc)
    elif matrix.nibbles:
        _KERNELS["nibbles", parallel](padded, corrections, matrix.data, matrix.group_width, matrix.group_width // 2,
                                      matrix.multipliers, acc)
    else:
        _KERNELS["bytes", parallel](padded, corrections, matrix.data, matrix.group_width, matrix.multipliers, acc)
    if extra is not None:
        acc += extra
    return _finish(acc, matrix.shifts, np.int64(scale[0]), np.int64(scale[1]), matrix.bias, out_bits)
