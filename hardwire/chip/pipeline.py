"""Cycle-level pipeline simulator: tokens of several users flowing through the chip's stages.

Each stage (a layer's QKV, attention, WO, gate/up and down blocks, the head, chip links) holds one
token at a time and serves tokens first come, first served. A user keeps one token in flight:
its next token enters only when the previous one has left the head (autoregressive decode); a
prompt's tokens enter back to back (prefill). Time is an integer number of clock cycles.

The stage service times come from `arch.stage_plan`, the same source the analytic model sums;
what the simulator adds is the dynamics the closed forms approximate — queueing between users,
prefill overlap, and the context growing by one position per generated token.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from hardwire.chip import arch
from hardwire.chip.arch import ChipConfig
from hardwire.chip.estimate import embed_blocks, head_blocks, layer_blocks, partition, token_path, with_routers
from hardwire.datapath import build
from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec


@dataclass
class SimResult:
    users: int
    context: int
    tokens: int
    prompt_tokens: int
    cycles: int                    # until the last token of the last user left the chip
    clock_hz: float
    tokens_per_s: float            # per user, decode only (mean over users)
    latency_us_per_token: float    # mean time a decode token spends in the chip
    aggregate_tokens_per_s: float  # decode tokens of all users ÷ decode span
    ttft_ms: float                 # prompt start → first generated token (mean over users); 0 without prompt
    stage_busy: dict[str, float]   # share of the decode span each stage was busy

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "stage_busy"}


def simulate(spec: ModelSpec, chip: ChipConfig, users: int = 1, context: int = 1024, tokens: int = 16,
             prompt_tokens: int = 0) -> SimResult:
    """Simulate `users` users, each decoding `tokens` tokens after `context` cached positions
    (or, with `prompt_tokens`, after prefilling that many prompt tokens on top of `context`)."""
    for name, value, low in (("users", users, 1), ("context", context, 0), ("tokens", tokens, 1),
                             ("prompt_tokens", prompt_tokens, 0)):
        if not isinstance(value, int) or value < low:
            raise BadConfig(f"expected an integer >= {low}, got {value!r}", field=name)
    part = partition(spec, chip, layer_blocks(spec, chip), embed_blocks(spec, chip), head_blocks(spec, chip))
    stages = with_routers(arch.stage_plan(build(token_path(spec), chip.point), chip, part.layer_chip, part.head_chip),
                          spec, chip)
    free_at = [0] * len(stages)             # cycle at which each stage can take the next token
    busy = [0] * len(stages)

    # Every token is (ready cycle, user, index); index < prompt_tokens is a prompt token.
    per_user = prompt_tokens + tokens
    queue = [(0, u, 0) for u in range(users)]
    heapq.heapify(queue)
    decode_start = [None] * users
    first_token_at = [0] * users
    last_exit = [0] * users
    latency_sum = 0
    while queue:
        ready, user, index = heapq.heappop(queue)
        position = context + index + 1      # positions this token attends to (itself included)
        t = ready
        for s, stage in enumerate(stages):
            start = max(t, free_at[s])
            service = stage.cycles(position)
            t = start + service
            free_at[s] = t
            busy[s] += service
        if index == prompt_tokens - 1:
            first_token_at[user] = t
        if index >= prompt_tokens:
            latency_sum += t - ready
            if decode_start[user] is None:
                decode_start[user] = ready
        last_exit[user] = t
        nxt = index + 1
        if nxt < per_user:
            # prompt tokens stream in as soon as the first stage frees; decode waits for the result
            heapq.heappush(queue, (free_at[0] if nxt < prompt_tokens else t, user, nxt))

    f = chip.clock_hz
    spans = [last_exit[u] - decode_start[u] for u in range(users)]
    decode_span = max(last_exit) - min(decode_start)
    return SimResult(
        users=users, context=context, tokens=tokens, prompt_tokens=prompt_tokens, cycles=max(last_exit),
        clock_hz=f,
        tokens_per_s=sum(tokens / span * f for span in spans) / users,
        latency_us_per_token=latency_sum / (users * tokens) / f * 1e6,
        aggregate_tokens_per_s=users * tokens / decode_span * f,
        ttft_ms=(sum(first_token_at) / users / f * 1e3) if prompt_tokens else 0.0,
        stage_busy={st.name: b / decode_span for st, b in zip(stages, busy)})
