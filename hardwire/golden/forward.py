"""The golden token step: the exact integer function the chip computes (docs/arithmetic.md).

`GoldenTransformer(die, tables)` holds the packed weight codes, the integer constants of
`hardwire.golden.tables` and an integer KV cache. `step(token)` runs one token through the chip and
returns its int64 logits (units of 2^-logit_frac_bits); prefill is repeated steps, which is what
the chip does. Nothing in a step is a float: every block below takes and returns integers, and
each is named after the section of docs/arithmetic.md it implements.

`trace`, when given, receives (block name, integer vector) at each block boundary: the probe
points an RTL simulation is compared against. A block that ends in a token quantizer (§2.2) also
reports its token scale as `<block>.scale` = [mu, e] (the exponent sets the quantizer's cycles,
hardwire.datapath).
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np
from numba import njit, prange, typed

from hardwire import arithmetic as ar
from hardwire.arithmetic import (INTERNAL_BITS, RESIDUAL_BITS, TOKEN_FRAC_BITS, bit_length, exp2_negative, reciprocal,
                                 rshift_round, rsqrt, saturate, sigmoid_lookup, token_quantize)
from hardwire.die import online_hadamard_block
from hardwire.golden.adapter import apply_adapter
from hardwire.golden.attention_sums import dot16, weighted_rows
from hardwire.golden.builds import serial_and_parallel
from hardwire.golden.cycles import read_cycles
from hardwire.golden.hadamard import hadamard_transform
from hardwire.golden.matvec import (PackedMatrix, can_stack, compiled_fields, matvec, matvec_batch,
                                    matvec_batch_compiled, matvec_compiled, pack_matrix, stack, threads_now)
from hardwire.golden.prefetch import prefetch_rows
from hardwire.model.reference import bound, grow_kv_cache

Trace = Callable[[str, np.ndarray], None]
# A layer's matrices grouped by the vector they read, in the order their rows are stacked.
LINEAR_GROUPS = {"qkv": ("wq", "wk", "wv"), "wo": ("wo",), "gate_up": ("w_gate", "w_up"), "w_down": ("w_down",)}


# -- blocks ---------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def embed_lookup(codes, zeros, group, mult, shift, token, out):
    """§8.1 h_i = sat32(round((c_vi - z_vg) * m_vg * 2^-k_v))."""
    for i in range(codes.shape[1]):
        g = i // group
        value = (np.int64(codes[token, i]) - zeros[token, g]) * mult[token, g]
        out[i] = saturate(rshift_round(value, shift[token]), RESIDUAL_BITS)


@njit(cache=True, nogil=True)
def rmsnorm(h, mult, shift, eps, out_bits, rsqrt_table, out):
    """§4 u_i = round(h_i / sqrt(sum h^2 + eps) * 2^23); x = token_quantize(round(u_i * C_i *
    2^-(shift - 8))). Returns the token scale (mu, e)."""
    largest = np.int64(0)
    for i in range(h.size):
        largest = max(largest, abs(h[i]))
    pre = max(0, bit_length(largest) - ar.NORM_INPUT_BITS)
    total = np.int64(0)
    for i in range(h.size):
        v = h[i] >> pre
        total += v * v
    total += rshift_round(eps, 2 * pre)
    y, t = rsqrt(max(total, np.int64(1)), rsqrt_table)
    wide = np.empty(h.size, dtype=np.int64)
    for i in range(h.size):
        u = rshift_round((h[i] >> pre) * y, t + 30 - ar.NORM_OUTPUT_FRAC_BITS)
        wide[i] = rshift_round(u * mult[i], shift - TOKEN_FRAC_BITS)
    return token_quantize(wide, out_bits, out)


@njit(cache=True, nogil=True)
def rope(x, heads, head_dim, cos, sin):
    """§5 rotate pairs (j, j + d/2) of each head by Q1.14 cos/sin of this position, in place."""
    half = head_dim // 2
    for h in range(heads):
        base = h * head_dim
        for j in range(half):
            a, b = x[base + j], x[base + half + j]
            c, s = np.int64(cos[j]), np.int64(sin[j])
            x[base + j] = saturate(rshift_round(a * c - b * s, ar.ROPE_FRAC_BITS), INTERNAL_BITS)
            x[base + half + j] = saturate(rshift_round(b * c + a * s, ar.ROPE_FRAC_BITS), INTERNAL_BITS)


@njit(cache=True, nogil=True)
def to_cache(x, shift, bits, out):
    """§6.1 a 16-bit k or v to the KV-cache width: sat(round(x * 2^-shift))."""
    for i in range(x.size):
        out[i] = saturate(rshift_round(x[i], shift), bits)


@njit(cache=True, nogil=True)
def attention_head_range(h0, h1, q16, keys, values, first, length, heads, score_mult, score_shift, out_mult,
                         out_shift, exp2_table, reciprocal_table, wide):
    """§6 query heads [h0, h1), each: scores -> base-2 softmax weights -> normalised weighted sum
    of V, into wide[h * head_dim:(h + 1) * head_dim], the values the token quantizer reads.

    q16: the query, int16 (RoPE saturates it to 16 bits); keys/values: [positions, kv_heads,
    head_dim] cache codes; positions [first, length) attend. The two sums over the cache are
    `attention_sums`' vector code (exact)."""
    kv_heads, head_dim = keys.shape[1], keys.shape[2]
    scores = np.empty(length, dtype=np.int64)      # each position's exponent, then its weight
    total = np.empty(head_dim, dtype=np.int64)
    for h in range(h0, h1):
        g = h // (heads // kv_heads)
        qh = q16[h * head_dim:(h + 1) * head_dim]
        largest = np.int64(-(1 << 62))
        for t in range(first, length):
            z = rshift_round(dot16(qh, keys[t, g]) * score_mult, score_shift)
            scores[t] = z
            largest = max(largest, z)
        weight_sum = np.int64(0)
        for t in range(first, length):
            e = exp2_negative(largest - scores[t], exp2_table)
            scores[t] = e
            weight_sum += e
        weighted_rows(scores, values, g, first, length, total)
        r, n = reciprocal(weight_sum, reciprocal_table)
        for d in range(head_dim):
            average = rshift_round((total[d] >> n) * r, ar.RECIPROCAL_FRAC_BITS - ar.ATTENTION_AVERAGE_FRAC_BITS)
            wide[h * head_dim + d] = rshift_round(average * out_mult, out_shift - TOKEN_FRAC_BITS)


