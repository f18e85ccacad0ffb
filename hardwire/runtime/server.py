"""An OpenAI-compatible HTTP server over an engine, that also says what the chip would have taken.

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions. Each completion carries a
`hardwire` object with the backend and the chip timing for the same prompt and output lengths. One
engine (one KV cache) serves requests one at a time.
"""
from __future__ import annotations

import threading
import time
import uuid

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from hardwire.errors import HardwireError


class CompletionRequest(BaseModel):
    model: str | None = None
    prompt: str = ""
    max_tokens: int = Field(16, ge=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[dict]
    max_tokens: int = Field(64, ge=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None


def chat_prompt(messages: list[dict]) -> str:
    """Base models here ship no chat template: messages become 'role: content' lines and the
    reply is cued with 'assistant:'."""
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join(lines + ["assistant:"])


def create_app(engine, model_name: str):
    from hardwire.chip.estimate import generation_timing

    app = FastAPI(title="hardwire", description="OpenAI-compatible API over a hardwired model")
    lock = threading.Lock()

    def complete(prompt: str, request) -> tuple[object, list[int], dict]:
        if engine.tokenizer is None:
            raise HTTPException(400, "this model has no tokenizer")
        ids = engine.tokenizer.encode(prompt, bos=engine.spec.bos_id is not None)
        seed = request.seed if request.seed is not None else int(time.time_ns() % (1 << 31))
        stop = [request.stop] if isinstance(request.stop, str) else [s for s in request.stop or [] if s]
        try:
            with lock:
                result = engine.generate(ids, max_tokens=request.max_tokens, temperature=request.temperature,
                                         top_p=request.top_p, seed=seed, stop=stop)
        except HardwireError as e:
            raise HTTPException(400, str(e)) from None
        chip = generation_timing(engine.spec, prompt_tokens=len(ids), generated_tokens=len(result.ids))
        usage = {"prompt_tokens": len(ids), "completion_tokens": result.sampled_tokens,
                 "total_tokens": len(ids) + result.sampled_tokens}
        extra = {"backend": engine.backend, "seed": seed, "chip": chip}
        return result, usage, extra

    def finish(result) -> str:
        return "length" if result.stop_reason == "length" else "stop"

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "hardwire"}]}

    @app.post("/v1/completions")
    def completions(request: CompletionRequest):
        result, usage, extra = complete(request.prompt, request)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name, "usage": usage, "hardwire": extra,
                "choices": [{"index": 0, "text": result.text, "finish_reason": finish(result), "logprobs": None}]}

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest):
        result, usage, extra = complete(chat_prompt(request.messages), request)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name, "usage": usage, "hardwire": extra,
                "choices": [{"index": 0, "finish_reason": finish(result),
                             "message": {"role": "assistant", "content": result.text}}]}

    return app
