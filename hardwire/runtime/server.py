"""An OpenAI-compatible HTTP server over an engine, that also says what the chip would have taken.

Endpoints: GET /v1/models, POST /v1/completions and POST /v1/chat/completions (both also as
server-sent events with `stream: true`), GET /health, GET /metrics (Prometheus text format).

The chip holds a fixed number of users, one KV cache each, and decodes them together; so does this
server. It has `slots` (by default as many users as the chip's KV SRAM holds at the model's context,
capped by `max_slots`), each with its own KV cache in the engine. One scheduler thread admits
waiting requests into free slots (prefilling each prompt), then runs one batched decode step of the
engine for every active slot per token. Requests beyond the slots wait in a bounded queue; beyond
that the server answers 429 with Retry-After. A client that goes away frees its slot at the next
step.

Every response carries a `hardwire` object and `X-Hardwire-*` headers: the chip's timing for its
prompt and output lengths at the number of users decoding beside it, next to the wall time
measured here. Every error is in OpenAI's shape, {"error": {"message", "type", "param", "code"}}.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import math
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from hardwire.backend import Decoding
from hardwire.errors import HardwireError

access_log = logging.getLogger("hardwire.access")

DEFAULT_MAX_SLOTS = 16
DEFAULT_QUEUE = 64
DEFAULT_MAX_BODY_BYTES = 1 << 20
CHAT_ROLES = ("system", "user", "assistant")
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)
MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 20


# -- errors ---------------------------------------------------------------------------------------

class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


def json_bytes(body) -> bytes:
    """JSON as bytes that always encode: ASCII escapes (a lone surrogate a client sent stays
    escaped) and no NaN (not JSON)."""
    return json.dumps(body, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error_response(error: APIError) -> Response:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return Response(json_bytes(body), status_code=error.status, media_type="application/json",
                    headers=error.headers)


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error"}


def validation_error(exc: RequestValidationError) -> APIError:
    """The first problem pydantic found, named by its path in the body (never echoing the value)."""
    errors = exc.errors()
    first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({first.get('msg', '')})", code="invalid_json")
    path = [str(part) for part in first.get("loc", ()) if part != "body"]
    # a union reports each branch ('prompt.str', 'prompt.list[int].0'): name the field
    path = [part for part in path if not (part.startswith(("list[", "function-")) or part in ("str", "int"))]
    param = ".".join(path) or None
    message = f"{param}: {first.get('msg', 'invalid')}" if param else first.get("msg", "invalid request")
    return APIError(422, message, param=param, code=str(first.get("type", "invalid_value")))


# -- requests ---------------------------------------------------------------------------------------

class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class SamplingRequest(BaseModel):
    """The fields both endpoints share. Unknown fields are ignored, as OpenAI's servers do."""
    model_config = ConfigDict(extra="ignore")

    model: Optional[StrictStr] = None
    max_tokens: Optional[int] = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    top_k: int = Field(0, ge=0)
    seed: Optional[int] = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: Union[StrictStr, list[StrictStr], None] = None
    n: int = 1
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    presence_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)


class CompletionRequest(SamplingRequest):
    prompt: Union[StrictStr, list[StrictInt], list[StrictStr]] = ""
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: StrictBool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    role: StrictStr
    content: Union[StrictStr, list[TextPart], None] = None


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage]
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    logprobs: Optional[StrictBool] = None


def chat_prompt(messages: list[dict]) -> str:
    """Without a chat template (the bundled base models ship none): messages become
    'role: content' lines and the reply is cued with 'assistant:'."""
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join(lines + ["assistant:"])


