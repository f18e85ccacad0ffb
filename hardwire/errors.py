"""Errors a user can catch and act on.

Every error names the file (or field) at fault and what was expected. The CLI turns a
`HardwireError` into one line on stderr and exit code 2; anything else is an internal failure
(exit 1).
"""
from __future__ import annotations


class HardwireError(Exception):
    """Bad input: the message names the file/field and what was expected."""

    def __init__(self, message: str, path: object | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        parts = []
        if self.path:
            parts.append(self.path)
        if field:
            parts.append(field)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class BadCheckpoint(HardwireError):
    """A checkpoint file is missing, truncated, corrupt or inconsistent with its config."""


class UnsupportedModel(HardwireError):
    """The checkpoint is readable but describes an architecture or option hardwire does not support."""


class BadConfig(HardwireError):
    """A configuration value (model config, chip config, command option) is out of range."""


class BadTokenizer(HardwireError):
    """A tokenizer file is missing or malformed."""


class BadPlan(HardwireError):
    """A freeze plan names an unknown format, impossible bit widths, or an unmeetable budget."""


class BadDie(HardwireError):
    """A die directory is missing, modified (hash mismatch) or malformed."""
