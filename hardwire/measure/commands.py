"""`hardwire quality`: a die's perplexity, top-1 agreement and KL against its float model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hardwire.errors import BadConfig
from hardwire.progress import progress_bar


def quality_rows(sources: List[Path], text: Path, stories: Optional[int], tokenizer_path: Optional[Path],
                 float_model: Optional[Path], act_quant: bool, window: Optional[int],
                 backend: str = "float", patch: Optional[Path] = None) -> tuple[list[dict], dict]:
    from hardwire.die import FrozenWeights, open_model_or_die, source_checkpoint
    from hardwire.measure.quality import evaluate
    from hardwire.model.load import load
    from hardwire.model.text import read_sequences

    candidates = [open_model_or_die(p) for p in sources] if sources else [open_model_or_die(None)]
    if float_model is not None:
        reference = load(float_model)
    else:
        first = candidates[0]
        if isinstance(first, FrozenWeights):
            source = source_checkpoint(first)
            if source is None:
                recorded = (first.manifest.get("source") or {}).get("path")
                raise BadConfig(f"the float model this die was frozen from ({recorded}) is not among the bundled "
                                f"models, beside the die or in the working directory; give it with --float MODEL",
                                path=first.path)
            reference = load(source)
        else:
            reference = first
    if tokenizer_path is not None:
        from hardwire.model.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(tokenizer_path, reference.spec.vocab_size)
    else:
        tokenizer = next((c.tokenizer for c in candidates if c.tokenizer is not None), reference.tokenizer)
    context = reference.spec.max_context
    if window is not None and not 2 <= window <= context:
        raise BadConfig(f"expected a window of 2..{context} tokens (the model's context), got {window}",
                        field="--window")
    sequences = read_sequences(text, tokenizer, limit=stories, window=window or context)
    with progress_bar("scoring", len(sequences)) as advance:
        results, float_result = evaluate(candidates, reference, sequences, act_quant=act_quant,
                                         progress=lambda _: advance(), backend=backend, patch=patch)
    rows = []
    for source, candidate, result in zip(sources or [None], candidates, results):
        manifest = candidate.manifest if isinstance(candidate, FrozenWeights) else None
        label = str(source) if source is not None else "stories260K (bundled)"
        row = {"name": label, "die_id": manifest["id"] if manifest else None,
               "plan": manifest["plan"]["default"] if manifest else "float",
               "bits_per_weight": manifest["totals"]["bits_per_weight"] if manifest else 32.0,
               "rom_bits": manifest["totals"]["rom_bits"] if manifest else 32 * candidate.spec.parameter_count(),
               **result, "text": str(Path(text).resolve()), "act_quant": act_quant,
               "patch": str(patch) if patch is not None else None}
        rows.append(row)
    return rows, float_result


def print_quality(rows: list[dict], float_result: dict) -> None:
    from rich.table import Table

    from hardwire.console import show

    table = Table(title=f"{rows[0]['tokens']:,} tokens in {rows[0]['sequences']} sequences; "
                        f"float perplexity {float_result['perplexity']:.4f}")
    for column in ("model", "plan", "bits/weight", "ROM KiB", "perplexity", "vs float", "top-1 agree",
                   "KL mean", "worst layer err"):
        table.add_column(column, justify="left" if column in ("model", "plan") else "right")
    for row in rows:
        table.add_row(row["name"], row["plan"], f"{row['bits_per_weight']:.3f}", f"{row['rom_bits'] / 8192:,.1f}",
                      f"{row['perplexity']:.4f}", f"{100 * (row['perplexity'] / row['float_perplexity'] - 1):+.2f}%",
                      f"{row['top1_agreement']:.4f}", f"{row['kl_mean']:.4f}",
                      f"{max(row['layer_error']):.4f}" if row['layer_error'] else "n/a")
    show(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def quality(sources: Optional[List[Path]] = typer.Argument(None, help="dies or checkpoints to score "
                                                               "(default: bundled stories260K)"),
                text: Optional[Path] = typer.Option(None, "--text", help="text file (default: the bundled "
                                                    "TinyStories validation text)"),
                stories: Optional[int] = typer.Option(None, "--stories", help="score only the first N documents"),
                tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer file to encode "
                                                         "the text with (default: the die's own)"),
                float_model: Optional[Path] = typer.Option(None, "--float", help="float reference checkpoint "
                                                           "(default: the one the die was frozen from, found by name among the "
                                                           "bundled models, beside the die or here)"),
                act_quant: bool = typer.Option(False, "--act-quant", help="round matmul inputs to the die's "
                                               "calibrated activation format"),
                window: Optional[int] = typer.Option(None, "--window", help="score long documents in windows "
                                                     "of N tokens (default: the model's context)"),
                backend: str = typer.Option("float", "--backend", help="float (dequantized weights) | golden "
                                            "(the die's integer datapath)"),
                patch: Optional[Path] = typer.Option(None, "--patch", help="score the die(s) with this patch"),
                as_json: bool = typer.Option(False, "--json", help="print JSON")):
        """Perplexity, top-1 agreement and KL divergence against the float model, per die."""
        from hardwire.model.load import bundled_text_path

        if backend not in ("float", "golden"):
            raise BadConfig(f"unknown backend {backend!r}; expected float or golden", field="--backend")
        if stories is not None and stories < 1:
            raise BadConfig(f"expected a positive number of stories, got {stories}", field="--stories")
        rows, float_result = quality_rows(list(sources or []), text or bundled_text_path(), stories, tokenizer,
                                          float_model, act_quant, window, backend, patch)
        if as_json:
            print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        else:
            print_quality(rows, float_result)
