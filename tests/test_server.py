"""The OpenAI-compatible server answers like the engine does and reports chip timing."""
from __future__ import annotations

import pytest

from hardwire.runtime.engine import make_engine
from hardwire.runtime.server import create_app

pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient
    return TestClient(create_app(make_engine(), "stories260K"))


def test_completion_equals_engine_greedy_output(client):
    response = client.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 12,
                                                    "temperature": 0})
    assert response.status_code == 200
    body = response.json()
    engine = make_engine()
    expected = engine.generate(engine.tokenizer.encode("Once upon a time"), max_tokens=12)
    assert body["choices"][0]["text"] == expected.text
    assert body["usage"]["completion_tokens"] == 12
    assert body["hardwire"]["chip"]["generated_tokens"] == 12 and body["hardwire"]["chip"]["total_ms"] > 0


def test_chat_and_models_endpoints(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == "stories260K"
    body = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Tell a story"}],
                                                     "max_tokens": 5, "seed": 1}).json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] <= 5


def test_bad_request_is_rejected(client):
    assert client.post("/v1/completions", json={"prompt": "x", "top_p": 0}).status_code == 422
