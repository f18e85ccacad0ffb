"""Time to correct in closed form, for a system stated by its pass rate and its speed.

Every attempt passes independently with probability p and takes t seconds. Within a limit of K
attempts and a budget of B seconds, at most K' = min(K, floor(B / t)) attempts are made, and

  P(solved within k attempts) = 1 - (1 - p)^k                    (k <= K')
  solved fraction             = 1 - (1 - p)^K'
  mean attempts               = sum_{i<K'} (1 - p)^i             (attempts made, failures included)
  time for fraction q         = t * min{k <= K' : 1 - (1 - p)^k >= q}, undefined if no such k

This is the model behind "a fast model that is wrong, retried with a verifier, is right before a slow
one has answered": it holds exactly when attempts are independent, which measured runs can refute
(a model that is wrong on a task every time never gets there, however fast it is).
"""
from __future__ import annotations

import math


def attempts_allowed(seconds_per_attempt: float, attempts: int, budget_s: float | None) -> int:
    if budget_s is None:
        return attempts
    if seconds_per_attempt <= 0:
        return attempts
    # a small tolerance so that a budget of exactly k attempts admits k of them
    return min(attempts, math.floor(budget_s / seconds_per_attempt * (1 + 1e-12)))


def attempts_for_fraction(p: float, fraction: float, allowed: int) -> int | None:
    """The least k <= allowed with 1 - (1 - p)^k >= fraction, or None."""
    if p <= 0 or allowed < 1:
        return None
    if p >= 1:
        return 1
    miss = 1 - p
    k = max(1, math.ceil(math.log(1 - fraction) / math.log(miss))) if fraction < 1 else None
    if k is None:
        return None
    while k > 1 and miss ** (k - 1) <= 1 - fraction:
        k -= 1
    while miss ** k > 1 - fraction:
        k += 1
    return k if k <= allowed else None


def solved_fraction(p: float, allowed: int) -> float:
    return 1 - (1 - p) ** allowed if allowed > 0 else 0.0


def mean_attempts(p: float, allowed: int) -> float:
    if allowed <= 0:
        return 0.0
    if p <= 0:
        return float(allowed)
    return (1 - (1 - p) ** allowed) / p


def time_for_fraction(p: float, seconds_per_attempt: float, fraction: float, allowed: int) -> float | None:
    k = attempts_for_fraction(p, fraction, allowed)
    return None if k is None else k * seconds_per_attempt


def solved_curve(p: float, seconds_per_attempt: float, allowed: int, points: int = 200) -> tuple[list, list]:
    """(times, solved fraction) at the end of attempts 1..allowed, thinned to about `points`."""
    if allowed < 1:
        return [], []
    step = max(1, allowed // points)
    ks = list(range(1, allowed + 1, step))
    if ks[-1] != allowed:
        ks.append(allowed)
    return [k * seconds_per_attempt for k in ks], [solved_fraction(p, k) for k in ks]
