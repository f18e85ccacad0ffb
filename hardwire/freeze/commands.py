"""`hardwire inspect` (a checkpoint or a die: freeze's input or its output) and `hardwire freeze`."""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

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


def load_calibration(model, calib: Optional[Path], tokens: int, calib_ids: Optional[Path] = None):
    """The calibration sequences and what the die records of them: token ids from `calib_ids`, or
    the text `calib` (default: `default_calibration_text`) encoded by the model's tokenizer."""
    from hardwire.freeze.calibrate import limit_sequences
    from hardwire.freeze.freezer import Calibration
    from hardwire.model.load import bundled_text_path
    from hardwire.model.text import read_id_sequences, read_sequences

    if calib is not None and calib_ids is not None:
        raise BadConfig("give calibration either as text (--calib) or as token ids (--calib-ids), not both",
                        field="--calib-ids")
    limit = None
    if calib_ids is not None:
        path = calib_ids
        sequences = read_id_sequences(path, model.spec.vocab_size, window=model.spec.max_context)
    else:
        path = calib or default_calibration_text(model)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise BadConfig("the model has no tokenizer, so calibration text cannot be encoded; give "
                            "--tokenizer FILE, or token ids with --calib-ids FILE", path=path)
        # Of the bundled stories, the last ones (scoring reads from the front); anything else, all of it.
        limit = DEFAULT_CALIBRATION_DOCUMENTS if calib is None and path == bundled_text_path() else None
        sequences = read_sequences(path, tokenizer, limit=limit, from_end=limit is not None,
                                   window=model.spec.max_context)
    sequences = limit_sequences(sequences, tokens)
    description = {"source": path.name,                    # the text is identified by its sha256, not its location
                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                   "documents": f"last {limit}" if limit else "all"}
    if calib_ids is not None:
        description["kind"] = "token ids"
    return Calibration(sequences, description)


class PhaseClock:
    """Seconds spent in each phase of a freeze (`freeze --profile`), from the freezer's progress
    calls: each call ends the phase it names ("layer 3" counts toward "layers")."""

    PHASES = {"embed": "embedding", "head": "head", "golden tables": "golden tables (a float pass over the "
              "calibration text)", "sensitivity": "sensitivity (mixed plans)"}

    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self, what: str | None) -> None:
        now = time.perf_counter()
        phase = "layers (quantization and calibration passes)" if str(what).startswith("layer ") \
            else self.PHASES.get(what, what or "other")
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def summary(self) -> str:
        parts = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items())
        return f"freeze took {self.last - self.started:.1f} s: {parts}"


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
        "transforms": manifest.get("transforms"),
        "totals": manifest["totals"], "rom_bits": manifest["totals"]["rom_bits"],
        "tensors": tensors,
    }


