"""Systems under test: what makes the attempts and the clock that times them.

  MODEL_OR_DIE[@CLOCK]        a die runs on the golden backend (what the chip computes), a checkpoint
                              on the float reference; default clock `chip` for a die, `wall` for a
                              checkpoint. Bundled names work: `task-small@rate:100`.
  URL[#MODEL][@CLOCK]         an OpenAI-compatible server (`http://127.0.0.1:8000/v1`), asked for
                              completions; default clock `wall` (measured round trips)
  name=N,rate=R,accuracy=A,tokens=T[,ttft_ms=M][,overhead_ms=O]
                              a stated system, not run: every attempt passes with probability A and
                              takes TTFT + T / R (+ overhead); its time to correct is computed in
                              closed form (`hardwire.ttc.analytic`)
"""
from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hardwire.errors import BadConfig
from hardwire.ttc.clocks import Clock, RateClock, is_clock_spec, make_clock

ENDPOINT_TIMEOUT_S = 120.0


@dataclass
class Sample:
    """One generated attempt, before verification."""
    text: str
    prompt_tokens: int
    sampled_tokens: int
    wall_s: float


class EngineGenerator:
    """Attempts from a hardwire engine (golden for a die, float for a checkpoint)."""

    def __init__(self, source, backend: str):
        from hardwire.runtime.engine import make_engine
        self.engine = make_engine(source, backend=backend)
        self.backend = backend
        if self.engine.tokenizer is None:
            raise BadConfig("this model has no tokenizer, so task prompts cannot be encoded", field="--system")

    def sample(self, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int,
               stop: tuple[str, ...], reuse_prompt: bool) -> Sample:
        engine = self.engine
        started = time.perf_counter()
        ids = engine.tokenizer.encode(prompt, bos=engine.spec.bos_id is not None)
        result = engine.generate(ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                 stop=stop, reuse_prompt=reuse_prompt)
        wall = time.perf_counter() - started
        return Sample(result.text, len(ids), result.sampled_tokens, wall)

    def sample_many(self, prompt: str, max_tokens: int, temperature: float, top_p: float, seeds: list[int],
                    stop: tuple[str, ...]) -> list[Sample]:
        """Independent attempts with these seeds, each exactly `sample`'s, decoded together where
        the engine's batched step is exact (`Engine.generate_many`). Each one's wall time is the
        batch's share: use it only under clocks that do not measure."""
        engine = self.engine
        started = time.perf_counter()
        ids = engine.tokenizer.encode(prompt, bos=engine.spec.bos_id is not None)
        results = engine.generate_many(ids, seeds, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                       stop=stop)
        wall = (time.perf_counter() - started) / len(seeds)
        return [Sample(r.text, len(ids), r.sampled_tokens, wall) for r in results]


class EndpointGenerator:
    """Attempts from an OpenAI-compatible `/v1/completions` endpoint. Token counts come from the
    response's `usage`; a stop string the server ignored is applied here as well."""

    backend = "endpoint"

    def __init__(self, url: str, model: str | None):
        self.base = url.rstrip("/")
        self.model = model or self.first_model()

    def request(self, path: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=ENDPOINT_TIMEOUT_S) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")[:200]
            raise BadConfig(f"{self.base}{path} answered {e.code}: {body}", field="--system") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise BadConfig(f"cannot reach {self.base}{path}: {getattr(e, 'reason', e)}", field="--system") from None

    def first_model(self) -> str:
        listing = self.request("/models")
        try:
            return str(listing["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise BadConfig(f"{self.base}/models lists no model; name one as URL#MODEL", field="--system") from None

    def sample(self, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int,
               stop: tuple[str, ...], reuse_prompt: bool) -> Sample:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                   "top_p": top_p, "seed": seed}
        if stop:
            payload["stop"] = list(stop)
        started = time.perf_counter()
        body = self.request("/completions", payload)
        wall = time.perf_counter() - started
        try:
            text = str(body["choices"][0]["text"])
            usage = body.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens", 0))
            sampled = int(usage.get("completion_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError):
            raise BadConfig(f"{self.base}/completions answered without choices[0].text", field="--system") from None
        for s in stop:
            if s in text:
                text = text[:text.index(s)]
        return Sample(text, prompt_tokens, sampled, wall)


@dataclass
class AnalyticSystem:
    """A system stated by its pass rate and speed, evaluated in closed form."""
    name: str
    accuracy: float
    tokens: float
    clock: RateClock
    overhead_s: float = 0.0

    @property
    def seconds_per_attempt(self) -> float:
        return self.clock.attempt_seconds(0, self.tokens, 0.0) + self.overhead_s


@dataclass
class System:
    label: str                     # as the user wrote it
    clock: Clock | None = None
    generator: EngineGenerator | EndpointGenerator | None = None
    analytic: AnalyticSystem | None = None

    @property
    def clock_label(self) -> str:
        return self.clock.label if self.clock is not None else self.analytic.clock.label


ANALYTIC_KEYS = {"name", "rate", "accuracy", "tokens", "ttft_ms", "overhead_ms"}


def parse_analytic(text: str) -> AnalyticSystem:
    fields = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ANALYTIC_KEYS:
            raise BadConfig(f"in {text!r}: expected key=value pairs with keys {', '.join(sorted(ANALYTIC_KEYS))}, "
                            f"got {part!r}", field="--system")
        fields[key] = value.strip()
    missing = {"rate", "accuracy", "tokens"} - set(fields)
    if missing:
        raise BadConfig(f"in {text!r}: a stated system needs {', '.join(sorted(missing))}", field="--system")

    def number(key: str, low: float, high: float = math.inf, default: float | None = None) -> float:
        if key not in fields:
            return default
        try:
            value = float(fields[key])
        except ValueError:
            raise BadConfig(f"in {text!r}: {key} must be a number, got {fields[key]!r}", field="--system") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise BadConfig(f"in {text!r}: {key} must lie in [{low:g}, {high:g}], got {value:g}", field="--system")
        return value

    rate = number("rate", 1e-9)
    accuracy = number("accuracy", 0.0, 1.0)
    tokens = number("tokens", 0.0)
    ttft = number("ttft_ms", 0.0, default=0.0)
    overhead = number("overhead_ms", 0.0, default=0.0)
    return AnalyticSystem(fields.get("name", "stated"), accuracy, tokens, RateClock(rate, ttft), overhead / 1e3)


def split_clock(text: str) -> tuple[str, str | None]:
    """(target, clock spec or None): the clock follows the last `@` when it reads as one."""
    target, sep, clock = text.rpartition("@")
    if sep and is_clock_spec(clock):
        return target, clock
    if sep and not Path(text).exists() and clock.split(":")[0] in ("chip", "rate", "wall"):
        return target, clock
    return text, None


def open_system(text: str) -> System:
    if not text:
        raise BadConfig("expected a system, got an empty string", field="--system")
    if "=" in text.split("@")[0] and not text.startswith(("http://", "https://")) and not Path(text).exists():
        stated = parse_analytic(text)
        return System(stated.name, analytic=stated)
    target, clock_spec = split_clock(text)
    if target.startswith(("http://", "https://")):
        url, _, model = target.partition("#")
        return System(text, clock=make_clock(clock_spec or "wall"), generator=EndpointGenerator(url, model or None))
    from hardwire.die import FrozenWeights, open_model_or_die
    source = open_model_or_die(target)
    is_die = isinstance(source, FrozenWeights)
    backend = "golden" if is_die else "float"
    clock = make_clock(clock_spec or ("chip" if is_die else "wall"), source)
    return System(text, clock=clock, generator=EngineGenerator(source, backend))
