"""A trained float LoRA -> the integer adapters of a patch (docs/arithmetic.md §11).

The float adapter changes W by B·A in real units (y = (W + B A) x, the LoRA scale folded into B).
On the chip the adapter's term joins the matrix's accumulator A_i, whose units are fixed by the die:
m_ig · 2^-k_i = s_w[i,g] · s_in / s_out (§3), so one row's "ratio" r_i = s_in / s_out · 2^k_i is
m_ig / s_w[i,g] for any of its groups. With that:

    A ≈ a_code · sa_j (per rank row, int8)       t_j  = a_code · x ≈ (A x)_j / sa_j
    t'_j = t_j · sa_j / st_j  (st_j: t's step, from calibrated |A x| with headroom)
    B'_ij = B_ij · st_j ≈ b_code · sb_i (per row)  T_i = r_i · sb_i · (b_code · t')_i

so a_mult_j 2^-a_shift = sa_j / st_j and b_mult_i 2^-b_shift = r_i · sb_i, each family sharing one
shift (its largest value gets the full multiplier width).
"""
from __future__ import annotations

import numpy as np

from hardwire.adapters import (ADAPTER_A_MULT_BITS, ADAPTER_B_MULT_BITS, ADAPTER_INNER_BITS, ADAPTER_SHIFT_BITS,
                               CODE_LIMIT, Adapter, BadPatch)

# t' is sized so the largest calibrated |A x| uses half its range: inputs the calibration did not
# see get a factor of two before they saturate.
INNER_HEADROOM = 2.0
MAX_SHIFT = (1 << ADAPTER_SHIFT_BITS) - 1


def _symmetric_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes per row and each row's step (0 for an all-zero row)."""
    step = np.abs(values).max(axis=1) / CODE_LIMIT
    safe = np.where(step > 0, step, 1.0)
    codes = np.clip(np.rint(values / safe[:, None]), -CODE_LIMIT, CODE_LIMIT).astype(np.int8)
    return codes, step


def _shared_shift(values: np.ndarray, bits: int, field: str) -> tuple[np.ndarray, int]:
    """Unsigned multipliers of `bits` bits with one shift: values ≈ mult · 2^-shift."""
    largest = float(values.max(initial=0.0))
    if largest <= 0:
        return np.zeros(values.shape, np.int64), 0
    shift = bits - int(np.frexp(largest)[1])
    if shift < 0:
        raise BadPatch(f"the adapter's {field} exceeds what {bits}-bit multipliers can hold "
                       f"(largest {largest:.3g}); the adapter is far larger than the weights it patches",
                       field=field)
    shift = min(shift, MAX_SHIFT)
    mult = np.minimum(np.rint(np.ldexp(values, shift)), (1 << bits) - 1).astype(np.int64)
    return mult, shift


def integer_adapter(target: str, a: np.ndarray, b: np.ndarray, ratios: np.ndarray,
                    inner_absmax: np.ndarray) -> Adapter:
    """The §11 adapter for float A [rank, cols], B [rows, rank] (y += B A x in real units), the
    target's row ratios and the calibrated max |(A x)_j| over input codes x."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a_codes, sa = _symmetric_rows(a)
    inner_limit = (1 << (ADAPTER_INNER_BITS - 1)) - 1
    st = np.asarray(inner_absmax, dtype=np.float64) * INNER_HEADROOM / inner_limit
    # a rank row that never fired in calibration gets the step its codes could at most produce
    st = np.where(st > 0, st, np.maximum(sa, 1e-30))
    a_mult, a_shift = _shared_shift(np.where(sa > 0, sa / st, 0.0), ADAPTER_A_MULT_BITS, "a_mult")
    # the step t' really has once a_mult is rounded
    st_real = np.where(a_mult > 0, sa / np.maximum(np.ldexp(a_mult.astype(np.float64), -a_shift), 1e-300), 0.0)
    b_codes, sb = _symmetric_rows(b * st_real[None, :])
    b_mult, b_shift = _shared_shift(np.asarray(ratios, dtype=np.float64) * sb, ADAPTER_B_MULT_BITS, "b_mult")
    return Adapter(target, a_codes, a_mult, int(a_shift), b_codes, b_mult, int(b_shift))
