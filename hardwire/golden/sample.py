"""§9 Choosing the next token from integer logits: argmax, or integer sampling with SplitMix64.

Same die, ids, seed, temperature and top-p => same tokens on every machine: the only floats are
the user's temperature and top-p, turned into fixed-point constants once, before the first step.
"""
from __future__ import annotations

import math

import numpy as np

from hardwire import arithmetic as ar
from hardwire.golden.forward import argmax

MASK64 = (1 << 64) - 1
TOP_P_BITS = 16
TEMPERATURE_MULTIPLIER_BITS = 15
# A ratio (logit units to exp2 units) of 2^EXP2_FRAC_BITS * EXP2_MAX_SHIFT already gives every
# logit a unit below the largest a weight of 0: any larger ratio (a temperature near 0, down to
# denormals) chooses the same tokens, so it is clamped there and never overflows.
LARGEST_TEMPERATURE_RATIO = ar.EXP2_MAX_SHIFT << ar.EXP2_FRAC_BITS


class SplitMix64:
    """§9.3 SplitMix64 (Steele, Lea & Flood 2014): a 64-bit counter through a bijective mixer."""

    def __init__(self, seed: int):
        self.state = int(seed) & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


class IntegerSampler:
    """§9.2 weights w_v = 2^((l_v - max l) / T) in Q0.15 from the exp2 table, nucleus cut at
    top-p in Q0.16, one draw of 32 random bits scaled onto the kept weight total."""

    def __init__(self, tables: dict[str, np.ndarray], temperature: float, top_p: float, seed: int):
        self.greedy = temperature <= 0
        self.exp2_table = tables["exp2_table"]
        logit_scale = 2.0 ** -int(tables["logit_frac_bits"][0])
        self.top_p = min(1 << TOP_P_BITS, max(1, round(top_p * (1 << TOP_P_BITS))))
        if not self.greedy:
            ratio = logit_scale * math.log2(math.e) / temperature * (1 << ar.EXP2_FRAC_BITS)   # inf near 0
            ratio = min(ratio, LARGEST_TEMPERATURE_RATIO)
            self.mult, self.shift = ar.fixed_multiplier(ratio, TEMPERATURE_MULTIPLIER_BITS)
        self.rng = SplitMix64(seed)                 # a negative seed as its 64-bit pattern

    def weights(self, logits: np.ndarray) -> np.ndarray:
        """Q0.15 weights; the largest logit gets 2^15. int64 numpy, exact: |l| < 2^32, m < 2^16."""
        d = (int(logits.max()) - logits.astype(np.int64)) * self.mult
        if self.shift >= 63:
            # A temperature so large that every rounded difference is 0 (d < 2^48 here): all
            # weights equal, as the formula gives, without a shift numpy's int64 cannot hold.
            d = np.zeros_like(d)
        elif self.shift > 0:
            d = (d + (1 << (self.shift - 1))) >> self.shift
        else:
            d = d << -self.shift
        whole = d >> ar.EXP2_FRAC_BITS
        fraction = d & (ar.EXP2_TABLE_SIZE - 1)
        values = self.exp2_table[fraction].astype(np.int64) >> np.minimum(whole, 63)
        return np.where(whole >= ar.EXP2_MAX_SHIFT, 0, values)

    def __call__(self, logits: np.ndarray) -> int:
        if self.greedy:
            return int(argmax(logits))
        weights = self.weights(logits)
        order = np.lexsort((np.arange(len(weights)), -weights))      # heavier first, then lower id
        cumulative = np.cumsum(weights[order])
        total = int(cumulative[-1])
        # smallest prefix whose weight reaches top_p of the total: cum * 2^16 >= P * total
        kept = int(np.searchsorted(cumulative * (1 << TOP_P_BITS) >= self.top_p * total, True)) + 1
        kept_total = int(cumulative[kept - 1])
        target = ((self.rng.next() >> 32) * kept_total) >> 32            # uniform in [0, kept_total)
        return int(order[int(np.searchsorted(cumulative[:kept], target, side="right"))])
