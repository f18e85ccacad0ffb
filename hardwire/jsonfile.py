"""Strict JSON for every document hardwire reads (config.json, shard indexes, safetensors headers,
die manifests, plan files, tokenizer side files).

Python's `json` accepts what the JSON standard (RFC 8259) does not and what a tool must not
guess about: `NaN` and `Infinity`, and a key given twice (the last one silently wins). Its
recursive parser also raises `RecursionError` on a document nested a few thousand levels deep.
`parse_json` refuses all three with the caller's error type, naming the file, before anything
else reads the data.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from hardwire.errors import HardwireError

# Far deeper than any real config, manifest or header (they nest 3 to 6 levels), far shallower than
# the interpreter's recursion limit.
MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in `data` (0 for a bare value), brackets inside strings
    ignored. Linear time, no recursion; an unterminated string counts as no brackets."""
    structure = np.frombuffer(_STRING.sub(b"", data), dtype=np.uint8)
    steps = (np.isin(structure, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(structure, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(steps).max(initial=0))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def parse_json(data: bytes | str, path: object, error: type[HardwireError] = HardwireError,
               expect: type | None = dict, what: str = "JSON"):
    """`data` parsed as standard JSON, or `error` naming `path`: invalid UTF-8 or syntax, nesting
    deeper than MAX_JSON_DEPTH, NaN/Infinity, a duplicated key, or a top level not of type `expect`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{what} nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed", path=path)
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                       object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise error(f"{what} is not valid UTF-8", path=path) from None
    except ValueError as e:             # JSONDecodeError is a ValueError
        raise error(f"not valid {what} ({e})", path=path) from None
    except RecursionError:              # unreachable below MAX_JSON_DEPTH; kept as a last guard
        raise error(f"{what} nests too deeply", path=path) from None
    if expect is not None and not isinstance(value, expect):
        kind = {dict: "an object", list: "an array"}.get(expect, expect.__name__)
        raise error(f"expected {what} {kind} at the top level, got {type(value).__name__}", path=path)
    return value


def read_json_file(path: Path, error: type[HardwireError] = HardwireError, expect: type | None = dict,
                   what: str = "JSON"):
    """`parse_json` of a file's bytes; a file that cannot be read is `error` too."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"cannot read: {e.strerror}", path=path) from None
    return parse_json(data, path, error, expect, what)
