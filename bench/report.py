"""Write one benchmark's results into its own section of docs/benchmarks.md.

Each benchmark owns a `## Heading` section and replaces only that, so benchmarks run at different
times (and on different days) keep each other's results.
"""
from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
PREAMBLE = ("# Benchmarks\n\nEvery figure here was produced by the command shown in its section, on the "
            "machine described there. Ratios compare against a peer measured in the same run.\n")


def machine_summary() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    try:
        cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cores = "?"
    return f"{cpu}, {cores} cores, Python {platform.python_version()}"


def update_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else PREAMBLE
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
