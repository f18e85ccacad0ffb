"""Text to token sequences: how freeze calibration and quality scoring read a text file.

The text is split into documents at `<|endoftext|>` (a file without that separator is one
document); each document is encoded as BOS + tokens, no EOS. A document longer than a context
window (`window` tokens) is cut into consecutive windows of that many tokens, each starting at the
previous window's last token, so every token after the first is predicted exactly once and no
position exceeds the context the chip has.
"""
from __future__ import annotations

from pathlib import Path

from hardwire.errors import BadConfig

DOCUMENT_SEPARATOR = "<|endoftext|>"


def split_documents(text: str) -> list[str]:
    pieces = text.split(DOCUMENT_SEPARATOR) if DOCUMENT_SEPARATOR in text else [text]
    return [p.strip() for p in pieces if p.strip()]


def context_windows(ids: list[int], window: int) -> list[list[int]]:
    """Windows of at most `window` tokens overlapping by one: each predicts what the last did not."""
    if len(ids) <= window:
        return [ids]
    return [ids[i:i + window] for i in range(0, len(ids) - 1, window - 1)]


def read_sequences(path: str | Path, tokenizer, limit: int | None = None, window: int | None = None,
                   from_end: bool = False) -> list[list[int]]:
    """Token sequences of a text file: one per document (BOS + ids), longer ones cut into context
    windows (see the protocol above). `limit` keeps the first (or with `from_end`, the last)
    `limit` documents."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadConfig(f"cannot read text: {getattr(e, 'strerror', None) or e}", path=path) from None
    documents = split_documents(text)
    if not documents:
        raise BadConfig("contains no text", path=path)
    if limit is not None:
        documents = documents[-limit:] if from_end else documents[:limit]
    if tokenizer is None:
        raise BadConfig("the model has no tokenizer to encode text with; give --tokenizer FILE", path=path)
    sequences = [tokenizer.encode(d, bos=True) for d in documents]
    if window is not None:
        if window < 2:
            raise BadConfig(f"a scoring window needs at least 2 tokens, got {window}", field="window")
        sequences = [w for ids in sequences for w in context_windows(ids, window)]
    return [s for s in sequences if len(s) >= 2]


def read_id_sequences(path: str | Path, vocab_size: int, window: int | None = None) -> list[list[int]]:
    """Token sequences given as ids: one sequence per non-empty line, ids separated by commas or
    spaces, used as written (a model that expects BOS needs it at the start of each line). Longer
    sequences are cut into context windows as text is; an id outside [0, vocab_size) is refused
    with its line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadConfig(f"cannot read token ids: {getattr(e, 'strerror', None) or e}", path=path) from None
    sequences = []
    for number, line in enumerate(lines, 1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            ids = [int(f) for f in fields]
        except ValueError:
            raise BadConfig(f"line {number}: expected token ids separated by commas or spaces, got "
                            f"{line.strip()[:60]!r}", path=path) from None
        bad = next((i for i in ids if not 0 <= i < vocab_size), None)
        if bad is not None:
            raise BadConfig(f"line {number}: token id {bad} is outside the model's vocabulary [0, {vocab_size})",
                            path=path)
        sequences.extend(context_windows(ids, window) if window is not None else [ids])
    sequences = [s for s in sequences if len(s) >= 2]
    if not sequences:
        raise BadConfig("holds no sequence of at least two token ids", path=path)
    return sequences
