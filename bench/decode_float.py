"""Batch-1 greedy decode speed of hardwire's float engine against Hugging Face transformers.

Both run the same weights (stories260K, and random models of the stories15M and ~110M shapes) on
the CPU with the same thread count, decoding with a KV cache; the generated tokens are checked to be
identical so the two really do the same work. Writes the `Float decode` section of docs/benchmarks.md.

    python bench/decode_float.py [--tokens 128] [--threads 2]
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    import hardwire
    from bench.report import machine_summary, update_section

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = [("stories260K (real)", hardwire.load())]
        for name, shape in SHAPES.items():
            models.append((name, hardwire.load(random_checkpoint(Path(tmp) / name, shape))))
        for name, model in models:
            ours, our_ids = time_hardwire(model, args.tokens)
            hf = hf_from_hardwire(model)
            theirs, their_ids = time_transformers(hf, args.tokens)
            same = sum(a == b for a, b in zip(our_ids, their_ids))
            rows.append((name, model.spec.parameter_count(), ours, theirs, same))
            print(f"{name}: hardwire {ours:.1f} tok/s, transformers {theirs:.1f} tok/s, ratio {ours / theirs:.2f}x, "
                  f"identical tokens {same}/{args.tokens}", flush=True)

    table = ["| model | parameters | hardwire float tok/s | transformers tok/s | ratio | identical greedy tokens |",
             "|---|---|---|---|---|---|"]
    for name, params, ours, theirs, same in rows:
        table.append(f"| {name} | {params / 1e6:.2f} M | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}× | "
                     f"{same}/{args.tokens} |")
    body = "\n".join([
        f"Command: `python bench/decode_float.py --tokens {args.tokens} --threads {args.threads}`  ",
        f"Machine: {machine_summary()}; torch {torch.__version__} with {args.threads} threads, numpy "
        f"{np.__version__} (its BLAS threads as configured by the environment).",
        "",
        f"Batch-1 greedy decode of {args.tokens} tokens after BOS with a KV cache, same weights in both. "
        "transformers runs `generate(do_sample=False)`; hardwire runs `FloatEngine.generate`. Random-weight "
        "models have near-uniform logits, so float rounding can flip an argmax late in a long generation; "
        "the token agreement column says how far they stayed identical.",
        "", *table])
    update_section("Float decode (hardwire float engine vs transformers)", body)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
