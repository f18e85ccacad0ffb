"""Dies for the golden-model tests, built in memory: random Llama-shaped models of every family
option, quantized with the freeze stage's own quantizer and calibrated activation scales."""
from __future__ import annotations

import numpy as np

from hardwire.formats import WeightFormat, activation_scale
from hardwire.freeze.calibrate import InputStatistics
from hardwire.freeze.quantize import quantize_rtn
from hardwire.model.reference import FloatTransformer
from hardwire.model.spec import ModelSpec


class RandomModel:
    """Seeded random weights for a spec: matrices ~ N(0, 1/in), norms ~ 1 + 0.1 N, biases 0.1 N."""

    def __init__(self, spec: ModelSpec, seed: int = 0, scale: float = 1.0):
        self.spec, self.tokenizer = spec, None
        rng = np.random.default_rng(seed)
        self.weights = {}
        for name, shape in spec.tensor_shapes().items():
            short = name.rsplit(".", 1)[-1]
            if short.endswith("norm"):
                value = 1 + 0.1 * rng.standard_normal(shape)
            elif short in ("bq", "bk", "bv"):
                value = 0.1 * rng.standard_normal(shape)
            else:
                value = scale * rng.standard_normal(shape) / np.sqrt(shape[-1])
            self.weights[name] = value.astype(np.float32)

    def tensor(self, name):
        return self.weights[name]


class MemoryDie:
    """What `hardwire.open_die` offers the golden model, without a directory."""

    def __init__(self, model, weight_format: str = "w8", activations: str = "int8", sequences=None,
                 formats: dict[str, str] | None = None):
        self.spec, self.tokenizer = model.spec, getattr(model, "tokenizer", None)
        self.manifest = {"activations": {"format": activations}}
        self.id = "memory"
        matrices = [n for n, s in self.spec.tensor_shapes().items() if len(s) == 2]
        self._quantized = {n: quantize_rtn(model.tensor(n), WeightFormat.parse((formats or {}).get(n, weight_format)))
                           for n in matrices}
        self._vectors = {n: np.asarray(model.tensor(n), np.float32)
                         for n, s in self.spec.tensor_shapes().items() if len(s) == 1}
        if sequences is None:
            rng = np.random.default_rng(1)
            sequences = [list(rng.integers(0, self.spec.vocab_size, min(48, self.spec.max_context)))]
        stats = InputStatistics()
        reference = FloatTransformer(self.spec, self.tensor, capacity=max(len(s) for s in sequences))
        for ids in sequences:
            reference.reset()
            reference.forward(ids, capture=stats.capture)
        self._scales = {n: activation_scale(a, activations) for n, a in stats.absmax.items()}

    def quantized(self, name):
        return self._quantized[name]

    def tensor(self, name):
        if name in self._quantized:
            return self._quantized[name].dequantize()
        return self._vectors[name]

    def activation_scales(self):
        return dict(self._scales)
