"""ModelSpec: the shape of a Llama-family decoder, independent of file format.

Everything downstream (float reference, freeze, golden model, RTL, chip estimate) reads only this
and the canonical tensor names in `tensor_shapes`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hardwire.errors import BadConfig

if TYPE_CHECKING:
    import numpy as np

FAMILIES = ("llama", "mistral", "qwen2", "mixtral", "gpt_oss")    # the last two: shapes for the estimate only
MOE_FIELDS = ("experts", "experts_per_token", "shared_experts", "expert_ffn_dim")
ACTIVATIONS = ("silu",)


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 frequency-dependent RoPE scaling (`rope_type: llama3`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position: int


@dataclass(frozen=True)
class ModelSpec:
    family: str            # "llama" | "mistral" | "qwen2"
    hidden_dim: int        # d_model
    layers: int
    heads: int             # query heads
    kv_heads: int          # key/value heads (GQA when < heads, MQA when 1)
    head_dim: int          # may differ from hidden_dim // heads
    ffn_dim: int           # SwiGLU intermediate size
    vocab_size: int
    max_context: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    norm_eps: float = 1e-5
    tied_embeddings: bool = False
    qkv_bias: bool = False
    activation: str = "silu"
    sliding_window: int | None = None   # Mistral: attend to at most this many past positions
    bos_id: int | None = 1
    eos_id: int | None = 2
    # Mixture of experts (0: a dense model). Each layer's SwiGLU FFN is `experts` routed experts of
    # width `expert_ffn_dim`, of which a linear router (experts x hidden) picks `experts_per_token`
    # for each token, plus `shared_experts` every token uses. Only the chip estimate reads these:
    # importing a mixture-of-experts checkpoint is refused.
    experts: int = 0
    experts_per_token: int = 0
    shared_experts: int = 0
    expert_ffn_dim: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self, source: object | None = None) -> None:
        def bad(field: str, expected: str, value: object):
            raise BadConfig(f"expected {expected}, got {value!r}", path=source, field=field)

        if self.family not in FAMILIES:
            bad("family", "one of " + ", ".join(FAMILIES), self.family)
        if self.activation not in ACTIVATIONS:
            bad("activation", "one of " + ", ".join(ACTIVATIONS), self.activation)
        # Upper bounds are far above any real model; they exist so a corrupt header cannot ask
        # for a multi-GB allocation before any tensor is read.
        limits = {
            "hidden_dim": (1, 1 << 16), "layers": (1, 1024), "heads": (1, 1024),
            "kv_heads": (1, 1024), "head_dim": (1, 1024), "ffn_dim": (1, 1 << 18),
            "vocab_size": (1, 1 << 22), "max_context": (1, 1 << 24),
        }
        for field, (low, high) in limits.items():
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                bad(field, f"an integer in [{low}, {high}]", value)
        for field in MOE_FIELDS:
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1 << 18:
                bad(field, f"an integer in [0, {1 << 18}]", value)
        if self.experts:
            if not 1 <= self.experts_per_token <= self.experts:
                bad("experts_per_token", f"an integer in [1, experts={self.experts}]", self.experts_per_token)
            if self.expert_ffn_dim < 1:
                bad("expert_ffn_dim", "a positive integer for a mixture-of-experts model", self.expert_ffn_dim)
        elif self.experts_per_token or self.shared_experts or self.expert_ffn_dim:
            bad("experts", "a positive number of experts where experts_per_token, shared_experts or "
                "expert_ffn_dim is set", self.experts)
        for field in ("tied_embeddings", "qkv_bias"):
            if type(getattr(self, field)) is not bool:
                bad(field, "true or false", getattr(self, field))
        for field in ("rope_theta", "norm_eps"):
            if type(getattr(self, field)) not in (int, float):
                bad(field, "a number", getattr(self, field))
        for field in ("bos_id", "eos_id"):
            value = getattr(self, field)
            if value is not None and (type(value) is not int):
                bad(field, "a token id (an integer) or null", value)
        if self.rope_scaling is not None and not (
                isinstance(self.rope_scaling, RopeScaling)
                and all(type(getattr(self.rope_scaling, f.name)) in (int, float)
                        for f in dataclasses.fields(RopeScaling))):
            bad("rope_scaling", "numbers factor, low_freq_factor, high_freq_factor, original_max_position",
                self.rope_scaling)
        if self.heads % self.kv_heads:
            bad("kv_heads", f"a divisor of heads={self.heads}", self.kv_heads)
        if self.head_dim % 2:
            bad("head_dim", "an even number (RoPE rotates pairs)", self.head_dim)
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 1):
            bad("rope_theta", "a finite number > 1", self.rope_theta)
        if not (math.isfinite(self.norm_eps) and 0 < self.norm_eps < 1):
            bad("norm_eps", "a number in (0, 1)", self.norm_eps)
        rs = self.rope_scaling
        if rs is not None:
            if not rs.factor >= 1:
                bad("rope_scaling.factor", "a number >= 1", rs.factor)
            if not 0 < rs.low_freq_factor < rs.high_freq_factor:
                bad("rope_scaling.high_freq_factor", "low_freq_factor < high_freq_factor", rs.high_freq_factor)
            if not rs.original_max_position > 0:
                bad("rope_scaling.original_max_position", "a positive integer", rs.original_max_position)
        if self.sliding_window is not None and not (isinstance(self.sliding_window, int)
                                                    and self.sliding_window > 0):
            bad("sliding_window", "a positive integer or null", self.sliding_window)
        for field in ("bos_id", "eos_id"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < self.vocab_size:
                bad(field, f"a token id in [0, {self.vocab_size})", value)

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def classifier(self) -> str:
        """The tensor that turns the final hidden state into logits: the embedding when tied."""
        return "embed" if self.tied_embeddings else "output"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def ffn_shapes(self, ffn_dim: int) -> dict[str, tuple[int, ...]]:
        """One SwiGLU FFN (a dense layer's, or one expert's) of width `ffn_dim`."""
        return {"w_gate": (ffn_dim, self.hidden_dim), "w_up": (ffn_dim, self.hidden_dim),
                "w_down": (self.hidden_dim, ffn_dim)}

    def layer_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical per-layer tensor names (without the `layers.{i}.` prefix) and shapes.

        Matrices are [out_features, in_features] as in Hugging Face; q/k rows are in the
        Hugging Face RoPE layout (rotate-half pairs (j, j + head_dim/2)). A mixture of experts has
        `router` and `experts.{e}.w_*` / `shared.{s}.w_*` in place of the dense FFN.
        """
        if self.is_moe:
            dense = {k: v for k, v in dataclasses.replace(self, experts=0, experts_per_token=0, shared_experts=0,
                                                          expert_ffn_dim=0).layer_tensor_shapes().items()
                     if k not in ("w_gate", "w_up", "w_down")}
            shapes = {**dense, "router": (self.experts, self.hidden_dim)}
            expert = self.ffn_shapes(self.expert_ffn_dim)
            for group, count in (("experts", self.experts), ("shared", self.shared_experts)):
                for e in range(count):
                    shapes.update({f"{group}.{e}.{name}": shape for name, shape in expert.items()})
            return shapes
        shapes = {
            "attn_norm": (self.hidden_dim,),
            "wq": (self.q_dim, self.hidden_dim),
            "wk": (self.kv_dim, self.hidden_dim),
            "wv": (self.kv_dim, self.hidden_dim),
            "wo": (self.hidden_dim, self.q_dim),
            "ffn_norm": (self.hidden_dim,),
            "w_gate": (self.ffn_dim, self.hidden_dim),
            "w_up": (self.ffn_dim, self.hidden_dim),
            "w_down": (self.hidden_dim, self.ffn_dim),
        }
        if self.qkv_bias:
            shapes.update(bq=(self.q_dim,), bk=(self.kv_dim,), bv=(self.kv_dim,))
        return shapes

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """All canonical tensor names and shapes, in data-flow order."""
        shapes: dict[str, tuple[int, ...]] = {"embed": (self.vocab_size, self.hidden_dim)}
        for i in range(self.layers):
            for name, shape in self.layer_tensor_shapes().items():
                shapes[f"layers.{i}.{name}"] = shape
        shapes["final_norm"] = (self.hidden_dim,)
        if not self.tied_embeddings:
            shapes["output"] = (self.vocab_size, self.hidden_dim)
        return shapes

    def parameter_count(self) -> int:
        return sum(math.prod(s) for s in self.tensor_shapes().values())

    def matmul_weights_per_layer(self) -> int:
        """Weights in the projection matrices of one layer (what a chip stores per stage): the seven
        of a dense layer; every expert's and the router's in a mixture of experts."""
        if self.is_moe:
            experts = (self.experts + self.shared_experts) * self.expert_weights()
            return self.attention_weights_per_layer() + self.experts * self.hidden_dim + experts
        return sum(math.prod(s) for n, s in self.layer_tensor_shapes().items() if n.startswith("w"))

    def attention_weights_per_layer(self) -> int:
        """wq, wk, wv and wo."""
        return 2 * self.hidden_dim * (self.q_dim + self.kv_dim)

    def expert_weights(self) -> int:
        """One expert's three matrices."""
        return 3 * self.hidden_dim * self.expert_ffn_dim

    def active_matmul_weights_per_layer(self) -> int:
        """Weights one token multiplies in one layer: all of a dense layer's; the router and the
        chosen and shared experts of a mixture of experts."""
        if not self.is_moe:
            return self.matmul_weights_per_layer()
        experts = (self.experts_per_token + self.shared_experts) * self.expert_weights()
        return self.attention_weights_per_layer() + self.experts * self.hidden_dim + experts

    def active_parameter_count(self) -> int:
        """Parameters one token uses, the classifier included and the embedding table not (one row is read)."""
        inactive = (self.experts - self.experts_per_token) * self.expert_weights() * self.layers
        embedding = 0 if self.tied_embeddings else self.vocab_size * self.hidden_dim
        return self.parameter_count() - inactive - embedding

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if not self.is_moe:      # a dense model's record (a die's manifest, its hash) is as before experts existed
            for field in MOE_FIELDS:
                data.pop(field)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        data = dict(data)
        if data.get("rope_scaling") is not None:
            scaling = data["rope_scaling"]
            expected = [f.name for f in dataclasses.fields(RopeScaling)]
            if not isinstance(scaling, dict) or sorted(scaling) != sorted(expected):
                raise BadConfig(f"rope_scaling: expected an object of exactly {expected}, got "
                                f"{sorted(map(repr, scaling)) if isinstance(scaling, dict) else type(scaling).__name__}")
            data["rope_scaling"] = RopeScaling(**scaling)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise BadConfig(f"unknown ModelSpec fields {sorted(unknown)}")
        return cls(**data)


@runtime_checkable
class Weights(Protocol):
    """What every later stage reads a model through: its spec and its float32 tensors by canonical
    name (`ModelSpec.tensor_shapes`). A checkpoint's `Model` is one, and so is a die
    (`hardwire.die.FrozenWeights`), whose tensors are its dequantized weights."""

    spec: ModelSpec

    def tensor(self, name: str) -> "np.ndarray": ...
