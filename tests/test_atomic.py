"""Atomic result writes (hardwire/atomic.py)."""
from __future__ import annotations


def test_atomic_writes_give_results_the_usual_file_mode(tmp_path):
    """A result written through a temporary file is readable like any other new file, not 0600."""
    import os

    from hardwire.atomic import write_text_atomic

    write_text_atomic(tmp_path / "result.json", "{}")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
