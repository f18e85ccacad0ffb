"""Clocks: how long an attempt takes on the system under test.

An attempt is (prompt tokens P, sampled tokens S): the prompt is prefilled, then S tokens are
sampled, the last of them possibly the EOS that ended the answer. A clock turns that into seconds:

  chip[:CHIP]              the chip estimate for the die (or checkpoint) on the default chip (hc1
                           with the die's own weight formats) or a named chip: time to first token
                           for P prompt tokens, then one token step per further sampled token at
                           the context it actually has (P + 1, P + 2, ...)
  rate:TOK_S[:TTFT_MS]     a stated speed (a GPU, an API): TTFT + S / TOK_S; no TTFT unless stated
  wall                     the wall time the generation took on this machine

Attempts never depend on the clock: the same seeds give the same tokens whatever clock times them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hardwire.errors import BadConfig

DEFAULT_CHIP = "hc1"


class Clock:
    label: str

    def attempt_seconds(self, prompt_tokens: int, sampled_tokens: int, wall_s: float) -> float:
        raise NotImplementedError

    @property
    def measured(self) -> bool:
        """Whether the time depends on this machine (then attempts must run one at a time)."""
        return False


@dataclass(frozen=True)
class RateClock(Clock):
    tokens_per_s: float
    ttft_ms: float = 0.0

    @property
    def label(self) -> str:
        return f"rate:{self.tokens_per_s:g}" + (f":{self.ttft_ms:g}" if self.ttft_ms else "")

    def attempt_seconds(self, prompt_tokens: int, sampled_tokens: int, wall_s: float) -> float:
        return self.ttft_ms / 1e3 + sampled_tokens / self.tokens_per_s


class WallClock(Clock):
    label = "wall"

    def attempt_seconds(self, prompt_tokens: int, sampled_tokens: int, wall_s: float) -> float:
        return wall_s

    @property
    def measured(self) -> bool:
        return True


class ChipClock(Clock):
    """Cycle counts of the chip estimate's pipeline stages for one user (docs/chip-model.md)."""

    def __init__(self, source, chip: str | None = None, config=None):
        """`source` a model or die (its spec is what is timed); `chip` a chip's name or file, or
        `config` a chip already resolved (a sweep's point, `hardwire explore`)."""
        from hardwire.chip.commands import die_weight_formats, resolve_chip
        from hardwire.chip.estimate import estimate

        self.chip_name = chip or (config.name if config is not None else DEFAULT_CHIP)
        if config is None:
            config = resolve_chip(self.chip_name, None, None, None, die_weight_formats(source))
        result = estimate(source.spec, config, context=1, prompt_tokens=1, users=1)
        self.stages = result.stages
        self.clock_hz = config.clock_hz

    @property
    def label(self) -> str:
        return "chip" if self.chip_name == DEFAULT_CHIP else f"chip:{self.chip_name}"

    def cycles(self, prompt_tokens: int, sampled_tokens: int) -> int:
        from hardwire.chip.estimate import prefill_cycles, token_cycles

        total = prefill_cycles(self.stages, prompt_tokens)
        for step in range(1, sampled_tokens):
            total += token_cycles(self.stages, prompt_tokens + step)
        return total

    def attempt_seconds(self, prompt_tokens: int, sampled_tokens: int, wall_s: float) -> float:
        return self.cycles(prompt_tokens, sampled_tokens) / self.clock_hz


def parse_rate(text: str, where: str) -> tuple[float, float]:
    """`TOK_S[:TTFT_MS]` -> (tokens/s, TTFT ms)."""
    parts = text.split(":")
    try:
        rate = float(parts[0])
        ttft = float(parts[1]) if len(parts) > 1 else 0.0
    except (ValueError, IndexError):
        raise BadConfig(f"expected rate:TOKENS_PER_S[:TTFT_MS] with numbers, got {text!r}", field=where) from None
    if len(parts) > 2 or not (math.isfinite(rate) and rate > 0) or not (math.isfinite(ttft) and ttft >= 0):
        raise BadConfig(f"expected rate:TOKENS_PER_S[:TTFT_MS], a positive rate and a TTFT >= 0, got {text!r}",
                        field=where)
    return rate, ttft


def is_clock_spec(text: str) -> bool:
    return text in ("chip", "wall") or text.startswith(("chip:", "rate:"))


def make_clock(spec: str, source=None, where: str = "--system") -> Clock:
    """A clock from its spec; `source` (model or die) is needed by `chip`."""
    if spec == "wall":
        return WallClock()
    if spec.startswith("rate:"):
        return RateClock(*parse_rate(spec[len("rate:"):], where))
    if spec == "chip" or spec.startswith("chip:"):
        if source is None:
            raise BadConfig("a chip clock needs a model or die to estimate; endpoints take rate: or wall",
                            field=where)
        chip = spec[len("chip:"):] if spec.startswith("chip:") else None
        if chip == "":
            raise BadConfig("expected chip:NAME or chip:FILE.toml, got an empty chip name", field=where)
        return ChipClock(source, chip)
    raise BadConfig(f"unknown clock {spec!r}; expected chip, chip:CHIP, rate:TOK_S[:TTFT_MS] or wall", field=where)
