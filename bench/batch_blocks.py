"""Where a batched golden step's wall time goes, block by block, timed in place.

    python bench/batch_blocks.py [--plans w8 w8g32 w4g32 w4] [--batch 32] [--threads 2] [--steps 24]

The model of bench/decode_golden.py (stories110M shape, random weights) is frozen at each plan;
`--batch` users decode together (`GoldenTransformer.step_batch`), 8 steps of warm-up, then
`--steps` timed two ways, each from a copy of the same caches (every page written):

- one call: the one-call batched step (`step_batch_compiled`, what `step_batch` runs) with its
  cycle counts on (`GoldenTransformer.step_cycles`, `hardwire/golden/cycles.py`): the blocks of
  `forward.STEP_BLOCKS`, each product by its matrices (q|k|v, output, gate|up, down, classifier:
  preparing the inputs, the kernel and requantizing), the norms with the residual adds they fuse,
  attention (RoPE, cache writes and §6 for every user), SwiGLU, the embedding. Cycles become ms
  at the counter's rate measured over the run;
- block by block (`run_users` with `compiled_layers` off): each call of the step's blocks wrapped
  with a wall clock, the products cut further into their kernels (`amx.rows_amx`, or the vpdpbusd
  kernels below 16 users), preparing their inputs (`matvec._prepare_batch`), requantizing
  (`matvec._finish`) and the rest of `matvec_batch`.

"rest" is the step less all of them (Python around the step and between the blocks, and this
bench's own argmax of each user's logits, 0.7-0.9 ms at 32 users on the 110M shape). Printed: ms per step.
Wall time on a shared machine moves by 10-20% between runs: compare blocks within one run, or
alternate runs.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# (module, function, the name printed); the per-user blocks have a serial and a parallel build
BLOCKS = [("forward", "attend_users_parallel", "attention"), ("forward", "attend_users", "attention"),
          ("forward", "swiglu_users_parallel", "SwiGLU"), ("forward", "swiglu_users", "SwiGLU"),
          ("forward", "norm_users", "norms"),
          ("forward", "residual_add", "residual adds"), ("forward", "embed_users", "embedding"),
          ("forward", "matvec_batch", "matvec_batch"),
          ("matvec", "_prepare_batch", "preparing inputs"), ("matvec", "_finish", "requantizing"),
          ("amx", "rows_amx", "kernels")]


def wrap_blocks(spent: Counter) -> list[tuple]:
    """Replace each block by a timed wrapper; returns what to put back."""
    from hardwire.golden import amx, forward, matvec
    modules = {"forward": forward, "matvec": matvec, "amx": amx}
    originals = []
    for module_name, function_name, label in BLOCKS:
        module = modules[module_name]
        function = getattr(module, function_name)
        originals.append((module, function_name, function))

        def timed(*args, _function=function, _label=label, **kwargs):
            started = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                spent[_label] += time.perf_counter() - started
        setattr(module, function_name, timed)
    kernels = matvec._KERNELS
    originals.append((matvec, "_KERNELS", dict(kernels)))
    for key, kernel in list(kernels.items()):
        def timed_kernel(*args, _kernel=kernel):
            started = time.perf_counter()
            try:
                return _kernel(*args)
            finally:
                spent["kernels"] += time.perf_counter() - started
        kernels[key] = timed_kernel
    return originals


def decode(transformer, tokens: list[int], caches: list, steps: int) -> float:
    """`steps` greedy batched steps; returns ms a step."""
    started = time.perf_counter()
    for _ in range(steps):
        logits = transformer.step_batch(tokens, caches)
        tokens = [int(np.argmax(row)) for row in logits]
    return (time.perf_counter() - started) / steps * 1e3


def split_one_call(transformer, tokens: list[int], caches: list, steps: int) -> dict:
    """The one-call step's blocks from its own cycle counts."""
    from hardwire.golden.cycles import cycles_now
    from hardwire.golden.forward import STEP_BLOCKS
    transformer.step_cycles = spent = np.zeros(len(STEP_BLOCKS), dtype=np.int64)
    started_s, started_cycles = time.perf_counter(), cycles_now()
    try:
        step_ms = decode(transformer, tokens, caches, steps)
    finally:
        transformer.step_cycles = None
    ms_per_cycle = (time.perf_counter() - started_s) * 1e3 / max(cycles_now() - started_cycles, 1)
    blocks = {label: cycles * ms_per_cycle / steps for label, cycles in zip(STEP_BLOCKS, spent)}
    blocks["rest"] = step_ms - sum(blocks.values())
    return dict(step_ms=step_ms, blocks=blocks)


def split_plan(model, plan: str, batch: int, steps: int, workdir: Path) -> dict:
    from decode_golden import golden_engine
    from hardwire.model.reference import KVCache
    transformer = golden_engine(model, plan, workdir).transformer
    caches = [KVCache() for _ in range(batch)]
    tokens = [1] * batch
    for _ in range(8):
        logits = transformer.step_batch(tokens, caches)
        tokens = [int(np.argmax(row)) for row in logits]
    # Both ways start from copies of the same caches. A copy has every page written: fresh caches
    # (np.zeros) are faulted in a page at a time by the steps that write their positions, which
    # cost the first plan of a process ~2 ms a step of attention here and the plans after it
    # nothing measurable (docs/benchmarks.md); the bench measures decoding, not that.
    one_call = split_one_call(transformer, tokens, copy.deepcopy(caches), steps)
    transformer.compiled_layers = None          # block by block, so that each block can be timed
    decode(transformer, tokens, copy.deepcopy(caches), 2)   # its own kernels compiled or loaded
    caches = copy.deepcopy(caches)
    spent = Counter()
    originals = wrap_blocks(spent)
    try:
        step_ms = decode(transformer, tokens, caches, steps)
    finally:
        for module, name, original in originals:
            if name == "_KERNELS":
                module._KERNELS.clear()
                module._KERNELS.update(original)
            else:
                setattr(module, name, original)
    blocks = {label: seconds / steps * 1e3 for label, seconds in spent.items()}
    inside = sum(blocks[label] for label in ("preparing inputs", "requantizing", "kernels") if label in blocks)
    blocks["matvec_batch"] = blocks.get("matvec_batch", 0.0) - inside     # its own Python and padding
    blocks["rest"] = step_ms - sum(blocks.values())
    return dict(plan=plan, one_call=one_call, block_by_block=dict(step_ms=step_ms, blocks=blocks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", nargs="+", default=["w8", "w8g32", "w4g32", "w4"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    from numba import set_num_threads

    from decode_golden import random_model
    set_num_threads(args.threads)
    model = random_model()
    print(f"batch {args.batch}, {args.threads} thread(s); wall ms per step, mean of {args.steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        for plan in args.plans:
            row = split_plan(model, plan, args.batch, args.steps, Path(tmp))
            for way in ("one_call", "block_by_block"):
                split = row[way]
                parts = ", ".join(f"{label} {ms:.2f}"
                                  for label, ms in sorted(split["blocks"].items(), key=lambda kv: -kv[1]))
                print(f"{plan:6} {way.replace('_', ' '):14} step {split['step_ms']:.2f}: {parts}", flush=True)


if __name__ == "__main__":
    main()
