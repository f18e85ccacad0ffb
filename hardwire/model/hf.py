"""Hugging Face checkpoints: `config.json` + `model.safetensors` (or a sharded index)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hardwire.errors import BadCheckpoint, BadConfig, HardwireError, UnsupportedModel
from hardwire.jsonfile import read_json_file
from hardwire.model.load import Model, PICKLE_SUFFIXES
from hardwire.model.safetensors_file import SafetensorsFile
from hardwire.model.tokenizer import find_tokenizer, load_tokenizer
from hardwire.model.spec import ModelSpec, RopeScaling

_REQUIRED = object()     # a field's default when it has none: missing is an error
_MISSING = object()

SUPPORTED_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}
# config.json keys that make a model a mixture of experts (Mixtral, Qwen-MoE, DeepSeek, gpt-oss)
MOE_CONFIG_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")

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


class _ConfigFields:
    """Typed reads of `config.json` fields: every value is checked to be of the JSON type the field
    needs before it is used, so `"8"`, `null`, `[8]`, `true` or `"false"` where a number or a boolean
    belongs is refused, naming the field, rather than converted or read as truthy."""

    def __init__(self, config: dict, source: Path):
        self.config, self.source = config, source

    def bad(self, key: str, expected: str, value: object):
        raise BadConfig(f"expected {expected}, got {json.dumps(value)[:80]}", path=self.source, field=key)

    def _get(self, key: str, default):
        if key not in self.config:
            if default is _REQUIRED:
                raise BadConfig("missing required field", path=self.source, field=key)
            return default, False
        return self.config[key], True

    def integer(self, key: str, default=_REQUIRED, optional: bool = False, positive: bool = True):
        """An integer (a positive one unless `positive` is false); with `optional`, null reads as
        `default`."""
        value, present = self._get(key, default)
        if not present or (optional and value is None):
            return default
        if type(value) is not int or (positive and value <= 0):
            self.bad(key, "a positive integer" if positive else "an integer", value)
        return value

    def number(self, key: str, default=_REQUIRED, value=_MISSING) -> float:
        if value is _MISSING:
            value, present = self._get(key, default)
            if not present:
                return default
        if type(value) not in (int, float) or not math.isfinite(value):
            self.bad(key, "a finite number", value)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value, _ = self._get(key, default)
        if type(value) is not bool:
            self.bad(key, "true or false", value)
        return value

    def string(self, key: str, default=_REQUIRED) -> str:
        value, _ = self._get(key, default)
        if not isinstance(value, str):
            self.bad(key, "a string", value)
        return value

    def table(self, key: str) -> dict:
        value, _ = self._get(key, None)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(key, "an object or null", value)
        return value

    def token_id(self, key: str) -> int | None:
        """A token id, null, or a list of them (the first is the one a llama-family model uses)."""
        value, _ = self._get(key, None)
        ids = value if isinstance(value, list) else [value]
        if not all(i is None or (type(i) is int and i >= 0) for i in ids):
            self.bad(key, "a token id (a non-negative integer), a list of them, or null", value)
        return ids[0] if ids else None


def spec_from_config(config: dict, source: Path) -> ModelSpec:
    """ModelSpec from a `config.json` dict (both the `rope_scaling` layout of published checkpoints
    and the `rope_parameters` layout transformers 5 writes)."""
    fields = _ConfigFields(config, source)
    model_type = config.get("model_type")
    experts = next((key for key in MOE_CONFIG_KEYS if config.get(key)), None)
    if experts is not None:
        raise UnsupportedModel(f"mixture-of-experts checkpoints ({experts}={json.dumps(config[experts])[:20]}) are not "
                               "supported by import, freeze or the golden model; `hardwire estimate --preset` "
                               "estimates published MoE shapes (gpt-oss-120b, gpt-oss-20b, mixtral-8x7b)",
                               path=source, field=experts)
    if not isinstance(model_type, str) or model_type not in SUPPORTED_TYPES:
        raise UnsupportedModel(f"model_type {json.dumps(model_type)[:80]} is not supported; expected one "
                               f"of {', '.join(SUPPORTED_TYPES)}", path=source, field="model_type")
    # Every flag is type-checked whether or not this family reads it: a malformed file is refused
    # the same way for every model_type.
    flags = {flag: fields.boolean(flag, False) for flag in ("attention_bias", "mlp_bias", "use_sliding_window")}
    for flag in ("attention_bias", "mlp_bias"):
        if model_type == "llama" and flags[flag]:
            raise UnsupportedModel("biases on Llama projections are not supported (expected false)",
                                   path=source, field=flag)
    activation = fields.string("hidden_act", "silu")
    if activation != "silu":
        raise UnsupportedModel(f"activation {activation!r} is not supported; expected 'silu'",
                               path=source, field="hidden_act")

    rope = dict(fields.table("rope_parameters"))
    rope.update(fields.table("rope_scaling"))
    theta = fields.number("rope_theta", value=rope["rope_theta"]) if "rope_theta" in rope \
        else fields.number("rope_theta", 10000.0)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if not (rope_type is None or isinstance(rope_type, str)):
        fields.bad("rope_scaling.rope_type", "a string", rope_type)
    scaling = None
    if rope_type == "llama3":
        try:
            scaling = RopeScaling(
                factor=fields.number("rope_scaling.factor", value=rope["factor"]),
                low_freq_factor=fields.number("rope_scaling.low_freq_factor", value=rope["low_freq_factor"]),
                high_freq_factor=fields.number("rope_scaling.high_freq_factor", value=rope["high_freq_factor"]),
                original_max_position=int(fields.number("rope_scaling.original_max_position_embeddings",
                                                        value=rope["original_max_position_embeddings"])))
        except KeyError as e:
            raise BadConfig(f"llama3 RoPE scaling needs {e.args[0]}", path=source, field="rope_scaling") from None
        if scaling.original_max_position != rope["original_max_position_embeddings"]:
            fields.bad("rope_scaling.original_max_position_embeddings", "an integer",
                       rope["original_max_position_embeddings"])
    elif rope_type not in ("default", None):
        raise UnsupportedModel(f"RoPE type {json.dumps(rope_type)[:80]} is not supported; expected 'default' "
                               "or 'llama3'", path=source, field="rope_scaling")

    hidden, heads = fields.integer("hidden_size"), fields.integer("num_attention_heads")
    head_dim = fields.integer("head_dim", None, optional=True) or hidden // heads
    sliding = fields.integer("sliding_window", None, optional=True)
    if model_type == "qwen2" and not flags["use_sliding_window"]:
        sliding = None
    family = SUPPORTED_TYPES[model_type]
    spec = dict(
        family=family, hidden_dim=hidden, layers=fields.integer("num_hidden_layers"), heads=heads,
        kv_heads=fields.integer("num_key_value_heads", heads, optional=True), head_dim=head_dim,
        ffn_dim=fields.integer("intermediate_size"), vocab_size=fields.integer("vocab_size"),
        max_context=fields.integer("max_position_embeddings", 2048), rope_theta=theta,
        rope_scaling=scaling, norm_eps=fields.number("rms_norm_eps", 1e-6),
        tied_embeddings=fields.boolean("tie_word_embeddings", False),
        qkv_bias=family == "qwen2", sliding_window=sliding,
        bos_id=fields.token_id("bos_token_id"), eos_id=fields.token_id("eos_token_id"),
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
        index_data = read_json_file(index, BadCheckpoint)
        weight_map = index_data.get("weight_map")
        if not isinstance(weight_map, dict):
            raise BadCheckpoint("expected a 'weight_map' object", path=index)
        for tensor, shard in weight_map.items():
            if not (isinstance(shard, str) and shard.endswith(".safetensors") and shard == Path(shard).name
                    and shard not in (".", "..") and "\\" not in shard):
                raise BadCheckpoint(f"expected a .safetensors file name in this folder, got "
                                    f"{json.dumps(shard)[:80]}", path=index, field=f"weight_map.{tensor}")
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
    config = read_json_file(config_path, BadConfig)
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
            raise BadCheckpoint(f"missing tensor {name} (needed for {canonical}, as {config_path.name} describes "
                                "the model)", path=where)
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
