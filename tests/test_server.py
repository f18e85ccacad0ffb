"""The OpenAI-compatible server: answers like the engine does, streams, decodes users in slots,
refuses every bad request in OpenAI's error shape, and reports chip timing."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time

import numpy as np
import pytest

from hardwire.runtime.engine import FloatEngine, make_engine
from hardwire.runtime.server import create_app, held_back

pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient
    return TestClient(create_app(make_engine(), "stories260K"))


@contextlib.contextmanager
def live(app):
    """The app on 127.0.0.1 at a free port, in a thread; yields its base URL."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class SlowEngine(FloatEngine):
    """The float engine, 10 ms slower per decode step: a generation that holds its slot a while."""

    def decode_batch(self, caches, tokens):
        time.sleep(0.01)
        return super().decode_batch(caches, tokens)


class ScriptedEngine(FloatEngine):
    """Greedy decoding gives `script` (then EOS) whatever the prompt: a chosen text, byte tokens too."""

    def __init__(self, source, script: list[int]):
        super().__init__(source)
        self.script, self.prompt_length = script, 0

    def next_logits(self, cache) -> np.ndarray:
        step = cache.position - self.prompt_length
        logits = np.zeros(self.spec.vocab_size, np.float32)
        logits[self.script[step] if step < len(self.script) else self.spec.eos_id] = 10.0
        return logits

    def prefill_cache(self, cache, prompt_ids):
        super().prefill_cache(cache, prompt_ids)
        self.prompt_length = len(prompt_ids)
        return self.next_logits(cache)

    def decode_batch(self, caches, tokens):
        super().decode_batch(caches, tokens)
        return [self.next_logits(cache) for cache in caches]


def sse(lines) -> list:
    """The data of each server-sent event: parsed JSON, or the string '[DONE]'."""
    out = []
    for line in lines:
        line = line.decode() if isinstance(line, bytes) else line
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- answers ------------------------------------------------------------------------------------------

def test_completion_equals_engine_greedy_output(client):
    response = client.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 12,
                                                    "temperature": 0})
    assert response.status_code == 200
    body = response.json()
    engine = make_engine()
    expected = engine.generate(engine.tokenizer.encode("Once upon a time", bos=True), max_tokens=12)
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


def test_a_prompt_may_be_a_list_of_one_string_or_token_ids(client):
    engine = make_engine()
    ids = engine.tokenizer.encode("Once upon a time", bos=True)
    expected = engine.generate(ids, max_tokens=8).text
    for prompt in (["Once upon a time"], ids):
        body = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 8, "temperature": 0}).json()
        assert body["choices"][0]["text"] == expected


def test_sampling_options_reach_the_engine(client):
    engine = make_engine()
    ids = engine.tokenizer.encode("Once upon a time", bos=True)
    options = {"max_tokens": 20, "temperature": 0.9, "seed": 11, "top_k": 20, "presence_penalty": 0.5,
               "frequency_penalty": 0.5, "stop": ["."]}
    body = client.post("/v1/completions", json={"prompt": "Once upon a time", **options}).json()
    expected = engine.generate(ids, **options)
    assert body["choices"][0]["text"] == expected.text
    assert body["choices"][0]["finish_reason"] == ("length" if expected.stop_reason == "length" else "stop")
    logged = client.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 4,
                                                   "temperature": 0, "logprobs": 2}).json()["choices"][0]
    assert len(logged["logprobs"]["tokens"]) == 4 and "".join(logged["logprobs"]["tokens"]) == logged["text"]
    assert all(len(top) == 2 for top in logged["logprobs"]["top_logprobs"])


def test_every_response_carries_chip_and_wall_time(client):
    response = client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 6, "temperature": 0})
    report = response.json()["hardwire"]
    assert report["users"] >= 1 and report["chip"]["users"] == report["users"]
    assert report["chip"]["ttft_ms"] > 0 and report["wall"]["total_ms"] >= report["wall"]["ttft_ms"] > 0
    for name in ("X-Hardwire-Chip-TTFT-Ms", "X-Hardwire-Chip-Token-Latency-Us", "X-Hardwire-Chip-Total-Ms",
                 "X-Hardwire-Wall-Total-Ms"):
        assert float(response.headers[name]) > 0


# -- malformed requests: OpenAI's error shape, never a 500 --------------------------------------------