def print_die(die) -> None:
    from rich.table import Table

    from hardwire.console import show

    info = describe_die(die)
    totals = info["totals"]
    table = Table(title=f"{die.path.name}  id {die.id[:16]}  plan {info['plan']['default']}")
    for column in ("tensor", "shape", "format", "method", "ROM bits", "bits/weight"):
        table.add_column(column, justify="right" if column in ("ROM bits", "bits/weight") else "left")
    for name, row in info["tensors"].items():
        table.add_row(name, "×".join(map(str, row["shape"])), row["format"], row.get("method", ""),
                      f"{row['rom_bits']:,}", f"{row['bits_per_weight']:.3f}")
    show(table,
         f"matrices: {totals['matrix_weights']:,} weights, {totals['matrix_rom_bits']:,} bits "
         f"({totals['bits_per_weight']:.3f} bits/weight incl. scales, "
         f"{totals['code_bits_per_weight']:.3f} code bits/weight)",
         f"total ROM: {totals['rom_bits']:,} bits ({totals['rom_bits'] / 8 / 1024:,.1f} KiB); "
         f"activations {info['activations']['format']}")


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(model: Optional[Path] = typer.Argument(None, help="checkpoint or die (default: bundled stories260K)"),
                as_json: bool = typer.Option(False, "--json", help="print JSON")):
        """Show a checkpoint's or die's shape, parameter count and storage."""
        from hardwire.die import is_die, open_die
        if is_die(model):
            die = open_die(model)
            if as_json:
                print(json.dumps(describe_die(die), indent=2))
            else:
                print_die(die)
            return
        from hardwire.model.describe import describe_model, print_model
        from hardwire.model.load import load
        with load(model) as opened:
            info = describe_model(opened)
        if as_json:
            print(json.dumps(info, indent=2))
        else:
            print_model(info)

    @app.command()
    def freeze(model: Optional[Path] = typer.Argument(None, help="checkpoint (default: bundled stories260K)"),
               plan: str = typer.Option(..., "--plan", help="w8 | w4g32 | w3g32a | w4g32:gptq | w4g32:best | "
                                        "w3g32:rot+gptq | mix:3g32,6g32,avg=3.5 | plan.toml "
                                        "(see docs/die-format.md)"),
               output: Path = typer.Option(..., "-o", "--output", help="die directory to write (NAME.die)"),
               calib: Optional[Path] = typer.Option(None, "--calib", help="calibration text (default: the checkpoint's "
                                                    f"own {CALIBRATION_FILE} if it ships one, else the last "
                                                    f"{DEFAULT_CALIBRATION_DOCUMENTS} stories of the bundled text)"),
               calib_ids: Optional[Path] = typer.Option(None, "--calib-ids", help="calibration as token ids: one "
                                                        "sequence per line, ids separated by commas or spaces "
                                                        "(for a checkpoint without a tokenizer)"),
               tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer file for a checkpoint "
                                                        "that has none (or to replace its own); copied into the die"),
               calib_tokens: int = typer.Option(16384, "--calib-tokens", help="calibration tokens at most"),
               sensitivity_tokens: int = typer.Option(2048, "--sensitivity-tokens",
                                                      help="tokens for a mixed plan's sensitivity measurement"),
               activations: Optional[str] = typer.Option(None, "--activations", help="int8 (default) | int16"),
               force: bool = typer.Option(False, "--force", help="replace an existing die"),
               profile: bool = typer.Option(False, "--profile", help="print where the time went, by phase "
                                                                      "(on stderr)")):
        """Quantize a model by a plan into a die (a directory written atomically).

        \b
        Plans (--plan):
          w8                     8-bit codes, one fp16 scale per output row
          w4g32                  4-bit, one scale per 32 input columns
          w3g32a                 asymmetric: also a 3-bit zero point per group
          w3g64-e4m4             scales in the 8-bit e4m4 small float (fp16, bf16, e4m4)
          w4g32:gptq             GPTQ instead of round-to-nearest (rtn)
          w3g32:rot+gptq         methods joined by +: rot (rotate the residual stream), awq
                                 (activation-aware channel scales), had (online Hadamard
                                 transform of the w_down input), clip (search each group's
                                 range), then rtn or gptq, then learn (learned
                                 rounding); applied in that order
          w4g32:best             the recommended combination (awq+clip+gptq+learn)
          mix:3g32,6g32,avg=3.5  per matrix, the format that buys the most quality per bit,
                                 averaging 3.5 bits per weight
          plan.toml, plan.json   default = PLAN, overrides = {"layers.*.w_down" = FORMAT},
                                 activations = "int8" | "int16"
        \b
        Formats w<bits>[g<group>][a][-<scale>]: bits 2..8, group 16..256 input columns
        (none: one scale per row). Storage per weight = bits + (scale bits, plus bits when
        asymmetric) / group, plus 32 bits per tensor for e4m4:
          w8 8 + 16/columns   w4g32 4.50   w4g32a 4.63   w4g32-e4m4 4.25
          w3g32 3.50          w3g32a 3.59  w3g64-e4m4 3.13  w2g16 3.00
        """
        from hardwire.freeze.freezer import freeze as run_freeze
        from hardwire.freeze.plan import check_budget, parse_plan
        from hardwire.model.load import load

        clock = PhaseClock()
        parsed = parse_plan(plan, activations)
        with load(model, tokenizer=tokenizer) as opened:
            check_budget(parsed, opened.spec)
            clock.mark("load")
            calibration = load_calibration(opened, calib, calib_tokens, calib_ids)
            clock.mark("calibration text")
            steps = opened.spec.layers + 3 + (opened.spec.layers if parsed.is_mixed else 0)
            with progress_bar("freezing", steps) as advance:
                def step(what=None):
                    clock.mark(what)
                    advance(what)
                die = run_freeze(opened, parsed, output, calibration, overwrite=force,
                                 sensitivity_tokens=sensitivity_tokens, progress=step)
            clock.mark("hashing and writing")
        if profile:
            print(f"hardwire: {clock.summary()}", file=sys.stderr)
        totals = die.manifest["totals"]
        print(f"{die.path}  id {die.id}")
        print(f"plan {parsed.default.name}: {totals['bits_per_weight']:.3f} bits/weight in the matrices "
              f"(scales included), {totals['rom_bits']:,} ROM bits in all")
