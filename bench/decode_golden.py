"""Decode speed of the golden model against llama.cpp on a ~110M Llama-shaped model.

    python bench/decode_golden.py [--tokens 64] [--threads 2] [--plans w4g32 w8g32 w4 w8] [--batch 1 8 32]
                                  [--no-llama] [--json]

A random model of the llama2.c stories110M shape (dim 768, 12 layers, 12 heads, FFN 2048, vocab
32000, tied embeddings) is frozen at each plan and decoded with `--backend golden`; the same
model is written as GGUF Q4_0 / Q8_0 and decoded by llama.cpp (llama-cpp-python, the `bench`
extra) with the same thread count, in the same run, one sequence at a time. The golden model also
decodes `--batch` sequences together (`GoldenTransformer.step_batch`: each with its own KV cache
and position, the weights read once per step for all of them), `--tokens` steps each. Printed per
engine and batch: aggregate tokens/s, weight bytes streamed per step, the fraction of this
machine's measured read bandwidth that streaming implies, and the ratio to llama.cpp at the same
bits (batch 1) or to the same plan's batch 1; also tokens per CPU-second of the process (all its
threads), which is what an engine itself spent when other jobs share the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPEC = dict(family="llama", hidden_dim=768, layers=12, heads=12, kv_heads=12, head_dim=64, ffn_dim=2048,
            vocab_size=32000, max_context=1024, tied_embeddings=True)
LLAMA_TYPE = {4: "q4_0", 8: "q8_0"}


def random_model(seed: int = 0):
    """A `Model` with seeded random weights and a synthetic 32000-piece tokenizer (llama.cpp
    refuses a GGUF without a vocabulary)."""
    from gguf import TokenType

    from hardwire.model.load import Model
    from hardwire.model.spec import ModelSpec
    from hardwire.model.tokenizer import ScoredPieceTokenizer
    spec = ModelSpec(**SPEC)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in spec.tensor_shapes().items():
        if len(shape) == 1:
            weights[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1])))
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [f"t{i}" for i in range(spec.vocab_size - len(pieces))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * (spec.vocab_size - len(types))
    tokenizer = ScoredPieceTokenizer(pieces, [0.0] * len(pieces), [int(t) for t in types], kind="synthetic",
                                     bos_id=1, eos_id=2, unk_id=0)
    return Model(spec=spec, path=Path("random-110m"), format="random", read_tensor=weights.__getitem__,
                 tokenizer=tokenizer)


def read_bandwidth_gbs(threads: int) -> float:
    """Sustained read bandwidth: a parallel sum over 1 GiB of int64, best of 5."""
    from numba import njit, prange, set_num_threads

    @njit(parallel=True, cache=True)
    def total(a):
        s = 0
        for i in prange(a.size):
            s += a[i]
        return s

    set_num_threads(threads)
    data = np.ones(1 << 27, dtype=np.int64)
    total(data)
    best = min(_timed(lambda: total(data)) for _ in range(5))
    return data.nbytes / best / 1e9


def _clock() -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all its threads). On a machine shared with
    other jobs the CPU time is what the engine itself spent; the wall time includes waiting."""
    return time.perf_counter(), time.process_time()


def _rates(tokens: int, start: tuple[float, float]) -> dict:
    wall, cpu = _clock()
    return {"tokens_per_s": tokens / (wall - start[0]), "tokens_per_cpu_s": tokens / max(cpu - start[1], 1e-9)}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def golden_engine(model, plan: str, workdir: Path):
    """`model` frozen at `plan` (calibrated on random tokens) and opened with `--backend golden`."""
    from hardwire.die import open_die
    from hardwire.freeze.freezer import Calibration, freeze
    from hardwire.freeze.plan import parse_plan
    from hardwire.freeze.tables import build_tables, measure_ranges
    from hardwire.golden.engine import GoldenEngine
    rng = np.random.default_rng(1)
    calibration = [[1] + list(rng.integers(3, model.spec.vocab_size, 63))]
    path = workdir / f"{plan}.die"
    freeze(model, parse_plan(plan), path, Calibration(calibration, {"source": "random"}))
    die = open_die(path)
    return GoldenEngine(die, tables=build_tables(die.spec, die, measure_ranges(die, calibration)))


def bench_golden(model, plan: str, tokens: int, batches: list[int], workdir: Path) -> list[dict]:
    started = time.perf_counter()
    engine = golden_engine(model, plan, workdir)
    setup_s = time.perf_counter() - started
    return [dict(decode_golden_batch(engine.transformer, batch, tokens), engine=f"golden {plan}", setup_s=setup_s)
            for batch in batches]