MALFORMED = {
    "invalid JSON": ("/v1/completions", b'{"prompt": "x",', 400),
    "a body that is not an object": ("/v1/completions", b'[1, 2]', 422),
    "a string where a number goes": ("/v1/completions", b'{"prompt": "x", "max_tokens": "many"}', 422),
    "temperature NaN": ("/v1/completions", b'{"prompt": "x", "temperature": NaN}', 422),
    "top_p NaN": ("/v1/completions", b'{"prompt": "x", "top_p": NaN}', 422),
    "temperature infinite": ("/v1/completions", b'{"prompt": "x", "temperature": Infinity}', 422),
    "a negative temperature": ("/v1/completions", b'{"prompt": "x", "temperature": -1}', 422),
    "a seed beyond 64 bits": ("/v1/completions", b'{"prompt": "x", "seed": 123456789012345678901234567890}', 422),
    "a lone surrogate in the prompt": ("/v1/completions", b'{"prompt": "a\\ud800b"}', 400),
    "a lone surrogate in a message": ("/v1/chat/completions",
                                      b'{"messages": [{"role": "user", "content": "\\udfff"}]}', 400),
    "an unknown model": ("/v1/completions", b'{"prompt": "x", "model": "gpt-4"}', 404),
    "n of 0": ("/v1/completions", b'{"prompt": "x", "n": 0}', 400),
    "n of 2": ("/v1/completions", b'{"prompt": "x", "n": 2}', 400),
    "stream as a string": ("/v1/completions", b'{"prompt": "x", "stream": "yes"}', 422),
    "a role that is not a role": ("/v1/chat/completions", b'{"messages": [{"role": "wizard", "content": "hi"}]}',
                                  400),
    "no messages": ("/v1/chat/completions", b'{"messages": []}', 400),
    "an empty prompt": ("/v1/completions", b'{"prompt": ""}', 400),
    "an empty list prompt": ("/v1/completions", b'{"prompt": []}', 400),
    "two prompts": ("/v1/completions", b'{"prompt": ["a", "b"]}', 400),
    "a prompt longer than the context": ("/v1/completions",
                                         ('{"prompt": "' + "hello " * 1000 + '"}').encode(), 400),
    "a token id outside the vocabulary": ("/v1/completions", b'{"prompt": [1, 99999]}', 400),
    "a list of lists": ("/v1/completions", b'{"prompt": [[1, 2]]}', 422),
    "top_k negative": ("/v1/completions", b'{"prompt": "x", "top_k": -1}', 422),
    "a penalty out of range": ("/v1/completions", b'{"prompt": "x", "presence_penalty": 3}', 422),
    "too many logprobs": ("/v1/completions", b'{"prompt": "x", "logprobs": 99}', 422),
    "logprobs on chat": ("/v1/chat/completions",
                         b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": true}', 400),
    "an oversized body": ("/v1/completions", ('{"prompt": "' + "x" * (2 << 20) + '"}').encode(), 413),
    "no such path": ("/v1/engines", b'{}', 404),
}


@pytest.fixture(scope="module")
def server_url():
    with live(create_app(make_engine(), "stories260K")) as url:
        yield url


def raw_post(url: str, path: str, body: bytes, headers: dict | None = None, chunked: bool = False):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json", **(headers or {})}
    if chunked:
        connection.request("POST", path, body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                           headers=headers, encode_chunked=True)
    else:
        connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_request_gets_an_openai_error(server_url, name):
    path, body, status = MALFORMED[name]
    got, _, raw = raw_post(server_url, path, body)
    assert got == status, raw[:300]
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_an_oversized_body_without_a_length_gets_413(server_url):
    status, _, raw = raw_post(server_url, "/v1/completions", b'{"prompt": "' + b"x" * (2 << 20) + b'"}',
                              chunked=True)
    assert status == 413 and json.loads(raw)["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("temperature", [1e-308, 5e-324])
def test_a_vanishing_temperature_answers_greedily(client, temperature):
    greedy = client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 8, "temperature": 0}).json()
    tiny = client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 8, "temperature": temperature,
                                                "seed": -1})
    assert tiny.status_code == 200 and tiny.json()["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_an_api_key_is_required_when_set():
    from fastapi.testclient import TestClient
    guarded = TestClient(create_app(make_engine(), "stories260K", api_key="sesame"))
    refused = guarded.post("/v1/completions", json={"prompt": "Once", "max_tokens": 2})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert guarded.post("/v1/completions", json={"prompt": "Once", "max_tokens": 2},
                        headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert guarded.get("/health").status_code == 200


# -- streaming ------------------------------------------------------------------------------------------

def test_a_stream_is_openai_chunks_ending_in_done_with_usage_last(client):
    payload = {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.8, "seed": 5}
    with client.stream("POST", "/v1/completions", json={**payload, "stream": True,
                                                         "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert float(response.headers["X-Hardwire-Chip-TTFT-Ms"]) > 0
        events = sse(response.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-1]["hardwire"]["chip"]["ttft_ms"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    plain = client.post("/v1/completions", json=payload).json()
    assert streamed == plain["choices"][0]["text"] and chunks[-1]["usage"] == plain["usage"]


def test_a_chat_stream_opens_with_the_role_and_equals_the_plain_answer(client):
    payload = {"messages": [{"role": "system", "content": "Tell stories."}, {"role": "user", "content": "A cat"}],
               "max_tokens": 24, "temperature": 0.7, "seed": 9}
    with client.stream("POST", "/v1/chat/completions", json={**payload, "stream": True}) as response:
        events = sse(response.iter_lines())
    assert events[-1] == "[DONE]" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    plain = client.post("/v1/chat/completions", json=payload).json()
    assert streamed == plain["choices"][0]["message"]["content"]
    assert events[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


def test_a_stream_never_splits_a_character_nor_sends_the_start_of_a_stop_string():
    from fastapi.testclient import TestClient
    source = make_engine().source
    engine = ScriptedEngine(source, [])
    text = " café ☃ snow ☃☃ done"
    engine.script = engine.tokenizer.encode(text, bos=False)
    scripted = TestClient(create_app(engine, "scripted"))
    for stop, expected in ((None, text), ("☃☃", " café ☃ snow ")):
        payload = {"prompt": "Once", "max_tokens": 60, "temperature": 0, "stop": stop}
        with scripted.stream("POST", "/v1/completions", json={**payload, "stream": True}) as response:
            pieces = [e["choices"][0]["text"] for e in sse(response.iter_lines())[:-1]]
        assert "".join(pieces) == expected == scripted.post("/v1/completions", json=payload).json()[
            "choices"][0]["text"]
        assert not any("\ufffd" in piece for piece in pieces)
        assert sum(bool(p) for p in pieces) > 3                  # it did stream, piece by piece


def test_held_back_keeps_incomplete_characters_and_stop_prefixes():
    assert held_back("abc\ufffd\ufffd", []) == 3
    assert held_back("abc", ["cd"]) == 2
    assert held_back("abc", ["bc!"]) == 1
    assert held_back("abc", ["zz"]) == 3


# -- the official client ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openai_client(server_url):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server_url + "/v1", api_key="unused", max_retries=0)


def test_the_openai_client_completes_and_chats(openai_client):
    engine = make_engine()
    expected = engine.generate(engine.tokenizer.encode("Once upon a time", bos=True), max_tokens=10).text
    completion = openai_client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=10,
                                                  temperature=0)
    assert completion.choices[0].text == expected and completion.usage.completion_tokens == 10
    chat = openai_client.chat.completions.create(model="stories260K", max_tokens=8, seed=2,
                                                 messages=[{"role": "user", "content": "Tell a story"}])
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 8
    assert [m.id for m in openai_client.models.list()] == ["stories260K"]


def test_the_openai_client_streams_what_it_gets_unstreamed(openai_client):
    options = {"model": "stories260K", "max_tokens": 16, "temperature": 0.8, "seed": 4}
    plain = openai_client.completions.create(prompt="The cat", **options).choices[0].text
    chunks = list(openai_client.completions.create(prompt="The cat", stream=True,
                                                   stream_options={"include_usage": True}, **options))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    messages = [{"role": "user", "content": "A dog"}]
    plain = openai_client.chat.completions.create(messages=messages, **options).choices[0].message.content
    streamed = openai_client.chat.completions.create(messages=messages, stream=True, **options)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == plain


def test_the_openai_client_raises_an_api_error_for_a_bad_request(openai_client):
    import openai
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
    with pytest.raises(openai.APIError) as invalid:
        openai_client.completions.create(model="stories260K", prompt="x", top_p=0)
    assert invalid.value.status_code == 422 and invalid.value.param == "top_p"


# -- slots, queue and clients that leave -----------------------------------------------------------------

def health(url: str) -> dict:
    import httpx
    return httpx.get(url + "/health").json()


def metric(url: str, name: str) -> float:
    import httpx
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_full_queue_answers_429_with_retry_after():
    import httpx
    app = create_app(SlowEngine(make_engine().source), "slow", slots=1, queue=0)
    with live(app) as url:
        with httpx.stream("POST", url + "/v1/completions",
                          json={"prompt": "Once", "max_tokens": 300, "stream": True, "seed": 1}) as holding:
            lines = holding.iter_lines()               # kept: dropping it would close the stream
            next(lines)
            refused = httpx.post(url + "/v1/completions", json={"prompt": "Once", "max_tokens": 2})
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert health(url)["slots_in_use"] == 1


def test_twenty_clients_dropping_mid_stream_leave_every_slot_free():
    app = create_app(SlowEngine(make_engine().source), "slow", slots=8, queue=32)
    with live(app) as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "stream": True,
                           "temperature": 1.0, "seed": 1}).encode()
        request = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        sockets = []
        for _ in range(20):
            s = socket.create_connection((host, int(port)))
            s.sendall(request)
            sockets.append(s)
        for s in sockets[:8]:                         # the first eight are decoding: read a little
            s.settimeout(10)
            received = b""
            while b"data: " not in received:
                received += s.recv(4096)
        assert health(url)["slots_in_use"] == 8
        for s in sockets:
            s.close()
        deadline = time.time() + 10
        while time.time() < deadline and (health(url)["slots_in_use"] or health(url)["queue_depth"]):
            time.sleep(0.05)
        state = health(url)
        assert state["slots_in_use"] == 0 and state["queue_depth"] == 0
        assert metric(url, "hardwire_slots_in_use") == 0 and metric(url, "hardwire_slots") == 8


def test_users_in_slots_are_decoded_together_and_say_so(client):
    import httpx
    app = create_app(SlowEngine(make_engine().source), "slow", slots=4, queue=8)
    with live(app) as url:
        results = [None] * 4

        def ask(i):
            results[i] = httpx.post(url + "/v1/completions", timeout=60,
                                    json={"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0}).json()
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({r["choices"][0]["text"] for r in results}) == 1
        assert max(r["hardwire"]["users"] for r in results) > 1
        text = __import__("httpx").get(url + "/metrics").text
        assert 'hardwire_requests_total{path="/v1/completions",status="200"} 4.0' in text
        assert 'hardwire_time_to_first_token_seconds_count{clock="chip"} 4.0' in text
        assert "hardwire_token_latency_seconds_bucket" in text and "hardwire_queue_depth 0.0" in text


# -- chat templates ---------------------------------------------------------------------------------------

TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
            "{{ raise_exception('no system messages') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}"
            "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


def test_a_checkpoint_chat_template_shapes_the_chat_prompt(tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from hardwire.model.load import bundled_model_path
    folder = tmp_path / "templated"
    shutil.copytree(bundled_model_path("task-small"), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    engine = make_engine(folder)
    templated = TestClient(create_app(engine, "templated"))
    body = templated.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "1+2="}],
                                                         "max_tokens": 3, "temperature": 0}).json()
    rendered = "<s><user>1+2=<assistant>"
    assert body["usage"]["prompt_tokens"] == len(engine.tokenizer.encode(rendered, bos=False))
    refused = templated.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]})
    assert refused.status_code == 400 and "no system messages" in refused.json()["error"]["message"]


