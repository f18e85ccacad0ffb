"""`--backend rtl`: the die's generated Verilog, simulated cycle by cycle with Verilator.

The engine is the golden engine with its integer token step replaced by the simulated chip, so
sampling, logit scaling and generation are shared and the two backends differ only where the
hardware could differ. Every step's cycle count is kept (`cycles`), and `generate` reports them;
`timing_report` sets them beside what hardwire.datapath predicts for the same tokens.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from hardwire.backend import Generation
from hardwire.errors import BadConfig
from hardwire.golden.engine import GoldenEngine


class RtlEngine(GoldenEngine):
    """`patch`: a patch (path or opened) loaded into the chip's adapter SRAM when the simulation
    starts; the chip is generated with adapter hardware that holds it (`RtlOptions.for_patch`), the
    same Verilog for any patch that fits. Adapter hardware without a patch runs with a zero SRAM."""
    backend = "rtl"

    def __init__(self, source, options=None, capacity: int | None = None, log=None, patch=None):
        super().__init__(source, capacity=capacity, patch=patch)
        from hardwire.rtl.build import simulator_for
        from hardwire.rtl.top import RtlOptions
        options = options or RtlOptions()
        self.options = options.for_patch(self.patch) if self.patch is not None else options
        self.sram_directory, plusargs = self._load_adapter_sram()
        self.simulator, self.design_notes = simulator_for(source, self.tables, self.options, log=log,
                                                          workdir=self.sram_directory, plusargs=plusargs)
        self.positions = self.design_notes["positions"]
        self.position = 0
        self.cycles: list[int] = []
        self.stepped: list[int] = []       # the tokens stepped since the reset, one per entry of `cycles`

    def _load_adapter_sram(self) -> tuple[Path | None, tuple[str, ...]]:
        """The adapter SRAM images (the patch's adapters, zeros elsewhere) in a directory of their own,
        and the argument that makes the simulator load them; nothing without adapter hardware."""
        from hardwire.datapath import build
        from hardwire.rtl.blocks.adapter import SRAM_PLUSARG, write_sram_images
        adapters = self.options.adapters
        if not adapters.present:
            return None, ()
        directory = Path(tempfile.mkdtemp(prefix="hardwire-adapter-sram-"))
        blocks = {r.name: (r.rows, r.cols) for r in build(self.spec, self.options.point, adapters).low_rank()}
        write_sram_images(directory, blocks, adapters.rank, self.patch.adapters if self.patch is not None else {})
        return directory, (f"+{SRAM_PLUSARG}",)

    def reset(self) -> None:
        self.simulator.reset()
        self.position = 0
        self.cycles = []
        self.stepped = []

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
            self.stepped.append(int(token))
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
        if self.sram_directory is not None:
            shutil.rmtree(self.sram_directory, ignore_errors=True)
            self.sram_directory = None


def timing_report(die, tables, options, stepped: list[int], cycles: list[int], clock_ghz: float,
                  patch=None) -> dict:
    """What the simulated chip took and what the datapath predicts for it.

    `rtl_chip`: chip time from the cycles the RTL took, at `clock_ghz`. `rtl_estimate`: the token
    step at the generated chip's design point (hardwire.datapath, the estimate's formulas), each
    token's cycles predicted with the token quantizers' exponents from the golden model (`exact`:
    equal to the RTL's for every token), and the worst case the estimate charges without them."""
    from hardwire.datapath import build, predicted_cycles
    from hardwire.golden.engine import token_exponents
    hz = clock_ghz * 1e9
    point = options.design_point(die, tables)
    step = build(die, point, options.adapters)
    exponents = token_exponents(die, stepped, tables, patch)
    predicted = predicted_cycles(step, exponents)
    worst = [step.cycles(t + 1) for t in range(len(stepped))]

    def timing(per_token: list[int]) -> dict:
        total = int(sum(per_token))
        return {"clock_ghz": clock_ghz, "tokens": len(per_token), "cycles": total, "total_ms": total / hz * 1e3,
                "latency_us_per_token": total / len(per_token) / hz * 1e6 if per_token else 0.0,
                "tokens_per_s": len(per_token) / total * hz if total else 0.0}

    last = dict(step.block_cycles(len(stepped), exponents[-1])) if stepped else {}
    return {"rtl_chip": timing(cycles),
            "rtl_estimate": {**timing(predicted), "design_point": point.to_dict(), "cycles_per_token": predicted,
                             "exact": predicted == list(cycles), "worst_case_cycles_per_token": worst,
                             "last_token_block_cycles": last}}
