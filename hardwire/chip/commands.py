"""`hardwire estimate`: what chip would this model be?"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec


def resolve_spec(model: Optional[str], preset: Optional[str]) -> tuple[str, ModelSpec, Optional[dict[int, int]]]:
    """(label, spec, the die's weight formats or None) from a preset, a die or a checkpoint."""
    if preset and model:
        raise BadConfig("give either MODEL or --preset, not both", field="preset")
    if preset:
        from hardwire.chip.presets import model_preset
        return preset, model_preset(preset), None
    from hardwire.die import is_die, open_die
    if is_die(model):
        die = open_die(model)
        return model, die.spec, die_weight_formats(die)
    from hardwire.model.load import load
    with load(model) as opened:
        return model or "stories260K (bundled)", opened.spec, None


def die_weight_formats(die) -> Optional[dict[int, int]]:
    """{bits: weights} over the die's quantized matrices (from its manifest), or None if unknown."""
    counts: dict[int, int] = {}
    for entry in getattr(die, "manifest", {}).get("tensors", {}).values():
        if entry.get("kind") == "quantized" and "format" in entry:
            bits = int(entry["format"]["bits"])
            counts[bits] = counts.get(bits, 0) + int(math.prod(entry["shape"]))
    return counts or None


def resolve_chip(chip: str, node: Optional[str], weight_bits: Optional[int], clock_ghz: Optional[float],
                 die_bits: Optional[dict[int, int]]):
    from hardwire.chip.arch import load_chip
    config = load_chip(chip)
    changes = {}
    if node:
        changes["node"] = node.upper()
    if weight_bits is not None:
        changes.update(weight_bits=weight_bits, high_precision_bits=0, high_precision_fraction=0.0)
    elif die_bits:
        # the die's own formats: the narrowest is the base, the widest the high-precision share
        base, wide, total = min(die_bits), max(die_bits), sum(die_bits.values())
        changes.update(weight_bits=base, high_precision_bits=wide if wide > base else 0,
                       high_precision_fraction=(total - die_bits[base]) / total if wide > base else 0.0)
    if clock_ghz is not None:
        changes["clock_ghz"] = clock_ghz
    return config.replace(**changes) if changes else config


def print_table(label: str, result: dict) -> None:
    from rich.table import Table

    from hardwire.console import show

    table = Table(title=f"{label} on {result['chip']} ({result['node']}, {result['weight_style']}, "
                        f"{result['mean_weight_bits']:.2f}-bit weights, {result['clock_ghz']:g} GHz)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        ("tokens/s per user", f"{result['tokens_per_s']:,.0f}  at context {result['context']:,}"),
        ("latency per token", f"{result['latency_us_per_token']:,.2f} µs"),
        ("time to first token", f"{result['ttft_ms']:,.3f} ms  for {result['prompt_tokens']:,} prompt tokens"),
        ("chips", f"{result['chips']}" + ("" if result["fits_reticle"] else "  (a layer exceeds the reticle)")),
        ("area", f"{result['area_mm2']:,.0f} mm²"),
        ("transistors", f"{result['transistors'] / 1e9:,.1f} B"),
        ("max users (KV SRAM)", f"{result['max_users']:,}"),
        ("power at load", f"{result['power_w']:,.0f} W  ({result['load_users']} users, "
                          f"{result['aggregate_tokens_per_s']:,.0f} tok/s)"),
        ("power, one user", f"{result['power_w_single_user']:,.0f} W"),
        ("energy per token", f"{result['energy_per_token_j'] * 1e3:,.3f} mJ"),
        ("yield / die cost", f"{result['yield']:.0%} / ${result['die_cost_usd']:,.0f}"),
        ("cost per million tokens", f"${result['cost_per_mtok_usd']:.6f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    table.add_section()
    for key, area in result["area_breakdown_mm2"].items():
        table.add_row(f"  area: {key}", f"{area:,.1f} mm²")
    show(table)


def plot(path: str, estimate, label: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    breakdown = estimate.area_breakdown_mm2()
    contexts = sorted({1, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, estimate.context})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.barh(list(breakdown), list(breakdown.values()), color="tab:blue")
    left.set_xlabel("area, mm²")
    left.set_title(f"area: {estimate.area_mm2:,.0f} mm² on {estimate.partition.chips} chip(s)")
    left.invert_yaxis()
    right.plot(contexts, [estimate.latency_us_at(c) for c in contexts], marker="o")
    right.set_xscale("log", base=2)
    right.set_xlabel("context (positions)")
    right.set_ylabel("latency per token, µs")
    right.set_title("decode latency vs context")
    right.grid(alpha=0.3)
    fig.suptitle(f"{label} on {estimate.chip.name} ({estimate.chip.node})")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise BadConfig(f"cannot write the plot: {e.strerror}", path=path) from None
    finally:
        plt.close(fig)


def print_presets(as_json: bool) -> None:
    """`estimate --list`: the model shapes `--preset` takes and the chips `--chip` takes by name."""
    from hardwire.chip.arch import CHIPS_DIR, load_chip
    from hardwire.chip.presets import MODEL_PRESETS

    presets = {name: {"parameters": spec.parameter_count(), "layers": spec.layers, "hidden_dim": spec.hidden_dim,
                      "vocab_size": spec.vocab_size} for name, spec in MODEL_PRESETS.items()}
    chips = {}
    for path in sorted(CHIPS_DIR.glob("*.toml")):
        chip = load_chip(path)
        chips[path.stem] = {"node": chip.node, "weight_style": chip.weight_style, "weight_bits": chip.weight_bits,
                            "clock_ghz": chip.clock_ghz}
    if as_json:
        typer.echo(json.dumps({"presets": presets, "chips": chips}, indent=2))
        return
    from rich.table import Table

    from hardwire.console import show
    models = Table(title="model presets (--preset NAME)")
    for column in ("name", "parameters", "layers", "hidden", "vocab"):
        models.add_column(column, justify="left" if column == "name" else "right")
    for name, row in presets.items():
        models.add_row(name, f"{row['parameters']:,}", str(row["layers"]), str(row["hidden_dim"]),
                       f"{row['vocab_size']:,}")
    chip_table = Table(title="chips (--chip NAME, or a TOML file like them)")
    for column in ("name", "node", "weights", "bits", "clock GHz"):
        chip_table.add_column(column)
    for name, row in chips.items():
        chip_table.add_row(name, row["node"], row["weight_style"], str(row["weight_bits"]), f"{row['clock_ghz']:g}")
    show(models, chip_table)


def register(app: typer.Typer) -> None:
    @app.command()
    def estimate(
        model: Optional[str] = typer.Argument(None, help="checkpoint or die (default: the bundled model)"),
        preset: Optional[str] = typer.Option(None, "--preset", help="a published model shape, e.g. llama-3.1-8b"),
        chip: str = typer.Option("hc1", "--chip", help="chip TOML file or preset name"),
        node: Optional[str] = typer.Option(None, "--node", help="process node: N16, N7, N6, N5, N3"),
        weight_bits: Optional[int] = typer.Option(None, "--weight-bits", help="override the chip's weight format"),
        clock_ghz: Optional[float] = typer.Option(None, "--clock-ghz", help="override the chip's clock"),
        context: int = typer.Option(1024, "--context", help="cached positions per user while decoding"),
        prompt_tokens: int = typer.Option(1024, "--prompt-tokens", help="prompt length for time to first token"),
        users: Optional[int] = typer.Option(None, "--users", help="load for power and cost (default: KV-bound maximum)"),
        simulate: bool = typer.Option(False, "--simulate", help="also run the cycle-level pipeline simulator"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
        plot_path: Optional[str] = typer.Option(None, "--plot", help="write area and latency plots (PNG)"),
        list_presets: bool = typer.Option(False, "--list", help="list the model presets and chips, then exit"),
    ):
        """Estimate the chip a model would be: area, transistors, power, speed, users, cost."""
        from hardwire.chip.estimate import estimate as run_estimate

        if list_presets:
            print_presets(as_json)
            return

        label, spec, die_bits = resolve_spec(model, preset)
        config = resolve_chip(chip, node, weight_bits, clock_ghz, die_bits)
        result = run_estimate(spec, config, context=context, prompt_tokens=prompt_tokens, users=users)
        out = {"model": label, **result.to_json()}
        if simulate:
            from hardwire.chip.pipeline import simulate as run_simulation
            sim = run_simulation(spec, config, users=result.load_users, context=context, tokens=16)
            out["simulated"] = sim.to_json()
        if plot_path:
            plot(plot_path, result, label)
        if as_json:
            typer.echo(json.dumps(out, indent=2))
        else:
            print_table(label, out)
