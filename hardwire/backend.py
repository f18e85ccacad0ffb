"""The interface every backend that runs a model or a die implements (float, golden, rtl).

An engine holds a KV cache. `logits(ids)` is teacher-forced from an empty cache; `generate`
prefills a prompt and decodes token by token. The backends live with what they run
(`hardwire.golden.engine`, `hardwire.rtl.engine`, the float reference in `hardwire.runtime.engine`),
and `hardwire.runtime.engine.make_engine` picks one; this module knows none of them. (It is not
called `hardwire.engine`: that name is the package's function that makes an engine.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from hardwire.errors import BadConfig


@dataclass
class Generation:
    prompt_ids: list[int]
    ids: list[int]                     # generated ids only (an ending EOS is not among them)
    text: str                          # their text, cut before a stop string when one ended it
    stop_reason: str                   # "length" | "eos" | "stop"
    extra: dict = field(default_factory=dict)

    @property
    def sampled_tokens(self) -> int:
        """Tokens the model produced, counting the EOS that ended it: each took a token step
        (the first one the prompt's last step)."""
        return len(self.ids) + (self.stop_reason == "eos")


def decode_continuation(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """Text the new tokens add after the prompt (decoding them alone would drop a leading space)."""
    if tokenizer is None:
        return ""
    before = tokenizer.decode(prompt_ids)
    after = tokenizer.decode(prompt_ids + new_ids)
    return after[len(before):] if after.startswith(before) else tokenizer.decode(new_ids)


# -- a prompt from the command line (`hardwire run`, `hardwire sim`) ------------------------------

def parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise BadConfig(f"expected comma-separated integers like 1,2,3, got {text!r}", field="--ids") from None


def prompt_ids(engine, prompt: Optional[str], ids: Optional[str]) -> list[int]:
    """The prompt's token ids from --prompt text (encoded with the engine's tokenizer) or --ids;
    with neither, BOS alone."""
    if (prompt is None) == (ids is None):
        if prompt is None and ids is None and engine.spec.bos_id is not None:
            return [engine.spec.bos_id]
        raise BadConfig("give exactly one of --prompt or --ids", field="--prompt/--ids")
    if ids is not None:
        return parse_ids(ids)
    if engine.tokenizer is None:
        raise BadConfig("this model has no tokenizer; pass token ids with --ids", field="--prompt")
    return engine.tokenizer.encode(prompt, bos=engine.spec.bos_id is not None)


class Engine:
    backend = "abstract"

    def __init__(self, source):
        self.source = source
        self.spec = source.spec
        self.tokenizer = getattr(source, "tokenizer", None)
        self._prompt_cache = None          # (prompt ids, cache snapshot, logits) for reuse_prompt

    # -- backends implement these two --------------------------------------------------------
    def reset(self) -> None:
        raise NotImplementedError

    def forward(self, ids: list[int]) -> np.ndarray:
        """Append ids to the cache; return their logits [len(ids), vocab] as float32."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def check_ids(self, ids) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.spec.vocab_size]
        if bad:
            raise BadConfig(f"token id {bad[0]} is outside the vocabulary [0, {self.spec.vocab_size})",
                            field="ids")
        return ids

    def logits(self, ids) -> np.ndarray:
        ids = self.check_ids(ids)
        if len(ids) > self.spec.max_context:
            raise BadConfig(f"{len(ids)} tokens exceed the model's context of {self.spec.max_context}",
                            field="ids")
        self.reset()
        return self.forward(ids)

    def stop_ids(self) -> set[int]:
        # A BOS produced mid-generation starts a new document (llama2.c's stories end that way).
        return {i for i in (self.spec.eos_id, self.spec.bos_id) if i is not None}

    def generate(self, prompt_ids, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, stop_at_eos: bool = True, stop: Sequence[str] = (),
                 reuse_prompt: bool = False) -> Generation:
        """Prefill the prompt, then sample up to `max_tokens` tokens. Generation ends at EOS
        (unless `stop_at_eos` is false) or when the text produced contains one of the `stop`
        strings; the text is then cut before it. With `reuse_prompt`, a prompt equal to the previous
        call's is not prefilled again: its cache is restored from a copy (same logits, same tokens,
        less work when many samples share one prompt)."""
        prompt_ids = self.check_ids(prompt_ids)
        if not prompt_ids:
            raise BadConfig("the prompt is empty; give --prompt text or --ids", field="ids")
        if not 0 < top_p <= 1:
            raise BadConfig(f"expected top-p in (0, 1], got {top_p}", field="top_p")
        if temperature < 0:
            raise BadConfig(f"expected temperature >= 0, got {temperature}", field="temperature")
        budget = self.spec.max_context - len(prompt_ids)
        if budget < 0:
            raise BadConfig(f"prompt of {len(prompt_ids)} tokens exceeds the context of "
                            f"{self.spec.max_context}", field="ids")
        max_tokens = min(max_tokens, budget)
        if stop and self.tokenizer is None:
            raise BadConfig("stop strings need a tokenizer to read the text; this model has none", field="stop")
        choose = self.sampler(temperature, top_p, seed)
        stops = self.stop_ids() if stop_at_eos else set()
        logits = self.prefill(prompt_ids, reuse_prompt)
        generated, reason, text = [], "length", None
        for step in range(max_tokens):
            token = choose(logits)
            if token in stops:
                reason = "eos"
                break
            generated.append(token)
            if stop:
                text = decode_continuation(self.tokenizer, prompt_ids, generated)
                cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                    break
            if step + 1 < max_tokens:
                logits = self.decode_logits([token])[-1]
        if reason != "stop":
            text = decode_continuation(self.tokenizer, prompt_ids, generated)
        return Generation(prompt_ids, generated, text, reason)

    def prefill(self, prompt_ids: list[int], reuse: bool = False) -> np.ndarray:
        """Reset the cache, run the prompt, return the logits the first token is chosen from."""
        cached = self._prompt_cache
        if reuse and cached is not None and cached[0] == prompt_ids and self.restore_cache(cached[1]):
            return cached[2]
        self.reset()
        logits = self.decode_logits(prompt_ids)[-1]
        snapshot = self.snapshot_cache() if reuse else None
        self._prompt_cache = (list(prompt_ids), snapshot, logits) if snapshot is not None else None
        return logits

    # -- cache copies for `reuse_prompt`: a backend whose state cannot be copied returns None ----------
    def snapshot_cache(self):
        return None

    def restore_cache(self, snapshot) -> bool:
        return False

    # -- generation hooks: a backend that chooses tokens its own way overrides these -------------
    def sampler(self, temperature: float, top_p: float, seed: int):
        """A function logits -> next token id."""
        rng = np.random.default_rng(seed)
        return lambda logits: sample_next(logits, temperature, top_p, rng)

    def decode_logits(self, ids: list[int]) -> np.ndarray:
        """The logits `sampler` chooses from (the golden backend keeps them integer)."""
        return self.forward(ids)


def snapshot_kv_cache(holder):
    """A copy of the filled part of a float or golden KV cache (both keep `keys`, `values`,
    `position`)."""
    return holder.keys[:, :holder.position].copy(), holder.values[:, :holder.position].copy(), holder.position


def restore_kv_cache(holder, snapshot) -> bool:
    keys, values, position = snapshot
    holder.reset()
    holder._grow(position)
    holder.keys[:, :position] = keys
    holder.values[:, :position] = values
    holder.position = position
    return True


# -- choosing the next token from float logits ---------------------------------------------------

def sample_next(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy when temperature is 0; otherwise sample from softmax(logits / T) restricted to the
    smallest set of tokens whose probability reaches top_p."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, top_p) + 1)]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return int(rng.choice(len(probs), p=probs))