def attention_heads(q, keys, values, first, length, heads, score_mult, score_shift, out_mult, out_shift, exp2_table,
                    reciprocal_table, parts, wide):
    """Every query head of one user (`attention_head_range`), in `parts` runs of heads; the
    parallel build splits them over the threads, for one user's long context (`step_compiled`)."""
    q16 = np.empty(q.size, dtype=np.int16)         # |q| <= 2^15 - 1: RoPE saturates it to INTERNAL_BITS
    for i in range(q.size):
        q16[i] = q[i]
    for part in prange(parts):
        attention_head_range(part * heads // parts, (part + 1) * heads // parts, q16, keys, values, first, length,
                             heads, score_mult, score_shift, out_mult, out_shift, exp2_table, reciprocal_table, wide)


attention_heads, attention_heads_parallel = serial_and_parallel(attention_heads)
# Attended positions x q_dim below which one user's attention stays on one thread. Measured on the
# 110M shape at 2 threads (w4g32, best of 16 steps): splitting the heads never lost from 16
# positions up (1.73 ms a step either way) and won from 64 (1.98 -> 1.86 ms; 7.30 -> 4.73 ms at
# 1,000); below ~10 positions a head is too little work to hand to another thread.
PARALLEL_MIN_ATTENTION = 1 << 13


@njit(cache=True, nogil=True)
def attention(q, keys, values, first, length, heads, score_mult, score_shift, out_mult, out_shift, out_bits,
              exp2_table, reciprocal_table, out):
    """§6 every query head (`attention_head_range`), then token_quantize over all heads (returns
    the token scale (mu, e))."""
    wide = np.empty(heads * keys.shape[2], dtype=np.int64)
    attention_heads(q, keys, values, first, length, heads, score_mult, score_shift, out_mult, out_shift,
                    exp2_table, reciprocal_table, 1, wide)
    return token_quantize(wide, out_bits, out)


@njit(cache=True, nogil=True)
def rope_and_cache(qkv, q_dim, kv_dim, heads, kv_heads, head_dim, cos, sin, cache_shift, kv_bits, keys, values, pos):
    """§5-§6.1 for one user's q|k|v at position `pos`: RoPE on q and k (in place), k and v into the
    cache (keys/values [positions, kv_heads, head_dim])."""
    q, k, v = qkv[:q_dim], qkv[q_dim:q_dim + kv_dim], qkv[q_dim + kv_dim:]
    rope(q, heads, head_dim, cos, sin)
    rope(k, kv_heads, head_dim, cos, sin)
    to_cache(k, cache_shift, kv_bits, keys[pos].reshape(-1))
    to_cache(v, cache_shift, kv_bits, values[pos].reshape(-1))


@njit(cache=True, nogil=True)
def attend(qkv, q_dim, kv_dim, heads, kv_heads, head_dim, cos, sin, cache_shift, kv_bits, keys, values, pos, first,
           score_mult, score_shift, out_mult, out_shift, out_bits, exp2_table, reciprocal_table, out):
    """`rope_and_cache`, then `attention` over positions [first, pos]. One compiled call for the
    blocks between the q|k|v and output matvecs. The attended rows are prefetched first: in a
    batched step they were evicted by the weights streamed since this user's last layer, and each
    head would otherwise wait on every row it strides through (docs/benchmarks.md)."""
    prefetch_rows(keys, first, pos - first)
    prefetch_rows(values, first, pos - first)
    rope_and_cache(qkv, q_dim, kv_dim, heads, kv_heads, head_dim, cos, sin, cache_shift, kv_bits, keys, values, pos)
    return attention(qkv[:q_dim], keys, values, first, pos + 1, heads, score_mult, score_shift, out_mult, out_shift,
                     out_bits, exp2_table, reciprocal_table, out)


@njit(cache=True, nogil=True)
def swiglu_wide(gate, up, index_mult, index_shift, mult, shift, sigmoid_table, wide):
    """§7 silu(g) = round(g * sigmoid(g) * 2^-15); wide = round(silu(g) * u * m * 2^-(k - 8)), the
    values the token quantizer reads."""
    for i in range(gate.size):
        g = gate[i]
        sig = sigmoid_lookup(rshift_round(g * index_mult, index_shift), sigmoid_table)
        silu = rshift_round(g * sig, ar.SIGMOID_FRAC_BITS)
        wide[i] = rshift_round(silu * up[i] * mult, shift - TOKEN_FRAC_BITS)


@njit(cache=True, nogil=True)
def swiglu(gate, up, index_mult, index_shift, mult, shift, out_bits, sigmoid_table, out):
    """§7 x = token_quantize(swiglu_wide). Returns the token scale (mu, e)."""
    wide = np.empty(gate.size, dtype=np.int64)
    swiglu_wide(gate, up, index_mult, index_shift, mult, shift, sigmoid_table, wide)
    return token_quantize(wide, out_bits, out)


