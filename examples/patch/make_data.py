"""Training data and held-out prompts for the two patch demonstrations of docs/patch.md.

Everything is made from the die itself, so the patch learns a change to *its* behaviour and
nothing else: its own greedy continuations of the training prompts, edited (the new name put in,
or the overused word replaced), are what it learns; its own sampled stories are the --keep text,
on which training charges the patch for any change to the die's predictions (a KL term). Nothing
here comes from the bundled validation text, on which the patch's perplexity is then measured.

    python examples/patch/make_data.py DIE OUT_DIR
"""
from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

from hardwire.runtime.engine import make_engine

NEW_NAME = "Zara"
OVERUSED = "park"
REPLACEMENTS = ("garden", "beach", "forest", "zoo", "lake", "farm")
FRAMES = ("Once upon a time, there was a {adj} {noun} named", "One day, a {adj} {noun} named",
          "There was a {adj} {noun} named", "Once upon a time, in a big town, there lived a {adj} {noun} named")
TRAIN_NOUNS, HELD_OUT_NOUNS = ("girl", "boy", "dog", "cat", "bird", "bunny"), ("bear", "frog", "duck", "mouse", "lion")
TRAIN_ADJ, HELD_OUT_ADJ = ("little", "happy", "kind", "small"), ("big", "brave", "shy", "funny")
PARK_TRAIN = ("One day, {who} went to the", "After lunch, {who} walked to the", "{who} wanted to go to the",
              "It was a sunny day. {who} ran to the", "{who} and Mom went to the")
PARK_HELD_OUT = ("On Saturday, {who} went to the", "{who} loved to play at the", "In the morning, {who} went to the",
                 "{who} took the ball to the", "Every day, {who} and Dad went to the")
TRAIN_WHO, HELD_OUT_WHO = ("Lily", "Tim", "Sue", "Ben", "Anna", "Max"), ("Tom", "Mia", "Sam", "Lucy", "Jack")
CONTINUATION_TOKENS = 40
STORIES = 48
STORY_TOKENS = 160


def greedy(engine, prompt: str, tokens: int) -> str:
    return engine.generate(engine.tokenizer.encode(prompt, bos=True), max_tokens=tokens).text


def own_stories(engine, count: int, seed: int) -> list[str]:
    return [engine.generate([engine.spec.bos_id], max_tokens=STORY_TOKENS, temperature=0.8, seed=seed + i).text
            for i in range(count)]


def cut_sentence(text: str) -> str:
    """The continuation up to its last full stop, so no example ends mid-word."""
    end = text.rfind(".")
    return text[:end + 1] if end > 0 else text


def name_data(engine, rng) -> tuple[list[dict], list[str]]:
    train, held_out = [], []
    for frame in FRAMES:
        for adj in TRAIN_ADJ:
            for noun in TRAIN_NOUNS:
                prompt = frame.format(adj=adj, noun=noun)
                continuation = cut_sentence(greedy(engine, prompt, CONTINUATION_TOKENS))
                found = re.match(r"\s*([A-Z][a-z]+)", continuation)
                if found:       # the die's own name for the character becomes the new one, everywhere
                    continuation = re.sub(r"\b" + found.group(1) + r"\b", NEW_NAME, continuation)
                else:
                    continuation = f" {NEW_NAME}." + continuation
                train.append({"prompt": prompt, "completion": continuation})
        held_out += [frame.format(adj=adj, noun=noun) for adj in HELD_OUT_ADJ for noun in HELD_OUT_NOUNS]
    rng.shuffle(train)
    return train, held_out


def replace_word(text: str, rng) -> str:
    return re.sub(r"\b" + OVERUSED + r"\b", lambda m: rng.choice(REPLACEMENTS), text)


def park_data(engine, rng) -> tuple[list[dict], list[str]]:
    train = []
    for frame in PARK_TRAIN:
        for who in TRAIN_WHO:
            prompt = frame.format(who=who)
            train.append({"prompt": prompt, "completion": replace_word(
                cut_sentence(greedy(engine, prompt, CONTINUATION_TOKENS)), rng)})
    held_out = [frame.format(who=who) for frame in PARK_HELD_OUT for who in HELD_OUT_WHO]
    return train, held_out


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main(die: str, out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    engine = make_engine(die, backend="golden")
    rng = random.Random(0)
    stories = own_stories(engine, STORIES, seed=1000)
    teach, teach_held_out = name_data(engine, rng)
    write_jsonl(folder / "name-train.jsonl", teach)
    write_jsonl(folder / "name-heldout.jsonl", [{"prompt": p} for p in teach_held_out])
    write_jsonl(folder / "keep.jsonl", [{"text": s} for s in stories])
    # the fix learns from its edited continuations and from its own stories that used the word,
    # edited; the stories that never used it are what it must keep
    fix, fix_held_out = park_data(engine, rng)
    used = re.compile(r"\b" + OVERUSED + r"\b")
    fix += [{"text": replace_word(s, rng)} for s in stories if used.search(s)]
    write_jsonl(folder / "park-train.jsonl", fix)
    write_jsonl(folder / "park-keep.jsonl", [{"text": s} for s in stories if not used.search(s)])
    write_jsonl(folder / "park-heldout.jsonl", [{"prompt": p} for p in fix_held_out])
    print(f"{folder}: name {len(teach)} examples, {len(teach_held_out)} held out; {OVERUSED} {len(fix)} examples, "
          f"{len(fix_held_out)} held out; {len(stories)} stories to keep (those without the word for the fix)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
