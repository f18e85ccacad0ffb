"""`--backend golden`: the die run through its exact integer datapath."""
from __future__ import annotations

import numpy as np

from hardwire.errors import BadConfig
from hardwire.golden.forward import GoldenTransformer
from hardwire.golden.sample import IntegerSampler
from hardwire.golden.tables import tables_for
from hardwire.runtime.engine import Engine, Generation, decode_continuation


class GoldenEngine(Engine):
    """Integer logits (converted to float32 by their stated scale only at the output) and integer
    sampling: same die, ids and seed give the same tokens on every machine."""
    backend = "golden"

    def __init__(self, source, capacity: int | None = None, tables: dict[str, np.ndarray] | None = None):
        if not hasattr(source, "quantized"):
            raise BadConfig("the golden backend runs a frozen die; freeze the model first "
                            "(hardwire freeze MODEL --plan w8 -o NAME.die) and pass the die", field="backend")
        super().__init__(source)
        self.tables = tables if tables is not None else tables_for(source)
        self.transformer = GoldenTransformer(source, self.tables, capacity=capacity)
        self.logit_scale = np.float32(2.0 ** -self.transformer.logit_frac_bits)

    def reset(self) -> None:
        self.transformer.reset()

    def forward_integer(self, ids) -> np.ndarray:
        """int64 logits [len(ids), vocab] in units of 2^-logit_frac_bits."""
        return self.transformer.forward(ids)

    def forward(self, ids) -> np.ndarray:
        return self.forward_integer(ids).astype(np.float32) * self.logit_scale

    def generate(self, prompt_ids, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, stop_at_eos: bool = True) -> Generation:
        """As `Engine.generate`, but every choice is made on integer logits (§9)."""
        prompt_ids = self.check_ids(prompt_ids)
        if not prompt_ids:
            raise BadConfig("the prompt is empty; give --prompt text or --ids", field="ids")
        if not 0 < top_p <= 1:
            raise BadConfig(f"expected top-p in (0, 1], got {top_p}", field="top_p")
        if temperature < 0:
            raise BadConfig(f"expected temperature >= 0, got {temperature}", field="temperature")
        if len(prompt_ids) > self.spec.max_context:
            raise BadConfig(f"prompt of {len(prompt_ids)} tokens exceeds the context of {self.spec.max_context}",
                            field="ids")
        max_tokens = min(max_tokens, self.spec.max_context - len(prompt_ids))
        choose = IntegerSampler(self.tables, temperature, top_p, seed)
        stops = self.stop_ids() if stop_at_eos else set()
        self.reset()
        logits = self.forward_integer(prompt_ids)[-1]
        generated, reason = [], "length"
        for step in range(max_tokens):
            token = choose(logits)
            if token in stops:
                reason = "eos"
                break
            generated.append(token)
            if step + 1 < max_tokens:
                logits = self.forward_integer([token])[-1]
        return Generation(prompt_ids, generated, decode_continuation(self.tokenizer, prompt_ids, generated), reason)