@njit(cache=True, nogil=True)
def swiglu_hadamard(gate, up, index_mult, index_shift, mult, shift, out_bits, sigmoid_table, block, out):
    """§7 then §12: x = token_quantize(H_n clamp(swiglu_wide)), the w_down input of a die that
    records the online transform. Returns the token scale (mu, e)."""
    wide = np.empty(gate.size, dtype=np.int64)
    swiglu_wide(gate, up, index_mult, index_shift, mult, shift, sigmoid_table, wide)
    hadamard_transform(wide, block, out_bits)
    return token_quantize(wide, out_bits, out)


@njit(cache=True, nogil=True)
def residual_add(h, y):
    """§8.2 h = sat32(h + y), in place."""
    for i in range(h.size):
        h[i] = saturate(h[i] + y[i], RESIDUAL_BITS)


# -- the same blocks for several users at once (rows of 2-D arrays), one call per block ------------
# Users are independent: with several users the `_parallel` builds split them over the threads (at
# batch 32 and 2 threads these blocks took ~6 of a 22 ms step on one thread; docs/benchmarks.md).

def rmsnorm_users(hs, added, mult, shift, eps, out_bits, rsqrt_table, out, scales):
    """§4 `rmsnorm` of each row of hs; scales[b] = (mu, e) of user b. With `added` [users, width]
    (not zero rows, as hs[:0]), each row first takes its residual, hs[b] += added[b] (§8.2 `residual_add`): in
    the one-call batched step the sum and the norm then read each user's row once, on the thread
    that normalises it, where a separate add ran on one thread over every user's row, half of them
    just written by the other thread's products."""
    for b in prange(hs.shape[0]):
        if added.shape[0]:
            residual_add(hs[b], added[b])
        mu, e = rmsnorm(hs[b], mult, shift, eps, out_bits, rsqrt_table, out[b])
        scales[b, 0], scales[b, 1] = mu, e


rmsnorm_users, rmsnorm_users_parallel = serial_and_parallel(rmsnorm_users)


@njit(cache=True, nogil=True)
def norm_users(split, hs, added, mult, shift, eps, out_bits, rsqrt_table, out, scales):
    """`rmsnorm_users`, its users split over the threads when `split` (its parallel build)."""
    if split:
        rmsnorm_users_parallel(hs, added, mult, shift, eps, out_bits, rsqrt_table, out, scales)
    else:
        rmsnorm_users(hs, added, mult, shift, eps, out_bits, rsqrt_table, out, scales)


@njit(cache=True, nogil=True)
def embed_users(codes, zeros, group, mult, shift, tokens, out):
    """§8.1 `embed_lookup` of each user's token into the rows of out."""
    for b in range(tokens.size):
        embed_lookup(codes, zeros, group, mult, shift, tokens[b], out[b])


def attend_users(qkvs, q_dim, kv_dim, heads, kv_heads, head_dim, rope_cos, rope_sin, cache_shift, kv_bits, keys,
                 values, layer, positions, window, score_mult, score_shift, out_mult, out_shift, out_bits, exp2_table,
                 reciprocal_table, out, scales):
    """§5-§6 `attend` of each user b: q|k|v = qkvs[b] at position positions[b], over its own cache
    keys[b][layer] / values[b][layer] (typed lists of [layers, positions, kv_heads, head_dim]),
    the last `window` positions when window > 0; scales[b] = (mu, e). One compiled call for all
    users instead of a Python call per user and layer (384 a step at batch 32)."""
    for user in prange(qkvs.shape[0]):
        b = np.int64(user)                      # a typed list's index is signed; a prange index may not be
        pos = positions[b]
        first = 0 if window <= 0 else max(0, pos + 1 - window)
        mu, e = attend(qkvs[b], q_dim, kv_dim, heads, kv_heads, head_dim, rope_cos[pos], rope_sin[pos], cache_shift,
                       kv_bits, keys[b][layer], values[b][layer], pos, first, score_mult, score_shift, out_mult,
                       out_shift, out_bits, exp2_table, reciprocal_table, out[b])
        scales[b, 0], scales[b, 1] = mu, e


attend_users, attend_users_parallel = serial_and_parallel(attend_users)


def swiglu_users(gate_up, ffn_dim, index_mult, index_shift, mult, shift, out_bits, sigmoid_table, hadamard_block,
                 out, scales):
    """§7 `swiglu` of each row of gate_up = [gate | up] (with §12's transform when hadamard_block
    > 1: `swiglu_hadamard`); scales[b] = (mu, e) of user b."""
    for b in prange(gate_up.shape[0]):
        if hadamard_block > 1:
            mu, e = swiglu_hadamard(gate_up[b, :ffn_dim], gate_up[b, ffn_dim:], index_mult, index_shift, mult, shift,
                                    out_bits, sigmoid_table, hadamard_block, out[b])
        else:
            mu, e = swiglu(gate_up[b, :ffn_dim], gate_up[b, ffn_dim:], index_mult, index_shift, mult, shift, out_bits,
                           sigmoid_table, out[b])
        scales[b, 0], scales[b, 1] = mu, e


swiglu_users, swiglu_users_parallel = serial_and_parallel(swiglu_users)


# -- one user's whole token step in one compiled call ----------------------------------------------

