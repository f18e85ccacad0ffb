"""Offline transforms that make a model easier to quantize, folded exactly into its float weights.

Neither adds a datapath block: the golden model, the RTL and the estimate read the transformed
die like any other. Both are applied before quantization, in this order:

1. `rot` — an orthogonal rotation Q of the residual stream (QuaRot, arXiv 2404.00456; SpinQuant,
   arXiv 2405.16406). Every RMSNorm gain is first folded into the matrices that read the norm's
   output (W diag(g)), leaving gains of one; an RMSNorm with unit gain commutes with an orthogonal
   Q (rms(xQ) = rms(x)), so with the residual stream carried as xQ:
       embed' = E Q            wq', wk', wv', w_gate', w_up' = W diag(g) Q
       wo', w_down' = Q^T W    output' = C diag(g_final) Q
   The float model's logits are unchanged; outlier channels of the residual stream are spread over
   all channels, so a group of 32 input columns no longer shares its scale with one large weight.
   A tied embedding becomes two matrices (the table E Q and the classifier E diag(g_final) Q
   differ by the final norm's gain): the die is untied and stores one more matrix.
   Q is a randomized Walsh–Hadamard matrix H diag(±1) / sqrt(n) when the width is a power of
   two, else the Kronecker product of one with a random orthogonal matrix of the odd factor.

2. `awq` — activation-aware per-input-channel scaling (AWQ, arXiv 2306.00978). For a group of
   matrices reading one activation X, scales s = mean|X|^alpha (normalized to a geometric mean of
   one) are searched over alpha on calibration inputs, minimizing ||X W^T - (X/s) Q(W diag(s))^T||²
   summed over the group with each matrix quantized round-to-nearest in its own format
   (alpha = 0, no scaling, is in the grid: never worse on the calibration inputs). The scale is
   folded exactly where the algebra allows — into what produces X:
       q/k/v input   attn_norm gain / s,   wq, wk, wv columns * s
       gate/up input ffn_norm gain / s,    w_gate, w_up columns * s
       wo input      wv rows (and bv) / s, wo columns * s — s is shared by the query heads that
                     read one key/value head (grouped-query attention), since they read one v
       w_down input  w_up rows / s,        w_down columns * s (silu(gate) * up is linear in up)
   The classifier's input is not scaled (a tied classifier is also the embedding table).

3. `had` — an online Walsh–Hadamard transform of the FFN down projection's input (QuaRot's online
   transform; docs/arithmetic.md §12). The chip transforms SwiGLU's output x by H_n per block of n
   (n the largest power of two dividing ffn_dim, at most 256) before its token quantizer; offline,
       w_down' = W_down Q          Q = H_n / sqrt(n) block-diagonal, orthonormal and symmetric
   so w_down' (Q x) = W_down x. A channel with an outlier shares it with the n - 1 others of its
   block, so the per-token activation scale is set by a smaller largest value. `awq` does not scale
   the w_down input of such a die (its scales fold into w_up's rows, which produce x, not Q x).
   The die records the transform (`hardwire.die.ONLINE_HADAMARD_KEY`): the golden model, the RTL and
   the estimate add the block only for such a die.

Quantization (round-to-nearest or GPTQ) runs last, on the transformed weights; GPTQ's Hessian
X^T X is taken of the inputs the transformed matrices see.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from hardwire.arithmetic import hadamard_block
from hardwire.die import ONLINE_HADAMARD_INPUTS, ONLINE_HADAMARD_KEY, online_input_transforms
from hardwire.errors import BadConfig, BadPlan
from hardwire.formats import WeightFormat
from hardwire.freeze.quantize import quantize_rtn
from hardwire.model.spec import ModelSpec

TRANSFORMS = ("rot", "awq", "had")     # in the order they are applied
ROTATION_SEED = 0                      # the die records it; the rotation is a function of (width, seed)
AWQ_GRID = 20                          # alpha in 0, 1/20, ..., 19/20
AWQ_SAMPLE_TOKENS = 4096               # calibration rows the scale search reads per input
MIN_CHANNEL_SCALE = 1e-4               # a channel never seen active keeps a finite scale

# Which norm feeds which matrices (the gain folded into them by the rotation).
NORM_READERS = {"attn_norm": ("wq", "wk", "wv"), "ffn_norm": ("w_gate", "w_up")}
WRITES_RESIDUAL = ("wo", "w_down")


# -- the rotation ---------------------------------------------------------------------------------

def walsh_hadamard(size: int) -> np.ndarray:
    """Sylvester's Hadamard matrix of a power-of-two `size` (entries ±1)."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a Walsh-Hadamard matrix needs a power-of-two size, got {size}")
    h = np.ones((1, 1))
    while h.shape[0] < size:
        h = np.block([[h, h], [h, -h]])
    return h