class ChatTemplate:
    """A checkpoint's Hugging Face `chat_template` (tokenizer_config.json), rendered as
    transformers renders it: Jinja2's sandboxed environment with trim_blocks and lstrip_blocks,
    `messages`, `add_generation_prompt`, the BOS/EOS texts and `raise_exception`."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = raise_exception
        self.template = environment.from_string(source)
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(self, messages: list[dict]) -> str:
        try:
            return self.template.render(messages=messages, add_generation_prompt=True, bos_token=self.bos_token,
                                        eos_token=self.eos_token)
        except Exception as e:              # raise_exception, an undefined name, a template's own bug
            raise APIError(400, f"the model's chat template refused these messages: {e}", param="messages",
                           code="chat_template") from None


def chat_template(tokenizer) -> Optional[ChatTemplate]:
    """The template a Hugging Face tokenizer ships beside its tokenizer.json (the default one when
    it names several); None for every other tokenizer and when there is none."""
    from pathlib import Path
    source = getattr(tokenizer, "source", None)
    if tokenizer is None or getattr(tokenizer, "kind", None) != "hf" or source is None:
        return None
    config_path = Path(source).parent / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):          # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template.strip():
        return None

    def text(token_id):
        return tokenizer.tokenizer.id_to_token(token_id) if token_id is not None else ""
    try:
        return ChatTemplate(template, text(tokenizer.bos_id) or "", text(tokenizer.eos_id) or "")
    except Exception:                       # a template Jinja2 cannot compile: the plain fallback
        logging.getLogger("hardwire.server").warning("ignoring a chat_template Jinja2 cannot compile")
        return None


def message_text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text for part in message.content)


def check_text(text: str, param: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, f"{param} contains a lone surrogate (\\ud800-\\udfff), which is not text; "
                            "send valid UTF-16 pairs or UTF-8", param=param, code="invalid_text") from None
    return text


# -- one request in the scheduler -----------------------------------------------------------------

def held_back(text: str, stop: list[str]) -> int:
    """How much of `text` may be sent now: not a trailing U+FFFD (the bytes of a character still
    arriving decode as one until its last byte does), not a tail that may begin a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    keep = end
    for s in stop:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text.endswith(s[:k], 0, end):
                keep = min(keep, end - k)
                break
    return keep


@dataclass
class Job:
    """One request in the scheduler: its decoding, its slot while it holds one, and the queue on
    its event loop that the scheduler posts ("text" | "done" | "cancelled" | "error", payload) to."""
    decoding: Decoding
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    submitted_s: float
    cache: object = field(default=None, repr=False)   # its slot's KV cache while it holds one
    holds_slot: bool = False
    cancelled: bool = False
    next_token: Optional[int] = None
    users: int = 1                       # most users decoding together while this one was
    admitted_s: Optional[float] = None
    first_token_s: Optional[float] = None
    finished_s: Optional[float] = None
    sent: str = ""                       # text already sent to a stream
    logprobs_sent: int = 0

    def cancel(self) -> None:
        self.cancelled = True


def deliver(events: list) -> None:
    for queue, event in events:
        queue.put_nowait(event)


