"""§12 The online Walsh–Hadamard transform (docs/arithmetic.md): the w_down input of a die frozen
with the plan method `had`, transformed between SwiGLU's wide values and their token quantizer.

    w_i <- clamp(w_i, ±2^(bits+9))          the token quantizer's own clamp (§2.2), applied first
    v   =  H_n w  per block of n            log2 n butterfly stages, exact, +1 bit per stage

No normalisation happens online: 1/sqrt(n) is folded into SwiGLU's output multiplier at freeze
time, and the offline weights hold W Q (Q = H_n / sqrt(n)), so W x = (W Q)(Q x) in exact arithmetic.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from hardwire.arithmetic import TOKEN_CLAMP_BITS, hadamard_butterflies


@njit(cache=True, nogil=True)
def hadamard_transform(wide, block, bits):
    """§12 clamp each wide value to ±2^(bits+9), then H_n per block of `block`, in place (block 1:
    the clamp only, which the token quantizer would apply anyway)."""
    clamp = np.int64(1) << (bits + TOKEN_CLAMP_BITS)
    for i in range(wide.size):
        wide[i] = min(max(wide[i], -clamp), clamp)
    hadamard_butterflies(wide, block)
