"""Quality of the golden (integer) model of a frozen die against the float model, on text.

    python bench/golden_quality.py [--plan w8] [--activations int8] [--kv-bits 16] [--documents N]

Freezes the bundled stories260K with `--plan` (calibrated on the last 64 documents of the bundled
TinyStories text), builds the golden tables from the same calibration text, and scores every
other document (BOS + tokens, cut into context-sized windows) teacher-forced through the float
model, the die's dequantized weights in float (weight-only error) and the golden model: perplexity
and top-1 agreement with the float model's argmax.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CALIBRATION_DOCUMENTS = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", default="w8")
    parser.add_argument("--activations", default="int8", choices=["int8", "int16"])
    parser.add_argument("--kv-bits", type=int, default=16, choices=[8, 16])
    parser.add_argument("--documents", type=int, default=None, help="score only the first N windows")
    args = parser.parse_args()

    import hardwire
    from hardwire.freeze.calibrate import log_softmax
    from hardwire.freeze.freezer import Calibration, freeze
    from hardwire.freeze.plan import parse_plan
    from hardwire.freeze.tables import build_tables, measure_ranges
    from hardwire.golden.engine import GoldenEngine
    from hardwire.model.load import bundled_text_path
    from hardwire.model.reference import FloatTransformer
    from hardwire.model.text import read_sequences

    model = hardwire.load()
    context = model.spec.max_context
    everything = read_sequences(bundled_text_path(), model.tokenizer)
    calibration = [s[:context] for s in everything[-CALIBRATION_DOCUMENTS:]]
    scored = [ids[i:i + context] for ids in everything[:-CALIBRATION_DOCUMENTS] for i in range(0, len(ids), context)]
    scored = [s for s in scored if len(s) >= 2][:args.documents]

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        die = freeze(model, parse_plan(args.plan, activations=args.activations), Path(tmp) / "model.die",
                     Calibration(calibration, {"source": "bundled text, last 64 documents"}))
        tables = build_tables(die.spec, die, measure_ranges(die, calibration), kv_bits=args.kv_bits)
        golden = GoldenEngine(die, tables=tables)
        float_model = FloatTransformer(model.spec, model.tensor, capacity=context)
        weight_only = FloatTransformer(die.spec, die.tensor, capacity=context)
        setup_s = time.perf_counter() - started
        nll = {"float": 0.0, "weight_only": 0.0, "golden": 0.0}
        agree = {"weight_only": 0, "golden": 0}
        tokens = 0
        started = time.perf_counter()
        for ids in scored:
            ids = np.asarray(ids)
            float_model.reset()
            weight_only.reset()
            logits = {"float": float_model.forward(ids), "weight_only": weight_only.forward(ids),
                      "golden": golden.logits(ids)}
            for name, value in logits.items():
                log_probs = log_softmax(value[:-1].astype(np.float64))
                nll[name] -= float(log_probs[np.arange(len(ids) - 1), ids[1:]].sum())
            best = logits["float"][:-1].argmax(axis=1)
            for name in agree:
                agree[name] += int((logits[name][:-1].argmax(axis=1) == best).sum())
            tokens += len(ids) - 1
        score_s = time.perf_counter() - started
    perplexity = {name: float(np.exp(value / tokens)) for name, value in nll.items()}
    result = {"plan": args.plan, "activations": args.activations, "kv_bits": args.kv_bits,
              "windows": len(scored), "tokens": tokens, "perplexity": perplexity,
              "perplexity_increase": {n: perplexity[n] / perplexity["float"] - 1 for n in agree},
              "top1_agreement": {n: agree[n] / tokens for n in agree},
              "residual_frac_bits": int(tables["residual_frac_bits"][0]),
              "setup_s": round(setup_s, 1), "score_s": round(score_s, 1)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
