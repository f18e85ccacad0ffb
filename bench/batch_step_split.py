"""Where a batched golden step's time goes: the matvec kernels, the rest of matvec, and the rest.

    python bench/batch_step_split.py [--plans w4g32 w8 ...] [--batch 1 32] [--tokens 8] [--threads 1]

The model of bench/decode_golden.py (stories110M shape, random weights) is frozen at each plan and
decoded `--tokens` steps at each batch size, as there, block by block (`run_users`; the one-call
batched step runs the same blocks without Python between them). Each step's CPU time is cut
into: the kernels (AMX tile products or vpdpbusd, `hardwire.golden.amx` / `matvec`), the rest of
`matvec_batch` (padding the inputs, corrections, requantizing), and everything else in
`GoldenTransformer.step_batch` (norms, RoPE, attention over each user's cache, SwiGLU, residuals,
per-user Python). CPU time, not wall time, so that other jobs on the machine change the split less.
Where the CPU has AMX, the steps alternate between AMX tile products on and off (the vpdpbusd
kernel at every batch size: the state before `hardwire.golden.amx`), the same users' caches
going on, so that both see the same load; each is the mean of `--tokens` steps.
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


def split_plan(model, plan: str, batches: list[int], tokens: int, workdir: Path, modes: list[bool]) -> list[dict]:
    import numpy as np

    from decode_golden import golden_engine
    from hardwire.golden import amx, forward, matvec
    from hardwire.model.reference import KVCache
    transformer = golden_engine(model, plan, workdir).transformer
    transformer.compiled_layers = None      # block by block (`run_users`): the one-call step cannot be timed inside
    kernel, whole_matvec = CpuClock(), CpuClock()
    originals = (forward.matvec_batch, amx.rows_amx, dict(matvec._KERNELS))
    forward.matvec_batch = whole_matvec.wrap(forward.matvec_batch)
    amx.rows_amx = kernel.wrap(amx.rows_amx)
    for key in list(matvec._KERNELS):
        matvec._KERNELS[key] = kernel.wrap(matvec._KERNELS[key])
    amx_usable = amx.AMX
    rows = []
    try:
        for batch in batches:
            caches = [KVCache() for _ in range(batch)]
            logits = None
            totals = {mode: [0.0, 0.0, 0.0] for mode in modes}          # step, kernels, matvec_batch
            for step in range(len(modes) * (tokens + 1)):
                mode = modes[step % len(modes)]
                amx.AMX = mode
                kernel.seconds = whole_matvec.seconds = 0.0
                started = time.process_time()
                logits = transformer.step_batch([1] * batch if logits is None else
                                                [int(np.argmax(row)) for row in logits], caches)
                if step >= len(modes):                              # the first of each compiles, warms up
                    for i, seconds in enumerate((time.process_time() - started, kernel.seconds,
                                                 whole_matvec.seconds)):
                        totals[mode][i] += seconds * 1e3 / tokens
            for mode, (step_ms, kernel_ms, matvec_ms) in totals.items():
                rows.append(dict(plan=plan, batch=batch, amx=mode, step_ms=step_ms, kernel_ms=kernel_ms,
                                 matvec_rest_ms=matvec_ms - kernel_ms, other_ms=step_ms - matvec_ms))
    finally:
        forward.matvec_batch, amx.rows_amx = originals[0], originals[1]
        matvec._KERNELS.update(originals[2])
        amx.AMX = amx_usable
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", nargs="+", default=["w4g32", "w8g32", "w4", "w8"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    from numba import set_num_threads

    from decode_golden import random_model
    from hardwire.golden import amx
    set_num_threads(args.threads)
    modes = [True, False] if amx.AMX else [False]
    print(f"{args.threads} thread(s); CPU ms per step, mean of {args.tokens} steps; AMX "
          f"{'on and off, alternating steps' if amx.AMX else 'not available'}", flush=True)
    print(f"{'plan':8} {'batch':>5} {'AMX':>4} {'step':>8} {'kernels':>8} {'matvec rest':>11} {'other':>8} "
          f"{'other per user':>14}")
    model = random_model()
    with tempfile.TemporaryDirectory() as tmp:
        for plan in args.plans:
            for row in split_plan(model, plan, args.batch, args.tokens, Path(tmp), modes):
                print(f"{row['plan']:8} {row['batch']:5d} {'on' if row['amx'] else 'off':>4} "
                      f"{row['step_ms']:8.2f} {row['kernel_ms']:8.2f} "
                      f"{row['matvec_rest_ms']:11.2f} {row['other_ms']:8.2f} "
                      f"{row['other_ms'] / row['batch']:14.3f}", flush=True)


if __name__ == "__main__":
    main()
