"""`hardwire run` and `hardwire logits`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from hardwire.atomic import atomic_path
from hardwire.backend import parse_ids, prompt_ids
from hardwire.errors import BadConfig


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        np.save(f, array)


def register(app: typer.Typer) -> None:
    @app.command()
    def run(model: Optional[Path] = typer.Argument(None, help="checkpoint or die (default: bundled stories260K)"),
            prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="prompt text"),
            ids: Optional[str] = typer.Option(None, "--ids", help="prompt token ids, e.g. 1,403,407"),
            max_tokens: int = typer.Option(256, "--max-tokens", "-n", min=0),
            temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy"),
            top_p: float = typer.Option(1.0, "--top-p"),
            seed: int = typer.Option(0, "--seed"),
            backend: str = typer.Option("float", "--backend", help="float | golden | rtl"),
            patch: Optional[Path] = typer.Option(None, "--patch", help="LoRA patch bound to the die"),
            as_json: bool = typer.Option(False, "--json"),
            timing: bool = typer.Option(False, "--timing", help="after the text, the chip's time for it")):
        """Generate text from a model or die. With no prompt, starts from BOS."""
        from hardwire.chip.estimate import generation_timing
        from hardwire.runtime.engine import make_engine
        engine = make_engine(model, backend=backend, **({"patch": patch} if patch is not None else {}))
        start = prompt_ids(engine, prompt, ids)
        result = engine.generate(start, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
        chip = generation_timing(engine.spec, prompt_tokens=len(start), generated_tokens=len(result.ids))
        if as_json:
            print(json.dumps({"ids": result.ids, "text": result.text, "prompt_ids": start,
                              "stop_reason": result.stop_reason, "backend": backend, "chip": chip,
                              **result.extra}))
        else:
            prefix = prompt if prompt is not None else ""
            print(prefix + result.text)
            if timing:
                print(f"[chip {chip['chip']} ({chip['node']}): {chip['generated_tokens']} tokens after a "
                      f"{chip['prompt_tokens']}-token prompt: first token {chip['ttft_ms']:.4g} ms, "
                      f"{chip['latency_us_per_token']:.4g} us/token, {chip['total_ms']:.4g} ms in all]")

    @app.command()
    def logits(model: Optional[Path] = typer.Argument(None, help="checkpoint or die"),
               ids: str = typer.Option(..., "--ids", help="token ids, e.g. 1,403,407"),
               output: Path = typer.Option(..., "-o", "--output", help="where to write the .npy"),
               backend: str = typer.Option("float", "--backend")):
        """Teacher-forced logits [len(ids), vocab] as float32 .npy."""
        from hardwire.runtime.engine import make_engine
        engine = make_engine(model, backend=backend)
        values = np.asarray(engine.logits(parse_ids(ids)), dtype=np.float32)
        save_npy_atomic(output, values)

    @app.command()
    def serve(model: Optional[Path] = typer.Argument(None, help="die or checkpoint (default: bundled stories260K)"),
              host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
              port: int = typer.Option(8000, "--port", min=1, max=65535),
              backend: str = typer.Option("float", "--backend"),
              slots: int = typer.Option(16, "--slots", min=1,
                                        help="most users decoded together (default: the chip's maximum users "
                                             "at the model's context, at most this)"),
              queue: int = typer.Option(64, "--queue", min=0, help="requests that may wait for a slot; then 429"),
              pace: Optional[str] = typer.Option(None, "--pace", help="'chip': release tokens at the chip's pace"),
              api_key: Optional[str] = typer.Option(None, "--api-key", envvar="HARDWIRE_API_KEY",
                                                    help="require 'Authorization: Bearer KEY' on /v1/"),
              max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1, help="larger bodies get 413"),
              chip: str = typer.Option("hc1", "--chip", help="chip whose timing responses carry"),
              patches: list[Path] = typer.Option([], "--patch",
                                                 help="a patch of the die, served as model DIE+NAME (repeatable)")):
        """Serve an OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics)."""
        import logging

        import uvicorn

        from hardwire.die import FrozenWeights
        from hardwire.runtime.engine import make_engine
        from hardwire.runtime.server import create_app
        if pace not in (None, "chip"):
            raise BadConfig(f"unknown pace {pace!r}; expected chip", field="--pace")
        engine = make_engine(model, backend=backend)
        source = engine.source
        name = source.id if isinstance(source, FrozenWeights) else Path(str(source.path)).name
        patched = {}
        for path in patches:
            variant = make_engine(source, backend=backend, patch=path)
            label = f"{name}+{variant.patch.name}"
            if label in patched:
                raise BadConfig(f"two patches are named {variant.patch.name!r}; rename one", path=path,
                                field="--patch")
            patched[label] = variant
        app = create_app(engine, name, max_slots=slots, queue=queue, pace=pace, api_key=api_key,
                         max_body_bytes=max_body_bytes, chip=chip, patched=patched)
        access = logging.getLogger("hardwire.access")     # one JSON line per request, instead of uvicorn's
        access.setLevel(logging.INFO)
        access.addHandler(logging.StreamHandler())
        access.propagate = False
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                               timeout_graceful_shutdown=10))
        uvicorn_exit = server.handle_exit

        def handle_exit(sig, frame):        # Ctrl-C: running streams end cleanly ("abort", [DONE]) first
            for each in app.state.services.values():
                each.scheduler.drain()
            uvicorn_exit(sig, frame)
        server.handle_exit = handle_exit
        server.run()
