"""Float reference forward pass (numpy, float32), Hugging Face semantics.

The specification every quantized and integer variant is measured against. Layout: q/k rows are
in rotate-half RoPE order; matrices are [out, in]; activations are [tokens, features].

`FloatTransformer` holds weights and a KV cache; `forward(ids)` runs any number of new tokens
(teacher-forced prefill or one decode step) and returns their logits. Weight matrices are fetched
through `tensor(name)`, so the same code runs a checkpoint, a dequantized die, or a die with a LoRA
patch folded in.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from hardwire.model.spec import ModelSpec

# capture(name, x): called with the input activations [tokens, in] of each weight matrix
# (by canonical name) before it is applied; calibration for freezing uses it.
Capture = Callable[[str, np.ndarray], None]


def rope_inverse_frequencies(spec: ModelSpec) -> np.ndarray:
    """Per-pair rotation frequency [head_dim/2], with Llama 3.1 scaling when configured."""
    exponents = np.arange(0, spec.head_dim, 2, dtype=np.float64) / spec.head_dim
    inv_freq = 1.0 / spec.rope_theta ** exponents
    rs = spec.rope_scaling
    if rs is None:
        return inv_freq
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between
    # interpolated smoothly (Meta's reference `apply_scaling`).
    wavelength = 2 * np.pi / inv_freq
    low_freq_wavelength = rs.original_max_position / rs.low_freq_factor
    high_freq_wavelength = rs.original_max_position / rs.high_freq_factor
    smooth = (rs.original_max_position / wavelength - rs.low_freq_factor) / (
        rs.high_freq_factor - rs.low_freq_factor)
    scaled = np.where(wavelength > low_freq_wavelength, inv_freq / rs.factor, inv_freq)
    medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength)
    return np.where(medium, (1 - smooth) * inv_freq / rs.factor + smooth * inv_freq, scaled)


def rope_tables(spec: ModelSpec, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [len(positions), head_dim/2] in float32 (angles computed in float64)."""
    angles = np.outer(positions.astype(np.float64), rope_inverse_frequencies(spec))
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (j, j + d/2) of x [tokens, heads, head_dim] by per-token angles."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def times_transposed(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x [tokens, in] @ matrix.T; one token as a matrix-vector product (BLAS gemv beats a 1-row gemm)."""
    if x.shape[0] == 1:
        return (matrix @ x[0])[None]
    return x @ matrix.T


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    # np.mean's own arithmetic (a float32 sum, then a division by the count) without its Python
    # wrapper, which costs as much as the sum on a decode step's one row (one 768-wide row, timeit:
    # 4.1 us with np.mean, 1.8 us so, the same values).
    mean_square = np.add.reduce(x * x, axis=-1, keepdims=True, dtype=np.float32) / np.float32(x.shape[-1])
    return (x / np.sqrt(mean_square + np.float32(eps))) * weight