class Scheduler:
    """The slots, the queue and the thread that decodes every active slot together."""

    def __init__(self, engine, slots: int, queue: int, pace_s_per_token=None):
        self.engine, self.slots, self.queue_limit = engine, slots, queue
        self.pace_s_per_token = pace_s_per_token        # users, context -> seconds, or None
        self.free = [engine.new_cache() for _ in range(slots)]
        self.active: list[Job] = []
        self.waiting: collections.deque[Job] = collections.deque()
        self.outbox: list[tuple[Job, str, object]] = []    # events of this step, sent together
        self.condition = threading.Condition()
        self.stopping = False                   # draining: no new requests, running ones end
        self.stopped = False                    # the thread ends
        self.thread = threading.Thread(target=self.run, name="hardwire-scheduler", daemon=True)
        self.thread.start()

    @property
    def in_use(self) -> int:
        return self.slots - len(self.free)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def submit(self, job: Job) -> None:
        with self.condition:
            if self.stopping:
                raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
            if len(self.waiting) >= self.queue_limit + len(self.free):
                retry_s = max(1, math.ceil(len(self.waiting) / max(self.slots, 1)))
                raise APIError(429, f"all {self.slots} slots are busy and {len(self.waiting)} requests wait; "
                                    "retry later", type="rate_limit_error", code="rate_limit_exceeded",
                               headers={"Retry-After": str(retry_s)})
            self.waiting.append(job)
            self.condition.notify()

    def drain(self) -> None:
        """Shutting down: every request still waiting or decoding ends now, a stream with
        finish_reason "abort" and [DONE]; new requests get 503. The thread keeps running."""
        with self.condition:
            self.stopping = True
            self.condition.notify()

    def stop(self) -> None:
        with self.condition:
            self.stopping = self.stopped = True
            self.condition.notify()
        self.thread.join(10)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            with self.condition:
                while not self.stopping and not self.waiting and not self.active:
                    self.condition.wait()
                if self.stopping:
                    ending = list(self.active) + list(self.waiting)
                    self.waiting.clear()
                    admitted = []
                else:
                    ending = []
                    admitted = []
                    while self.waiting and len(self.free) > len(admitted):
                        admitted.append(self.waiting.popleft())
            for job in ending:
                job.decoding.reason = job.decoding.reason or "abort"
                self.finish(job)
            for job in admitted:
                self.start(job)
            self.step()
            self.flush()
            with self.condition:
                if self.stopped:
                    return
                while self.stopping and not self.stopped and not self.waiting and not self.active:
                    self.condition.wait()

    def post(self, job: Job, kind: str, payload=None) -> None:
        self.outbox.append((job, kind, payload))

    def flush(self) -> None:
        """The step's events, handed to each event loop in one call (one wake-up per step, not per token)."""
        by_loop: dict = {}
        for job, kind, payload in self.outbox:
            by_loop.setdefault(job.loop, []).append((job.events, (kind, payload)))
        self.outbox = []
        for loop, events in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, events)
            except RuntimeError:                    # that loop has closed: its requests are gone
                for job in self.active + list(self.waiting):
                    if job.loop is loop:
                        job.cancel()

    def start(self, job: Job) -> None:
        """Take a slot, prefill the prompt, choose the first token."""
        if job.cancelled:
            self.post(job, "cancelled")
            return
        job.cache, job.holds_slot = self.free.pop(), True
        job.admitted_s = time.perf_counter()
        try:
            logits = self.engine.prefill_cache(job.cache, job.decoding.prompt_ids)
            job.next_token = job.decoding.advance(logits)
        except Exception as error:                    # a bug, answered as a 500 and logged
            self.fail(job, error)
            return
        job.first_token_s = time.perf_counter()
        self.active.append(job)
        self.publish(job)

    def step(self) -> None:
        """One batched decode step for every active slot."""
        for job in [j for j in self.active if j.cancelled or j.next_token is None]:
            self.finish(job)
        if not self.active:
            return
        started = time.perf_counter()
        users = len(self.active)
        for job in self.active:
            job.users = max(job.users, users)
        jobs = list(self.active)
        try:
            logits = self.engine.decode_batch([j.cache for j in jobs], [j.next_token for j in jobs])
        except Exception as error:
            for job in jobs:
                self.fail(job, error)
            return
        for job, row in zip(jobs, logits):
            try:
                job.next_token = job.decoding.advance(row)
            except Exception as error:
                self.fail(job, error)
                continue
            self.publish(job)
        if self.pace_s_per_token is not None:
            context = max(len(j.decoding.prompt_ids) + len(j.decoding.generated) for j in jobs)
            pause = self.pace_s_per_token(users, context) - (time.perf_counter() - started)
            if pause > 0:
                time.sleep(pause)

    def publish(self, job: Job) -> None:
        """Send the text that is safe to send; finish the job when its decoding has ended."""
        decoding = job.decoding
        if decoding.done:
            self.finish(job)
            return
        text = decoding.text()
        keep = held_back(text, decoding.stop)
        new_logprobs = decoding.token_logprobs[job.logprobs_sent:]
        if keep > len(job.sent) and text.startswith(job.sent):
            delta, job.sent = text[len(job.sent):keep], text[:keep]
        else:
            delta = ""
        if delta or new_logprobs:
            job.logprobs_sent = len(decoding.token_logprobs)
            self.post(job, "text", (delta, new_logprobs))

    def finish(self, job: Job) -> None:
        self.release(job)
        job.finished_s = time.perf_counter()
        if job.cancelled:
            self.post(job, "cancelled")
            return
        text = job.decoding.text()
        delta = text[len(job.sent):] if text.startswith(job.sent) else ""
        job.sent = text
        self.post(job, "done", (delta, job.decoding.token_logprobs[job.logprobs_sent:]))

    def release(self, job: Job) -> None:
        if job in self.active:
            self.active.remove(job)
        if job.holds_slot:
            self.free.append(job.cache)
            job.cache, job.holds_slot = None, False

    def fail(self, job: Job, error: Exception) -> None:
        logging.getLogger("hardwire.server").exception("generation failed", exc_info=error)
        self.release(job)
        self.post(job, "error", f"internal error: {type(error).__name__}: {error}")


