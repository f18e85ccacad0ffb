"""Calibration: run text through the model one layer at a time and measure what freezing needs.

- `InputStatistics`: per matmul, the input absmax (-> activation scale) and X^T X (-> GPTQ).
- `measure_sensitivity`: for a mixed plan, the KL divergence from the float model on calibration
  text when only one matrix is quantized in one candidate format, for every (matrix, format).

Everything streams: a layer's float weights are read, used and dropped; what persists between
layers is the residual stream of the calibration tokens ([tokens, hidden] per sequence), one
stream per perturbation for the sensitivity measurement.
"""
from __future__ import annotations

import numpy as np

from hardwire.formats import WeightFormat
from hardwire.freeze.quantize import quantize_rtn
from hardwire.model.reference import FloatTransformer, rmsnorm, rope_tables
from hardwire.model.spec import ModelSpec

# Projections that read the same activation as another one (one statistic serves all).
SHARED_INPUT = {"wk": "wq", "wv": "wq", "w_up": "w_gate"}
SENSITIVITY_STREAM_BYTES = 1 << 30     # residual streams kept for the sensitivity measurement
FISHER_BYTES = 1 << 28                 # per-row classifier Hessians: larger vocab x hidden^2 use one shared


class _OneLayerCache:
    """Stands in for FloatTransformer's [layers, positions, kv_heads, head_dim] cache when only one
    layer is loaded: every layer index maps to the same buffer."""

    def __init__(self, capacity: int, kv_heads: int, head_dim: int):
        self.buffer = np.zeros((capacity, kv_heads, head_dim), np.float32)

    def __getitem__(self, key):
        return self.buffer[key[1:]]

    def __setitem__(self, key, value):
        self.buffer[key[1:]] = value


class LayerRunner:
    """One transformer layer of the float reference, fed whole sequences from position 0."""

    def __init__(self, spec: ModelSpec, index: int, weights: dict[str, np.ndarray], capacity: int,
                 transformer_class: type = FloatTransformer, input_transforms: dict | None = None):
        self.spec, self.index = spec, index
        self.transformer = transformer_class.__new__(transformer_class)
        self.transformer.spec = spec
        self.transformer.input_transforms = dict(input_transforms or {})   # a die's online transforms
        self.transformer.capacity = capacity
        self.transformer.weights = weights          # canonical names "layers.{index}.*"
        self.transformer.keys = _OneLayerCache(capacity, spec.kv_heads, spec.head_dim)
        self.transformer.values = _OneLayerCache(capacity, spec.kv_heads, spec.head_dim)
        self.transformer.position = 0
        self._rope: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def set(self, name: str, weight: np.ndarray) -> None:
        self.transformer.weights[name] = weight

    def __call__(self, x: np.ndarray, capture=None) -> np.ndarray:
        tokens = x.shape[0]
        if tokens not in self._rope:
            self._rope[tokens] = rope_tables(self.spec, np.arange(tokens))
        cos, sin = self._rope[tokens]
        return self.transformer.layer(self.index, x, cos, sin, 0, capture)


class InputStatistics:
    """Accumulates, per matmul input, the absolute maximum, X^T X (for the names in `hessian_for`)
    and the first `sample_tokens` rows of X itself (for the names in `samples_for`)."""

    def __init__(self, hessian_for: set[str] = frozenset(), samples_for: set[str] = frozenset(),
                 sample_tokens: int = 0):
        self.absmax: dict[str, float] = {}
        self.hessians: dict[str, np.ndarray] = {}
        self.hessian_for = set(hessian_for)
        self.samples_for, self.sample_tokens = set(samples_for), sample_tokens
        self._samples: dict[str, list[np.ndarray]] = {}
        self.tokens = 0

    def capture(self, name: str, x: np.ndarray) -> None:
        self.absmax[name] = max(self.absmax.get(name, 0.0), float(np.max(np.abs(x))) if x.size else 0.0)
        if name in self.hessian_for:
            x = x.astype(np.float32, copy=False)
            if name in self.hessians:
                self.hessians[name] += x.T @ x
            else:
                self.hessians[name] = x.T @ x
        if name in self.samples_for:
            kept = self._samples.setdefault(name, [])
            room = self.sample_tokens - sum(len(part) for part in kept)
            if room > 0:
                kept.append(np.array(x[:room], dtype=np.float32))

    def hessian(self, name: str) -> np.ndarray | None:
        return self.hessians.get(name)

    def samples(self) -> dict[str, np.ndarray]:
        """The kept input rows [tokens, in] per name."""
        return {name: np.concatenate(parts) for name, parts in self._samples.items() if parts}


def hessian_source(name: str) -> str:
    """The matmul whose input statistics a matrix shares (`layers.0.wk` -> `layers.0.wq`)."""
    prefix, _, short = name.rpartition(".")
    return f"{prefix}.{SHARED_INPUT[short]}" if short in SHARED_INPUT else name


