"""Peak memory and time of `hardwire freeze` on a synthetic checkpoint of over a billion parameters.

Writes a Hugging Face-style Llama checkpoint of random fp16 weights (one safetensors shard per
layer, plus an index) with the bundled 512-token tokenizer, then runs `hardwire freeze` on it in
a child process and reports the child's wall time and peak resident set size (ru_maxrss).

    python bench/freeze_memory.py [--dir /tmp/hardwire-bench] [--layers 24] [--plan w4g32]

Not part of the test suite: it writes ~2.1 GB and takes minutes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 2048, 16, 4, 5632, 512   # TinyLlama-1.1B's widths, 512-token vocab


def config(layers: int) -> dict:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
            "intermediate_size": FFN, "num_hidden_layers": layers, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
            "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}


def layer_shapes(i: int) -> dict[str, tuple[int, ...]]:
    head_dim = HIDDEN // HEADS
    p = f"model.layers.{i}."
    return {p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
            p + "self_attn.k_proj.weight": (KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.v_proj.weight": (KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, FFN)}


def write_checkpoint(folder: Path, layers: int, seed: int = 0) -> int:
    """Random weights, one shard at a time (the generator never holds more than one layer)."""
    import safetensors.numpy

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shards = [("model.embed.safetensors", {"model.embed_tokens.weight": (VOCAB, HIDDEN),
                                           "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)})]
    shards += [(f"model.layer{i:03d}.safetensors", layer_shapes(i)) for i in range(layers)]
    weight_map, parameters = {}, 0
    for filename, shapes in shards:
        tensors = {}
        for name, shape in shapes.items():
            if len(shape) == 1:
                tensors[name] = np.ones(shape, np.float16)
            else:
                std = 1 / math.sqrt(shape[1])
                tensors[name] = (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)
            weight_map[name] = filename
            parameters += math.prod(shape)
        safetensors.numpy.save_file(tensors, str(folder / filename))
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config(layers), indent=1))
    bundled = Path(__file__).resolve().parent.parent / "hardwire" / "data" / "stories260K" / "tok512.model"
    shutil.copyfile(bundled, folder / "tokenizer.model")
    return parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/hardwire-bench-freeze"))
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--plan", default="w4g32")
    parser.add_argument("--calib-tokens", type=int, default=512)
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint and die")
    args = parser.parse_args()

    checkpoint, die = args.dir / "checkpoint", args.dir / "bench.die"
    shutil.rmtree(args.dir, ignore_errors=True)
    start = time.perf_counter()
    parameters = write_checkpoint(checkpoint, args.layers)
    written_s = time.perf_counter() - start
    checkpoint_bytes = sum(f.stat().st_size for f in checkpoint.iterdir())

    command = [sys.executable, "-m", "hardwire.cli", "freeze", str(checkpoint), "--plan", args.plan,
               "--calib-tokens", str(args.calib_tokens), "-o", str(die)]
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True)
    freeze_s = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"freeze failed ({process.returncode}):\n{process.stderr}")
    peak_rss_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024    # Linux: KiB
    manifest = json.loads((die / "manifest.json").read_text())
    die_bytes = sum(f.stat().st_size for f in die.rglob("*") if f.is_file())
    report = {
        "parameters": parameters, "layers": args.layers, "plan": args.plan,
        "checkpoint_bytes": checkpoint_bytes, "checkpoint_write_s": round(written_s, 1),
        "freeze_s": round(freeze_s, 1), "peak_rss_gib": round(peak_rss_bytes / 2 ** 30, 3),
        "die_bytes": die_bytes, "bits_per_weight": round(manifest["totals"]["bits_per_weight"], 4),
        "calibration_tokens": manifest["calibration"]["tokens"], "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=1))
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