# -- metrics ------------------------------------------------------------------------------------------

class Metrics:
    """Prometheus metrics of one server (their own registry, so several apps can live in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.requests = Counter("hardwire_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=self.registry)
        self.tokens = Counter("hardwire_tokens", "tokens processed, by kind (prompt, completion)",
                              ["kind"], registry=self.registry)
        self.queue_depth = Gauge("hardwire_queue_depth", "requests waiting for a slot", registry=self.registry)
        self.slots_in_use = Gauge("hardwire_slots_in_use", "slots (users) holding a KV cache",
                                  registry=self.registry)
        self.slots = Gauge("hardwire_slots", "slots (users) the server has", registry=self.registry)
        buckets = (1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30)
        self.ttft = Histogram("hardwire_time_to_first_token_seconds", "time to first token, measured (wall) "
                              "and the chip's (chip)", ["clock"], buckets=buckets, registry=self.registry)
        self.token_latency = Histogram("hardwire_token_latency_seconds", "time per generated token after the "
                                       "first, wall and chip", ["clock"], buckets=buckets, registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)


# -- the app ------------------------------------------------------------------------------------------

def default_slots(engine, chip: str, max_slots: int) -> int:
    """As many users as the chip's KV SRAM holds at the model's context, at most `max_slots`;
    one where the backend cannot hold several KV caches."""
    if engine.new_cache() is None:
        return 1
    try:
        from hardwire.chip import arch
        from hardwire.chip.estimate import estimate
        users = estimate(engine.spec, arch.load_chip(chip), context=engine.spec.max_context).max_users
    except HardwireError:
        users = max_slots
    return max(1, min(users, max_slots))


class Gate:
    """ASGI middleware in front of every route: the body size limit (413), the API key (401),
    one structured access-log line and a request count per status."""

    def __init__(self, app, settings: "ServerSettings", metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.refusal(scope, headers)
        try:
            if refusal is not None:
                await error_response(refusal)(scope, receive, send_counted)
            else:
                await self.app(scope, self.limited(receive), send_counted)
        finally:
            path = scope.get("path", "")
            known = path if path in KNOWN_PATHS else "other"
            self.metrics.requests.labels(known, str(status["code"])).inc()
            access_log.info(json.dumps({"method": scope.get("method"), "path": path, "status": status["code"],
                                        "ms": round((time.perf_counter() - started) * 1e3, 3),
                                        "client": (scope.get("client") or ("", 0))[0]}))

    def refusal(self, scope, headers: dict) -> Optional[APIError]:
        key = self.settings.api_key
        if key is not None and scope.get("path", "").startswith("/v1/"):
            if headers.get("authorization", "") != f"Bearer {key}":
                return APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                type="authentication_error", code="invalid_api_key")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return APIError(400, "Content-Length is not a number", code="invalid_content_length")
            if int(length) > self.settings.max_body_bytes:
                return self.too_large()
        return None

    def too_large(self) -> APIError:
        return APIError(413, f"the request body exceeds {self.settings.max_body_bytes} bytes",
                        code="request_too_large")

    def limited(self, receive):
        """A body sent without Content-Length is counted as it arrives."""
        seen = {"bytes": 0}

        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.settings.max_body_bytes:
                    raise StarletteHTTPException(413, self.too_large().message)
            return message
        return counted


KNOWN_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics")


@dataclass
class ServerSettings:
    slots: int
    queue: int = DEFAULT_QUEUE
    pace: Optional[str] = None                 # None (as fast as the host goes) or "chip"
    api_key: Optional[str] = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    chip: str = "hc1"


class ChipStream(StreamingResponse):
    """A stream whose job is cancelled however the stream ends (done, client gone, shutdown)."""

    def __init__(self, content, job: Job, **kwargs):
        super().__init__(content, **kwargs)
        self.job = job

    async def __call__(self, scope, receive, send):
        async def watch():                   # a client gone is noticed even between tokens
            while (await receive())["type"] != "http.disconnect":
                pass
            self.job.cancel()
        watcher = asyncio.ensure_future(watch())
        try:
            await super().__call__(scope, receive, send)
        finally:
            watcher.cancel()
            self.job.cancel()


# -- what a response says --------------------------------------------------------------------------

def usage(job: Job) -> dict:
    """OpenAI's usage; completion tokens count an ending EOS (it took a step), as `Generation` does."""
    d = job.decoding
    sampled = len(d.generated) + (d.reason == "eos")
    return {"prompt_tokens": len(d.prompt_ids), "completion_tokens": sampled,
            "total_tokens": len(d.prompt_ids) + sampled}


