"""Attention over many users' KV caches, as a batched golden step runs it, against plain loops.

    python bench/batch_attention.py [--positions 16 48 128] [--users 32] [--threads 2] [--repeats 10]

Each of `--users` users has its own int16 cache of the 110M shape (12 layers, 12 heads of 64,
capacity 256 positions, random codes), so the caches together are far larger than the CPU's
caches, as in a batched step. For each layer in turn, every user's 12 query heads attend over its
first `--positions` positions, the users split over the threads (`attend_users`' layout):
`hardwire.golden.forward.attention_heads` (the q.k dot products as 16-bit pairs added in 32 bits,
the weighted sum of V in 64-bit registers: `hardwire/golden/attention_sums.py`) against
`plain_heads` below, the per-head loops the golden model ran before, compiled by numba alone.
Both give the same integers (checked); printed: ms for all users and layers, best of `--repeats`,
the two alternating so that both see the same load.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LAYERS, HEADS, HEAD_DIM, CAPACITY = 12, 12, 64, 256
SCORE, OUT = (3, 20), (5000, 20)          # (multiplier, shift) pairs of a plausible die


def build(threads: int):
    from numba import njit, prange

    from hardwire import arithmetic as ar
    from hardwire.arithmetic import TOKEN_FRAC_BITS, exp2_negative, reciprocal, rshift_round
    from hardwire.golden.forward import attention_heads

    @njit(nogil=True)
    def plain_heads(q, keys, values, first, length, heads, score_mult, score_shift, out_mult, out_shift,
                    exp2_table, reciprocal_table, wide):
        """§6 head by head with plain loops (the golden model's code before attention_sums)."""
        kv_heads, head_dim = keys.shape[1], keys.shape[2]
        for h in range(heads):
            g = h // (heads // kv_heads)
            exponent = np.empty(length, dtype=np.int64)
            total = np.zeros(head_dim, dtype=np.int64)
            largest = np.int64(-(1 << 62))
            for t in range(first, length):
                dot = np.int64(0)
                for d in range(head_dim):
                    dot += q[h * head_dim + d] * np.int64(keys[t, g, d])
                z = rshift_round(dot * score_mult, score_shift)
                exponent[t] = z
                largest = max(largest, z)
            weight_sum = np.int64(0)
            for t in range(first, length):
                e = exp2_negative(largest - exponent[t], exp2_table)
                weight_sum += e
                for d in range(head_dim):
                    total[d] += e * np.int64(values[t, g, d])
            r, n = reciprocal(weight_sum, reciprocal_table)
            for d in range(head_dim):
                average = rshift_round((total[d] >> n) * r, ar.RECIPROCAL_FRAC_BITS - ar.ATTENTION_AVERAGE_FRAC_BITS)
                wide[h * head_dim + d] = rshift_round(average * out_mult, out_shift - TOKEN_FRAC_BITS)

    def over_users(heads_of_one_user):
        """One step's attention: each layer in turn, every user's heads, the users split over the threads."""
        @njit(nogil=True, parallel=True)
        def step(keys, values, qs, wide, length, exp2_table, reciprocal_table):
            for layer in range(LAYERS):
                for user in prange(len(keys)):
                    b = np.int64(user)
                    heads_of_one_user(qs[b], keys[b][layer], values[b][layer], length, exp2_table, reciprocal_table,
                                      wide[b])
        return step

    @njit(nogil=True)
    def vector_heads(q, keys, values, length, exp2_table, reciprocal_table, wide):
        attention_heads(q, keys, values, 0, length, HEADS, SCORE[0], SCORE[1], OUT[0], OUT[1], exp2_table,
                        reciprocal_table, 1, wide)

    @njit(nogil=True)
    def loop_heads(q, keys, values, length, exp2_table, reciprocal_table, wide):
        plain_heads(q, keys, values, 0, length, HEADS, SCORE[0], SCORE[1], OUT[0], OUT[1], exp2_table,
                    reciprocal_table, wide)

    step_vector, step_plain = over_users(vector_heads), over_users(loop_heads)
    return step_vector, step_plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, nargs="+", default=[16, 48, 128])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if max(args.positions) > CAPACITY:
        sys.exit(f"--positions: at most {CAPACITY} (the caches' capacity)")
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    from numba import set_num_threads, typed

    from hardwire.arithmetic import exp2_table, reciprocal_table
    set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    limit = (1 << 15) - 1
    keys = typed.List([rng.integers(-limit, limit + 1, (LAYERS, CAPACITY, HEADS, HEAD_DIM)).astype(np.int16)
                       for _ in range(args.users)])
    values = typed.List([rng.integers(-limit, limit + 1, (LAYERS, CAPACITY, HEADS, HEAD_DIM)).astype(np.int16)
                         for _ in range(args.users)])
    qs = rng.integers(-limit, limit + 1, (args.users, HEADS * HEAD_DIM)).astype(np.int64)
    tables = (exp2_table(), reciprocal_table())
    step_vector, step_plain = build(args.threads)
    print(f"{args.users} users x {LAYERS} layers, {args.threads} thread(s); ms, best of {args.repeats}")
    print(f"{'positions':>9} {'plain loops':>11} {'vector sums':>11} {'ratio':>6}")
    for length in args.positions:
        wide_plain = np.empty((args.users, HEADS * HEAD_DIM), np.int64)
        wide_vector = np.empty_like(wide_plain)
        step_plain(keys, values, qs, wide_plain, length, *tables)
        step_vector(keys, values, qs, wide_vector, length, *tables)
        if not np.array_equal(wide_plain, wide_vector):
            sys.exit(f"the two differ at {length} positions")
        best = {"plain": float("inf"), "vector": float("inf")}
        for _ in range(args.repeats):
            for name, step, wide in (("plain", step_plain, wide_plain), ("vector", step_vector, wide_vector)):
                started = time.perf_counter()
                step(keys, values, qs, wide, length, *tables)
                best[name] = min(best[name], time.perf_counter() - started)
        print(f"{length:9d} {best['plain'] * 1e3:11.2f} {best['vector'] * 1e3:11.2f} "
              f"{best['plain'] / best['vector']:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
