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
from hardwire.model.reference import KVCache, bound  # noqa: F401  (one user's cache; re-exported)


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


def decode_continuation(tokenizer, prompt_ids: list[int], new_ids: list[int], before: Optional[str] = None) -> str:
    """Text the new tokens add after the prompt (decoding them alone would drop a leading space).
    `before`: the prompt's text when the caller already has it."""
    if tokenizer is None:
        return ""
    before = tokenizer.decode(prompt_ids) if before is None else before
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
    patch = None                           # the `hardwire.adapters.Patch` the engine runs, if any

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
                 reuse_prompt: bool = False, **sampling) -> Generation:
        """Prefill the prompt, then sample up to `max_tokens` tokens. Generation ends at EOS
        (unless `stop_at_eos` is false) or when the text produced contains one of the `stop`
        strings; the text is then cut before it. With `reuse_prompt`, a prompt equal to the previous
        call's is not prefilled again: its cache is restored from a copy (same logits, same tokens,
        less work when many samples share one prompt). `sampling` takes Decoding's further options
        (top_k, presence_penalty, frequency_penalty, logprobs)."""
        decoding = Decoding(self, prompt_ids, max_tokens, temperature, top_p, seed, stop_at_eos, stop, **sampling)
        logits = self.prefill(decoding.prompt_ids, reuse_prompt)
        while (token := decoding.advance(logits)) is not None:
            logits = self.decode_logits([token])[-1]
        return decoding.result()

    # Whether `decode_batch` gives each user exactly the logits of decoding it alone (golden: integer
    # sums in any order), so that batched and one-by-one generations are the same tokens.
    batch_exact = False

    def generate_many(self, prompt_ids, seeds: Sequence[int], max_tokens: int = 256, temperature: float = 0.0,
                      top_p: float = 1.0, stop: Sequence[str] = (), **sampling) -> list[Generation]:
        """One generation per seed from the same prompt: exactly `generate(prompt_ids, seed=s, ...)`
        for each s. Where the batched step is exact and caches can be copied, the prompt runs once
        and the generations are decoded together (the chip's users, weights read once per step);
        otherwise they run one after another, reusing the prompt's cache."""
        seeds = list(seeds)
        if not (self.batch_exact and len(seeds) > 1 and self.cache_holder() is not None):
            return [self.generate(prompt_ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=s,
                                  stop=stop, reuse_prompt=True, **sampling) for s in seeds]
        decodings = [Decoding(self, prompt_ids, max_tokens, temperature, top_p, s, True, stop, **sampling)
                     for s in seeds]
        logits = self.prefill(decodings[0].prompt_ids, reuse=True)
        keys, values, position = self.snapshot_cache()
        caches = [KVCache(keys.copy(), values.copy(), position, position) for _ in seeds]
        active = [(d, c, d.advance(logits)) for d, c in zip(decodings, caches)]
        while active := [(d, c, t) for d, c, t in active if t is not None]:
            stepped = self.decode_batch([c for _, c, _ in active], [t for _, _, t in active])
            active = [(d, c, d.advance(row)) for (d, c, _), row in zip(active, stepped)]
        return [d.result() for d in decodings]

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
        holder = self.cache_holder()
        return None if holder is None else snapshot_kv_cache(holder)

    def restore_cache(self, snapshot) -> bool:
        holder = self.cache_holder()
        return holder is not None and restore_kv_cache(holder, snapshot)

    # -- generation hooks: a backend that chooses tokens its own way overrides these -------------
    def sampler(self, temperature: float, top_p: float, seed: int):
        """A function logits -> next token id."""
        rng = np.random.default_rng(int(seed) % (1 << 64))      # a negative seed as its 64-bit pattern
        return lambda logits: sample_next(logits, temperature, top_p, rng)

    def decode_logits(self, ids: list[int]) -> np.ndarray:
        """The logits `sampler` chooses from (the golden backend keeps them integer)."""
        return self.forward(ids)

    # Units of one step of the logits `decode_logits` returns (the golden backend's are integers
    # in units of 2^-logit_frac_bits); penalties and log-probabilities convert by it.
    logit_scale = 1.0

    # -- several users, each with its own KV cache (the server's slots) ----------------------------
    def cache_holder(self):
        """The object whose `keys`, `values`, `capacity`, `position` are the KV cache (float and
        golden: their transformer); None where the state cannot be swapped (rtl: the simulator's)."""
        return None

    def new_cache(self) -> Optional[KVCache]:
        """An empty KV cache for one more user, or None where this backend holds only its own."""
        return KVCache() if self.cache_holder() is not None else None

    def prefill_cache(self, cache: Optional[KVCache], prompt_ids: list[int]) -> np.ndarray:
        """Run a prompt into `cache` from empty; the logits its first token is chosen from (as
        `prefill`). A None cache is the engine's own."""
        with bound(self.cache_holder(), cache):
            self.reset()
            return self.decode_logits(prompt_ids)[-1]

    def decode_batch(self, caches: Sequence[Optional[KVCache]], tokens: Sequence[int]) -> list[np.ndarray]:
        """One decode step for several users at once: token i appended to cache i; the logits each
        next token is chosen from. Backends override this with a batched step; every override
        gives, user by user, the same logits as decoding each alone."""
        out = []
        for cache, token in zip(caches, tokens):
            with bound(self.cache_holder(), cache):
                out.append(self.decode_logits([int(token)])[-1])
        return out


