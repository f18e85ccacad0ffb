"""Picking a backend: `make_engine(source, backend)` over a checkpoint or a die, and the float one.

The interface every backend implements is `hardwire.backend.Engine`; the golden and RTL backends
live with what they run (`hardwire.golden.engine`, `hardwire.rtl.engine`). The float backend runs
the model layer's float reference, on a checkpoint's weights or a die's dequantized ones.
"""
from __future__ import annotations

from hardwire.backend import Engine
from hardwire.die import float_input_transforms, open_model_or_die
from hardwire.errors import BadConfig

BACKENDS = ("float", "golden", "rtl")


class PatchedWeights:
    """A die whose `tensor(name)` of each patched matrix is W + ΔW, ΔW the real value of its
    integer adapter: the float backend runs a patch on the die's dequantized weights, as it runs
    the die. Everything else is the die's."""

    def __init__(self, die, patch):
        from hardwire.golden.engine import patch_for
        from hardwire.golden.tables import tables_for
        if not hasattr(die, "quantized"):
            raise BadConfig("a patch belongs to a frozen die; pass the die it was trained for", field="--patch")
        self.die = die
        self.patch = patch_for(patch, die)
        self.tables = tables_for(die)

    def __getattr__(self, name):
        return getattr(self.die, name)

    def tensor(self, name):
        from hardwire.golden.adapter import dequantized_delta, row_ratios
        base = self.die.tensor(name)
        adapter = self.patch.adapters.get(name)
        if adapter is None:
            return base
        return base + dequantized_delta(adapter, row_ratios(self.die, self.tables, name))


class FloatEngine(Engine):
    """The float reference: a checkpoint's weights, or a die's dequantized weights, with q|k|v and
    gate|up stacked so a decode step makes one product per stack, and the step's work between the
    products compiled (`StackedTransformer.decode_one`). Its matrix products are numpy's BLAS: its
    thread count is the BLAS pool's (`threadpoolctl`, or the environment, e.g. OPENBLAS_NUM_THREADS)."""
    backend = "float"

    def __init__(self, source, capacity: int | None = None, patch=None):
        super().__init__(source)
        from hardwire.model.reference import StackedTransformer
        tensor = source.tensor
        if patch is not None:
            patched = PatchedWeights(source, patch)
            self.patch, tensor = patched.patch, patched.tensor
        self.transformer = StackedTransformer(self.spec, tensor, capacity=capacity,
                                              input_transforms=float_input_transforms(source))

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
