"""§11 a patch's low-rank path: the integers an adapter adds to a matrix's accumulators.

The adapter reads the same input codes x as the matrix it patches (before the token scale is
applied: the scale is common to both paths and applied once, at the requantizer), so its term
is added to the matrix's accumulator A_i and requantized with it (docs/arithmetic.md §11).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from hardwire.adapters import ADAPTER_INNER_BITS, Adapter
from hardwire.arithmetic import rshift_round, saturate


@njit(cache=True, nogil=True)
def adapter_term(a, a_mult, a_shift, b, b_mult, b_shift, x, out):
    """t_j = sum_k A_jk x_k; t'_j = sat16(round(t_j a_mult_j 2^-a_shift)); u_i = sum_j B_ij t'_j;
    out_i = round(b_mult_i u_i 2^-b_shift)."""
    rank, cols = a.shape
    inner = np.empty(rank, dtype=np.int64)
    for j in range(rank):
        t = np.int64(0)
        for k in range(cols):
            t += np.int64(a[j, k]) * x[k]
        inner[j] = saturate(rshift_round(t * a_mult[j], a_shift), ADAPTER_INNER_BITS)
    for i in range(b.shape[0]):
        u = np.int64(0)
        for j in range(rank):
            u += np.int64(b[i, j]) * inner[j]
        out[i] = rshift_round(u * b_mult[i], b_shift)


def adapter_inner(adapter: Adapter, x: np.ndarray) -> np.ndarray:
    """t' of §11 (for calibration and block tests): the rank-sized intermediate, int64."""
    t = adapter.a.astype(np.int64) @ np.asarray(x, dtype=np.int64)
    out = np.empty(adapter.rank, dtype=np.int64)
    for j in range(adapter.rank):
        out[j] = saturate(rshift_round(np.int64(t[j] * adapter.a_mult[j]), np.int64(adapter.a_shift)),
                          ADAPTER_INNER_BITS)
    return out


def apply_adapter(adapter: Adapter, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The adapter's int64 term [rows] for input codes x."""
    out = np.empty(adapter.rows, dtype=np.int64) if out is None else out
    adapter_term(adapter.a, adapter.a_mult, np.int64(adapter.a_shift), adapter.b, adapter.b_mult,
                 np.int64(adapter.b_shift), np.asarray(x, dtype=np.int64), out)
    return out


# -- the adapter's meaning in real units ---------------------------------------------------------

def row_ratios(die, tables: dict, target: str) -> np.ndarray:
    """r_i = m_ig / s_w[i,g] of `target`'s rows (float64), from the row's largest multiplier."""
    scales = np.abs(np.asarray(die.quantized(target).scales, dtype=np.float64)).reshape(
        tables[target + ".mult"].shape)
    mult = np.asarray(tables[target + ".mult"], dtype=np.float64)
    best = np.argmax(mult, axis=1)
    rows = np.arange(len(mult))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mult[rows, best] / scales[rows, best]
    return np.where(np.isfinite(ratio), ratio, 0.0)


def dequantized_delta(adapter: Adapter, ratios: np.ndarray) -> np.ndarray:
    """The real-valued ΔW [rows, cols] the integer adapter adds (for the float backend): the
    adapter's term in accumulator units divided by the row ratio."""
    a_real = adapter.a.astype(np.float64) * np.ldexp(adapter.a_mult.astype(np.float64), -adapter.a_shift)[:, None]
    b_real = adapter.b.astype(np.float64) * np.ldexp(adapter.b_mult.astype(np.float64), -adapter.b_shift)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        b_real = np.where(ratios[:, None] > 0, b_real / ratios[:, None], 0.0)
    return (b_real @ a_real).astype(np.float32)
