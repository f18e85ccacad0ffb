"""Where a batched golden step's time goes: the matvec kernels, the rest of matvec, and the rest.

    python bench/batch_step_split.py [--plans w4g32 w8 ...] [--batch 1 32] [--tokens 8] [--threads 1]
                                     [--no-amx]

The model of bench/decode_golden.py (stories110M shape, random weights) is frozen at each plan and
decoded `--tokens` steps at each batch size, as there. Each step's CPU time of the process is cut
into: the kernels (AMX tile products or vpdpbusd, `hardwire.golden.amx` / `matvec`), the rest of
`matvec_batch` (padding the inputs, corrections, requantizing), and everything else in
`GoldenTransformer.step_batch` (norms, RoPE, attention over each user's cache, SwiGLU, residuals,
per-user Python). CPU time, not wall time, so that other jobs on the machine change the split less.
`--no-amx` runs the vpdpbusd kernel at every batch size (the state before the AMX kernel).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class CpuClock:
    """Accumulates the process CPU time spent inside wrapped calls (not re-entrant)."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, function):
        def timed(*args, **kwargs):
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - started
        return timed


def split_plan(model, plan: str, batches: list[int], tokens: int, workdir: Path) -> list[dict]:
    import numpy as np

    from decode_golden import bench_golden
    from hardwire.golden import amx, forward, matvec
    from hardwire.model.reference import KVCache
    engine_rows = bench_golden(model, plan, 1, [1], workdir)          # freezes, warms the batch-1 path
    del engine_rows
    from hardwire.die import open_die
    from hardwire.freeze.tables import build_tables, measure_ranges
    from hardwire.golden.engine import GoldenEngine
    rng = np.random.default_rng(1)
    calibration = [[1] + list(rng.integers(3, model.spec.vocab_size, 63))]
    die = open_die(workdir / f"{plan}.die")
    transformer = GoldenEngine(die, tables=build_tables(die.spec, die, measure_ranges(die, calibration))).transformer
    kernel, whole_matvec = CpuClock(), CpuClock()
    originals = (forward.matvec_batch, amx.rows_amx, dict(matvec._KERNELS))
    forward.matvec_batch = whole_matvec.wrap(forward.matvec_batch)
    amx.rows_amx = kernel.wrap(amx.rows_amx)
    for key in list(matvec._KERNELS):
        matvec._KERNELS[key] = kernel.wrap(matvec._KERNELS[key])
    rows = []
    try:
        for batch in batches:
            caches = [KVCache() for _ in range(batch)]
            logits = transformer.step_batch([1] * batch, caches)     # compiles, warms caches
            kernel.seconds = whole_matvec.seconds = 0.0
            started = time.process_time()
            for _ in range(tokens):
                logits = transformer.step_batch([int(np.argmax(row)) for row in logits], caches)
            step_ms = (time.process_time() - started) * 1e3 / tokens
            kernel_ms, matvec_ms = kernel.seconds * 1e3 / tokens, whole_matvec.seconds * 1e3 / tokens
            rows.append(dict(plan=plan, batch=batch, step_ms=step_ms, kernel_ms=kernel_ms,
                             matvec_rest_ms=matvec_ms - kernel_ms, other_ms=step_ms - matvec_ms))
    finally:
        forward.matvec_batch, amx.rows_amx = originals[0], originals[1]
        matvec._KERNELS.update(originals[2])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", nargs="+", default=["w4g32", "w8g32", "w4", "w8"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-amx", action="store_true", help="the vpdpbusd kernel at every batch size")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    from numba import set_num_threads

    from decode_golden import random_model
    from hardwire.golden import amx
    set_num_threads(args.threads)
    if args.no_amx:
        amx.AMX = False
    print(f"AMX tile products: {'on' if amx.AMX else 'off'}; {args.threads} thread(s); CPU ms per step, "
          f"mean of {args.tokens} steps", flush=True)
    print(f"{'plan':8} {'batch':>5} {'step':>8} {'kernels':>8} {'matvec rest':>11} {'other':>8} "
          f"{'other per user':>14}")
    model = random_model()
    with tempfile.TemporaryDirectory() as tmp:
        for plan in args.plans:
            for row in split_plan(model, plan, args.batch, args.tokens, Path(tmp)):
                print(f"{row['plan']:8} {row['batch']:5d} {row['step_ms']:8.2f} {row['kernel_ms']:8.2f} "
                      f"{row['matvec_rest_ms']:11.2f} {row['other_ms']:8.2f} "
                      f"{row['other_ms'] / row['batch']:14.3f}", flush=True)


if __name__ == "__main__":
    main()
