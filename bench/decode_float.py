"""Batch-1 greedy decode speed of hardwire's float engine against Hugging Face transformers, and
the fraction of the machine's read bandwidth it streams.

Both run the same weights (stories260K, and random models of the stories15M and ~110M shapes) on
the CPU with the same thread count, decoding with a KV cache; the generated tokens are checked to be
identical so the two really do the same work. Then, on the llama2.c stories110M shape with tied
embeddings (bench/decode_golden.py's random model), the float engine's decode step is set against
the machine's read bandwidth measured in the same run (decode_golden's parallel sum over 1 GiB):
the weight bytes a step reads, times steps per second, over that bandwidth. Measured beside it in
the same rounds: the same engine with numba's row-parallel products in place of BLAS; its numpy
step (the stacked products with numpy expressions between them, the engine before the step was
compiled); the per-matrix reference layout (`FloatTransformer`, one product per matrix); and two
ceilings, plain matrix-vector products (numpy's, numba's) over the engine's own matrices with
nothing else in the step. Each figure is the best of
`--rounds` rounds, the rounds interleaved so that other jobs on a shared machine slow all alike.
numpy's BLAS threads are set with threadpoolctl, torch's with torch.set_num_threads. Writes the
`Float decode` section of docs/benchmarks.md.

    python bench/decode_float.py [--tokens 128] [--threads 1 2] [--stream-tokens 16] [--rounds 8]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

SHAPES = {  # name: (hidden, layers, heads, kv_heads, ffn, vocab)
    "stories15M-shape": (288, 6, 6, 6, 768, 32000),
    "110M-shape": (768, 12, 12, 12, 2048, 32000),
}


def hf_from_hardwire(model):
    """A transformers LlamaForCausalLM holding exactly the weights of a hardwire Model."""
    import torch
    import transformers
    from hardwire.model.hf import hf_name
    spec = model.spec
    config = transformers.LlamaConfig(
        hidden_size=spec.hidden_dim, intermediate_size=spec.ffn_dim, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads, head_dim=spec.head_dim,
        vocab_size=spec.vocab_size, max_position_embeddings=spec.max_context, rms_norm_eps=spec.norm_eps,
        rope_theta=spec.rope_theta, tie_word_embeddings=spec.tied_embeddings, bos_token_id=spec.bos_id,
        eos_token_id=spec.eos_id)
    hf = transformers.LlamaForCausalLM(config).eval()
    state = {hf_name(name): torch.from_numpy(model.tensor(name)) for name in spec.tensor_shapes()}
    if spec.tied_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    hf.load_state_dict(state, strict=True)
    return hf


def random_checkpoint(folder: Path, shape) -> Path:
    import torch
    import transformers
    hidden, layers, heads, kv, ffn, vocab = shape
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                                      num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                                      max_position_embeddings=1024)
    transformers.LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def time_hardwire(model, tokens: int) -> tuple[float, list[int]]:
    from hardwire.runtime.engine import FloatEngine
    engine = FloatEngine(model, capacity=tokens + 1)
    engine.generate([1], max_tokens=4, stop_at_eos=False)        # warm-up
    start = time.perf_counter()
    result = engine.generate([1], max_tokens=tokens, stop_at_eos=False)
    return tokens / (time.perf_counter() - start), result.ids


def time_transformers(hf, tokens: int) -> tuple[float, list[int]]:
    import torch
    prompt = torch.tensor([[1]])
    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True)
    with torch.no_grad():
        hf.generate(prompt, max_new_tokens=4, min_new_tokens=4, **kwargs)
        start = time.perf_counter()
        out = hf.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs)
    return tokens / (time.perf_counter() - start), out[0, 1:].tolist()


def timed_steps(step, count: int) -> tuple[float, float, float]:
    """Steps per wall-clock second over `count` calls of `step()`, CPU milliseconds per step (this
    process, all its threads), and the wall milliseconds of the fastest single step. On a machine
    shared with other jobs the wall rate includes waiting for a core; the CPU time is what the
    steps themselves spent, and the fastest step is one that ran without waiting, or waited least."""
    wall, cpu = time.perf_counter(), time.process_time()
    fastest = float("inf")
    for _ in range(count):
        begun = time.perf_counter()
        step()
        fastest = min(fastest, time.perf_counter() - begun)
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) * 1e3 / count, fastest * 1e3


def decode_steps(transformer, tokens: int) -> tuple[float, float]:
    """`timed_steps` of greedy decode steps of a float transformer from BOS, after one warm-up step."""
    transformer.reset()
    token = [int(np.argmax(transformer.forward([1])[-1]))]

    def step():
        token[0] = int(np.argmax(transformer.forward(token)[-1]))
    return timed_steps(step, tokens)


def matvec_passes(matrices: list[np.ndarray], passes: int, matvec=None) -> tuple[float, float]:
    """`timed_steps` of passes of matrix-vector products over `matrices`, nothing else: numpy's
    (`matrix @ vector`), or `matvec(matrix, vector, out)`."""
    inputs = {m.shape[1]: np.ones(m.shape[1], np.float32) for m in matrices}
    outputs = [np.empty(m.shape[0], np.float32) for m in matrices]
    if matvec is None:
        def one_pass():
            for matrix in matrices:
                matrix @ inputs[matrix.shape[1]]
    else:
        def one_pass():
            for matrix, out in zip(matrices, outputs):
                matvec(matrix, inputs[matrix.shape[1]], out)
        one_pass()                          # compiles, and checks that it computes the product
        for matrix, out in zip(matrices, outputs):
            np.testing.assert_allclose(out, matrix @ inputs[matrix.shape[1]], rtol=1e-3, atol=1e-3)
    return timed_steps(one_pass, passes)


def bench_streaming(threads: int, tokens: int, rounds: int) -> dict:
    """The 110M shape's decode step against this machine's read bandwidth, `threads` threads."""
    from bench.decode_golden import random_model, read_bandwidth_gbs
    from hardwire.model.reference import FloatTransformer
    from hardwire.runtime.engine import FloatEngine
    from hardwire.model.decode_kernels import row_parallel_matvec
    model = random_model()
    engine = FloatEngine(model, capacity=tokens + 2).transformer
    # The same stacked weights (no copy) decoded the other ways: numba's products, the numpy step.
    numba_engine, numpy_step = copy.copy(engine), copy.copy(engine)
    numba_engine.matvec, numpy_step.fused_decode = row_parallel_matvec, False
    for twin in (numba_engine, numpy_step):
        twin.reset()
    reference = FloatTransformer(model.spec, model.tensor, capacity=tokens + 2)
    # What a step reads: the stacks, wo and w_down of every layer, and the classifier.
    matrices = [*engine.stacks.values(), *(engine.weights[f"layers.{i}.{name}"] for i in range(model.spec.layers)
                                           for name in ("wo", "w_down")), engine.output]
    runs = {"engine": lambda: decode_steps(engine, tokens),
            "engine_numba": lambda: decode_steps(numba_engine, tokens),
            "numpy_step": lambda: decode_steps(numpy_step, tokens),
            "reference": lambda: decode_steps(reference, tokens),
            "matvec_ceiling": lambda: matvec_passes(matrices, tokens),
            "numba_ceiling": lambda: matvec_passes(matrices, tokens, row_parallel_matvec)}
    bandwidth_gbs, rate = 0.0, dict.fromkeys(runs, 0.0)
    cpu_ms, fastest_ms = dict.fromkeys(runs, float("inf")), dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        bandwidth_gbs = max(bandwidth_gbs, read_bandwidth_gbs(threads))
        for key, run in runs.items():
            steps_per_s, step_cpu_ms, step_fastest_ms = run()
            rate[key], cpu_ms[key] = max(rate[key], steps_per_s), min(cpu_ms[key], step_cpu_ms)
            fastest_ms[key] = min(fastest_ms[key], step_fastest_ms)
    step_bytes = engine.weight_bytes()
    return dict(threads=threads, bandwidth_gbs=bandwidth_gbs, step_bytes=step_bytes, steps_per_s=rate,
                cpu_ms_per_step=cpu_ms, fastest_step_ms=fastest_ms,
                fractions={key: rate[key] * step_bytes / (bandwidth_gbs * 1e9) for key in runs},
                fastest_fractions={key: step_bytes / (fastest_ms[key] * 1e-3) / (bandwidth_gbs * 1e9)
                                   for key in runs})


def load_average() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stream-tokens", type=int, default=16, help="decode steps per round of the bandwidth rows")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds of the bandwidth rows (best kept)")
    args = parser.parse_args()
    import torch
    from numba import set_num_threads
    from threadpoolctl import threadpool_limits

    import hardwire
    from bench.report import machine_summary, update_section

    load_before = load_average()
    rows, streaming = [], []
    with tempfile.TemporaryDirectory() as tmp:
        models = [("stories260K (real)", hardwire.load())]
        for name, shape in SHAPES.items():
            models.append((name, hardwire.load(random_checkpoint(Path(tmp) / name, shape))))
        for threads in args.threads:
            torch.set_num_threads(threads)
            set_num_threads(threads)
            with threadpool_limits(limits=threads, user_api="blas"):
                for name, model in models:
                    ours, our_ids = time_hardwire(model, args.tokens)
                    hf = hf_from_hardwire(model)
                    theirs, their_ids = time_transformers(hf, args.tokens)
                    same = sum(a == b for a, b in zip(our_ids, their_ids))
                    rows.append((threads, name, model.spec.parameter_count(), ours, theirs, same))
                    print(f"{threads} threads, {name}: hardwire {ours:.1f} tok/s, transformers {theirs:.1f} tok/s, "
                          f"ratio {ours / theirs:.2f}x, identical tokens {same}/{args.tokens}", flush=True)
                result = bench_streaming(threads, args.stream_tokens, args.rounds)
                streaming.append(result)
                print(f"{threads} threads, 110M shape: read bandwidth {result['bandwidth_gbs']:.1f} GB/s, "
                      f"{result['step_bytes'] / 1e6:.1f} MB/step; " + ", ".join(
                          f"{key} {result['steps_per_s'][key]:.1f} steps/s = {fraction:.0%} "
                          f"({result['cpu_ms_per_step'][key]:.1f} CPU ms/step; fastest step "
                          f"{result['fastest_step_ms'][key]:.1f} ms = {result['fastest_fractions'][key]:.0%})"
                          for key, fraction in result["fractions"].items()), flush=True)
    load_after = load_average()

    table = ["| threads | model | parameters | hardwire float tok/s | transformers tok/s | ratio | "
             "identical greedy tokens |", "|---|---|---|---|---|---|---|"]
    for threads, name, params, ours, theirs, same in rows:
        table.append(f"| {threads} | {name} | {params / 1e6:.2f} M | {ours:.1f} | {theirs:.1f} | "
                     f"{ours / theirs:.2f}× | {same}/{args.tokens} |")
    labels = {"engine": "float engine: stacked q\\|k\\|v, gate\\|up, compiled step, BLAS products",
              "engine_numba": "the same with numba's row-parallel products",
              "numpy_step": "stacked, numpy step between the products (before)",
              "reference": "per-matrix reference layout, numpy step",
              "matvec_ceiling": "ceiling: numpy (BLAS) matrix-vector products only",
              "numba_ceiling": "ceiling: numba parallel matrix-vector products only"}
    stream_table = ["| threads | read bandwidth | MB per step | what runs | steps/s | GB/s streamed | "
                    "of read bandwidth | CPU ms per step | fastest step | of read bandwidth, fastest step |",
                    "|---|---|---|---|---|---|---|---|---|---|"]
    for result in streaming:
        for key, label in labels.items():
            stream_table.append(
                f"| {result['threads']} | {result['bandwidth_gbs']:.1f} GB/s | {result['step_bytes'] / 1e6:.1f} | "
                f"{label} | {result['steps_per_s'][key]:.1f} | "
                f"{result['steps_per_s'][key] * result['step_bytes'] / 1e9:.1f} | {result['fractions'][key]:.0%} | "
                f"{result['cpu_ms_per_step'][key]:.1f} | {result['fastest_step_ms'][key]:.1f} ms | "
                f"{result['fastest_fractions'][key]:.0%} |")
    threads = " ".join(str(t) for t in args.threads)
    body = "\n".join([
        f"Command: `python bench/decode_float.py --tokens {args.tokens} --threads {threads} "
        f"--stream-tokens {args.stream_tokens} --rounds {args.rounds}`  ",
        f"Machine: {machine_summary()}, shared with other jobs (load average 1/5/15 min: {load_before} at the "
        f"start, {load_after} at the end); torch {torch.__version__} (torch.set_num_threads), numpy "
        f"{np.__version__} (BLAS threads set with threadpoolctl), both at the thread count of each row.",
        "",
        f"Batch-1 greedy decode of {args.tokens} tokens after BOS with a KV cache, same weights in both. "
        "transformers runs `generate(do_sample=False)`; hardwire runs `FloatEngine.generate`. Random-weight "
        "models have near-uniform logits, so float rounding can flip an argmax late in a long generation; "
        "the token agreement column says how far they stayed identical.",
        "", *table, "",
        "### Read bandwidth (110M shape, tied embeddings)",
        "",
        f"Greedy decode steps per second (best of {args.rounds} interleaved rounds of {args.stream_tokens} steps), "
        "the weight bytes one step reads (every parameter once, the tied classifier included), and that "
        "stream's share of the read bandwidth measured in the same rounds (a parallel sum over 1 GiB of "
        "int64, best of 5, at the same thread count). The ceiling rows run only the matrix-vector products, "
        "over the engine's own matrices: numpy's (OpenBLAS sgemv, what the engine calls by default) and a "
        "row-parallel numba kernel (`decode_kernels.row_parallel_matvec`, the alternative the engine can "
        "be given, measured in its own row). The engine's step between the products is compiled "
        "(`hardwire/model/decode_kernels.py`); the numpy-step row is the same stacked products with the "
        "reference's numpy expressions between them. CPU ms per step "
        "(this process, all threads, least over the rounds) is what a step itself spent, apart from waiting "
        "for a core; with 2 threads it includes the time a thread spins waiting for the other. The fastest "
        "step (least wall time of a single step over all rounds) is a step that waited least for a core; "
        "its fraction is the step's bytes over that time, against the same bandwidth.",
        "", *stream_table])
    update_section("Float decode (hardwire float engine vs transformers)", body)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
