"""Weight quantizers: round-to-nearest (RTN) and GPTQ.

Both return a `QuantizedTensor` whose `dequantize()` is exactly what the chip stores.

GPTQ (Frantar et al. 2022, arXiv 2210.17323) quantizes a matrix one input column at a time and
spreads each column's rounding error over the columns not yet quantized, weighted by the inverse
Hessian H^-1 of the layer's squared output error, H = X^T X over calibration inputs X [tokens, in].
The upper Cholesky factor U of H^-1 (H^-1 = U^T U) gives every update directly: after quantizing
column j, the remaining columns move by -err_j * U[j, j+1:] / U[j, j]. Updates are applied lazily
per block of columns, and a group's scale is chosen when its first column is reached, from the
weights as already updated.

With `clip`, either quantizer chooses each group's scale by a search over shrunk ranges for the
least rounding error of the group instead of from its absolute maximum (`searched_scales`).
"""
from __future__ import annotations

import numpy as np

from hardwire.formats import (QuantizedTensor, WeightFormat, decode_scales, encode_scales, group_view,
                               ideal_scales, quantize_values, zero_points)

METHODS = ("rtn", "gptq")
REFINEMENTS = ("clip",)          # options of either quantizer: `clip` searches each group's range
ROW_CHUNK_VALUES = 1 << 22      # RTN processes this many weights at a time to bound temporaries
GPTQ_BLOCK = 128                # columns per lazy-update block (rounded to a multiple of the group)
GPTQ_DAMP = 0.01                # Hessian damping, a fraction of its mean diagonal
CLIP_RATIOS = np.linspace(1.0, 0.5, 26, dtype=np.float32)   # scale shrink factors the clip search tries