@njit(cache=True, nogil=True)
def step_compiled(token, embed_codes, embed_zeros, embed_group, embed_mult, embed_shift, layers, final_mult,
                  final_shift, classifier, keys, values, pos, window, dims, eps, act_bits, kv_bits, hadamard_block,
                  rsqrt_table, rope_cos, rope_sin, exp2_table, reciprocal_table, sigmoid_table, threads,
                  min_split_attention):
    """The blocks of `GoldenTransformer.run_users` for one user, without returning to Python between
    them: int64 logits of `token` at position `pos`. layers[i] = `GoldenTransformer.compiled_layers`;
    dims = (q_dim, kv_dim, heads, kv_heads, head_dim, ffn_dim). Block by block, a step of 12 layers
    makes ~100 Python calls (110M shape, w8g32, 2 threads: 4.7 ms a step, this 3.6 ms;
    docs/benchmarks.md); this is one. With several threads the large products split their row
    blocks, and attention its heads once the attended positions x q_dim reach
    `min_split_attention`."""
    q_dim, kv_dim, heads, kv_heads, head_dim, ffn_dim = dims
    cache_shift = INTERNAL_BITS - kv_bits
    first = 0 if window <= 0 else max(0, pos + 1 - window)
    h = np.empty(embed_codes.shape[1], dtype=np.int64)
    embed_lookup(embed_codes, embed_zeros, embed_group, embed_mult, embed_shift, token, h)
    x = np.empty(h.size, dtype=np.int64)
    attended = np.empty(q_dim, dtype=np.int64)
    wide = np.empty(q_dim, dtype=np.int64)
    split_heads = threads > 1 and (pos + 1 - first) * q_dim >= min_split_attention
    gated = np.empty(ffn_dim, dtype=np.int64)
    for index in range(len(layers)):
        qkv_matrix, wo_matrix, gate_up_matrix, down_matrix, attn_mult, attn_shift, ffn_mult, ffn_shift, c = \
            layers[index]
        mu, e = rmsnorm(h, attn_mult, attn_shift, eps, act_bits, rsqrt_table, x)
        qkv = matvec_group(qkv_matrix, x, mu, e, threads, INTERNAL_BITS)
        rope_and_cache(qkv, q_dim, kv_dim, heads, kv_heads, head_dim, rope_cos[pos], rope_sin[pos], cache_shift,
                       kv_bits, keys[index], values[index], pos)
        if split_heads:
            attention_heads_parallel(qkv[:q_dim], keys[index], values[index], first, pos + 1, heads, c[0], c[1], c[2],
                                     c[3], exp2_table, reciprocal_table, min(threads, heads), wide)
        else:
            attention_heads(qkv[:q_dim], keys[index], values[index], first, pos + 1, heads, c[0], c[1], c[2], c[3],
                            exp2_table, reciprocal_table, 1, wide)
        mu, e = token_quantize(wide, act_bits, attended)
        residual_add(h, matvec_group(wo_matrix, attended, mu, e, threads, RESIDUAL_BITS))
        mu, e = rmsnorm(h, ffn_mult, ffn_shift, eps, act_bits, rsqrt_table, x)
        gate_up = matvec_group(gate_up_matrix, x, mu, e, threads, INTERNAL_BITS)
        if hadamard_block > 1:
            mu, e = swiglu_hadamard(gate_up[:ffn_dim], gate_up[ffn_dim:], c[4], c[5], c[6], c[7], act_bits,
                                    sigmoid_table, hadamard_block, gated)
        else:
            mu, e = swiglu(gate_up[:ffn_dim], gate_up[ffn_dim:], c[4], c[5], c[6], c[7], act_bits, sigmoid_table,
                           gated)
        residual_add(h, matvec_group(down_matrix, gated, mu, e, threads, RESIDUAL_BITS))
    mu, e = rmsnorm(h, final_mult, final_shift, eps, act_bits, rsqrt_table, x)
    return matvec_group(classifier, x, mu, e, threads, RESIDUAL_BITS)


@njit(cache=True, nogil=True)
def matvec_group(matrices, x, mantissa, exponent, threads, out_bits):
    """`matvec_compiled` of x through each of `matrices` (a typed list of `compiled_fields`: one
    stacked matrix, or several that could not be stacked), their outputs concatenated."""
    rows = 0
    for fields in matrices:
        rows += fields[3].size                      # a matrix's shifts: one per row
    out = np.empty(rows, dtype=np.int64)
    at = 0
    for fields in matrices:
        y = matvec_compiled(fields, x, mantissa, exponent, threads, out_bits)
        out[at:at + y.size] = y
        at += y.size
    return out


# -- several users' whole token step in one compiled call ------------------------------------------

# The blocks of a batched step whose cycles `step_batch_compiled` counts when asked (`spent`); the
# norms include the residual adds they fuse
STEP_BLOCKS = ("embedding", "norms", "q|k|v", "attention", "output", "gate|up", "SwiGLU", "down", "classifier")
(_EMBEDDING, _NORMS, _QKV_PRODUCT, _ATTENTION, _OUTPUT_PRODUCT, _GATE_UP_PRODUCT, _SWIGLU, _DOWN_PRODUCT,
 _CLASSIFIER) = range(len(STEP_BLOCKS))
NOT_TIMED = np.zeros(0, dtype=np.int64)     # `spent` when a step counts nothing


@njit(cache=True, nogil=True, inline="always")
def _lap(spent, block, since):
    """Adds the cycles since `since` to spent[block] when the step is timed (spent not empty);
    returns the counter now (or `since`, untimed)."""
    if spent.size == 0:
        return since
    now = read_cycles()
    spent[block] += now - since
    return now


