"""TOML for every file hardwire reads in it (chip files, sweep files, plan files): one place that
turns the reader's failures into the caller's error type, naming the file.

`tomllib` raises its own decode error, and `RecursionError` on arrays or tables nested a few
thousand levels deep; neither may reach the user as a traceback.
"""
from __future__ import annotations

from pathlib import Path

from hardwire.errors import BadConfig

try:
    import tomllib
except ModuleNotFoundError:      # Python 3.10
    import tomli as tomllib


def parse_toml(content: str, path, error=BadConfig) -> dict:
    try:
        return tomllib.loads(content)
    except tomllib.TOMLDecodeError as e:
        raise error(f"not valid TOML: {e}", path=path) from None
    except RecursionError:              # tomllib recurses into nested arrays and tables
        raise error("not valid TOML: nested too deeply", path=path) from None


def read_toml(path: str | Path, what: str, error=BadConfig) -> dict:
    """The table in the TOML file at `path` (`what` names it in errors: "chip file")."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"no such {what}", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read the {what}: {e}", path=path) from None
    return parse_toml(content, path, error)
