"""`--backend rtl`: the die's generated Verilog, simulated cycle by cycle with Verilator.

The engine is the golden engine with its integer token step replaced by the simulated chip, so
sampling, logit scaling and generation are shared and the two backends differ only where the
hardware could differ. Every step's cycle count is kept (`cycles`), and `generate` reports them.
"""
from __future__ import annotations

import numpy as np

from hardwire.backend import Generation
from hardwire.errors import BadConfig
from hardwire.golden.engine import GoldenEngine


class RtlEngine(GoldenEngine):
    backend = "rtl"

    def __init__(self, source, options=None, capacity: int | None = None, log=None):
        super().__init__(source, capacity=capacity)
        from hardwire.rtl.build import simulator_for
        from hardwire.rtl.top import RtlOptions
        self.options = options or RtlOptions()
        self.simulator, self.design_notes = simulator_for(source, self.tables, self.options, log=log)
        self.positions = self.design_notes["positions"]
        self.position = 0
        self.cycles: list[int] = []

    def reset(self) -> None:
        self.simulator.reset()
        self.position = 0
        self.cycles = []

    def forward_integer(self, ids) -> np.ndarray:
        ids = self.check_ids(ids)
        if self.position + len(ids) > self.positions:
            raise BadConfig(f"{self.position + len(ids)} positions exceed the generated KV cache of "
                            f"{self.positions}", field="ids")
        out = np.empty((len(ids), self.spec.vocab_size), np.int64)
        for row, token in enumerate(ids):
            logits, _, cycles = self.simulator.step(token, logits=True)
            out[row] = logits
            self.cycles.append(cycles)
            self.position += 1
        return out

    # The simulated chip's state lives in the simulator: a prompt is always run again.
    def snapshot_cache(self):
        return None

    def generate(self, prompt_ids, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, stop_at_eos: bool = True, stop=(), reuse_prompt: bool = False) -> Generation:
        result = super().generate(prompt_ids, max_tokens, temperature, top_p, seed, stop_at_eos, stop)
        cycles = list(self.cycles)
        result.extra.update({"cycles": int(sum(cycles)), "cycles_per_token": cycles,
                             "mean_cycles_per_token": float(np.mean(cycles)) if cycles else 0.0})
        return result

    def close(self) -> None:
        self.simulator.close()
