"""Shared fixtures: run the `hardwire` command in a subprocess, as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli():
    """cli(*args, expect=0) runs `python -m hardwire.cli ARGS` and checks the exit code."""
    def run(*args, expect: int | None = 0, timeout: float = 300):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
        proc = subprocess.run([sys.executable, "-m", "hardwire.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=timeout, cwd=ROOT)
        if expect is not None:
            assert proc.returncode == expect, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
        return proc
    return run


@pytest.fixture(scope="session")
def task_die(tmp_path_factory):
    """The bundled task-small model frozen at w8 (on its own calibration text), as a die path."""
    from hardwire.freeze.commands import load_calibration
    from hardwire.freeze.freezer import freeze
    from hardwire.freeze.plan import parse_plan
    from hardwire.model.load import load

    path = tmp_path_factory.mktemp("task-die") / "task-small-w8.die"
    with load("task-small") as model:
        freeze(model, parse_plan("w8", None), path, load_calibration(model, None, 16384))
    return str(path)


@pytest.fixture(scope="session")
def stories_die(tmp_path_factory):
    """The bundled stories260K frozen at w8, calibrated on one sentence (seconds), as an open Die."""
    import hardwire
    from hardwire.freeze.freezer import Calibration, freeze
    from hardwire.freeze.plan import parse_plan
    model = hardwire.load()
    ids = model.tokenizer.encode("Once upon a time, there was a little girl who loved the sun.", bos=True)
    return freeze(model, parse_plan("w8"), tmp_path_factory.mktemp("die") / "stories.die",
                  Calibration([ids], {"source": "test sentence"}))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One RTL build cache per test module (HARDWIRE_CACHE_DIR), so tests of the same die and
    options share a Verilator compile and no test reads another module's builds."""
    path = tmp_path_factory.mktemp("rtl-cache")
    old = os.environ.get("HARDWIRE_CACHE_DIR")
    os.environ["HARDWIRE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HARDWIRE_CACHE_DIR", None)
    else:
        os.environ["HARDWIRE_CACHE_DIR"] = old
