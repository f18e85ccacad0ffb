"""Learned rounding (`learn`): choose each weight's rounding direction for the least output error.

After the quantizer (GPTQ or round-to-nearest) has fixed a matrix's group scales and given first
codes, every weight may still round down or up: code = floor(w/s) + h with h in {0, 1}. AdaRound
(Nagel et al. 2020, arXiv 2004.10568) relaxes h to a rectified sigmoid h(V) in [0, 1] and minimises
the matrix's output reconstruction error on the calibration inputs X,

    E(h) = tr(ΔW H ΔWᵀ),   ΔW = W − Ŵ(h),   H = XᵀX   (the Hessian GPTQ already uses),

plus a regulariser Σ 1 − |2h − 1|^β whose exponent β anneals from large (no pull) to 2 (strong pull)
so that every h ends at 0 or 1. Unlike GPTQ's one pass, which fixes a column once and only moves
the columns after it, this revisits every weight with all others in view. The result is hardened
to integer codes under the unchanged stored scales (and zero points): the die format, the golden
model, the RTL and the estimate see an ordinary quantized matrix. When the hardened codes do not
reconstruct better than the codes they started from, those are kept, so `learn` never raises E.

Plain numpy, single-threaded under the freezer's BLAS pin, with no random state: the same inputs
give the same codes, and the die id does not depend on the machine.
"""
from __future__ import annotations

import numpy as np

from hardwire.formats import QuantizedTensor, expand_groups

ROUNDINGS = ("learn",)          # after the quantizer: revisit each weight's rounding direction
LEARN_STEPS = 3000              # gradient steps per matrix
LEARN_RATE = 0.01               # Adam step on the rounding variables V
LEARN_WARMUP = 0.2              # fraction of the steps with no regulariser (reconstruction only)
LEARN_REGULARISER = 0.01        # weight of the summed regulariser against the relative output error
BETA_START, BETA_END = 20.0, 2.0
STRETCH_LOW, STRETCH_HIGH = -0.1, 1.1   # AdaRound's rectified sigmoid: h = clip(σ(V)(ζ−γ)+γ, 0, 1)
INITIAL_LEAN = 0.3              # the relaxed start: h = 0.5 ± this, leaning towards the first codes
ADAM_BETAS, ADAM_EPSILON = (0.9, 0.999), 1e-8
# Each step multiplies ΔW [rows, cols] by H [cols, cols]: steps x rows x cols² multiply-adds, ~9e9 a
# CPU-second on one core (a 256 x 256 matrix measured: 5.0e10 in 5.7 s). Above this bound (~11 s;
# every stories260K matrix is under 7e9, a 2,048-wide square one needs 2.6e13, ~50 min) a matrix
# keeps its quantizer's codes, and the die's assignment records the method without `+learn`.
LEARN_MAX_MULTIPLY_ADDS = 1e11


def learn_affordable(rows: int, cols: int, steps: int = LEARN_STEPS) -> bool:
    """Whether learned rounding of a [rows, cols] matrix stays within LEARN_MAX_MULTIPLY_ADDS."""
    return steps * rows * cols * cols <= LEARN_MAX_MULTIPLY_ADDS