def final_hidden(spec: ModelSpec, x: np.ndarray, final_norm: np.ndarray) -> np.ndarray:
    return rmsnorm(x, final_norm, spec.norm_eps)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def classifier_fisher(hidden: list[np.ndarray], classifier: np.ndarray) -> np.ndarray | None:
    """Per output row r, H_r = Σ_t p_t[r] h_t h_tᵀ over the final hidden states h_t [tokens, hidden],
    p_t = softmax(classifier h_t): the Hessian of the KL divergence from these logits in row r's
    weights, less the cross-row terms. Errors in the rows of rarely predicted tokens cost little;
    a shared XᵀX weighs every row alike. None when [vocab, hidden, hidden] float64 would exceed
    FISHER_BYTES."""
    rows, width = classifier.shape
    if rows * width * width * 8 > FISHER_BYTES:
        return None
    fisher = np.zeros((rows, width * width))
    for h in hidden:
        h = h.astype(np.float64)
        probabilities = np.exp(log_softmax(h @ classifier.T.astype(np.float64)))
        fisher += probabilities.T @ (h[:, :, None] * h[:, None, :]).reshape(len(h), -1)
    return fisher.reshape(rows, width, width)


def kl_divergence(reference_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) per token, in nats."""
    p_log = log_softmax(reference_logits.astype(np.float64))
    q_log = log_softmax(logits.astype(np.float64))
    return np.sum(np.exp(p_log) * (p_log - q_log), axis=-1)


def limit_sequences(sequences: list[list[int]], tokens: int) -> list[list[int]]:
    """Leading sequences holding about `tokens` tokens (at least one)."""
    chosen, total = [], 0
    for ids in sequences:
        if chosen and total + len(ids) > tokens:
            break
        chosen.append(ids)
        total += len(ids)
    return chosen


def measure_sensitivity(model, candidates: dict[str, list[tuple[str, WeightFormat, bool]]],
                        sequences: list[list[int]], progress=None,
                        input_transforms: dict | None = None) -> dict[str, dict[str, float]]:
    """damage[tensor][choice name] = mean KL(float || model with only `tensor` quantized (RTN, with the
    clip search where the choice names it) in that choice's format) over the calibration tokens.
    `model` is the model as transformed (a rotation and the online Hadamard transform, whose online
    half is `input_transforms`, are measured; activation-aware scaling and GPTQ, which need the
    quantized model's own inputs, are not).

    One residual stream per (tensor, choice) is carried from the layer where the perturbation
    enters to the logits, next to the float stream; each layer's weights are read once."""
    spec = model.spec
    count = 1 + sum(len(c) for c in candidates.values())
    budget_tokens = max(1, SENSITIVITY_STREAM_BYTES // (count * spec.hidden_dim * 4))
    sequences = limit_sequences(sequences, budget_tokens)
    capacity = max(len(s) for s in sequences)
    ids = [np.asarray(s) for s in sequences]

    def perturbed(name, weight):
        for label, fmt, clip in candidates.get(name, []):
            yield label, quantize_rtn(weight, fmt, clip).dequantize()

    embed = model.tensor("embed")
    streams: dict[tuple, list[np.ndarray]] = {(): [embed[i] for i in ids]}
    tied_embeds = {}
    for label, table in perturbed("embed", embed):
        streams[("embed", label)] = [table[i] for i in ids]
        if spec.tied_embeddings:
            tied_embeds[("embed", label)] = table
    del embed
    for index in range(spec.layers):
        prefix = f"layers.{index}."
        weights = {prefix + n: model.tensor(prefix + n) for n in spec.layer_tensor_shapes()}
        runner = LayerRunner(spec, index, dict(weights), capacity, input_transforms=input_transforms)
        float_input = streams[()]
        streams = {key: [runner(x) for x in xs] for key, xs in streams.items()}
        for name in weights:
            for label, approx in perturbed(name, weights[name]):
                runner.set(name, approx)
                streams[(name, label)] = [runner(x) for x in float_input]
            runner.set(name, weights[name])
        del weights, runner, float_input
        if progress is not None:
            progress(index + 1)
    final_norm = model.tensor("final_norm")
    head_name = spec.classifier
    head = model.tensor(head_name)
    hidden = [final_hidden(spec, x, final_norm) for x in streams[()]]
    reference = [h @ head.T for h in hidden]
    damage: dict[str, dict[str, float]] = {name: {} for name in candidates}

    def mean_kl(logits_list):
        total = sum(float(kl_divergence(r, l).sum()) for r, l in zip(reference, logits_list))
        return total / sum(len(r) for r in reference)

    for key, xs in streams.items():
        if not key:
            continue
        classifier = tied_embeds.get(key, head)
        damage[key[0]][key[1]] = mean_kl([final_hidden(spec, x, final_norm) @ classifier.T for x in xs])
    if not spec.tied_embeddings:
        for label, approx in perturbed("output", head):
            damage["output"][label] = mean_kl([h @ approx.T for h in hidden])
    return damage