def decode_golden_batch(transformer, batch: int, tokens: int) -> dict:
    """Greedy decode of `batch` sequences together for `tokens` steps, after a warm-up step; batch 1
    is the plain one-sequence `step`."""
    from hardwire.model.reference import KVCache
    if batch == 1:
        transformer.reset()
        token = int(np.argmax(transformer.step(1)))         # compiles, warms caches
        start = _clock()
        for _ in range(tokens):
            token = int(np.argmax(transformer.step(token)))
    else:
        caches = [KVCache() for _ in range(batch)]
        logits = transformer.step_batch([1] * batch, caches)
        start = _clock()
        for _ in range(tokens):
            logits = transformer.step_batch([int(np.argmax(row)) for row in logits], caches)
    return dict(_rates(batch * tokens, start), batch=batch, bytes_per_step=transformer.weight_bytes())


def bench_llama(model, bits: int, tokens: int, threads: int, workdir: Path) -> dict:
    from llama_cpp import Llama

    from hardwire.model.gguf_format import write_gguf
    path = workdir / f"model-{LLAMA_TYPE[bits]}.gguf"
    write_gguf(model, path, dtype=LLAMA_TYPE[bits])
    llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=tokens + 8,
                n_batch=8, logits_all=True, verbose=False)
    llm.reset()
    llm.eval([1])
    token = 1
    start = _clock()
    for _ in range(tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    # Every weight is read once per token (the tied embedding is the classifier); the file is
    # the weights plus a small header and vocabulary.
    return dict(_rates(tokens, start), engine=f"llama.cpp {LLAMA_TYPE[bits].upper()}", batch=1,
                bytes_per_step=os.path.getsize(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plans", nargs="+", default=["w4g32", "w8g32", "w4", "w8"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32],
                        help="golden sequences decoded together (each its own KV cache)")
    parser.add_argument("--no-llama", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    from numba import set_num_threads
    set_num_threads(args.threads)
    model = random_model()
    bandwidth = read_bandwidth_gbs(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.no_llama:
            for bits in (4, 8):
                try:
                    rows.append(bench_llama(model, bits, args.tokens, args.threads, workdir))
                except ImportError:
                    print("llama-cpp-python is not installed (pip install -e '.[bench]'); skipping llama.cpp",
                          file=sys.stderr)
                    break
        for plan in args.plans:
            rows.extend(bench_golden(model, plan, args.tokens, args.batch, workdir))
    for row in rows:
        steps_per_s = row["tokens_per_s"] / row["batch"]
        row["bytes_per_token"] = row["bytes_per_step"] / row["batch"]
        row["bandwidth_fraction"] = steps_per_s * row["bytes_per_step"] / (bandwidth * 1e9)
    reference = {(r["engine"], r["batch"]): r["tokens_per_s"] for r in rows}
    cpu_reference = {(r["engine"], r["batch"]): r["tokens_per_cpu_s"] for r in rows}
    for row in rows:
        bits = 4 if "4" in row["engine"].split()[-1][:3] else 8
        peer = reference.get((f"llama.cpp {LLAMA_TYPE[bits].upper()}", 1)) if row["batch"] == 1 else None
        row["vs_llama_cpp"] = row["tokens_per_s"] / peer if peer else None
        cpu_peer = cpu_reference.get((f"llama.cpp {LLAMA_TYPE[bits].upper()}", 1)) if row["batch"] == 1 else None
        row["vs_llama_cpp_cpu"] = row["tokens_per_cpu_s"] / cpu_peer if cpu_peer else None
        single = reference.get((row["engine"], 1))
        row["vs_batch_1"] = row["tokens_per_s"] / single if single else None
    if args.json:
        print(json.dumps({"read_bandwidth_gbs": bandwidth, "threads": args.threads, "rows": rows}, indent=1))
        return
    print(f"read bandwidth {bandwidth:.1f} GB/s with {args.threads} threads; {args.tokens} decode steps")
    print(f"{'engine':22} {'batch':>5} {'tok/s':>8} {'tok/cpu-s':>10} {'MB/step':>8} {'of bandwidth':>13} "
          f"{'vs llama.cpp':>13} {'vs batch 1':>11}")
    for row in rows:
        ratio = "" if row["vs_llama_cpp"] is None else f"{row['vs_llama_cpp']:.2f}x"
        scaling = "" if row["vs_batch_1"] is None or row["batch"] == 1 else f"{row['vs_batch_1']:.2f}x"
        print(f"{row['engine']:22} {row['batch']:5d} {row['tokens_per_s']:8.1f} {row['tokens_per_cpu_s']:10.1f} "
              f"{row['bytes_per_step'] / 1e6:8.1f} {row['bandwidth_fraction']:12.1%} {ratio:>13} {scaling:>11}")


if __name__ == "__main__":
    main()
