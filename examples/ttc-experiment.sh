#!/usr/bin/env bash
# The time-to-correct experiment of docs/time-to-correct.md, every command in order.
# Run from the repository root with the virtual environment active (`. .venv/bin/activate`).
# Writes dies to out/ttc/ and results (JSON, PNG) to docs/ttc/. It took 19 minutes on 2 cores shared with other jobs.
set -euo pipefail
OUT=${OUT:-out/ttc}
DOCS=${DOCS:-docs/ttc}
mkdir -p "$OUT" "$DOCS"

# 1. Freeze every bundled task model at 8 bits and at 4 bits in groups of 32 (calibrated on the
#    calibration.txt each model ships: training-split task text).
for model in task-small task-medium task-large; do
  for plan in w8 w4g32; do
    hardwire freeze "$model" --plan "$plan" --force -o "$OUT/$model-$plan.die"
  done
done

# 2. The systems: every die on its own chip estimate (hc1 template, the die's weight formats), and
#    the largest model in float on a GPU at the launch-bound rate of docs/time-to-correct.md
#    (31 kernels x 4 us = 124 us per token: 8,065 tokens/s; time to first token 0.124 ms).
GPU_RATE=rate:8065:0.124
SYSTEMS=()
for model in task-small task-medium task-large; do
  for plan in w8 w4g32; do SYSTEMS+=(--system "$OUT/$model-$plan.die@chip"); done
done
SYSTEMS+=(--system "task-large@$GPU_RATE")

# 3. Both task sets, both modes: up to 64 attempts per task, no time budget, temperature 1.
for tasks in add expr; do
  for mode in independent feedback; do
    hardwire ttc --tasks "$tasks:200" "${SYSTEMS[@]}" --mode "$mode" --attempts 64 --seed 0 \
      --json --plot "$DOCS/solved-$tasks-$mode.png" --crossover "$DOCS/crossover-$tasks-$mode.png" \
      > "$DOCS/$tasks-$mode.json"
  done
done

# 4. The same under a time budget of one GPU attempt's worth (1 ms): who is correct by then?
hardwire ttc --tasks add:200 "${SYSTEMS[@]}" --mode feedback --attempts 10000 --budget-s 0.001 --seed 0 \
  --json > "$DOCS/add-feedback-budget-1ms.json"

# 5. The seed's example in closed form: ~2 s per attempt printed, ~2.5 minutes per attempt for the
#    slow model, at the pass rates that make each side win (docs/time-to-correct.md).
STATED=(--system "name=frontier,rate=80,accuracy=0.7,tokens=12000")
for accuracy in 0.002 0.005 0.01 0.02 0.05 0.2; do
  STATED+=(--system "name=printed-$accuracy,rate=17000,accuracy=$accuracy,tokens=34000")
done
hardwire ttc "${STATED[@]}" --attempts 1000 --json > "$DOCS/seed-example.json"
hardwire ttc "${STATED[@]}" --attempts 1000 --budget-s 300 --json > "$DOCS/seed-example-budget-300s.json"
