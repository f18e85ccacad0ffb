"""Tiny random Hugging Face checkpoints for tests: each family option hardwire supports.

`make_hf_checkpoint(tmp_path, kind)` builds a seeded random `transformers` model, saves it with
safetensors and returns the folder. The models are small (hidden 64, 2 layers) so a test runs
both hardwire and transformers on them in well under a second.
"""
from __future__ import annotations

from pathlib import Path

KINDS = ("llama-mha", "llama-gqa-tied", "llama31-rope", "qwen2-bias", "mistral")


def hf_config(kind: str, **overrides):
    import transformers
    common = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    if kind == "llama-mha":
        config = transformers.LlamaConfig(**{**common, "rope_theta": 10000.0})
    elif kind == "llama-gqa-tied":
        config = transformers.LlamaConfig(**{**common, "num_key_value_heads": 2, "tie_word_embeddings": True,
                                             "head_dim": 32, "rope_theta": 50000.0, "rms_norm_eps": 1e-6})
    elif kind == "llama31-rope":
        config = transformers.LlamaConfig(**{**common, "num_key_value_heads": 2, "rope_theta": 500000.0,
                                             "max_position_embeddings": 8192,
                                             "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                              "original_max_position_embeddings": 1024}})
    elif kind == "qwen2-bias":
        config = transformers.Qwen2Config(**{**common, "num_key_value_heads": 2, "rope_theta": 1000000.0,
                                             "rms_norm_eps": 1e-6})
    elif kind == "mistral":
        config = transformers.MistralConfig(**{**common, "num_key_value_heads": 1, "sliding_window": 4096})
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def make_hf_model(kind: str, seed: int = 0, **overrides):
    """A float32 random `transformers` causal LM in eval mode. Weights are drawn with a larger
    spread than the default init so logits vary enough for comparisons to mean something."""
    import torch
    import transformers
    torch.manual_seed(seed)
    config = hf_config(kind, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) / param.shape[-1] ** 0.5)
    return model.eval()


def make_hf_checkpoint(tmp_path: Path, kind: str, seed: int = 0, **overrides) -> Path:
    model = make_hf_model(kind, seed=seed, **overrides)
    folder = Path(tmp_path) / kind
    model.save_pretrained(folder, safe_serialization=True)
    return folder
