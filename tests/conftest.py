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
