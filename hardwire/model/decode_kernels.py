"""The float reference's one-token decode step between its matrix products, compiled with numba.

A decode step of the float engine reads every weight once through 49 matrix-vector products (the
110M shape); everything else — RMSNorm, the q/k/v bias, RoPE, the KV cache write, attention of one
query over the cache, SiLU·up, the residual adds — is a few thousand numbers per layer. Written as
numpy expressions those cost ~70 small calls and as many temporaries per layer, 2–3 ms of a
31–34 ms step at 1 thread (docs/benchmarks.md, issue 21). Here they are four compiled calls per
layer working in buffers the caller allocates once (`StackedTransformer.decode_one` in
`reference.py`), about 0.3 ms a step. `row_parallel_matvec` is numba's alternative to BLAS for the
products themselves.

The arithmetic is the reference's, in float32: the same operations in the same order where an order
is visible (bias before RoPE, RoPE on rotate-half pairs, scores divided by sqrt(head_dim), softmax
shifted by the maximum, SiLU as x / (1 + e^-x)). Sums (the mean square, q·k, the probability-weighted
values) may be reassociated so they vectorize, which moves a result by a few float32 ulps, far inside
the 1e-4 the engine is held to against transformers (tests/test_reference.py). Infinities are kept
(no `fastmath` "ninf"): e^-x overflows to inf for very negative x, and SiLU's limit 0 depends on it.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# LLVM flags that let sums vectorize (reassociation, fused multiply-add, signed zeros ignored) without
# assuming finite values or approximating exp.
SUMS_MAY_REASSOCIATE = {"reassoc", "contract", "nsz"}


@njit(cache=True)
def rope_angles(inverse_frequencies, position, cos, sin):
    """cos, sin [head_dim/2] of one position, angles in float64 as `rope_tables` computes them."""
    for j in range(inverse_frequencies.shape[0]):
        angle = np.float64(position) * inverse_frequencies[j]
        cos[j] = np.float32(math.cos(angle))
        sin[j] = np.float32(math.sin(angle))


@njit(cache=True, fastmath=SUMS_MAY_REASSOCIATE)
def add_rmsnorm(x, delta, weight, eps, out):
    """x += delta (the residual add; an empty delta adds nothing), then out = RMSNorm(x) * weight."""
    n = x.shape[0]
    if delta.shape[0] == n:
        for i in range(n):
            x[i] += delta[i]
    total = np.float32(0)
    for i in range(n):
        total += x[i] * x[i]
    rms = np.float32(math.sqrt(total / np.float32(n) + eps))
    for i in range(n):
        out[i] = (x[i] / rms) * weight[i]


@njit(cache=True)
def _rotate(source, offset, cos, sin, target):
    """target[:] = RoPE of source[offset:offset + head_dim] (rotate-half pairs j, j + head_dim/2)."""
    half = cos.shape[0]
    for j in range(half):
        first, second = source[offset + j], source[offset + half + j]
        target[j] = first * cos[j] - second * sin[j]
        target[half + j] = second * cos[j] + first * sin[j]


@njit(cache=True, fastmath=SUMS_MAY_REASSOCIATE)
def attend_one(qkv, bias, cos, sin, keys, values, layer, position, window, q, scores, out):
    """One new token's attention. qkv [q_dim + 2 kv_dim] is the stacked projection (plus `bias`
    when it is not empty); its k, v are written at `position` of the layer's cache (keys, values
    [layers, capacity, kv_heads, head_dim]); each query head attends over positions 0..position,
    or the last `window` of them when window > 0; out [q_dim] receives the heads' outputs.
    q [heads, head_dim] and scores [capacity] are scratch."""
    heads, head_dim = q.shape
    kv_heads = keys.shape[2]
    group = heads // kv_heads
    if bias.shape[0] == qkv.shape[0]:
        for i in range(qkv.shape[0]):
            qkv[i] += bias[i]
    for head in range(heads):
        _rotate(qkv, head * head_dim, cos, sin, q[head])
    k_start, v_start = heads * head_dim, (heads + kv_heads) * head_dim
    for head in range(kv_heads):
        _rotate(qkv, k_start + head * head_dim, cos, sin, keys[layer, position, head])
        for d in range(head_dim):
            values[layer, position, head, d] = qkv[v_start + head * head_dim + d]
    end = position + 1
    first = end - window if 0 < window < end else 0
    root = np.float32(math.sqrt(head_dim))
    for head in range(heads):
        kv = head // group
        largest = np.float32(-np.inf)
        for p in range(first, end):
            dot = np.float32(0)
            for d in range(head_dim):
                dot += q[head, d] * keys[layer, p, kv, d]
            score = dot / root
            scores[p] = score
            largest = max(largest, score)
        total = np.float32(0)
        for p in range(first, end):
            weight = np.float32(math.exp(scores[p] - largest))
            scores[p] = weight
            total += weight
        row = out[head * head_dim:(head + 1) * head_dim]
        row[:] = 0
        for p in range(first, end):
            weight = scores[p] / total
            for d in range(head_dim):
                row[d] += weight * values[layer, p, kv, d]


@njit(cache=True)
def silu_times_up(gate_up, out):
    """out = SiLU(gate) * up, gate_up [2 ffn] the stacked gate|up projection."""
    n = out.shape[0]
    for i in range(n):
        gate = gate_up[i]
        out[i] = gate / (np.float32(1) + np.float32(math.exp(-gate))) * gate_up[n + i]


# Rows one thread reads side by side: four streams keep more loads in flight. The kernel below
# writes its four accumulators out by hand, so this is not a setting.
ROWS_AT_ONCE = 4


@njit(cache=True, parallel=True, fastmath=SUMS_MAY_REASSOCIATE)
def row_parallel_matvec(matrix, vector, out):
    """out = matrix @ vector, blocks of ROWS_AT_ONCE rows split over numba's threads
    (`numba.set_num_threads`): the alternative to numpy's BLAS gemv for the decode step's products
    (`StackedTransformer.matvec`). Each block's rows are summed in one pass over the vector."""
    rows, cols = matrix.shape
    for block in prange((rows + ROWS_AT_ONCE - 1) // ROWS_AT_ONCE):
        first = block * ROWS_AT_ONCE
        if first + ROWS_AT_ONCE <= rows:
            a, b, c, d = np.float32(0), np.float32(0), np.float32(0), np.float32(0)
            for col in range(cols):
                x = vector[col]
                a += matrix[first, col] * x
                b += matrix[first + 1, col] * x
                c += matrix[first + 2, col] * x
                d += matrix[first + 3, col] * x
            out[first], out[first + 1], out[first + 2], out[first + 3] = a, b, c, d
        else:
            for row in range(first, rows):
                total = np.float32(0)
                for col in range(cols):
                    total += matrix[row, col] * vector[col]
                out[row] = total


def blas_matvec(matrix, vector, out):
    """out = matrix @ vector through numpy (OpenBLAS sgemv, threads from its own pool)."""
    np.dot(matrix, vector, out=out)
