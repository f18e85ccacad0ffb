"""`hardwire inspect`: what a checkpoint or die contains."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

BYTES_PER_ELEMENT = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "Q8_0": 34 / 32, "Q4_0": 18 / 32}


def is_die(path: Optional[Path]) -> bool:
    return path is not None and path.is_dir() and (path / "manifest.json").exists()


def describe_model(model) -> dict:
    spec = model.spec
    shapes = spec.tensor_shapes()
    by_dtype: Counter = Counter()
    for name, shape in shapes.items():
        by_dtype[model.dtypes.get(name, "F32")] += math.prod(shape)
    tok = model.tokenizer
    return {
        "path": str(model.path),
        "format": model.format,
        "spec": spec.to_dict(),
        "parameters": spec.parameter_count(),
        "parameters_by_dtype": dict(by_dtype),
        "bytes_by_dtype": {d: int(n * BYTES_PER_ELEMENT.get(d, 4)) for d, n in by_dtype.items()},
        "tokenizer": None if tok is None else {"kind": getattr(tok, "kind", type(tok).__name__),
                                               "vocab_size": tok.vocab_size},
    }


def print_model(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{info['path']} ({info['format']})", show_header=False)
    for key, value in info["spec"].items():
        table.add_row(key, str(value))
    table.add_row("parameters", f"{info['parameters']:,}")
    for dtype, n in info["parameters_by_dtype"].items():
        table.add_row(f"stored as {dtype}", f"{n:,} values, {info['bytes_by_dtype'][dtype]:,} bytes")
    tok = info["tokenizer"]
    table.add_row("tokenizer", "none found" if tok is None else f"{tok['kind']} ({tok['vocab_size']} tokens)")
    Console().print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(model: Optional[Path] = typer.Argument(None, help="checkpoint or die (default: bundled stories260K)"),
                as_json: bool = typer.Option(False, "--json", help="print JSON")):
        """Show a checkpoint's or die's shape, parameter count and storage."""
        if is_die(model):
            from hardwire.die import open_die
            from hardwire.freeze.commands import describe_die, print_die
            die = open_die(model)
            if as_json:
                print(json.dumps(describe_die(die), indent=2))
            else:
                print_die(die)
            return
        from hardwire.model.load import load
        with load(model) as opened:
            info = describe_model(opened)
        if as_json:
            print(json.dumps(info, indent=2))
        else:
            print_model(info)