@functools.lru_cache(maxsize=4)
def rotation_matrix(width: int, seed: int = ROTATION_SEED) -> np.ndarray:
    """The orthogonal Q [width, width] (float64, read-only: it is shared) of the residual-stream
    rotation."""
    power = width & -width                          # the largest power of two dividing width
    odd = width // power
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=power)
    hadamard = walsh_hadamard(power) * signs[None, :] / np.sqrt(power)
    if odd == 1:
        rotation = hadamard
    else:
        q, r = np.linalg.qr(rng.standard_normal((odd, odd)))
        q *= np.sign(np.diag(r))[None, :]            # QR's sign convention made unique
        rotation = np.kron(q, hadamard)
    rotation.setflags(write=False)
    return rotation


class RotatedWeights:
    """`model`'s weights with the residual stream rotated by Q (see the module docstring), read
    lazily one tensor at a time, so freezing stays streaming. Anything else (tokenizer, path,
    format) is the wrapped model's."""

    def __init__(self, model, seed: int = ROTATION_SEED):
        spec = model.spec
        if spec.is_moe:
            raise BadConfig("the residual rotation supports dense models only")
        self.model, self.seed = model, seed
        self.spec: ModelSpec = dataclasses.replace(spec, tied_embeddings=False)
        self.rotation = rotation_matrix(spec.hidden_dim, seed)

    def __getattr__(self, name):
        return getattr(self.model, name)

    def tensor(self, name: str) -> np.ndarray:
        q = self.rotation
        prefix, _, short = name.rpartition(".")
        read = lambda n: np.asarray(self.model.tensor(n), dtype=np.float64)   # noqa: E731
        if name == "embed":
            out = read("embed") @ q
        elif name == "output":
            out = (read(self.model.spec.classifier) * read("final_norm")[None, :]) @ q
        elif name == "final_norm" or short in NORM_READERS:
            out = np.ones(self.spec.hidden_dim)
        elif short in WRITES_RESIDUAL:
            out = q.T @ read(name)
        else:
            norm = next((n for n, readers in NORM_READERS.items() if short in readers), None)
            if norm is None:
                return self.model.tensor(name)           # biases: outputs are not rotated
            out = (read(name) * read(f"{prefix}.{norm}")[None, :]) @ q
        return out.astype(np.float32)

    def record(self) -> dict:
        """What the die's manifest says about the rotation."""
        return {"kind": "randomized Walsh-Hadamard", "seed": self.seed, "width": self.spec.hidden_dim,
                "source_tied_embeddings": self.model.spec.tied_embeddings}


class HadamardWeights:
    """`model`'s weights with the online Walsh–Hadamard transform's offline half folded in: each
    w_down is W Q (see the module docstring). `input_transforms` is the online half, for the float
    layers that calibrate the die: they read Q x, and the product is W x as before."""

    def __init__(self, model):
        spec = model.spec
        self.model, self.spec = model, spec
        self.block = hadamard_block(spec.ffn_dim)
        if self.block < 2:
            raise BadPlan(f"`had` needs an FFN width with a factor of two; this model's is {spec.ffn_dim}")
        self.input_transforms = online_input_transforms(spec.layers, self.block)

    def __getattr__(self, name):
        return getattr(self.model, name)

    def tensor(self, name: str) -> np.ndarray:
        weight = self.model.tensor(name)
        transform = self.input_transforms.get(name)
        return weight if transform is None else transform(np.asarray(weight, dtype=np.float32))   # rows: W Q

    def record(self) -> dict:
        """The die's manifest entry transforms[ONLINE_HADAMARD_KEY]."""
        return {ONLINE_HADAMARD_KEY: {"inputs": list(ONLINE_HADAMARD_INPUTS), "block": self.block,
                                      "width": self.spec.ffn_dim}}


def source_spec(spec: ModelSpec, transforms: dict | None) -> ModelSpec:
    """The spec of the model a die was frozen from (a rotation unties a tied embedding)."""
    rotation = (transforms or {}).get("rotation")
    if not rotation:
        return spec
    return dataclasses.replace(spec, tied_embeddings=bool(rotation["source_tied_embeddings"]))


def unrotate(x: np.ndarray, transforms: dict | None) -> np.ndarray:
    """A rotated die's residual stream x Q taken back to the float model's basis."""
    rotation = (transforms or {}).get("rotation")
    if not rotation:
        return x
    q = rotation_matrix(int(rotation["width"]), int(rotation["seed"]))
    return (x.astype(np.float64) @ q.T).astype(np.float32)