def finish_reason(job: Job) -> str:
    return {"length": "length", "abort": "abort"}.get(job.decoding.reason, "stop")


def completion_logprobs(entries: list[dict], offset: int) -> dict:
    """OpenAI's legacy completions layout of `Decoding` logprob entries; offsets from `offset`."""
    tokens, offsets = [], []
    for entry in entries:
        offsets.append(offset)
        tokens.append(entry["token"])
        offset += len(entry["token"])
    return {"tokens": tokens, "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [e["top_logprobs"] for e in entries], "text_offset": offsets}


def timing_headers(report: dict) -> dict:
    chip_time, wall = report["chip"], report["wall"]
    return {"X-Hardwire-Chip-TTFT-Ms": f"{chip_time['ttft_ms']:.6g}",
            "X-Hardwire-Chip-Token-Latency-Us": f"{chip_time['latency_us_per_token']:.6g}",
            "X-Hardwire-Chip-Total-Ms": f"{chip_time['total_ms']:.6g}",
            "X-Hardwire-Users": str(report["users"]),
            "X-Hardwire-Wall-TTFT-Ms": f"{wall['ttft_ms']:.6g}",
            "X-Hardwire-Wall-Total-Ms": f"{wall['total_ms']:.6g}"}


def sse_event(body: dict) -> bytes:
    return b"data: " + json_bytes(body) + b"\n\n"


# -- the service --------------------------------------------------------------------------------------

class Service:
    """One model served: requests checked and turned into jobs for the scheduler, jobs turned into
    OpenAI responses (whole or streamed) with their chip and wall time."""

    def __init__(self, engine, model_name: str, settings: ServerSettings):
        self.engine, self.model_name, self.settings = engine, model_name, settings
        self.template = chat_template(engine.tokenizer)
        self.metrics = Metrics()
        self.chip_timing = functools.lru_cache(maxsize=4096)(self._chip_timing)
        self.scheduler = Scheduler(engine, settings.slots, settings.queue,
                                   self.pace_s_per_token if settings.pace == "chip" else None)
        self.metrics.slots.set(settings.slots)
        self.metrics.slots_in_use.set_function(lambda: self.scheduler.in_use)
        self.metrics.queue_depth.set_function(lambda: self.scheduler.queued)

    def _chip_timing(self, prompt_tokens: int, generated_tokens: int, users: int) -> dict:
        from hardwire.chip.estimate import generation_timing
        return generation_timing(self.engine.spec, prompt_tokens=prompt_tokens, generated_tokens=generated_tokens,
                                 chip=self.settings.chip, users=users)

    def pace_s_per_token(self, users: int, context: int) -> float:
        return self.chip_timing(context, 0, users)["latency_us_per_token"] * 1e-6

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, "backend": self.engine.backend,
                "slots": self.settings.slots, "slots_in_use": self.scheduler.in_use,
                "queue_depth": self.scheduler.queued, "queue_limit": self.settings.queue}

    # -- a request into a job ---------------------------------------------------------------------
    def check_common(self, request: SamplingRequest) -> None:
        if request.model is not None and request.model != self.model_name:
            raise APIError(404, f"the model {request.model!r} does not exist here; this server serves "
                                f"{self.model_name!r} (GET /v1/models)", param="model", code="model_not_found")
        if request.n != 1:
            raise APIError(400, f"n must be 1 here (got {request.n}); send one request per completion",
                           param="n", code="unsupported_value")
        if isinstance(request.stop, list) and len(request.stop) > MAX_STOP_STRINGS:
            raise APIError(400, f"at most {MAX_STOP_STRINGS} stop strings", param="stop")
        for s in [request.stop] if isinstance(request.stop, str) else request.stop or []:
            check_text(s, "stop")

    def encode(self, text: str, param: str, bos: bool = True) -> list[int]:
        tokenizer = self.engine.tokenizer
        if tokenizer is None:
            raise APIError(400, "this model has no tokenizer; send the prompt as a list of token ids",
                           param=param, code="no_tokenizer")
        return tokenizer.encode(check_text(text, param), bos=bos and self.engine.spec.bos_id is not None)

    def prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) > 1:
                raise APIError(400, f"one prompt per request here (got {len(prompt)})", param="prompt",
                               code="unsupported_value")
            prompt = prompt[0]
        if not prompt:
            bos = self.engine.spec.bos_id if self.engine.spec.bos_id is not None else 1
            raise APIError(400, f"the prompt is empty; send text, or token ids such as [{bos}] to start from "
                                "the beginning of a document", param="prompt", code="empty_prompt")
        return self.encode(prompt, "prompt") if isinstance(prompt, str) else list(prompt)

    def chat_ids(self, request: ChatRequest) -> list[int]:
        if not request.messages:
            raise APIError(400, "messages is empty; send at least one message", param="messages",
                           code="empty_messages")
        for index, message in enumerate(request.messages):
            if message.role not in CHAT_ROLES:
                raise APIError(400, f"messages[{index}].role must be one of {', '.join(CHAT_ROLES)}",
                               param=f"messages.{index}.role", code="invalid_role")
        messages = [{"role": m.role, "content": check_text(message_text(m), f"messages.{i}.content")}
                    for i, m in enumerate(request.messages)]
        if self.template is not None:            # the template writes BOS itself
            return self.encode(self.template.render(messages), "messages", bos=False)
        return self.encode(chat_prompt(messages), "messages")

    def submit(self, request: SamplingRequest, ids: list[int], max_tokens: int, logprobs: Optional[int]) -> Job:
        engine = self.engine
        if len(ids) > engine.spec.max_context:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is "
                                f"{engine.spec.max_context}", param="prompt", code="context_length_exceeded")
        seed = request.seed if request.seed is not None else int(time.time_ns() % (1 << 31))
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        try:
            decoding = Decoding(engine, ids, max_tokens=max_tokens, temperature=request.temperature,
                                top_p=request.top_p, seed=seed, stop=stop, top_k=request.top_k,
                                presence_penalty=request.presence_penalty,
                                frequency_penalty=request.frequency_penalty, logprobs=logprobs)
        except HardwireError as e:
            field_name = getattr(e, "field", None)
            raise APIError(400, str(e), param="prompt" if field_name == "ids" else field_name) from None
        decoding.seed = seed
        job = Job(decoding, asyncio.get_running_loop(), asyncio.Queue(), time.perf_counter())
        self.scheduler.submit(job)
        return job

    # -- a job into a response ----------------------------------------------------------------------
    def report(self, job: Job) -> dict:
        """The `hardwire` object: backend, seed, users, the chip's timing and the wall time."""
        decoding = job.decoding
        generated = len(decoding.generated)
        chip_time = self.chip_timing(len(decoding.prompt_ids), generated, job.users)
        end = job.finished_s or time.perf_counter()
        first = job.first_token_s or end
        wall = {"queue_ms": ((job.admitted_s or first) - job.submitted_s) * 1e3,
                "ttft_ms": (first - job.submitted_s) * 1e3,
                "latency_ms_per_token": (end - first) * 1e3 / (generated - 1) if generated > 1 else 0.0,
                "total_ms": (end - job.submitted_s) * 1e3}
        return {"backend": self.engine.backend, "seed": decoding.seed, "users": job.users,
                "slots": self.settings.slots, "chip": chip_time, "wall": wall}

    def observe(self, job: Job, report: dict) -> None:
        metrics, generated = self.metrics, len(job.decoding.generated)
        metrics.tokens.labels("prompt").inc(len(job.decoding.prompt_ids))
        metrics.tokens.labels("completion").inc(generated)
        metrics.ttft.labels("wall").observe(report["wall"]["ttft_ms"] / 1e3)
        metrics.ttft.labels("chip").observe(report["chip"]["ttft_ms"] / 1e3)
        if generated > 1:
            metrics.token_latency.labels("wall").observe(report["wall"]["latency_ms_per_token"] / 1e3)
            metrics.token_latency.labels("chip").observe(report["chip"]["latency_us_per_token"] / 1e6)

    def stream_headers(self, job: Job) -> dict:
        """A stream's headers leave before its length is known: the chip's time to first token and
        per-token latency at the prompt's length and the users decoding now."""
        users = max(1, self.scheduler.in_use + 1)
        chip_time = self.chip_timing(len(job.decoding.prompt_ids), 0, users)
        return {"Cache-Control": "no-cache", "X-Hardwire-Chip-TTFT-Ms": f"{chip_time['ttft_ms']:.6g}",
                "X-Hardwire-Chip-Token-Latency-Us": f"{chip_time['latency_us_per_token']:.6g}",
                "X-Hardwire-Users": str(users)}

    @staticmethod
    async def wait(job: Job):
        """The job's events until it ends; an internal failure becomes a 500."""
        try:
            while True:
                kind, payload = await job.events.get()
                if kind == "error":
                    raise APIError(500, payload, type="server_error")
                yield kind, payload
                if kind in ("done", "cancelled"):
                    return
        finally:
            job.cancel()

    async def events(self, job: Job, chunk, include_usage: bool, opening: list[dict]):
        """Server-sent events: `opening`, a chunk per piece of text, the finishing chunk, the usage
        chunk when asked, then [DONE]."""
        for body in opening:
            yield sse_event(body)
        async for kind, payload in self.wait(job):
            if kind == "cancelled":
                return
            delta, entries = payload
            if kind == "text":
                yield sse_event(chunk(delta, entries, None))
                continue
            report = self.report(job)
            self.observe(job, report)
            last = chunk(delta, entries, finish_reason(job))
            if include_usage:
                yield sse_event(last)
                final = chunk("", [], None)
                final["choices"], final["usage"], final["hardwire"] = [], usage(job), report
                yield sse_event(final)
            else:
                last["hardwire"] = report
                yield sse_event(last)
            yield b"data: [DONE]\n\n"

    async def respond(self, request: SamplingRequest, job: Job, chunk, opening: list[dict], kind: str, ident: str,
                      created: int, choice) -> Response:
        """A stream of `chunk`s after `opening`, or, unstreamed, one body of kind `kind` whose
        choice is choice(text, logprob entries)."""
        if request.stream:
            include = bool(request.stream_options and request.stream_options.include_usage)
            return ChipStream(self.events(job, chunk, include, opening), job, media_type="text/event-stream",
                              headers=self.stream_headers(job))
        async for _ in self.wait(job):
            pass
        report = self.report(job)
        self.observe(job, report)
        body = {"id": ident, "object": kind, "created": created, "model": self.model_name, "usage": usage(job),
                "hardwire": report, "choices": [choice(job.decoding.text(), job.decoding.token_logprobs)]}
        return Response(json_bytes(body), media_type="application/json", headers=timing_headers(report))

    # -- the endpoints --------------------------------------------------------------------------------
    async def completions(self, request: CompletionRequest) -> Response:
        self.check_common(request)
        if request.echo:
            raise APIError(400, "echo is not supported here", param="echo", code="unsupported_value")
        ids = self.prompt_ids(request.prompt)
        job = self.submit(request, ids, 16 if request.max_tokens is None else request.max_tokens, request.logprobs)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        wants_logprobs = request.logprobs is not None
        text_offset = [0]

        def chunk(delta: str, entries: list[dict], reason):
            logprobs = completion_logprobs(entries, text_offset[0]) if wants_logprobs else None
            text_offset[0] += sum(len(e["token"]) for e in entries)
            return {"id": ident, "object": "text_completion", "created": created, "model": self.model_name,
                    "choices": [{"index": 0, "text": delta, "finish_reason": reason, "logprobs": logprobs}]}

        def choice(text: str, entries: list[dict]) -> dict:
            return {"index": 0, "text": text, "finish_reason": finish_reason(job),
                    "logprobs": completion_logprobs(entries, 0) if wants_logprobs else None}
        return await self.respond(request, job, chunk, [], "text_completion", ident, created, choice)

    async def chat(self, request: ChatRequest) -> Response:
        self.check_common(request)
        if request.logprobs:
            raise APIError(400, "logprobs are supported on /v1/completions only", param="logprobs",
                           code="unsupported_value")
        ids = self.chat_ids(request)
        limit = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        job = self.submit(request, ids, 64 if limit is None else limit, None)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: str, entries: list[dict], reason):
            return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                    "choices": [{"index": 0, "delta": {"content": delta} if delta or reason is None else {},
                                 "finish_reason": reason, "logprobs": None}]}

        def choice(text: str, entries: list[dict]) -> dict:
            return {"index": 0, "finish_reason": finish_reason(job), "logprobs": None,
                    "message": {"role": "assistant", "content": text}}
        opening = chunk("", [], None)
        opening["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return await self.respond(request, job, chunk, [opening], "chat.completion", ident, created, choice)


# -- the app ------------------------------------------------------------------------------------------

def create_app(engine, model_name: str, slots: Optional[int] = None, max_slots: int = DEFAULT_MAX_SLOTS,
               queue: int = DEFAULT_QUEUE, pace: Optional[str] = None, api_key: Optional[str] = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, chip: str = "hc1",
               patched: Optional[dict] = None) -> FastAPI:
    """The app over `engine`. `slots` fixes the number of users; by default it is the chip's
    maximum users at the model's context, at most `max_slots`. `pace="chip"` releases tokens no
    faster than the chip would. `patched` maps further model names (`DIE+PATCH`) to engines of the
    same die running a patch; a request picks one by its `model` field (none: the base). Each has
    its own slots and queue: the patches are served side by side, as separate users of the chip."""
    if pace not in (None, "chip"):
        raise HardwireError(f"unknown pace {pace!r}; expected 'chip' or none")
    if slots is None:
        slots = default_slots(engine, chip, max_slots)
    if engine.new_cache() is None:
        slots = 1
    settings = ServerSettings(slots=max(1, slots), queue=max(0, queue), pace=pace, api_key=api_key,
                              max_body_bytes=max_body_bytes, chip=chip)
    service = Service(engine, model_name, settings)
    services = {model_name: service}
    for name, patched_engine in (patched or {}).items():
        services[name] = Service(patched_engine, name, settings)

    def route(request: SamplingRequest) -> Service:
        if request.model is None:
            return service
        chosen = services.get(request.model)
        if chosen is None:
            raise APIError(404, f"the model {request.model!r} does not exist here; this server serves "
                                f"{', '.join(repr(n) for n in services)} (GET /v1/models)", param="model",
                           code="model_not_found")
        return chosen

    @asynccontextmanager
    async def lifespan(app):
        yield
        for each in services.values():
            each.scheduler.stop()

    app = FastAPI(title="hardwire", description="OpenAI-compatible API over a hardwired model", lifespan=lifespan)
    app.state.service, app.state.scheduler = service, service.scheduler
    app.state.services = services
    app.add_middleware(Gate, settings=settings, metrics=service.metrics)

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        return error_response(validation_error(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error: StarletteHTTPException):
        return error_response(APIError(error.status_code, str(error.detail),
                                       type=ERROR_TYPES.get(error.status_code, "invalid_request_error"),
                                       code="request_too_large" if error.status_code == 413 else None,
                                       headers=dict(error.headers or {})))

    @app.exception_handler(Exception)
    async def internal(request, error: Exception):
        logging.getLogger("hardwire.server").exception("unhandled error", exc_info=error)
        return error_response(APIError(500, f"internal error: {type(error).__name__}", type="server_error"))

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "hardwire"}
                                           for name in services]}

    @app.get("/health")
    def health():
        return service.health()

    @app.get("/metrics")
    def metrics_text():
        from prometheus_client import CONTENT_TYPE_LATEST
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest):
        return await route(request).completions(request)

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest):
        return await route(request).chat(request)

    return app