class Decoding:
    """One generation advanced a token at a time. The engine runs the steps (alone in `generate`,
    beside other users in the server's batched step); this chooses each token from a step's logits
    and decides when to stop.

    Beyond temperature and top-p: `top_k` keeps the k largest logits (0: all; ties with the k-th
    are kept), `presence_penalty` and `frequency_penalty` subtract p + f * count from the logit of
    every token already generated (OpenAI's definition, in logit units), and `logprobs` (N) records
    for each generated token its log-probability and the N likeliest alternatives under the model's
    own distribution (the logits before any of the above)."""

    def __init__(self, engine, prompt_ids, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, stop_at_eos: bool = True, stop: Sequence[str] = (), top_k: int = 0,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0, logprobs: Optional[int] = None):
        prompt_ids = engine.check_ids(prompt_ids)
        if not prompt_ids:
            raise BadConfig("the prompt is empty; give --prompt text or --ids", field="ids")
        if not 0 < top_p <= 1:
            raise BadConfig(f"expected top-p in (0, 1], got {top_p}", field="top_p")
        if not temperature >= 0:
            raise BadConfig(f"expected temperature >= 0, got {temperature}", field="temperature")
        if not (isinstance(top_k, int) and top_k >= 0):
            raise BadConfig(f"expected top-k >= 0 (0 keeps every token), got {top_k}", field="top_k")
        for name, value in (("presence_penalty", presence_penalty), ("frequency_penalty", frequency_penalty)):
            if not -2 <= value <= 2:
                raise BadConfig(f"expected {name} in [-2, 2], got {value}", field=name)
        budget = engine.spec.max_context - len(prompt_ids)
        if budget < 0:
            raise BadConfig(f"prompt of {len(prompt_ids)} tokens exceeds the context of "
                            f"{engine.spec.max_context}", field="ids")
        stop = [s for s in stop if s]
        if stop and engine.tokenizer is None:
            raise BadConfig("stop strings need a tokenizer to read the text; this model has none", field="stop")
        self.engine, self.tokenizer, self.prompt_ids = engine, engine.tokenizer, prompt_ids
        self.max_tokens = min(max_tokens, budget)
        self.stop = stop
        self.stops = engine.stop_ids() if stop_at_eos else set()
        self.choose = engine.sampler(temperature, top_p, seed)
        # Embeddings padded past the tokenizer (Qwen2.5: 151,665 pieces, 151,936 rows): the rows
        # beyond its last piece mean nothing, so they are never chosen.
        self.choosable = min(engine.spec.vocab_size, self.tokenizer.vocab_size) if self.tokenizer else None
        self.top_k = top_k
        self.presence_penalty, self.frequency_penalty = presence_penalty, frequency_penalty
        self.logprobs = logprobs
        self.generated: list[int] = []
        self.counts: dict[int, int] = {}
        self.reason: Optional[str] = None        # set when finished: "length" | "eos" | "stop"
        self.cut_text: Optional[str] = None      # the text cut before a stop string
        self.token_logprobs: list[dict] = []
        self._prompt_text: Optional[str] = None
        self._text: tuple[int, str] = (0, "")            # (tokens decoded, their text)

    @property
    def done(self) -> bool:
        return self.reason is not None

    def advance(self, logits: np.ndarray) -> Optional[int]:
        """Choose the next token from the logits of the last step. Returns the token the engine
        must run next, or None when the generation has ended (then `reason` says why)."""
        if self.done:
            return None
        if len(self.generated) >= self.max_tokens:
            self.reason = "length"
            return None
        token = int(self.choose(self.adjust(logits)[:self.choosable]))
        if token in self.stops:
            self.reason = "eos"
            return None
        if self.logprobs is not None:
            self.token_logprobs.append(self.logprob_entry(logits, token))
        self.generated.append(token)
        self.counts[token] = self.counts.get(token, 0) + 1
        if self.stop:
            text = self.text()
            cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.cut_text, self.reason = text[:cut], "stop"
                return None
        if len(self.generated) >= self.max_tokens:
            self.reason = "length"
            return None
        return token

    def text(self) -> str:
        """The text so far (cut before the stop string once one ended it)."""
        if self.cut_text is not None:
            return self.cut_text
        if self._text[0] != len(self.generated):       # decoded once per token, however often asked
            if self._prompt_text is None and self.tokenizer is not None:
                self._prompt_text = self.tokenizer.decode(self.prompt_ids)
            self._text = (len(self.generated), decode_continuation(self.tokenizer, self.prompt_ids, self.generated,
                                                                   self._prompt_text))
        return self._text[1]

    def result(self) -> Generation:
        extra = {"logprobs": self.token_logprobs} if self.logprobs is not None else {}
        return Generation(self.prompt_ids, list(self.generated), self.text(), self.reason or "length", extra)

    def adjust(self, logits: np.ndarray) -> np.ndarray:
        """The logits with penalties and top-k applied, in their own units and type."""
        if not (self.top_k or self.presence_penalty or self.frequency_penalty):
            return logits
        integer = np.issubdtype(logits.dtype, np.integer)
        out = logits.astype(np.int64 if integer else np.float64)
        if self.counts and (self.presence_penalty or self.frequency_penalty):
            ids = np.fromiter(self.counts, dtype=np.int64)
            counts = np.fromiter(self.counts.values(), dtype=np.float64)
            penalty = (self.presence_penalty + self.frequency_penalty * counts) / self.engine.logit_scale
            out[ids] -= np.round(penalty).astype(np.int64) if integer else penalty
        if 0 < self.top_k < out.size:
            kth = np.partition(out, -self.top_k)[-self.top_k]
            # integer logits: a floor 2^40 units below the largest weighs 0 in the integer sampler
            floor = out.max() - (1 << 40) if integer else -np.inf
            out = np.where(out >= kth, out, floor)
        return out

    def logprob_entry(self, logits: np.ndarray, token: int) -> dict:
        scaled = logits.astype(np.float64) * self.engine.logit_scale
        shifted = scaled - scaled.max()
        logprob = shifted - np.log(np.exp(shifted).sum())
        before = self.prompt_ids + self.generated

        def piece(i: int) -> str:
            return decode_continuation(self.tokenizer, before, [int(i)])
        top = np.argsort(-logprob, kind="stable")[:self.logprobs]
        return {"token": piece(token), "id": token, "logprob": float(logprob[token]),
                "top_logprobs": {piece(i): float(logprob[i]) for i in top}}


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
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scaled = logits.astype(np.float64) / temperature
    largest = scaled.max()
    if not np.isfinite(largest):
        # a temperature so small that logits / T overflows: its limit, greedy (never a NaN)
        return int(np.argmax(logits))
    probs = np.exp(scaled - largest)
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, top_p) + 1)]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return int(rng.choice(len(probs), p=probs))
