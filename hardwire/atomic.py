"""Atomic file writes: a result file is either the old one or the complete new one, never half
written (an interrupted run, a full disk)."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def process_umask() -> int:
    """The umask, read once at import (reading it means setting it; doing that later could race
    with threads creating files)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# mkstemp makes its file private (0600); a finished result gets the mode any new file would get.
NEW_FILE_MODE = 0o666 & ~process_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block ends without
    an exception and is removed otherwise."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    os.chmod(temporary, NEW_FILE_MODE)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
