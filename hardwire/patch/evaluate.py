"""`hardwire patch eval`: what a patch changes and what it leaves alone, on the golden backend.

A patch is trusted when it changes what it should (the rate at which greedy completions of
held-out prompts contain a word, before and after) and little else (perplexity on a text the
patch never saw, before and after). Both are measured on the die's exact integer datapath.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from hardwire.errors import BadConfig


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line: JSONL with a "prompt" field, or plain text lines."""
    path = Path(path)
    if not path.is_file():
        raise BadConfig("no such file", path=path, field="--prompts")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except ValueError as e:
                raise BadConfig(f"not JSON ({e.msg})", path=path, field=f"--prompts line {number}") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise BadConfig('expected {"prompt": "..."}', path=path, field=f"--prompts line {number}")
            prompts.append(record["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise BadConfig("no prompts", path=path, field="--prompts")
    return prompts


def word_pattern(word: str) -> re.Pattern:
    """The word as a whole word (with any suffix such as 's), case-sensitive."""
    if not word or not word.strip():
        raise BadConfig("expected a word", field="--word")
    return re.compile(r"\b" + re.escape(word.strip()))


def completions(engine, prompts: list[str], max_tokens: int) -> list[str]:
    out = []
    for prompt in prompts:
        ids = engine.tokenizer.encode(prompt, bos=engine.spec.bos_id is not None)
        out.append(engine.generate(ids, max_tokens=max_tokens).text)
    return out


def rate(texts: list[str], pattern: re.Pattern, first_words: int | None) -> dict:
    """Fraction of completions containing the word (within their first `first_words` words)."""
    hits = 0
    for text in texts:
        scope = " ".join(text.split()[:first_words]) if first_words else text
        hits += bool(pattern.search(scope))
    return {"rate": hits / len(texts), "hits": hits, "prompts": len(texts)}


def golden_perplexity(engine, sequences: list[list[int]]) -> float:
    """exp(mean next-token NLL) of the golden logits (scaled to nats only at the output)."""
    from hardwire.measure.quality import next_token_nll
    total, tokens = 0.0, 0
    for ids in sequences:
        logits = engine.logits(ids)
        total += next_token_nll(np.asarray(logits), np.asarray(ids))
        tokens += len(ids) - 1
    return math.exp(total / tokens)


def evaluate_patch(die, patch, prompts: list[str], word: str, max_tokens: int, first_words: int | None,
                   sequences: list[list[int]], advance=lambda what=None: None) -> dict:
    from hardwire.runtime.engine import make_engine
    pattern = word_pattern(word)
    result = {"word": word, "max_tokens": max_tokens, "first_words": first_words, "patch_id": patch.id,
              "die_id": die.id, "text_sequences": len(sequences),
              "text_tokens": sum(len(s) - 1 for s in sequences), "examples": {}}
    for label, chosen in (("before", None), ("after", patch)):
        engine = make_engine(die, backend="golden", **({"patch": chosen} if chosen is not None else {}))
        texts = completions(engine, prompts, max_tokens)
        advance(f"{label}: completions")
        result[label] = rate(texts, pattern, first_words)
        result[label]["perplexity"] = golden_perplexity(engine, sequences) if sequences else None
        advance(f"{label}: perplexity")
        result["examples"][label] = [{"prompt": p, "completion": t} for p, t in zip(prompts[:5], texts[:5])]
    before, after = result["before"]["perplexity"], result["after"]["perplexity"]
    result["perplexity_change"] = after / before - 1 if before and after else None
    return result