# -- activation-aware channel scaling -------------------------------------------------------------

def search_channel_scales(inputs: np.ndarray, group: list[tuple[np.ndarray, WeightFormat]],
                          channel_groups: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The per-input-channel scales s [in] (and their alpha) that minimize the group's output error
    when its inputs are divided by s and its weights' columns multiplied by s before round-to-
    nearest. `channel_groups` [in] ties channels to one scale (their mean activation decides)."""
    x = np.asarray(inputs, dtype=np.float32)
    mean_abs = np.abs(x).astype(np.float64).mean(axis=0)
    if channel_groups is not None:
        sums = np.bincount(channel_groups, weights=mean_abs)
        mean_abs = (sums / np.bincount(channel_groups))[channel_groups]
    mean_abs = np.maximum(mean_abs, MIN_CHANNEL_SCALE)
    references = [x @ w.T for w, _ in group]
    best_error, best = np.inf, (np.ones_like(mean_abs), 0.0)
    for step in range(AWQ_GRID):
        alpha = step / AWQ_GRID
        s = mean_abs ** alpha
        s = s / np.exp(np.mean(np.log(s)))
        scaled_x = (x / s[None, :]).astype(np.float32)
        error = 0.0
        for (w, fmt), reference in zip(group, references):
            approx = quantize_rtn((w * s[None, :]).astype(np.float32), fmt).dequantize()
            error += float(np.sum((scaled_x @ approx.T - reference) ** 2))
        if error < best_error:
            best_error, best = error, (s, alpha)
    return best


def kv_channel_groups(spec: ModelSpec) -> np.ndarray:
    """For each wo input channel (query head h, dim d), the v channel (kv head of h, d) it reads."""
    group = spec.heads // spec.kv_heads
    head = np.arange(spec.q_dim) // spec.head_dim
    return (head // group) * spec.head_dim + np.arange(spec.q_dim) % spec.head_dim


# Each scaled input: the matrices reading it, and the vector or matrix rows its scale divides.
AWQ_INPUTS = {"wq": ("wq", "wk", "wv"), "w_gate": ("w_gate", "w_up"), "wo": ("wo",), "w_down": ("w_down",)}


def fold_channel_scales(spec: ModelSpec, prefix: str, weights: dict[str, np.ndarray], source: str,
                        scales: np.ndarray) -> None:
    """Fold the scales s of one layer input (`source`, a key of AWQ_INPUTS) into `weights` (the
    layer's float tensors by full name, changed in place): readers' columns * s, producer / s."""
    s = scales.astype(np.float64)
    for reader in AWQ_INPUTS[source]:
        weights[prefix + reader] = (weights[prefix + reader] * s[None, :]).astype(np.float32)

    def divide(name: str, by: np.ndarray, rows: bool) -> None:
        value = np.asarray(weights[prefix + name], dtype=np.float64)
        weights[prefix + name] = (value / (by[:, None] if rows and value.ndim == 2 else by)).astype(np.float32)

    if source == "wq":
        divide("attn_norm", s, rows=False)
    elif source == "w_gate":
        divide("ffn_norm", s, rows=False)
    elif source == "w_down":
        divide("w_up", s, rows=True)
    else:       # wo: its input is attention's average of v, so v's channels carry the division
        per_v = np.empty(spec.kv_dim)
        per_v[kv_channel_groups(spec)] = s
        divide("wv", per_v, rows=True)
        if spec.qkv_bias:
            divide("bv", per_v, rows=False)


def channel_scaling(spec: ModelSpec, prefix: str, weights: dict[str, np.ndarray],
                    inputs: dict[str, np.ndarray], formats: dict[str, WeightFormat]) -> dict[str, tuple]:
    """Search (on `inputs[prefix + source]`, calibration rows) and fold the scales of every input
    named in `inputs`; returns {source: (scales, alpha)}. All searches read the unscaled weights
    (a row scaling leaves round-to-nearest codes unchanged up to the stored scale's rounding), then
    all scales are folded."""
    found = {}
    for source, readers in AWQ_INPUTS.items():
        x = inputs.get(prefix + source)
        if x is None:
            continue
        group = [(weights[prefix + r], formats[prefix + r]) for r in readers]
        tie = kv_channel_groups(spec) if source == "wo" else None
        found[source] = search_channel_scales(x, group, tie)
    for source, (s, _) in found.items():
        fold_channel_scales(spec, prefix, weights, source, s)
    return found
