"""Published model shapes, usable without weights (`hardwire estimate --preset NAME`).

Each entry is the shape in the model's own config.json (Hugging Face) or checkpoint header
(llama2.c); the source is named beside it.
"""
from __future__ import annotations

from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec, RopeScaling

LLAMA3_VOCAB = 128256


def _llama3(hidden, layers, heads, head_dim, ffn, tied, rope_factor):
    # meta-llama/Llama-3.x config.json: 8 KV heads, theta 500000, llama3 RoPE scaling
    return ModelSpec(family="llama", hidden_dim=hidden, layers=layers, heads=heads, kv_heads=8,
                     head_dim=head_dim, ffn_dim=ffn, vocab_size=LLAMA3_VOCAB, max_context=131072,
                     rope_theta=500000.0, rope_scaling=RopeScaling(rope_factor, 1.0, 4.0, 8192),
                     norm_eps=1e-5, tied_embeddings=tied, bos_id=128000, eos_id=128001)


MODEL_PRESETS: dict[str, ModelSpec] = {
    # meta-llama/Llama-3.1-8B
    "llama-3.1-8b": _llama3(4096, 32, 32, 128, 14336, tied=False, rope_factor=8.0),
    # meta-llama/Llama-3.1-70B
    "llama-3.1-70b": _llama3(8192, 80, 64, 128, 28672, tied=False, rope_factor=8.0),
    # meta-llama/Llama-3.2-1B: tied, head_dim 64
    "llama-3.2-1b": _llama3(2048, 16, 32, 64, 8192, tied=True, rope_factor=32.0),
    # meta-llama/Llama-3.2-3B: tied, 24 heads of 128
    "llama-3.2-3b": _llama3(3072, 28, 24, 128, 8192, tied=True, rope_factor=32.0),
    # Qwen/Qwen2.5-0.5B: qkv bias, 14 heads / 2 KV heads, tied, theta 1e6, eps 1e-6
    "qwen2.5-0.5b": ModelSpec(family="qwen2", hidden_dim=896, layers=24, heads=14, kv_heads=2, head_dim=64,
                              ffn_dim=4864, vocab_size=151936, max_context=32768, rope_theta=1000000.0,
                              norm_eps=1e-6, tied_embeddings=True, qkv_bias=True, bos_id=151643,
                              eos_id=151643),
    # HuggingFaceTB/SmolLM2-135M: 9 heads / 3 KV heads of 64, tied, theta 100000
    "smollm2-135m": ModelSpec(family="llama", hidden_dim=576, layers=30, heads=9, kv_heads=3, head_dim=64,
                              ffn_dim=1536, vocab_size=49152, max_context=8192, rope_theta=100000.0,
                              norm_eps=1e-5, tied_embeddings=True, bos_id=0, eos_id=0),
    # karpathy/tinyllamas stories15M.bin header: dim 288, 6 layers, 6 heads, ffn 768, seq 256
    "stories15m": ModelSpec(family="llama", hidden_dim=288, layers=6, heads=6, kv_heads=6, head_dim=48,
                            ffn_dim=768, vocab_size=32000, max_context=256, tied_embeddings=True),
    # karpathy/tinyllamas stories260K (bundled): dim 64, 5 layers, 8 heads, 4 KV heads, ffn 172
    "stories260k": ModelSpec(family="llama", hidden_dim=64, layers=5, heads=8, kv_heads=4, head_dim=8,
                             ffn_dim=172, vocab_size=512, max_context=512, tied_embeddings=True),
    # -- mixtures of experts: shapes for the estimate (importing their checkpoints is refused) --------
    # openai/gpt-oss-120b config.json: hidden 2880, 36 layers, 64 heads / 8 KV heads of 64, 128 experts
    # of intermediate 2880, 4 per token, vocab 201088, attention bias, theta 150000 (YaRN x32 from 4096 and
    # sliding windows of 128 on alternate layers are not represented: every layer attends fully)
    "gpt-oss-120b": ModelSpec(family="gpt_oss", hidden_dim=2880, layers=36, heads=64, kv_heads=8, head_dim=64,
                              ffn_dim=2880, vocab_size=201088, max_context=131072, rope_theta=150000.0,
                              qkv_bias=True, bos_id=199998, eos_id=200002, experts=128, experts_per_token=4,
                              expert_ffn_dim=2880),
    # openai/gpt-oss-20b config.json: as 120b with 24 layers and 32 experts
    "gpt-oss-20b": ModelSpec(family="gpt_oss", hidden_dim=2880, layers=24, heads=64, kv_heads=8, head_dim=64,
                             ffn_dim=2880, vocab_size=201088, max_context=131072, rope_theta=150000.0,
                             qkv_bias=True, bos_id=199998, eos_id=200002, experts=32, experts_per_token=4,
                             expert_ffn_dim=2880),
    # mistralai/Mixtral-8x7B-v0.1 config.json: hidden 4096, 32 layers, 32 heads / 8 KV heads, 8 experts of
    # intermediate 14336, 2 per token, vocab 32000, theta 1e6, max positions 32768
    "mixtral-8x7b": ModelSpec(family="mixtral", hidden_dim=4096, layers=32, heads=32, kv_heads=8, head_dim=128,
                              ffn_dim=14336, vocab_size=32000, max_context=32768, rope_theta=1000000.0,
                              norm_eps=1e-5, experts=8, experts_per_token=2, expert_ffn_dim=14336),
}


def model_preset(name: str) -> ModelSpec:
    key = name.lower()
    if key not in MODEL_PRESETS:
        raise BadConfig(f"unknown model preset {name!r}; expected one of {', '.join(MODEL_PRESETS)}",
                        field="preset")
    return MODEL_PRESETS[key]