def searched_scales(groups: np.ndarray, fmt: WeightFormat,
                    importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Like `ideal_scales`, but each group's range shrunk by the ratio in CLIP_RATIOS that gives
    the least squared rounding error of the group (clipping a few large weights buys a finer step
    for all the others; the search of AWQ's clipping and of most 3-4-bit quantizers), each column's
    error weighted by `importance` [..., width] when given (how much an error in that input column
    costs the output). Ratio 1, the plain range, is in the grid: never a larger error than
    `ideal_scales`."""
    full, low = ideal_scales(groups, fmt)
    best_scale, best_low = full.copy(), None if low is None else low.copy()
    best_error = np.full(full.shape, np.inf, np.float32)
    for ratio in CLIP_RATIOS:
        scale = full * ratio
        shifted = None if low is None else low * ratio
        zeros = None if low is None else zero_points(shifted, scale, fmt)
        z = None if zeros is None else zeros[..., None]
        codes = quantize_values(groups, scale[..., None], z, fmt).astype(np.float32)
        restored = (codes - (0 if z is None else z)) * scale[..., None]
        squared = (groups - restored) ** 2
        error = np.sum(squared if importance is None else squared * importance, axis=-1)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_scale = np.where(better, scale, best_scale)
        if low is not None:
            best_low = np.where(better, shifted, best_low)
    return best_scale, best_low


def quantize_rtn(weight: np.ndarray, fmt: WeightFormat, clip: bool = False) -> QuantizedTensor:
    """Round each weight to the nearest code of its group's scale (absmax or min/max scaling; with
    `clip`, the range that rounds the group best, `searched_scales`)."""
    weight = np.asarray(weight, dtype=np.float32)
    rows, cols = weight.shape
    width = fmt.group_width(cols)
    groups = fmt.groups(cols)
    ideal = np.empty((rows, groups), np.float32)
    low = None if fmt.symmetric else np.empty((rows, groups), np.float32)
    step = max(1, ROW_CHUNK_VALUES // max(cols, 1))
    for r in range(0, rows, step):
        s, lo = (searched_scales if clip else ideal_scales)(group_view(weight[r:r + step], width), fmt)
        ideal[r:r + step] = s
        if lo is not None:
            low[r:r + step] = lo
    stored, multiplier = encode_scales(ideal, fmt.scale_format)
    scales = decode_scales(stored, fmt.scale_format, multiplier)
    zeros = None if fmt.symmetric else zero_points(low, scales, fmt)
    codes = np.empty((rows, cols), np.int8)
    for r in range(0, rows, step):
        grouped = group_view(weight[r:r + step], width)
        z = None if zeros is None else zeros[r:r + step, :, None]
        codes[r:r + step] = quantize_values(grouped, scales[r:r + step, :, None], z, fmt) \
            .reshape(grouped.shape[0], -1)[:, :cols]
    return QuantizedTensor(fmt, codes, stored, None if multiplier is None else float(multiplier), zeros)


def inverse_hessian_factor(hessian: np.ndarray, damp: float = GPTQ_DAMP) -> tuple[np.ndarray, np.ndarray]:
    """Upper Cholesky factor of the damped inverse Hessian, and the mask of dead input columns
    (never active in calibration: their weights cannot matter to the output and are zeroed)."""
    h = np.array(hessian, dtype=np.float64)
    diagonal = np.diag(h).copy()
    dead = diagonal <= 0
    h[dead, dead] = 1.0
    mean_diagonal = float(np.mean(np.diag(h)))
    for attempt in range(6):
        try:
            damped = h + np.eye(len(h)) * damp * (10 ** attempt) * mean_diagonal
            lower = np.linalg.cholesky(damped)
            lower_inv = np.linalg.solve(lower, np.eye(len(h)))
            inverse = lower_inv.T @ lower_inv
            return np.linalg.cholesky(inverse).T, dead
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the calibration Hessian is not positive definite even after damping")


def quantize_gptq(weight: np.ndarray, fmt: WeightFormat, hessian: np.ndarray,
                  damp: float = GPTQ_DAMP, clip: bool = False) -> QuantizedTensor:
    """GPTQ with lazy block updates; `hessian` = X^T X [in, in] of the calibration inputs."""
    w = np.array(weight, dtype=np.float32)
    rows, cols = w.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian {hessian.shape} does not match {cols} input columns")
    factor, dead = inverse_hessian_factor(hessian, damp)
    factor = factor.astype(np.float32)
    column_cost = 1.0 / np.diag(factor).astype(np.float64) ** 2
    w[:, dead] = 0
    width = fmt.group_width(cols)
    groups = fmt.groups(cols)
    block = width * max(1, GPTQ_BLOCK // width) if fmt.group else GPTQ_BLOCK

    # The e4m4 tensor multiplier must be fixed before any group is seen: take it from RTN's
    # scales of the original weights (the small-float range leaves ~2x headroom above it).
    multiplier = quantize_rtn(weight, fmt, clip).scale_multiplier if fmt.scale_format == "e4m4" else None
    stored = None
    scales = np.empty((rows, groups), np.float32)
    zeros = None if fmt.symmetric else np.empty((rows, groups), np.int8)
    codes = np.empty((rows, cols), np.int8)

    def choose_scales(group_index: int, values: np.ndarray) -> None:
        nonlocal stored
        if clip:      # an error in column j costs the output err^2 / U[j, j]^2 once compensated
            columns = slice(group_index * width, group_index * width + values.shape[1])
            ideal, low = searched_scales(values[:, None, :], fmt, column_cost[columns])
        else:
            ideal, low = ideal_scales(values[:, None, :], fmt)
        st, _ = encode_scales(ideal[:, 0], fmt.scale_format, multiplier)
        if stored is None:
            stored = np.empty((rows, groups), st.dtype)
        stored[:, group_index] = st
        scales[:, group_index] = decode_scales(st, fmt.scale_format, multiplier)
        if zeros is not None:
            zeros[:, group_index] = zero_points(low[:, 0], scales[:, group_index], fmt)

    if fmt.group is None:
        choose_scales(0, w)
    for start in range(0, cols, block):
        end = min(start + block, cols)
        work = w[:, start:end].copy()
        errors = np.empty_like(work)
        local = factor[start:end, start:end]
        for i in range(end - start):
            column = start + i
            group_index = column // width
            if fmt.group is not None and column % width == 0:
                choose_scales(group_index, work[:, i:i + width])
            s = scales[:, group_index]
            z = None if zeros is None else zeros[:, group_index]
            q = quantize_values(work[:, i], s, z, fmt)
            codes[:, column] = q
            restored = (q.astype(np.float32) - (0 if z is None else z)) * s
            error = (work[:, i] - restored) / local[i, i]
            work[:, i:] -= np.outer(error, local[i, i:])
            errors[:, i] = error
        w[:, end:] -= errors @ factor[start:end, end:]
    return QuantizedTensor(fmt, codes, stored, multiplier, zeros)


def quantize(weight: np.ndarray, fmt: WeightFormat, method: str = "rtn",
             hessian: np.ndarray | None = None, clip: bool = False) -> QuantizedTensor:
    if method == "rtn":
        return quantize_rtn(weight, fmt, clip)
    if method == "gptq":
        if hessian is None:
            raise ValueError("GPTQ needs the Hessian of the matrix's calibration inputs")
        return quantize_gptq(weight, fmt, hessian, clip=clip)
    raise ValueError(f"unknown quantization method {method!r}; expected one of {', '.join(METHODS)}")
