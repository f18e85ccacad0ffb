"""`hardwire freeze` and `hardwire quality`, and the die description `hardwire inspect` prints."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import List, Optional

import typer

from hardwire.errors import BadConfig
from hardwire.progress import progress_bar

DEFAULT_CALIBRATION_DOCUMENTS = 64     # from the end of the bundled text when no --calib is given


CALIBRATION_FILE = "calibration.txt"     # a checkpoint folder may ship its own calibration text


def default_calibration_text(model) -> Path:
    """The text a checkpoint ships for calibration (`calibration.txt` beside its weights, as the
    bundled task models do: inputs like the ones they will see), else the bundled TinyStories text."""
    from hardwire.model.load import bundled_text_path

    folder = Path(model.path) if Path(model.path).is_dir() else Path(model.path).parent
    own = folder / CALIBRATION_FILE
    return own if own.is_file() else bundled_text_path()


def load_calibration(model, calib: Optional[Path], tokens: int):
    from hardwire.freeze.freezer import Calibration
    from hardwire.freeze.quality import read_sequences
    from hardwire.model.load import bundled_text_path

    path = calib or default_calibration_text(model)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise BadConfig("the model has no tokenizer, so calibration text cannot be encoded", path=path)
    # Of the bundled stories, the last ones (scoring reads from the front); anything else, all of it.
    limit = DEFAULT_CALIBRATION_DOCUMENTS if calib is None and path == bundled_text_path() else None
    sequences = read_sequences(path, tokenizer, limit=limit, from_end=limit is not None,
                               window=model.spec.max_context)
    from hardwire.freeze.calibrate import limit_sequences
    sequences = limit_sequences(sequences, tokens)
    description = {"source": str(path.resolve()),
                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                   "documents": f"last {limit}" if limit else "all"}
    return Calibration(sequences, description)


def describe_die(die) -> dict:
    """What `hardwire inspect NAME.die --json` prints: plan, formats, bits per tensor, ROM bits."""
    manifest = die.manifest
    tensors = {}
    for name, entry in manifest["tensors"].items():
        values = math.prod(entry["shape"])
        row = {"shape": entry["shape"], "kind": entry["kind"], "rom_bits": entry["rom_bits"],
               "bits_per_weight": entry["rom_bits"] / values}
        if entry["kind"] == "quantized":
            row.update(format=entry["format"]["name"], method=entry["method"])
        else:
            row["format"] = "f32"
        tensors[name] = row
    return {
        "path": str(die.path), "id": die.id, "spec": manifest["spec"],
        "plan": {k: v for k, v in manifest["plan"].items() if k not in ("assignment", "sensitivity_kl")},
        "activations": {k: manifest["activations"][k] for k in ("format", "bits", "scaling")},
        "tokenizer": manifest["tokenizer"], "calibration": manifest["calibration"],
        "totals": manifest["totals"], "rom_bits": manifest["totals"]["rom_bits"],
        "tensors": tensors,
    }


def print_die(die) -> None:
    from rich.console import Console
    from rich.table import Table

    info = describe_die(die)
    totals = info["totals"]
    console = Console()
    table = Table(title=f"{die.path.name}  id {die.id[:16]}  plan {info['plan']['default']}")
    for column in ("tensor", "shape", "format", "method", "ROM bits", "bits/weight"):
        table.add_column(column, justify="right" if column in ("ROM bits", "bits/weight") else "left")
    for name, row in info["tensors"].items():
        table.add_row(name, "×".join(map(str, row["shape"])), row["format"], row.get("method", ""),
                      f"{row['rom_bits']:,}", f"{row['bits_per_weight']:.3f}")
    console.print(table)
    console.print(f"matrices: {totals['matrix_weights']:,} weights, {totals['matrix_rom_bits']:,} bits "
                  f"({totals['bits_per_weight']:.3f} bits/weight incl. scales, "
                  f"{totals['code_bits_per_weight']:.3f} code bits/weight)")
    console.print(f"total ROM: {totals['rom_bits']:,} bits ({totals['rom_bits'] / 8 / 1024:,.1f} KiB); "
                  f"activations {info['activations']['format']}")


def quality_rows(sources: List[Path], text: Path, stories: Optional[int], tokenizer_path: Optional[Path],
                 float_model: Optional[Path], act_quant: bool, window: Optional[int],
                 backend: str = "float") -> tuple[list[dict], dict]:
    from hardwire.die import open_model_or_die
    from hardwire.freeze.quality import evaluate, read_sequences
    from hardwire.model.load import load

    candidates = [open_model_or_die(p) for p in sources] if sources else [open_model_or_die(None)]
    if float_model is not None:
        reference = load(float_model)
    else:
        first = candidates[0]
        if hasattr(first, "manifest"):
            source = (first.manifest.get("source") or {}).get("path")
            if not source or not Path(source).exists():
                raise BadConfig(f"the float model this die was frozen from ({source}) is not available; "
                                f"give it with --float MODEL", path=first.path)
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
                                         progress=lambda _: advance(), backend=backend)
    rows = []
    for source, candidate, result in zip(sources or [None], candidates, results):
        manifest = getattr(candidate, "manifest", None)
        label = str(source) if source is not None else "stories260K (bundled)"
        row = {"name": label, "die_id": manifest["id"] if manifest else None,
               "plan": manifest["plan"]["default"] if manifest else "float",
               "bits_per_weight": manifest["totals"]["bits_per_weight"] if manifest else 32.0,
               "rom_bits": manifest["totals"]["rom_bits"] if manifest else 32 * candidate.spec.parameter_count(),
               **result, "text": str(Path(text).resolve()), "act_quant": act_quant}
        rows.append(row)
    return rows, float_result


def print_quality(rows: list[dict], float_result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

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
    Console().print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def freeze(model: Optional[Path] = typer.Argument(None, help="checkpoint (default: bundled stories260K)"),
               plan: str = typer.Option(..., "--plan", help="w8 | w4g32 | w3g32a | w4g32:gptq | "
                                        "mix:3g32,6g32,avg=3.5 | plan.toml (see docs/die-format.md)"),
               output: Path = typer.Option(..., "-o", "--output", help="die directory to write (NAME.die)"),
               calib: Optional[Path] = typer.Option(None, "--calib", help="calibration text (default: the checkpoint's "
                                                    f"own {CALIBRATION_FILE} if it ships one, else the last "
                                                    f"{DEFAULT_CALIBRATION_DOCUMENTS} stories of the bundled text)"),
               calib_tokens: int = typer.Option(16384, "--calib-tokens", help="calibration tokens at most"),
               sensitivity_tokens: int = typer.Option(2048, "--sensitivity-tokens",
                                                      help="tokens for a mixed plan's sensitivity measurement"),
               activations: Optional[str] = typer.Option(None, "--activations", help="int8 (default) | int16"),
               force: bool = typer.Option(False, "--force", help="replace an existing die")):
        """Quantize a model by a plan into a die (a directory written atomically)."""
        from hardwire.freeze.freezer import freeze as run_freeze
        from hardwire.freeze.plan import check_budget, parse_plan
        from hardwire.model.load import load

        parsed = parse_plan(plan, activations)
        with load(model) as opened:
            check_budget(parsed, opened.spec)
            calibration = load_calibration(opened, calib, calib_tokens)
            steps = opened.spec.layers + 3 + (opened.spec.layers if parsed.is_mixed else 0)
            with progress_bar("freezing", steps) as advance:
                die = run_freeze(opened, parsed, output, calibration, overwrite=force,
                                 sensitivity_tokens=sensitivity_tokens, progress=advance)
        totals = die.manifest["totals"]
        print(f"{die.path}  id {die.id}")
        print(f"plan {parsed.default.name}: {totals['bits_per_weight']:.3f} bits/weight in the matrices "
              f"(scales included), {totals['rom_bits']:,} ROM bits in all")

    @app.command()
    def quality(sources: Optional[List[Path]] = typer.Argument(None, help="dies or checkpoints to score "
                                                               "(default: bundled stories260K)"),
                text: Optional[Path] = typer.Option(None, "--text", help="text file (default: the bundled "
                                                    "TinyStories validation text)"),
                stories: Optional[int] = typer.Option(None, "--stories", help="score only the first N documents"),
                tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer file to encode "
                                                         "the text with (default: the die's own)"),
                float_model: Optional[Path] = typer.Option(None, "--float", help="float reference checkpoint "
                                                           "(default: the one the die was frozen from)"),
                act_quant: bool = typer.Option(False, "--act-quant", help="round matmul inputs to the die's "
                                               "calibrated activation format"),
                window: Optional[int] = typer.Option(None, "--window", help="score long documents in windows "
                                                     "of N tokens (default: the model's context)"),
                backend: str = typer.Option("float", "--backend", help="float (dequantized weights) | golden "
                                            "(the die's integer datapath)"),
                as_json: bool = typer.Option(False, "--json", help="print JSON")):
        """Perplexity, top-1 agreement and KL divergence against the float model, per die."""
        from hardwire.model.load import bundled_text_path

        if backend not in ("float", "golden"):
            raise BadConfig(f"unknown backend {backend!r}; expected float or golden", field="--backend")
        if stories is not None and stories < 1:
            raise BadConfig(f"expected a positive number of stories, got {stories}", field="--stories")
        rows, float_result = quality_rows(list(sources or []), text or bundled_text_path(), stories, tokenizer,
                                          float_model, act_quant, window, backend)
        if as_json:
            print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        else:
            print_quality(rows, float_result)
