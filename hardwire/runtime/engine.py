"""Picking a backend: `make_engine(source, backend)` over a checkpoint or a die, and the float one.

The interface every backend implements is `hardwire.backend.Engine`; the golden and RTL backends
live with what they run (`hardwire.golden.engine`, `hardwire.rtl.engine`). The float backend runs
the model layer's float reference, on a checkpoint's weights or a die's dequantized ones.
"""
from __future__ import annotations

from hardwire.backend import Engine
from hardwire.die import open_model_or_die
from hardwire.errors import BadConfig

BACKENDS = ("float", "golden", "rtl")


class FloatEngine(Engine):
    """The float reference: a checkpoint's weights, or a die's dequantized weights."""
    backend = "float"

    def __init__(self, source, capacity: int | None = None):
        super().__init__(source)
        from hardwire.model.reference import FloatTransformer
        self.transformer = FloatTransformer(self.spec, source.tensor, capacity=capacity)

    def reset(self) -> None:
        self.transformer.reset()

    def forward(self, ids):
        return self.transformer.forward(ids)

    def decode_batch(self, caches, tokens):
        """One matrix product per projection for all users (FloatTransformer.forward_batch). Float
        sums may round differently in a matrix product than in one user's vector product, so a
        user's logits can differ from decoding it alone in the last bits (the golden backend's are
        exact)."""
        tokens = self.check_ids(tokens)
        if len(tokens) < 2 or any(cache is None or cache.keys is None for cache in caches):
            return super().decode_batch(caches, tokens)
        return list(self.transformer.forward_batch(tokens, list(caches)))

    def cache_holder(self):
        return self.transformer


def make_engine(source=None, backend: str = "float", **options) -> Engine:
    source = open_model_or_die(source)
    if backend == "float":
        return FloatEngine(source, **options)
    if backend == "golden":
        from hardwire.golden.engine import GoldenEngine
        return GoldenEngine(source, **options)
    if backend == "rtl":
        from hardwire.rtl.engine import RtlEngine
        return RtlEngine(source, **options)
    raise BadConfig(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}", field="backend")
