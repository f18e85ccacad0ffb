"""Where a one-user golden token step's wall time goes: inside its matrix products or outside them.

    python bench/step_split.py [--plans w4g32 w8g32] [--threads 2] [--rounds 5] [--steps 16] [--batch 8 32]

The model of bench/decode_golden.py (stories110M shape, random weights) is frozen at each plan and
decoded one token a step, two ways: `step`, the whole token in one compiled call
(`hardwire.golden.forward.step_compiled`), and the block-by-block step (`run_users`, what a traced
or patched step runs), in which every call of `hardwire.golden.forward.matvec` (one compiled call
per product: preparing x, the kernel, requantizing, and the Python around it) is timed; the rest of
that step is norms, RoPE and attention over the cache, SwiGLU, residuals and the Python between
them. Wall time, so that a product's second thread counts; best of `--rounds` rounds of `--steps`
steps. With `--batch`, also that many users decoding together (`step_batch`), the same two ways:
one compiled call a step (`step_batch_compiled`) and block by block (`compiled_layers` off), steps
of the two alternating; printed: the median step of each.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def split(transformer, rounds: int, steps: int) -> tuple[float, float, float]:
    """(seconds a compiled step, seconds a block-by-block step, seconds of it inside `matvec`
    calls), each from its fastest round."""
    import hardwire.golden.forward as forward
    inside = [0.0]
    real = forward.matvec

    def timed(*args, **kwargs):
        started = time.perf_counter()
        result = real(*args, **kwargs)
        inside[0] += time.perf_counter() - started
        return result

    def blockwise(token: int) -> np.ndarray:
        logits = transformer.run_users([token], [(transformer.keys, transformer.values, transformer.position)])[0]
        transformer.position += 1
        return logits

    transformer.reset()
    transformer._grow(2 * (8 + rounds * steps) + 2)     # the block-by-block step does not grow the cache
    token = int(np.argmax(transformer.step(1)))
    for _ in range(8):                       # compiles, warms caches
        token = int(np.argmax(transformer.step(token)))
        token = int(np.argmax(blockwise(token)))
    compiled, stepwise = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(steps):
            token = int(np.argmax(transformer.step(token)))
        compiled.append((time.perf_counter() - started) / steps)
        forward.matvec = timed
        try:
            inside[0] = 0.0
            started = time.perf_counter()
            for _ in range(steps):
                token = int(np.argmax(blockwise(token)))
            stepwise.append(((time.perf_counter() - started) / steps, inside[0] / steps))
        finally:
            forward.matvec = real
    return (min(compiled),) + min(stepwise)


def batch_split(transformer, users: int, steps: int) -> tuple[float, float]:
    """(median seconds of a one-call batched step, of a block-by-block one) for `users` users."""
    import copy

    from hardwire.model.reference import KVCache
    blockwise = copy.copy(transformer)           # the same packed weights; each user's cache is its own
    blockwise.compiled_layers = None
    runs = [(transformer, [KVCache() for _ in range(users)], []), (blockwise, [KVCache() for _ in range(users)], [])]
    for engine, caches, _ in runs:
        for _ in range(4):                       # compiles, warms caches
            engine.step_batch([1] * users, caches)
    for _ in range(steps):
        for engine, caches, seconds in runs:
            started = time.perf_counter()
            engine.step_batch([1] * users, caches)
            seconds.append(time.perf_counter() - started)
    return tuple(float(np.median(seconds)) for _, _, seconds in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", nargs="+", default=["w4g32", "w8g32"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, nargs="*", default=[])
    args = parser.parse_args()
    import numba
    numba.set_num_threads(args.threads)
    from decode_golden import golden_engine, random_model
    model = random_model()
    for plan in args.plans:
        with tempfile.TemporaryDirectory() as folder:
            transformer = golden_engine(model, plan, Path(folder)).transformer
            compiled, step, inside = split(transformer, args.rounds, args.steps)
            print(f"{plan}, {args.threads} threads: compiled step {compiled * 1e3:.2f} ms; block-by-block step "
                  f"{step * 1e3:.2f} ms, inside the products {inside * 1e3:.2f} ms, outside "
                  f"{(step - inside) * 1e3:.2f} ms ({(step - inside) / step:.0%})", flush=True)
            for users in args.batch:
                together, blockwise = batch_split(transformer, users, args.rounds * args.steps)
                print(f"{plan}, {args.threads} threads, {users} users: one-call step {together * 1e3:.2f} ms, "
                      f"block by block {blockwise * 1e3:.2f} ms (medians)", flush=True)


if __name__ == "__main__":
    main()