def silu(x: np.ndarray) -> np.ndarray:
    # exp of a large negative argument overflows to inf and gives 0, which is the right limit.
    with np.errstate(over="ignore"):
        return x / (np.float32(1) + np.exp(-x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def grow_kv_cache(holder, needed: int, dtype) -> None:
    """Make `holder.keys`/`holder.values` [layers, positions, kv_heads, head_dim] hold `needed`
    positions: double the capacity (at most to max_context), keeping the first `holder.position`.
    Shared by the float reference and the golden model, whose caches differ only in dtype."""
    if needed <= holder.capacity:
        return
    spec = holder.spec
    if needed > spec.max_context:
        raise ValueError(f"sequence of {needed} tokens exceeds the context of {spec.max_context}")
    capacity = min(max(needed, 2 * holder.capacity), spec.max_context)
    shape = (spec.layers, capacity, spec.kv_heads, spec.head_dim)
    keys, values = np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype)
    if holder.keys is not None:
        keys[:, :holder.position] = holder.keys[:, :holder.position]
        values[:, :holder.position] = holder.values[:, :holder.position]
    holder.keys, holder.values, holder.capacity = keys, values, capacity


@dataclass
class KVCache:
    """One user's KV cache, swapped into a backend's transformer while that user's token runs."""
    keys: np.ndarray | None = None       # [layers, capacity, kv_heads, head_dim]
    values: np.ndarray | None = None     # same shape as keys
    capacity: int = 0                    # positions allocated (grows on demand)
    position: int = 0                    # positions filled


CACHE_FIELDS = ("keys", "values", "capacity", "position")


class bound:
    """`with bound(holder, cache):` the holder's cache is `cache` inside, and what the step left
    (a grown array, the new position) is written back to `cache` on the way out. A None cache
    leaves the holder's own."""

    def __init__(self, holder, cache: KVCache | None):
        self.holder, self.cache = holder, cache

    def __enter__(self):
        if self.cache is not None:
            self.saved = {name: getattr(self.holder, name) for name in CACHE_FIELDS}
            if self.cache.keys is None:
                self.holder.reset()
            else:
                for name in CACHE_FIELDS:
                    setattr(self.holder, name, getattr(self.cache, name))
        return self.holder

    def __exit__(self, *exc):
        if self.cache is not None:
            for name in CACHE_FIELDS:
                setattr(self.cache, name, getattr(self.holder, name))
                setattr(self.holder, name, self.saved[name])
        return False


class FloatTransformer:
    """Float32 decoder with a KV cache of `capacity` positions."""

    # {matrix name: function of its input}: a die's online transforms (docs/arithmetic.md §12),
    # applied before the product (and before `capture` sees the input)
    input_transforms: dict[str, Callable] = {}

    def __init__(self, spec: ModelSpec, tensor: Callable[[str], np.ndarray], capacity: int | None = None,
                 input_transforms: dict[str, Callable] | None = None):
        self.spec = spec
        self.input_transforms = dict(input_transforms or {})
        # The cache starts small and doubles on demand up to the model's context, so a 128k-context
        # model does not reserve gigabytes for a short prompt.
        self.initial_capacity = min(capacity or 256, spec.max_context)
        self.weights = self.load_weights(tensor)
        self.output = self.weights[spec.classifier]
        self.reset()

    def load_weights(self, tensor: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
        """Every tensor by canonical name, float32 and C-contiguous (row i of a matrix is output i)."""
        return {name: np.ascontiguousarray(tensor(name), dtype=np.float32) for name in self.spec.tensor_shapes()}

    def weight_bytes(self) -> int:
        """Bytes of weights a token step reads: every parameter it uses once (one embedding row)."""
        return 4 * self.spec.active_parameter_count()

    def reset(self) -> None:
        self.capacity = 0
        self.keys = self.values = None
        self._grow(self.initial_capacity)
        self.position = 0

    def _grow(self, needed: int) -> None:
        grow_kv_cache(self, needed, np.float32)

    def linear(self, name: str, x: np.ndarray, capture: Capture | None) -> np.ndarray:
        transform = self.input_transforms.get(name)
        if transform is not None:
            x = transform(x)
        if capture is not None:
            capture(name, x)
        return self.product(name, x)

    def product(self, name: str, x: np.ndarray) -> np.ndarray:
        """x [tokens, in] times the matrix `name` transposed."""
        return times_transposed(self.weights[name], x)

    def project(self, prefix: str, names: tuple[str, ...], x: np.ndarray,
                capture: Capture | None) -> list[np.ndarray]:
        """The products of one input x with several matrices of a layer (q, k, v; gate, up)."""
        return [self.linear(prefix + name, x, capture) for name in names]

    def attention(self, layer: int, q: np.ndarray, start: int) -> np.ndarray:
        """Causal (optionally windowed) attention of new queries q [T, heads, hd] over the cache."""
        spec = self.spec
        tokens, end = q.shape[0], start + q.shape[0]
        group = spec.heads // spec.kv_heads
        keys, values = self.keys[layer, :end], self.values[layer, :end]
        if group > 1:                       # each kv head serves `group` query heads
            keys, values = keys.repeat(group, axis=1), values.repeat(group, axis=1)
        keys, values = keys.transpose(1, 2, 0), values.transpose(1, 0, 2)       # [heads, hd, end], [heads, end, hd]
        scores = (q.transpose(1, 0, 2) @ keys) / np.float32(np.sqrt(spec.head_dim))  # [heads, T, end]
        # One new token sees the whole cache: nothing to mask unless a window hides the oldest keys.
        if tokens > 1 or (spec.sliding_window is not None and end > spec.sliding_window):
            query_pos = np.arange(start, end)[:, None]
            key_pos = np.arange(end)[None, :]
            masked = key_pos > query_pos
            if spec.sliding_window is not None:
                masked |= key_pos <= query_pos - spec.sliding_window
            scores = np.where(masked[None], np.float32(-np.inf), scores)
        probs = softmax(scores, axis=-1)
        return (probs @ values).transpose(1, 0, 2).reshape(tokens, spec.q_dim)

    def attend(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
        """Write the new tokens' k, v at `start` in the cache; attend the queries over it."""
        self.keys[layer, start:start + k.shape[0]] = k
        self.values[layer, start:start + v.shape[0]] = v
        return self.attention(layer, q, start)

    def layer(self, index: int, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, start: int,
              capture: Capture | None = None, attend: Callable | None = None) -> np.ndarray:
        spec, w, p = self.spec, self.weights, f"layers.{index}."
        tokens = x.shape[0]
        h = rmsnorm(x, w[p + "attn_norm"], spec.norm_eps)
        q, k, v = self.project(p, ("wq", "wk", "wv"), h, capture)
        if spec.qkv_bias:
            q, k, v = q + w[p + "bq"], k + w[p + "bk"], v + w[p + "bv"]
        q = apply_rope(q.reshape(tokens, spec.heads, spec.head_dim), cos, sin)
        k = apply_rope(k.reshape(tokens, spec.kv_heads, spec.head_dim), cos, sin)
        v = v.reshape(tokens, spec.kv_heads, spec.head_dim)
        x = x + self.linear(p + "wo", (attend or self.attend)(index, q, k, v, start), capture)
        h = rmsnorm(x, w[p + "ffn_norm"], spec.norm_eps)
        gate, up = self.project(p, ("w_gate", "w_up"), h, capture)
        gated = silu(gate) * up
        return x + self.linear(p + "w_down", gated, capture)

    def forward(self, ids, capture: Capture | None = None) -> np.ndarray:
        """Logits [len(ids), vocab] for new tokens appended at the current position."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        start = self.position
        self._grow(start + len(ids))
        if len(ids) and (ids.min() < 0 or ids.max() >= self.spec.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.spec.vocab_size})")
        cos, sin = rope_tables(self.spec, np.arange(start, start + len(ids)))
        x = self.weights["embed"][ids]
        for index in range(self.spec.layers):
            x = self.layer(index, x, cos, sin, start, capture)
        self.position = start + len(ids)
        x = rmsnorm(x, self.weights["final_norm"], self.spec.norm_eps)
        return self.linear(self.spec.classifier, x, capture)

    def forward_batch(self, tokens, caches: list) -> np.ndarray:
        """Logits [users, vocab]: token i appended to user i's KV cache, caches[i] (an object with
        this transformer's `keys`, `values`, `capacity`, `position`, a KVCache above).
        The projections run as one matrix product over the users; attention reads each user's cache."""
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        for cache in caches:
            with bound(self, cache):
                self._grow(cache.position + 1)
        positions = np.array([cache.position for cache in caches])
        cos, sin = rope_tables(self.spec, positions)

        def attend(layer, q, k, v, start):
            out = np.empty((len(caches), self.spec.q_dim), np.float32)
            for user, cache in enumerate(caches):
                with bound(self, cache):
                    out[user] = self.attend(layer, q[user:user + 1], k[user:user + 1], v[user:user + 1],
                                            int(positions[user]))[0]
            return out
        x = self.weights["embed"][ids]
        for index in range(self.spec.layers):
            x = self.layer(index, x, cos, sin, 0, attend=attend)
        for cache in caches:
            cache.position += 1
        x = rmsnorm(x, self.weights["final_norm"], self.spec.norm_eps)
        return self.linear(self.spec.classifier, x, None)


# Matrices of a layer that read the same input, in the order their rows are stacked.
STACKS = (("wq", "wk", "wv"), ("w_gate", "w_up"))


class StackedTransformer(FloatTransformer):
    """The float reference laid out to stream: the matrices that read the same input (q|k|v,
    gate|up) are stacked row-wise into one contiguous matrix at load, so a decode step makes one
    matrix-vector product per stack (49 products a step instead of 85 on a 12-layer model).
    `weights` keeps every canonical name as a view of its stack's rows (no second copy), so
    per-name paths — `linear(name)`, a
    forward with a calibration `capture` — read the same memory. Replacing an entry of `weights`
    afterwards would not reach the stack.

    A one-token `forward` (a decode step) runs `decode_one`: between the products, the compiled
    blocks of `decode_kernels` in buffers allocated once, so the step spends its time reading
    weights; a die's online transform of a single matrix's input (w_down's Hadamard) is applied
    to that vector before its product. Anything it does not handle goes the reference's way:
    several tokens (a prefill), a calibration `capture`, an online transform on a stacked matrix's
    input (`fused_decode = False` turns it off, for comparisons)."""

    fused_decode = True
    # The decode step's matrix-vector product, matvec(matrix, vector, out); None: numpy's BLAS
    # (`decode_kernels.blas_matvec`). `decode_kernels.row_parallel_matvec` is numba's alternative.
    matvec: Callable | None = None

    def load_weights(self, tensor: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
        shapes = self.spec.tensor_shapes()
        weights: dict[str, np.ndarray] = {}
        self.stacks: dict[str, np.ndarray] = {}      # "layers.{i}.wq" -> the [q|k|v rows, hidden] stack
        self.stack_splits: dict[str, list[int]] = {}  # where each part after the first starts in it
        for index in range(self.spec.layers):
            prefix = f"layers.{index}."
            for names in STACKS:
                starts = [0, *np.cumsum([shapes[prefix + name][0] for name in names]).tolist()]
                stack = np.empty((starts[-1], shapes[prefix + names[0]][1]), dtype=np.float32)
                for name, start, end in zip(names, starts, starts[1:]):
                    stack[start:end] = tensor(prefix + name)
                    weights[prefix + name] = stack[start:end]
                self.stacks[prefix + names[0]] = stack
                self.stack_splits[prefix + names[0]] = starts[1:-1]
        for name in shapes:
            if name not in weights:
                weights[name] = np.ascontiguousarray(tensor(name), dtype=np.float32)
        return weights

    def forward(self, ids, capture: Capture | None = None) -> np.ndarray:
        if self.fused_decode and capture is None and np.size(ids) == 1 and not self.stack_transformed:
            return self.decode_one(int(np.asarray(ids).reshape(-1)[0]))
        return super().forward(ids, capture)

    @cached_property
    def stack_transformed(self) -> bool:
        """Whether an online transform reads the input of a stacked matrix: the matrices of a stack
        share one product, so a per-matrix transform there needs the per-matrix (numpy) path.
        (Asked once: the transforms are set before the first forward and not changed after.)"""
        return any(f"layers.{i}.{name}" in self.input_transforms
                   for i in range(self.spec.layers) for names in STACKS for name in names)

    def decode_buffers(self) -> dict[str, np.ndarray]:
        """The step's activations, allocated on the first decode step and reused by every later one
        (`scores` grows with the cache)."""
        buffers = getattr(self, "_decode_buffers", None)
        if buffers is None:
            spec = self.spec
            stack_rows = spec.q_dim + 2 * spec.kv_heads * spec.head_dim
            empty = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
            buffers = self._decode_buffers = dict(
                x=empty(spec.hidden_dim), normed=empty(spec.hidden_dim), delta=empty(spec.hidden_dim),
                qkv=empty(stack_rows), q=empty(spec.heads, spec.head_dim), attended=empty(spec.q_dim),
                gate_up=empty(2 * spec.ffn_dim), gated=empty(spec.ffn_dim), scores=empty(self.capacity),
                cos=empty(spec.head_dim // 2), sin=empty(spec.head_dim // 2), nothing=empty(0),
                inverse_frequencies=rope_inverse_frequencies(spec))
        if buffers["scores"].shape[0] < self.capacity:
            buffers["scores"] = np.zeros(self.capacity, np.float32)
        return buffers

    def decode_one(self, token: int) -> np.ndarray:
        """Logits [1, vocab] of one token appended at the current position: per layer four
        matrix-vector products (`matvec`, written into the buffers) and four compiled calls."""
        from hardwire.model.decode_kernels import add_rmsnorm, attend_one, blas_matvec, rope_angles, silu_times_up
        spec, w = self.spec, self.weights
        if not 0 <= token < spec.vocab_size:
            raise ValueError(f"token ids must lie in [0, {spec.vocab_size})")
        position = self.position
        self._grow(position + 1)
        b = self.decode_buffers()
        x, normed, delta, qkv, gate_up, gated = b["x"], b["normed"], b["delta"], b["qkv"], b["gate_up"], b["gated"]
        eps, window, matvec = np.float32(spec.norm_eps), spec.sliding_window or 0, self.matvec or blas_matvec
        rope_angles(b["inverse_frequencies"], position, b["cos"], b["sin"])
        x[:] = w["embed"][token]
        residual = b["nothing"]              # nothing to add before the first layer's norm
        for index in range(spec.layers):
            p = f"layers.{index}."
            add_rmsnorm(x, residual, w[p + "attn_norm"], eps, normed)
            matvec(self.stacks[p + "wq"], normed, qkv)
            bias = self.stacked_biases[index] if spec.qkv_bias else b["nothing"]
            attend_one(qkv, bias, b["cos"], b["sin"], self.keys, self.values, index, position, window,
                       b["q"], b["scores"], b["attended"])
            matvec(w[p + "wo"], self.transformed(p + "wo", b["attended"]), delta)
            add_rmsnorm(x, delta, w[p + "ffn_norm"], eps, normed)
            matvec(self.stacks[p + "w_gate"], normed, gate_up)
            silu_times_up(gate_up, gated)
            matvec(w[p + "w_down"], self.transformed(p + "w_down", gated), delta)
            residual = delta
        add_rmsnorm(x, residual, w["final_norm"], eps, normed)
        self.position = position + 1
        logits = np.empty((1, spec.vocab_size), np.float32)     # the caller keeps it: a new array
        matvec(self.output, self.transformed(spec.classifier, normed), logits[0])
        return logits

    def transformed(self, name: str, vector: np.ndarray) -> np.ndarray:
        """The input of matrix `name` after its online transform (a new vector), or itself."""
        transform = self.input_transforms.get(name)
        if transform is None:
            return vector
        return np.ascontiguousarray(transform(vector[None])[0], dtype=np.float32)

    @cached_property
    def stacked_biases(self) -> list[np.ndarray]:
        """bq|bk|bv of each layer, in the q|k|v stack's row order."""
        w = self.weights
        return [np.concatenate([w[f"layers.{i}.{name}"] for name in ("bq", "bk", "bv")]).astype(np.float32)
                for i in range(self.spec.layers)]

    def project(self, prefix: str, names: tuple[str, ...], x: np.ndarray,
                capture: Capture | None) -> list[np.ndarray]:
        # calibration sees each matrix's input by its own name; an online transform is per matrix
        if capture is not None or any(prefix + name in self.input_transforms for name in names):
            return super().project(prefix, names, x, capture)
        y = times_transposed(self.stacks[prefix + names[0]], x)
        return np.split(y, self.stack_splits[prefix + names[0]], axis=-1)


def teacher_forced_logits(model, ids, input_transforms: dict[str, Callable] | None = None) -> np.ndarray:
    """Logits [len(ids), vocab] of a whole sequence from an empty cache (`model`: anything with
    `.spec` and `.tensor(name)`, e.g. `hardwire.load(...)`)."""
    transformer = FloatTransformer(model.spec, model.tensor, capacity=len(ids),
                                   input_transforms=input_transforms)
    return transformer.forward(ids)