@njit(cache=True, nogil=True)
def step_batch_compiled(tokens, embed_codes, embed_zeros, embed_group, embed_mult, embed_shift, layers, final_mult,
                        final_shift, classifier, keys, values, positions, window, dims, eps, act_bits, kv_bits,
                        hadamard_block, rsqrt_table, rope_cos, rope_sin, exp2_table, reciprocal_table, sigmoid_table,
                        threads, spent):
    """The blocks of `GoldenTransformer.run_users` for several users, without returning to Python
    between them: int64 logits [users, vocab]. User b decodes tokens[b] at positions[b] over its
    own cache keys[b] / values[b] (typed lists, as `attend_users`); layers as `step_compiled`.
    Each block runs for all users before the next, the per-user blocks split their users over the
    threads when `threads` > 1, and each matrix's codes are read once for all users
    (`matvec_batch_compiled`). `spent`: `NOT_TIMED`, or int64 [len(STEP_BLOCKS)] to which each
    block's wall cycles are added (`cycles.read_cycles`)."""
    q_dim, kv_dim, heads, kv_heads, head_dim, ffn_dim = dims
    cache_shift = INTERNAL_BITS - kv_bits
    users = tokens.size
    split = threads > 1
    clock = read_cycles() if spent.size else 0
    hs = np.empty((users, embed_codes.shape[1]), dtype=np.int64)
    embed_users(embed_codes, embed_zeros, embed_group, embed_mult, embed_shift, tokens, hs)
    clock = _lap(spent, _EMBEDDING, clock)
    xs = np.empty_like(hs)
    scales = np.empty((users, 2), dtype=np.int64)
    attended = np.empty((users, q_dim), dtype=np.int64)
    gated = np.empty((users, ffn_dim), dtype=np.int64)
    # each residual is added by the norm that reads it next (`rmsnorm_users`): the next layer's, or
    # the final one
    added = hs[:0]                              # none before the first layer
    for index in range(len(layers)):
        qkv_matrix, wo_matrix, gate_up_matrix, down_matrix, attn_mult, attn_shift, ffn_mult, ffn_shift, c = \
            layers[index]
        norm_users(split, hs, added, attn_mult, attn_shift, eps, act_bits, rsqrt_table, xs, scales)
        clock = _lap(spent, _NORMS, clock)
        qkvs = matvec_group_batch(qkv_matrix, xs, scales, threads, INTERNAL_BITS)
        clock = _lap(spent, _QKV_PRODUCT, clock)
        if split:
            attend_users_parallel(qkvs, q_dim, kv_dim, heads, kv_heads, head_dim, rope_cos, rope_sin, cache_shift,
                                  kv_bits, keys, values, index, positions, window, c[0], c[1], c[2], c[3], act_bits,
                                  exp2_table, reciprocal_table, attended, scales)
        else:
            attend_users(qkvs, q_dim, kv_dim, heads, kv_heads, head_dim, rope_cos, rope_sin, cache_shift, kv_bits,
                         keys, values, index, positions, window, c[0], c[1], c[2], c[3], act_bits, exp2_table,
                         reciprocal_table, attended, scales)
        clock = _lap(spent, _ATTENTION, clock)
        attention_out = matvec_group_batch(wo_matrix, attended, scales, threads, RESIDUAL_BITS)
        clock = _lap(spent, _OUTPUT_PRODUCT, clock)
        norm_users(split, hs, attention_out, ffn_mult, ffn_shift, eps, act_bits, rsqrt_table, xs, scales)
        clock = _lap(spent, _NORMS, clock)
        gate_up = matvec_group_batch(gate_up_matrix, xs, scales, threads, INTERNAL_BITS)
        clock = _lap(spent, _GATE_UP_PRODUCT, clock)
        if split:
            swiglu_users_parallel(gate_up, ffn_dim, c[4], c[5], c[6], c[7], act_bits, sigmoid_table, hadamard_block,
                                  gated, scales)
        else:
            swiglu_users(gate_up, ffn_dim, c[4], c[5], c[6], c[7], act_bits, sigmoid_table, hadamard_block, gated,
                         scales)
        clock = _lap(spent, _SWIGLU, clock)
        added = matvec_group_batch(down_matrix, gated, scales, threads, RESIDUAL_BITS)
        clock = _lap(spent, _DOWN_PRODUCT, clock)
    norm_users(split, hs, added, final_mult, final_shift, eps, act_bits, rsqrt_table, xs, scales)
    clock = _lap(spent, _NORMS, clock)
    logits = matvec_group_batch(classifier, xs, scales, threads, RESIDUAL_BITS)
    _lap(spent, _CLASSIFIER, clock)
    return logits


@njit(cache=True, nogil=True)
def matvec_group_batch(matrices, xs, scales, threads, out_bits):
    """`matvec_batch_compiled` of the users' xs through each of `matrices` (`matvec_group`'s typed
    list), their outputs side by side: int64 [users, rows]."""
    if len(matrices) == 1:
        return matvec_batch_compiled(matrices[0], xs, scales, threads, out_bits)
    rows = 0
    for fields in matrices:
        rows += fields[3].size
    out = np.empty((xs.shape[0], rows), dtype=np.int64)
    at = 0
    for fields in matrices:
        y = matvec_batch_compiled(fields, xs, scales, threads, out_bits)
        out[:, at:at + y.shape[1]] = y
        at += y.shape[1]
    return out


@njit(cache=True, nogil=True)
def argmax(logits):
    """§9.1 the first index of the largest logit."""
    best = 0
    for i in range(1, logits.size):
        if logits[i] > logits[best]:
            best = i
    return best


# -- the transformer ------------------------------------------------------------------------------

def _scalar(tables, name) -> int:
    return int(tables[name][0])


def _pair(tables, name) -> tuple[int, int]:
    m, k = tables[name]
    return int(m), int(k)


def _compiled_group(matrices: list[PackedMatrix]) -> typed.List:
    """A group of matrices reading one vector, as `matvec_group` takes them."""
    group = typed.List()
    for matrix in matrices:
        group.append(compiled_fields(matrix))
    return group


class _UserCaches:
    """Several users' caches ((keys, values, position) each) as `attend_users` reads them: typed
    lists of the key and value arrays (made once a step, ~0.1 ms for 32 users) and the positions."""

    def __init__(self, caches: list[tuple]):
        self.keys = typed.List([keys for keys, _, _ in caches])
        self.values = typed.List([values for _, values, _ in caches])
        self.positions = np.array([pos for _, _, pos in caches], np.int64)