def rectified_sigmoid(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h(V) and dh/dV (zero where the clip is active)."""
    sigma = 1.0 / (1.0 + np.exp(-v))
    stretched = sigma * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW
    inside = (stretched > 0) & (stretched < 1)
    return np.clip(stretched, 0, 1), np.where(inside, sigma * (1 - sigma) * (STRETCH_HIGH - STRETCH_LOW), 0)


def inverse_rectified_sigmoid(h: np.ndarray) -> np.ndarray:
    sigma = (h - STRETCH_LOW) / (STRETCH_HIGH - STRETCH_LOW)
    return np.log(sigma / (1 - sigma))


def times_hessian(delta: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """ΔW H, or row by row ΔW[r] H[r] when each output row has its own Hessian [rows, in, in]."""
    return delta @ hessian if hessian.ndim == 2 else np.einsum("ri,rij->rj", delta, hessian)


def output_error(delta: np.ndarray, hessian: np.ndarray) -> float:
    """tr(ΔW H ΔWᵀ): the summed squared output error over the calibration tokens."""
    return float(np.sum(times_hessian(delta, hessian) * delta))


def learn_rounding(weight: np.ndarray, start: QuantizedTensor, hessian: np.ndarray,
                   steps: int = LEARN_STEPS) -> QuantizedTensor:
    """`start`'s matrix with each code re-chosen between floor(w/s) and floor(w/s) + 1 (stored
    scales and zero points unchanged) for the least tr(ΔW H ΔWᵀ); `start` itself when that is not
    lower. `hessian` = XᵀX [in, in] of the matrix's calibration inputs."""
    fmt = start.format
    w = np.asarray(weight, dtype=np.float64)
    rows, cols = w.shape
    if hessian.shape[-2:] != (cols, cols) or hessian.ndim == 3 and len(hessian) != rows:
        raise ValueError(f"Hessian {hessian.shape} does not match {cols} input columns")
    h_matrix = np.asarray(hessian, dtype=np.float64)
    width = fmt.group_width(cols)
    scales = expand_groups(start.scales.astype(np.float64), width, cols)
    zeros = 0.0 if start.zeros is None else expand_groups(start.zeros.astype(np.float64), width, cols)
    live = scales > 0                                  # an all-zero group keeps its codes
    safe = np.where(live, scales, 1.0)
    floor = np.floor(w / safe + zeros)
    first_codes = start.codes.astype(np.float64)
    reference = output_error(w - (first_codes - zeros) * scales, h_matrix)
    if reference <= 0 or not np.any(live):
        return start

    def restore(codes: np.ndarray) -> np.ndarray:
        return (np.clip(codes, fmt.code_min, fmt.code_max) - zeros) * scales

    leaning_up = np.where(first_codes > floor, 0.5 + INITIAL_LEAN, 0.5 - INITIAL_LEAN)
    v = inverse_rectified_sigmoid(leaning_up)
    moment, second = np.zeros_like(v), np.zeros_like(v)
    warmup = int(steps * LEARN_WARMUP)
    for step in range(steps):
        h, dh_dv = rectified_sigmoid(v)
        soft = floor + h
        in_range = (soft >= fmt.code_min) & (soft <= fmt.code_max) & live
        delta = w - restore(soft)
        # d E / d h = -2 (ΔW H) * s, divided by the starting error so the regulariser's weight means
        # the same for every matrix
        grad_h = np.where(in_range, -2.0 * times_hessian(delta, h_matrix) * scales / reference, 0.0)
        if step >= warmup:
            progress = (step - warmup) / max(1, steps - warmup)
            beta = BETA_END + 0.5 * (BETA_START - BETA_END) * (1 + np.cos(np.pi * progress))
            centred = 2 * h - 1
            # d/dh of LEARN_REGULARISER * Σ (1 - |2h-1|^β)
            grad_h -= LEARN_REGULARISER * beta * 2 * np.abs(centred) ** (beta - 1) * np.sign(centred)
        grad = grad_h * dh_dv
        moment = ADAM_BETAS[0] * moment + (1 - ADAM_BETAS[0]) * grad
        second = ADAM_BETAS[1] * second + (1 - ADAM_BETAS[1]) * grad * grad
        corrected = moment / (1 - ADAM_BETAS[0] ** (step + 1))
        corrected_second = second / (1 - ADAM_BETAS[1] ** (step + 1))
        v -= LEARN_RATE * corrected / (np.sqrt(corrected_second) + ADAM_EPSILON)

    hard = np.where(live, np.clip(floor + (v >= inverse_rectified_sigmoid(np.float64(0.5))),
                                  fmt.code_min, fmt.code_max), first_codes)
    if output_error(w - (hard - zeros) * scales, h_matrix) >= reference:
        return start
    return QuantizedTensor(fmt, hard.astype(np.int8), start.stored_scales, start.scale_multiplier, start.zeros)
