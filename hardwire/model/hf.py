"""Hugging Face checkpoints: `config.json` + `model.safetensors` (or a sharded index)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hardwire.errors import BadCheckpoint, BadConfig, HardwireError, UnsupportedModel
from hardwire.model.load import Model, PICKLE_SUFFIXES
from hardwire.model.safetensors_file import SafetensorsFile
from hardwire.model.tokenizer import find_tokenizer, load_tokenizer
from hardwire.model.spec import ModelSpec, RopeScaling

SUPPORTED_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}

# canonical name (per layer without prefix, or global) -> Hugging Face tensor name
GLOBAL_NAMES = {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight",
                "output": "lm_head.weight"}
LAYER_NAMES = {
    "attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight", "bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias",
    "bv": "self_attn.v_proj.bias", "ffn_norm": "post_attention_layernorm.weight",
    "w_gate": "mlp.gate_proj.weight", "w_up": "mlp.up_proj.weight", "w_down": "mlp.down_proj.weight",
}


def hf_name(canonical: str) -> str:
    if canonical.startswith("layers."):
        _, index, short = canonical.split(".", 2)
        return f"model.layers.{index}.{LAYER_NAMES[short]}"
    return GLOBAL_NAMES[canonical]


def _first_id(value):
    if isinstance(value, list):
        return value[0] if value else None
    return value


def spec_from_config(config: dict, source: Path) -> ModelSpec:
    """ModelSpec from a `config.json` dict (both the `rope_scaling` layout of published checkpoints
    and the `rope_parameters` layout transformers 5 writes)."""
    def need(key, kind=int):
        if key not in config:
            raise BadConfig("missing required field", path=source, field=key)
        value = config[key]
        if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            raise BadConfig(f"expected an integer, got {value!r}", path=source, field=key)
        if kind is float and not isinstance(value, (int, float)):
            raise BadConfig(f"expected a number, got {value!r}", path=source, field=key)
        return value

    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise UnsupportedModel(f"model_type {model_type!r} is not supported; expected one of "
                               f"{', '.join(SUPPORTED_TYPES)}", path=source, field="model_type")
    for flag in ("attention_bias", "mlp_bias"):
        if model_type == "llama" and config.get(flag):
            raise UnsupportedModel("biases on Llama projections are not supported (expected false)",
                                   path=source, field=flag)
    activation = config.get("hidden_act", "silu")
    if activation != "silu":
        raise UnsupportedModel(f"activation {activation!r} is not supported; expected 'silu'",
                               path=source, field="hidden_act")

    rope = dict(config.get("rope_parameters") or {})
    legacy = config.get("rope_scaling")
    if legacy:
        rope.update(legacy)
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        try:
            scaling = RopeScaling(factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
                                  high_freq_factor=float(rope["high_freq_factor"]),
                                  original_max_position=int(rope["original_max_position_embeddings"]))
        except KeyError as e:
            raise BadConfig(f"llama3 RoPE scaling needs {e.args[0]}", path=source, field="rope_scaling") from None
    elif rope_type not in ("default", None):
        raise UnsupportedModel(f"RoPE type {rope_type!r} is not supported; expected 'default' or 'llama3'",
                               path=source, field="rope_scaling")

    hidden, heads = need("hidden_size"), need("num_attention_heads")
    if heads <= 0 or hidden <= 0:
        raise BadConfig("expected positive hidden_size and num_attention_heads", path=source)
    head_dim = config.get("head_dim") or hidden // heads
    sliding = config.get("sliding_window")
    if model_type == "qwen2" and not config.get("use_sliding_window", False):
        sliding = None
    family = SUPPORTED_TYPES[model_type]
    spec = dict(
        family=family, hidden_dim=hidden, layers=need("num_hidden_layers"), heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads, head_dim=head_dim,
        ffn_dim=need("intermediate_size"), vocab_size=need("vocab_size"),
        max_context=config.get("max_position_embeddings", 2048), rope_theta=float(theta),
        rope_scaling=scaling, norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2", sliding_window=sliding,
        bos_id=_first_id(config.get("bos_token_id")), eos_id=_first_id(config.get("eos_token_id")),
    )
    try:
        return ModelSpec(**spec)
    except BadConfig as e:
        raise BadConfig(str(e).split(": ", 1)[-1], path=source / "config.json" if source.is_dir() else source,
                        field=e.field) from None


def _find_files(path: Path) -> tuple[Path, Path, list[Path], dict[str, str] | None]:
    """(folder, config path, safetensors files, weight_map or None)."""
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.exists():
        raise BadCheckpoint("no config.json next to the weights; expected a Hugging Face folder", path=folder)
    index = folder / "model.safetensors.index.json"
    if path.suffix == ".safetensors":
        return folder, config, [path], None
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            assert isinstance(weight_map, dict)
        except (json.JSONDecodeError, KeyError, AssertionError, TypeError):
            raise BadCheckpoint("expected JSON with a 'weight_map' object", path=index) from None
        files = sorted({folder / f for f in weight_map.values()})
        return folder, config, files, weight_map
    single = folder / "model.safetensors"
    if single.exists():
        return folder, config, [single], None
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES or p.name == "pytorch_model.bin"]
    if pickles:
        raise BadCheckpoint(f"only PyTorch pickle weights ({', '.join(pickles)}) found; they are refused "
                            "because unpickling can run code — convert to safetensors first", path=folder)
    raise BadCheckpoint("no model.safetensors or model.safetensors.index.json found", path=folder)


def load_hf(path: Path, tokenizer=None) -> Model:
    folder, config_path, files, weight_map = _find_files(Path(path))
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadConfig(f"not valid JSON ({e})", path=config_path) from None
    if not isinstance(config, dict):
        raise BadConfig("expected a JSON object", path=config_path)
    spec = spec_from_config(config, config_path)
    opened: dict[Path, SafetensorsFile] = {}
    for f in files:
        if not f.exists():
            raise BadCheckpoint("shard listed in model.safetensors.index.json is missing", path=f)
        opened[f] = SafetensorsFile(f)
    location: dict[str, SafetensorsFile] = {}
    for f, st in opened.items():
        for name in st.entries:
            location[name] = st

    dtypes = {}
    for canonical, shape in spec.tensor_shapes().items():
        name = hf_name(canonical)
        if name not in location:
            where = files[0] if len(files) == 1 else folder
            raise BadCheckpoint(f"missing tensor {name} (needed for {canonical})", path=where)
        st = location[name]
        if st.shape(name) != shape:
            raise BadCheckpoint(f"tensor {name} has shape {list(st.shape(name))}, expected {list(shape)} "
                                f"from config.json", path=st.path)
        dtypes[canonical] = st.dtype(name)
        if dtypes[canonical] not in ("F32", "F16", "BF16", "F64"):
            raise BadCheckpoint(f"tensor {name} has dtype {dtypes[canonical]}, expected F32, F16 or BF16",
                                path=st.path)

    def read_tensor(canonical: str) -> np.ndarray:
        name = hf_name(canonical)
        return location[name].read(name)

    def close():
        for st in opened.values():
            st.close()

    tok = load_tokenizer(tokenizer, spec.vocab_size) if tokenizer is not None \
        else find_tokenizer(folder, spec.vocab_size)
    return Model(spec=spec, path=folder, format="hf", read_tensor=read_tensor, tokenizer=tok,
                 dtypes=dtypes, close=close)