class GoldenTransformer:
    """The die's integer datapath with a KV cache of `capacity` positions (grows on demand)."""

    def __init__(self, die, tables: dict[str, np.ndarray], capacity: int | None = None, patch=None):
        spec = self.spec = die.spec
        self.patch = patch
        self.tables = tables
        self.threads: int | None = None         # numba's thread count, set by each step (None: ask)
        self.split_users = False                # whether this step's per-user blocks split over threads
        # when set (int64 [len(STEP_BLOCKS)]), each one-call batched step adds its blocks' cycles to it
        self.step_cycles: np.ndarray | None = None
        self.act_bits = _scalar(tables, "activation_bits")
        self.kv_bits = _scalar(tables, "kv_bits")
        self.logit_frac_bits = _scalar(tables, "logit_frac_bits")
        self.norm_eps = np.int64(_scalar(tables, "norm_eps"))
        self.initial_capacity = min(capacity or 256, spec.max_context)
        self.down_hadamard_block = online_hadamard_block(die.manifest)     # §12, 1 when the die has none

        embed = die.quantized("embed")
        self.embed_codes = np.ascontiguousarray(embed.codes, dtype=np.int8)
        self.embed_group = embed.format.group_width(spec.hidden_dim)
        groups = embed.format.groups(spec.hidden_dim)
        self.embed_zeros = (np.zeros((spec.vocab_size, groups), np.int64) if embed.zeros is None
                            else embed.zeros.astype(np.int64))
        self.embed_mult = tables["embed.lookup_mult"]
        self.embed_shift = tables["embed.lookup_shift"]

        self.die_rows: dict[str, int] = {}
        self.layers = []
        for i in range(spec.layers):
            p = f"layers.{i}."
            layer = {}
            for key, shorts in LINEAR_GROUPS.items():
                names = [p + short for short in shorts]
                layer[key] = self._packed(die, names)
                layer[key + ".adapters"] = self._adapters(names, layer[key])
            for name in ("attn_norm", "ffn_norm"):
                layer[name] = (tables[p + name + ".mult"], _scalar(tables, p + name + ".shift"))
            for name in ("score_mult", "attention_out_mult", "sigmoid_index_mult", "swiglu_mult"):
                layer[name] = _pair(tables, p + name)
            self.layers.append(layer)
        self.final_norm = (tables["final_norm.mult"], _scalar(tables, "final_norm.shift"))
        self.classifier = self._packed(die, [spec.classifier])[0]
        self.reset()

    def _packed(self, die, names: list[str]) -> list[PackedMatrix]:
        """Matrices reading the same input, stacked into one when their packing agrees."""
        matrices = []
        for name in names:
            q = die.quantized(name)
            self.die_rows[name] = q.shape[0]
            bias = self.tables.get(name + ".bias")
            matrices.append(pack_matrix(q.codes, q.zeros, q.format.bits, q.format.group,
                                        self.tables[name + ".mult"], self.tables[name + ".shift"], bias))
        if len(matrices) > 1 and can_stack(matrices):
            return [stack(matrices)]
        return matrices

    def _adapters(self, names: list[str], matrices: list[PackedMatrix]) -> list[list]:
        """For each packed matrix, the patch's adapters on it as (first row, Adapter): rows of
        stacked matrices (q|k|v) follow each other in `names` order."""
        found = self.patch.adapters if self.patch is not None else {}
        if len(matrices) == len(names):
            return [[(0, found[n])] if n in found else [] for n in names]
        placed, row = [], 0
        for name in names:
            if name in found:
                placed.append((row, found[name]))
            row += self.die_rows[name]
        return [placed]

    def weight_bytes(self) -> int:
        """Bytes of packed codes a token step streams (embedding row lookups aside)."""
        total = self.classifier.bytes
        for layer in self.layers:
            total += sum(m.bytes for key in LINEAR_GROUPS for m in layer[key])
        return total

    # -- state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.capacity = 0
        self.keys = self.values = None
        self.position = 0
        self._grow(self.initial_capacity)

    def _grow(self, needed: int) -> None:
        grow_kv_cache(self, needed, np.int16)

    # -- one token ----------------------------------------------------------------------------------
    def _linear(self, matrices: list[PackedMatrix], xs: np.ndarray, scales: np.ndarray, out_bits: int,
                adapters: list[list] | None = None) -> np.ndarray:
        """Each user's x (rows of xs) through `matrices` (stacked, or one after another and
        concatenated), with the patch's adapter terms (§11) added to the accumulators of the rows
        they patch: int64 [users, rows]."""
        outs = []
        for index, matrix in enumerate(matrices):
            placed = adapters[index] if adapters else []
            extras = None
            if placed:
                extras = np.zeros((len(xs), matrix.rows), np.int64)
                for x, extra in zip(xs, extras):
                    for row, adapter in placed:
                        apply_adapter(adapter, x, extra[row:row + adapter.rows])
            if len(xs) == 1:            # one user: a single compiled call (`matvec`)
                outs.append(matvec(matrix, xs[0], scales[0], out_bits, None if extras is None else extras[0],
                                   self.threads)[None])
            else:
                outs.append(matvec_batch(matrix, xs, scales, out_bits, extras, self.threads))
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def step(self, token: int, trace: Trace | None = None) -> np.ndarray:
        """Logits (int64 [vocab], units of 2^-logit_frac_bits) of `token` at the next position."""
        pos = self.position
        self._grow(pos + 1)
        if trace is None and self.compiled_layers is not None:
            logits = self._step_compiled(int(token), pos)
        else:
            logits = self.run_users([int(token)], [(self.keys, self.values, pos)], trace)[0]
        self.position = pos + 1
        return logits

    @cached_property
    def compiled_layers(self) -> typed.List | None:
        """The layers as `step_compiled` reads them, one tuple each: its q|k|v, output, gate|up and
        down matrices (typed lists of `compiled_fields`, one entry when stacked), the norms'
        constants and the layer's eight multipliers. None when a patch adds adapters: their
        terms are added by the block-by-block step."""
        if any(adapter for layer in self.layers for key in LINEAR_GROUPS for adapter in layer[key + ".adapters"]):
            return None
        layers = typed.List()
        for layer in self.layers:
            constants = np.array([v for name in ("score_mult", "attention_out_mult", "sigmoid_index_mult",
                                                 "swiglu_mult") for v in layer[name]], np.int64)
            (attn_mult, attn_shift), (ffn_mult, ffn_shift) = layer["attn_norm"], layer["ffn_norm"]
            layers.append(tuple(_compiled_group(layer[key]) for key in LINEAR_GROUPS) + (
                np.ascontiguousarray(attn_mult, np.int64), np.int64(attn_shift),
                np.ascontiguousarray(ffn_mult, np.int64), np.int64(ffn_shift), constants))
        return layers

    def _step_compiled(self, token: int, pos: int) -> np.ndarray:
        spec, t = self.spec, self.tables
        dims = (spec.q_dim, spec.kv_dim, spec.heads, spec.kv_heads, spec.head_dim, spec.ffn_dim)
        final_mult, final_shift = self.final_norm
        return step_compiled(token, self.embed_codes, self.embed_zeros, self.embed_group, self.embed_mult,
                             self.embed_shift, self.compiled_layers, final_mult, np.int64(final_shift),
                             self.compiled_classifier, self.keys, self.values, pos, spec.sliding_window or 0, dims,
                             self.norm_eps, self.act_bits, self.kv_bits, self.down_hadamard_block, t["rsqrt_table"],
                             t["rope_cos"], t["rope_sin"], t["exp2_table"], t["reciprocal_table"],
                             t["sigmoid_table"], threads_now(), PARALLEL_MIN_ATTENTION)

    def _step_batch_compiled(self, tokens: list[int], caches: _UserCaches) -> np.ndarray:
        spec, t = self.spec, self.tables
        dims = (spec.q_dim, spec.kv_dim, spec.heads, spec.kv_heads, spec.head_dim, spec.ffn_dim)
        final_mult, final_shift = self.final_norm
        spent = NOT_TIMED if self.step_cycles is None else self.step_cycles
        if not (isinstance(spent, np.ndarray) and spent.dtype == np.int64 and spent.flags.c_contiguous
                and spent.shape in ((0,), (len(STEP_BLOCKS),)) and spent.flags.writeable):
            # compiled code indexes it unchecked
            raise ValueError(f"step_cycles: expected None or a writable int64 array of {len(STEP_BLOCKS)} "
                             f"({', '.join(STEP_BLOCKS)}), got {spent!r}")
        return step_batch_compiled(np.asarray(tokens, np.int64), self.embed_codes, self.embed_zeros, self.embed_group,
                                   self.embed_mult, self.embed_shift, self.compiled_layers, final_mult,
                                   np.int64(final_shift), self.compiled_classifier, caches.keys, caches.values,
                                   caches.positions, spec.sliding_window or 0, dims, self.norm_eps, self.act_bits,
                                   self.kv_bits, self.down_hadamard_block, t["rsqrt_table"], t["rope_cos"],
                                   t["rope_sin"], t["exp2_table"], t["reciprocal_table"], t["sigmoid_table"],
                                   self.threads, spent)

    @cached_property
    def compiled_classifier(self) -> typed.List:
        return _compiled_group([self.classifier])

    def step_batch(self, tokens: list[int], caches: list) -> list[np.ndarray]:
        """One token for each of several users; user i's KV cache is caches[i] (a
        `hardwire.model.reference.KVCache`). Each user's logits are exactly those of `step` with
        its cache: the blocks are the same integer functions, and a matrix's codes are read once for
        all users' vectors (`matvec_batch`), as the chip's layer pipeline decodes its users together."""
        for cache in caches:
            if cache.position + 1 > cache.capacity:        # (swapping a cache in costs ~10 us a user)
                with bound(self, cache):
                    self._grow(cache.position + 1)
        logits = self.run_users([int(t) for t in tokens], [(c.keys, c.values, c.position) for c in caches])
        for cache in caches:
            cache.position += 1
        return logits

    def run_users(self, tokens: list[int], caches: list[tuple], trace: Trace | None = None) -> list[np.ndarray]:
        """The token step, block by block in chip order, each block for every user before the next
        (caches[i] = (keys, values, position) of user i). `trace` is for one user."""
        note = trace if trace is not None else None
        self.threads = threads_now()            # asked once a step, not by each of its products
        if note is None and len(tokens) > 1 and self.compiled_layers is not None:
            return list(self._step_batch_compiled(tokens, _UserCaches(caches)))
        self.split_users = len(tokens) > 1 and self.threads > 1     # per-user blocks: their parallel builds
        hs = np.empty((len(tokens), self.spec.hidden_dim), np.int64)
        if note is None and len(tokens) > 1:      # many users: one compiled call per block for all of them
            embed_users(self.embed_codes, self.embed_zeros, self.embed_group, self.embed_mult, self.embed_shift,
                        np.asarray(tokens, np.int64), hs)
            caches = _UserCaches(caches)
        else:
            for h, token in zip(hs, tokens):
                self.embed(token, h, note)
        for index, layer in enumerate(self.layers):
            self.attention_block(index, layer, hs, caches, note)
            self.ffn_block(index, layer, hs, note)
        return list(self.head(hs, note))

    # -- the blocks of the token step, in chip order, each for all users (rows) ---------------------
    # `note` (or None) receives each block's output of the one traced user.
    def embed(self, token: int, h: np.ndarray, note) -> None:
        embed_lookup(self.embed_codes, self.embed_zeros, self.embed_group, self.embed_mult, self.embed_shift,
                     token, h)
        if note:
            note("embed", h)

    def norm(self, name: str, mult_shift: tuple, hs: np.ndarray, note) -> tuple[np.ndarray, np.ndarray]:
        """§4 RMSNorm of each h: the quantized vectors and their token scales [users, (mu, e)]."""
        mult, shift = mult_shift
        xs = np.empty_like(hs)
        scales = np.empty((hs.shape[0], 2), np.int64)
        norm_users(self.split_users, hs, hs[:0], mult, shift, self.norm_eps, self.act_bits, self.tables["rsqrt_table"],
                   xs, scales)
        if note:
            note(name, xs[0])
            note(name + ".scale", scales[0])
        return xs, scales

    def attention_block(self, index: int, layer: dict, hs: np.ndarray, caches: list[tuple], note) -> None:
        """Norm, q/k/v, RoPE, each position's k and v into its user's cache ((keys, values, position),
        keys/values [layers, positions, kv_heads, head_dim]), or all users' `_UserCaches`, attention, output
        projection, residual."""
        spec, t = self.spec, self.tables
        q_dim, kv_dim = spec.q_dim, spec.kv_dim
        cache_shift = INTERNAL_BITS - self.kv_bits
        name = f"layers.{index}."
        xs, scales = self.norm(name + "attn_norm", layer["attn_norm"], hs, note)
        qkvs = self._linear(layer["qkv"], xs, scales, INTERNAL_BITS, layer["qkv.adapters"])
        attended = np.empty((hs.shape[0], q_dim), np.int64)
        attended_scales = np.empty((hs.shape[0], 2), np.int64)
        score_m, score_k = layer["score_mult"]
        out_m, out_k = layer["attention_out_mult"]
        rope_cos, rope_sin, exp2_table, reciprocal_table = (t["rope_cos"], t["rope_sin"], t["exp2_table"],
                                                            t["reciprocal_table"])
        if isinstance(caches, _UserCaches):
            (attend_users_parallel if self.split_users else attend_users)(
                qkvs, q_dim, kv_dim, spec.heads, spec.kv_heads, spec.head_dim, rope_cos, rope_sin, cache_shift,
                self.kv_bits, caches.keys, caches.values, index, caches.positions, spec.sliding_window or 0, score_m,
                score_k, out_m, out_k, self.act_bits, exp2_table, reciprocal_table, attended, attended_scales)
        else:
            for b, (qkv, (keys, values, pos)) in enumerate(zip(qkvs, caches)):
                first = 0 if spec.sliding_window is None else max(0, pos + 1 - spec.sliding_window)
                attended_scales[b] = attend(qkv, q_dim, kv_dim, spec.heads, spec.kv_heads, spec.head_dim,
                                            rope_cos[pos], rope_sin[pos], cache_shift, self.kv_bits, keys[index],
                                            values[index], pos, first, score_m, score_k, out_m, out_k, self.act_bits,
                                            exp2_table, reciprocal_table, attended[b])
                if note:
                    note(name + "q", qkv[:q_dim])              # rotated in place
                    note(name + "k", keys[index, pos].reshape(-1))
                    note(name + "v", values[index, pos].reshape(-1))
                    note(name + "attention", attended[b])
                    note(name + "attention.scale", attended_scales[b])
        ys = self._linear(layer["wo"], attended, attended_scales, RESIDUAL_BITS, layer["wo.adapters"])
        residual_add(hs.reshape(-1), ys.reshape(-1))
        if note:
            note(name + "attention_residual", hs[0])

    def ffn_block(self, index: int, layer: dict, hs: np.ndarray, note) -> None:
        """Norm, gate and up, SwiGLU, down, residual: each h updated."""
        spec, t = self.spec, self.tables
        name = f"layers.{index}."
        xs, scales = self.norm(name + "ffn_norm", layer["ffn_norm"], hs, note)
        index_m, index_k = layer["sigmoid_index_mult"]
        glu_m, glu_k = layer["swiglu_mult"]
        gate_up = self._linear(layer["gate_up"], xs, scales, INTERNAL_BITS, layer["gate_up.adapters"])
        gated = np.empty((hs.shape[0], spec.ffn_dim), np.int64)
        gated_scales = np.empty((hs.shape[0], 2), np.int64)
        (swiglu_users_parallel if self.split_users else swiglu_users)(
            gate_up, spec.ffn_dim, index_m, index_k, glu_m, glu_k, self.act_bits, t["sigmoid_table"],
            self.down_hadamard_block, gated, gated_scales)
        if note:
            note(name + "swiglu", gated[0])
            note(name + "swiglu.scale", gated_scales[0])
        ys = self._linear(layer["w_down"], gated, gated_scales, RESIDUAL_BITS, layer["w_down.adapters"])
        residual_add(hs.reshape(-1), ys.reshape(-1))
        if note:
            note(name + "ffn_residual", hs[0])

    def head(self, hs: np.ndarray, note) -> np.ndarray:
        """Final norm and classifier: int64 logits [users, vocab]."""
        xs, scales = self.norm("final_norm", self.final_norm, hs, note)
        logits = self._linear([self.classifier], xs, scales, RESIDUAL_BITS)
        if note:
            note("logits", logits[0])
        return logits

    def forward(self, ids, trace: Trace | None = None) -> np.ndarray:
        """int64 logits [len(ids), vocab] of new tokens appended at the current position."""
        ids = [int(i) for i in ids]
        if any(not 0 <= i < self.spec.vocab_size for i in ids):
            raise ValueError(f"token ids must lie in [0, {self.spec.vocab_size})")
        out = np.empty((len(ids), self.spec.vocab_size), np.int64)
        for row, token in enumerate(ids):
            out[row] = self.step(token, trace)
        return out