def test_shutting_down_ends_running_streams_cleanly_and_refuses_new_requests():
    import httpx
    app = create_app(SlowEngine(make_engine().source), "slow", slots=2, queue=4)
    with live(app) as url:
        with httpx.stream("POST", url + "/v1/completions",
                          json={"prompt": "Once", "max_tokens": 400, "stream": True, "seed": 1}) as running:
            lines = running.iter_lines()
            next(lines)
            app.state.scheduler.drain()
            events = sse(lines)
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "abort"
        refused = httpx.post(url + "/v1/completions", json={"prompt": "Once", "max_tokens": 2})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"


def test_paced_at_the_chip_the_answer_is_the_same_and_never_faster_than_the_chip():
    from fastapi.testclient import TestClient
    paced = TestClient(create_app(make_engine(), "stories260K", pace="chip"))
    payload = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
    body = paced.post("/v1/completions", json=payload).json()
    engine = make_engine()
    assert body["choices"][0]["text"] == engine.generate(engine.tokenizer.encode("Once upon a time", bos=True),
                                                         max_tokens=12).text
    assert body["hardwire"]["wall"]["total_ms"] >= body["hardwire"]["chip"]["decode_ms"]


def test_streamed_logprobs_and_chat_content_parts(client):
    payload = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "logprobs": 1}
    with client.stream("POST", "/v1/completions", json={**payload, "stream": True}) as response:
        chunks = [e for e in sse(response.iter_lines())[:-1] if e["choices"]]
    tokens = [t for c in chunks if c["choices"][0]["logprobs"] for t in c["choices"][0]["logprobs"]["tokens"]]
    plain = client.post("/v1/completions", json=payload).json()["choices"][0]
    assert tokens == plain["logprobs"]["tokens"] and "".join(tokens) == plain["text"]
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Tell "}, {"type": "text",
                                                                                          "text": "a story"}]}],
             "max_tokens": 5, "temperature": 0}
    whole = {"messages": [{"role": "user", "content": "Tell a story"}], "max_tokens": 5, "temperature": 0}
    assert client.post("/v1/chat/completions", json=parts).json()["choices"] == \
        client.post("/v1/chat/completions", json=whole).json()["choices"]
