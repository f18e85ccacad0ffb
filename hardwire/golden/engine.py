"""`--backend golden`: the die run through its exact integer datapath."""
from __future__ import annotations

import numpy as np

from hardwire.backend import Engine
from hardwire.die import FrozenWeights
from hardwire.errors import BadConfig
from hardwire.golden.forward import GoldenTransformer
from hardwire.golden.sample import IntegerSampler
from hardwire.golden.tables import tables_for


def patch_for(patch, die):
    """A patch (a path or an opened `Patch`) verified against `die`, or None."""
    if patch is None:
        return None
    from hardwire.adapters import Patch, open_patch
    patch = patch if isinstance(patch, Patch) else open_patch(patch)
    patch.check_die(die)
    return patch


class GoldenEngine(Engine):
    """Integer logits (converted to float32 by their stated scale only at the output) and integer
    sampling: same die, ids and seed give the same tokens on every machine."""
    backend = "golden"
    batch_exact = True

    def __init__(self, source, capacity: int | None = None, tables: dict[str, np.ndarray] | None = None,
                 patch=None):
        if not isinstance(source, FrozenWeights):
            raise BadConfig("the golden backend runs a frozen die; freeze the model first "
                            "(hardwire freeze MODEL --plan w8 -o NAME.die) and pass the die", field="backend")
        super().__init__(source)
        self.tables = tables if tables is not None else tables_for(source)
        self.patch = patch_for(patch, source)
        self.transformer = GoldenTransformer(source, self.tables, capacity=capacity, patch=self.patch)
        self.logit_scale = np.float32(2.0 ** -self.transformer.logit_frac_bits)

    def reset(self) -> None:
        self.transformer.reset()

    def cache_holder(self):
        return self.transformer

    def forward_integer(self, ids) -> np.ndarray:
        """int64 logits [len(ids), vocab] in units of 2^-logit_frac_bits."""
        return self.transformer.forward(ids)

    def forward(self, ids) -> np.ndarray:
        return self.forward_integer(ids).astype(np.float32) * self.logit_scale

    # Every choice is made on integer logits with the integer sampler (docs/arithmetic.md §9).
    def sampler(self, temperature: float, top_p: float, seed: int):
        return IntegerSampler(self.tables, temperature, top_p, seed)

    def decode_logits(self, ids) -> np.ndarray:
        return self.forward_integer(ids)

    def decode_batch(self, caches, tokens) -> list[np.ndarray]:
        """Every user's token through each layer in turn (GoldenTransformer.step_batch)."""
        tokens = self.check_ids(tokens)
        if any(cache is None or cache.keys is None for cache in caches):
            return super().decode_batch(caches, tokens)
        return self.transformer.step_batch(tokens, list(caches))


def token_exponents(die, ids: list[int], tables=None, patch=None) -> list[dict[str, int]]:
    """The token quantizers' exponents for each token of `ids` stepped from position 0 ({block name:
    e}, `hardwire.datapath.Exponents`), from the golden model: the chip computes the same integers,
    so it picks the same exponents, and the datapath turns them into each token's exact cycles.
    A patch moves activations, so with one the exponents are those of the patched die."""
    model = GoldenEngine(die, capacity=len(ids), tables=tables, patch=patch).transformer
    result: list[dict[str, int]] = []
    for token in ids:
        seen: dict[str, int] = {}

        def note(name, value, seen=seen):
            if name.endswith(".scale"):
                seen[name[:-len(".scale")]] = int(value[1])
        model.step(int(token), trace=note)
        result.append(seen)
    return result
