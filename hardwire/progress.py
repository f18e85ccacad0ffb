"""Progress of long-running commands, on stderr.

On a terminal: a live bar (rich). Otherwise (a pipe, a CI log): one line every few seconds with the
count, the rate and an estimate of the time left, as llama.cpp's tools do, so logs are never silent
for minutes.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager

LINE_INTERVAL_S = 5.0


@contextmanager
def progress_bar(description: str, total: int):
    """Yields `advance(what=None)`, to be called once per finished unit of work."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda what=None: progress.update(task, advance=1,
                                                    description=f"{description} {what}" if what else description)
        return
    started = last = time.monotonic()
    done = 0

    def advance(what=None):
        nonlocal done, last
        done += 1
        now = time.monotonic()
        if now - last >= LINE_INTERVAL_S or done == total:
            last = now
            elapsed = now - started
            left = elapsed / done * (total - done)
            print(f"{description}: {done}/{total}{' ' + str(what) if what else ''}, {elapsed:.0f} s elapsed, "
                  f"about {left:.0f} s left", file=sys.stderr, flush=True)
    yield advance
