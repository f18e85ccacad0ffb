"""Load on `hardwire serve`: concurrent streaming clients against the bundled model frozen as a die.

    python bench/serve_load.py [--clients 32] [--seconds 60] [--backend golden] [--slots 16]
                               [--queue 64] [--max-tokens 64] [--baseline-seconds 20] [--json]

The bundled stories260K is frozen at w8 into a temporary die and served by `hardwire serve` in a
subprocess on 127.0.0.1 (a free port; nothing listens beyond this machine). `--clients` threads then
stream completions (`stream: true`, `stream_options.include_usage`) back to back for `--seconds`,
each request with its own seed. Every stream is checked: HTTP 200, chunks in order ending with
`data: [DONE]`, a usage chunk, no U+FFFD (a split character), the streamed pieces' total equal to
the usage's token count being positive. A 429 (queue full) is counted apart: it is the server's
intended answer to overload, not an error. A monitor polls /metrics and records the most slots ever
in use. Then one client alone, streaming one request at a time for `--baseline-seconds`, gives the
rate of the same engine decoding one stream at a time. Printed: requests, errors, 429s, p50/p99
time to first token, aggregate tokens/s, the single-stream tokens/s and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to", "One day, Tom found", "The sun was shining",
           "A big red ball", "Mom said", "In the garden"]
MAX_CLIENTS, MAX_SECONDS = 256, 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def freeze_bundled(directory: Path) -> Path:
    import hardwire
    from hardwire.freeze.freezer import Calibration, freeze
    from hardwire.freeze.plan import parse_plan
    model = hardwire.load()
    ids = model.tokenizer.encode("Once upon a time, there was a little girl who loved the sun.", bos=True)
    path = directory / "stories260K-w8.die"
    freeze(model, parse_plan("w8"), path, Calibration([ids], {"source": "bench sentence"}))
    return path


class Server:
    """`hardwire serve` in a subprocess on 127.0.0.1."""

    def __init__(self, die: Path, backend: str, slots: int, queue: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hardwire.cli", "serve", str(die), "--backend", backend, "--host", "127.0.0.1",
             "--port", str(self.port), "--slots", str(slots), "--queue", str(queue)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                self.health = httpx.get(self.url + "/health", timeout=1).json()
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not start within 120 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def stream_once(client: httpx.Client, url: str, model: str, rng: random.Random, max_tokens: int) -> dict:
    """One streamed completion, checked. Returns {status, ttft_s, tokens, error}."""
    payload = {"model": model, "prompt": rng.choice(PROMPTS), "max_tokens": max_tokens, "temperature": 0.8,
               "seed": rng.randrange(1 << 31), "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft, pieces, usage, done = None, [], None, False
    with client.stream("POST", url + "/v1/completions", json=payload) as response:
        if response.status_code != 200:
            response.read()
            return {"status": response.status_code, "error": None if response.status_code == 429
                    else f"HTTP {response.status_code}: {response.text[:200]}"}
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                if choice["text"] and ttft is None:
                    ttft = time.perf_counter() - started
                pieces.append(choice["text"])
    text = "".join(pieces)
    error = None
    if not done:
        error = "stream ended without [DONE]"
    elif usage is None or usage["completion_tokens"] < 1:
        error = "no usage chunk"
    elif "\ufffd" in text:
        error = "a character split across chunks"
    return {"status": 200, "ttft_s": ttft if ttft is not None else time.perf_counter() - started,
            "tokens": usage["completion_tokens"] if usage else 0, "error": error}


def load(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client_loop(index: int):
        rng = random.Random(index)
        with httpx.Client(timeout=120) as client:
            while time.perf_counter() < stop_at:
                try:
                    result = stream_once(client, url, model, rng, max_tokens)
                except httpx.HTTPError as e:
                    result = {"status": 0, "error": f"{type(e).__name__}: {e}"}
                with lock:
                    results.append(result)
                if result["status"] == 429:
                    time.sleep(0.05)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ok = [r for r in results if r["status"] == 200 and r["error"] is None]
    ttfts = np.array([r["ttft_s"] for r in ok]) * 1e3 if ok else np.array([np.nan])
    errors = [r["error"] for r in results if r["error"] is not None]
    return {"clients": clients, "seconds": elapsed, "requests": len(results), "completed": len(ok),
            "errors": len(errors), "first_errors": errors[:5],
            "rejected_429": sum(r["status"] == 429 for r in results),
            "ttft_p50_ms": float(np.percentile(ttfts, 50)), "ttft_p99_ms": float(np.percentile(ttfts, 99)),
            "tokens": sum(r["tokens"] for r in ok), "tokens_per_s": sum(r["tokens"] for r in ok) / elapsed}


def watch_slots(url: str, stop: threading.Event, seen: dict) -> None:
    """The most slots in use and the deepest queue /metrics ever reported."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            try:
                for line in client.get(url + "/metrics").text.splitlines():
                    name, _, value = line.partition(" ")
                    if name in ("hardwire_slots_in_use", "hardwire_queue_depth"):
                        seen[name] = max(seen.get(name, 0.0), float(value))
            except httpx.HTTPError:
                pass
            stop.wait(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--baseline-seconds", type=float, default=20)
    parser.add_argument("--backend", default="golden", choices=["golden", "float"])
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS \
            or not 0 < args.baseline_seconds <= MAX_SECONDS:
        parser.error(f"clients in [1, {MAX_CLIENTS}], seconds in (0, {MAX_SECONDS}]")

    with tempfile.TemporaryDirectory() as directory:
        die = freeze_bundled(Path(directory))
        server = Server(die, args.backend, args.slots, args.queue)
        try:
            model = httpx.get(server.url + "/v1/models").json()["data"][0]["id"]
            slots = server.health["slots"]
            seen: dict = {}
            stop = threading.Event()
            monitor = threading.Thread(target=watch_slots, args=(server.url, stop, seen), daemon=True)
            monitor.start()
            loaded = load(server.url, model, args.clients, args.seconds, args.max_tokens)
            stop.set()
            monitor.join()
            alone = load(server.url, model, 1, args.baseline_seconds, args.max_tokens)
            after = httpx.get(server.url + "/health").json()
        finally:
            server.stop()
    report = {"backend": args.backend, "slots": slots, "queue": args.queue, "max_tokens": args.max_tokens,
              "load": loaded, "single_stream": alone,
              "max_slots_in_use": seen.get("hardwire_slots_in_use"),
              "max_queue_depth": seen.get("hardwire_queue_depth"),
              "slots_in_use_after": after["slots_in_use"],
              "speedup": loaded["tokens_per_s"] / alone["tokens_per_s"] if alone["tokens_per_s"] else None}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"backend {args.backend}, {slots} slots, queue {args.queue}, {args.max_tokens} tokens per request")
    for name, r in (("load", loaded), ("one stream", alone)):
        print(f"{name:>10}: {r['clients']} clients {r['seconds']:.1f} s  requests {r['requests']}  "
              f"errors {r['errors']}  429s {r['rejected_429']}  TTFT p50 {r['ttft_p50_ms']:.1f} ms  "
              f"p99 {r['ttft_p99_ms']:.1f} ms  {r['tokens_per_s']:.0f} tokens/s")
    print(f"most slots in use {report['max_slots_in_use']:.0f} of {slots}, deepest queue "
          f"{report['max_queue_depth']:.0f}; slots in use afterwards {report['slots_in_use_after']}")
    print(f"aggregate / one stream: {report['speedup']:.2f}x")
    if loaded["first_errors"]:
        print("first errors:", *loaded["first_errors"], sep="\n  ")


if __name__ == "__main__":
    main()
