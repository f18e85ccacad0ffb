"""What a checkpoint contains, as `hardwire inspect MODEL` prints it (a die's description is
`hardwire.freeze.commands.describe_die`)."""
from __future__ import annotations

import math
from collections import Counter

BYTES_PER_ELEMENT = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "Q8_0": 34 / 32, "Q4_0": 18 / 32}


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
    from rich.table import Table

    from hardwire.console import show
    table = Table(title=f"{info['path']} ({info['format']})", show_header=False)
    for key, value in info["spec"].items():
        table.add_row(key, str(value))
    table.add_row("parameters", f"{info['parameters']:,}")
    for dtype, n in info["parameters_by_dtype"].items():
        table.add_row(f"stored as {dtype}", f"{n:,} values, {info['bytes_by_dtype'][dtype]:,} bytes")
    tok = info["tokenizer"]
    table.add_row("tokenizer", "none found" if tok is None else f"{tok['kind']} ({tok['vocab_size']} tokens)")
    show(table)
