#!/usr/bin/env bash
# The two patch demonstrations of docs/patch.md, every command in order.
# Run from the repository root with the virtual environment active (`. .venv/bin/activate`).
# Writes the die and patches to out/patch/ and the results (JSON, PNG) to docs/patch/.
set -euo pipefail
OUT=${OUT:-out/patch}
DOCS=${DOCS:-docs/patch}
mkdir -p "$OUT" "$DOCS"
DIE="$OUT/stories260K-w8.die"

# 1. The die: the bundled stories260K frozen at 8 bits (calibrated on the bundled text, as `make demo` does).
hardwire freeze --plan w8 --force -o "$DIE"

# 2. Data, made from the die itself (examples/patch/make_data.py says how): training prompts with the
#    die's own continuations edited, the die's own sampled stories, and held-out prompts.
python examples/patch/make_data.py "$DIE" "$OUT/data"

# 3. Teach: a new name after the cue "named".
hardwire patch train "$DIE" --data "$OUT/data/name-train.jsonl" --keep "$OUT/data/keep.jsonl" \
  -o "$OUT/name.patch" --rank 8 --steps 300 \
  --seed 0 --plot "$DOCS/name-loss.png" --force
hardwire patch inspect "$OUT/name.patch" --json > "$DOCS/name-inspect.json"
hardwire patch eval "$DIE" "$OUT/name.patch" --prompts "$OUT/data/name-heldout.jsonl" --word Zara \
  --first-words 1 -n 8 --stories 200 --json > "$DOCS/name-eval.json"

# 4. Fix: the die overuses "park"; a patch trained on its own stories with the word replaced.
hardwire patch train "$DIE" --data "$OUT/data/park-train.jsonl" --keep "$OUT/data/park-keep.jsonl" \
  -o "$OUT/park.patch" --rank 8 --steps 300 \
  --seed 0 --plot "$DOCS/park-loss.png" --force
hardwire patch inspect "$OUT/park.patch" --json > "$DOCS/park-inspect.json"
hardwire patch eval "$DIE" "$OUT/park.patch" --prompts "$OUT/data/park-heldout.jsonl" --word park \
  -n 24 --stories 200 --json > "$DOCS/park-eval.json"

# 5. Both patches served beside the die: /v1/models lists DIE, DIE+name and DIE+park.
echo "serve them with: hardwire serve $DIE --backend golden --patch $OUT/name.patch --patch $OUT/park.patch"
