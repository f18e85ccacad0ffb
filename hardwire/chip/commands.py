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


def resolve_chip(chip: Optional[str], node: Optional[str], weight_bits: Optional[int], clock_ghz: Optional[float],
                 die_bits: Optional[dict[int, int]], spec: Optional[ModelSpec] = None, users: Optional[int] = None,
                 context: Optional[int] = None):
    """The chip to estimate on: a preset or file, or (`fit`, the default for a model that is not the
    template's) the template sized for `spec` with KV SRAM for `users` at `context`."""
    from hardwire.chip.arch import load_chip
    from hardwire.chip.fit import DEFAULT_USERS, default_chip, fit_chip
    if chip is None:
        chip = default_chip(spec) if spec is not None else "hc1"
    if chip.lower() == "fit":
        if spec is None:
            raise BadConfig("the fit chip is sized for a model; give one", field="chip")
        config = fit_chip(spec, users=users or DEFAULT_USERS, context=context)
    else:
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


def patch_adapters(patch: Optional[Path], model: Optional[str], config):
    """The adapter blocks that run `patch` on `config` (its rank, its matrices in every layer, as many
    elements a cycle as keep each pass within weights_per_lane), after checking it fits the chip's
    LoRA SRAM and, when MODEL is a die, that it belongs to it; none without a patch."""
    from hardwire.datapath import NO_ADAPTERS, AdapterDesign
    if patch is None:
        return NO_ADAPTERS
    from hardwire.adapters import open_patch
    from hardwire.die import is_die, open_die
    opened = open_patch(patch)
    if is_die(model):
        opened.check_die(open_die(model))
    opened.check_sram(config.name, config.lora_sram_mib)
    return AdapterDesign.for_patch(opened, per_cycle=None)


def fit_report(config, result) -> dict:
    """For a fit chip, what the model drove (the rest is the template's)."""
    if config.name != "fit":
        return {}
    from hardwire.chip.fit import TEMPLATE_CHIP
    return {"fit": {"template": TEMPLATE_CHIP, "users": result.max_users, "context": result.context,
                    "kv_sram_mib": config.kv_sram_mib, "lora_sram_mib": config.lora_sram_mib,
                    "io_mm2": config.io_mm2}}


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
    if "fit" in result:
        fit = result["fit"]
        rows.append(("sized for the model", f"{fit['users']} users at context {fit['context']:,}: "
                     f"KV {fit['kv_sram_mib']:,.2f} MiB, LoRA {fit['lora_sram_mib']:,.2f} MiB, "
                     f"I/O {fit['io_mm2']:g} mm²; the rest is {fit['template']}'s"))
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
    save_plot(fig, path)


def save_plot(fig, path) -> None:
    """Write a figure as PNG and close it; a path that cannot be written is a clean error."""
    import matplotlib.pyplot as plt

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


def print_economics(label: str, result: dict) -> None:
    from rich.table import Table

    from hardwire.console import show

    def usd(value: float) -> str:
        return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.4f}"

    table = Table(title=f"{label}: {result['chip']} ({result['node']}) vs {result['gpu']} ({result['precision']}), "
                        f"{result['load_tokens_per_s']:,.0f} tokens/s for {result['months']:g} months, "
                        f"{result['updates_per_year']:g} model updates a year")
    table.add_column("quantity")
    table.add_column("chip", justify="right")
    table.add_column("GPU", justify="right")
    breakeven = result["break_even_months"]
    rows = [
        ("units for the load", f"{result['chips']:,} chips ({result['chips_per_model']} per model copy)",
         f"{result['gpus']:,} GPUs ({result['gpus_per_replica']} per replica)"),
        ("tokens/s per user", f"{result['chip_tokens_per_s_per_user']:,.0f}", f"{result['tokens_per_s_per_user']:,.0f}"),
        ("tokens/s per model copy", f"{result['chip_tokens_per_s_per_model']:,.0f}",
         f"{result['aggregate_tokens_per_s_per_replica']:,.0f}  (batch {result['batch']}, {result['bound']}-bound)"),
        ("NRE: design + full mask set", usd(result["design_usd"] + result["mask_set_usd"]), "-"),
        ("NRE: per model update", f"{usd(result['respin_usd'])}  ({result['weight_masks']} weight masks)", "-"),
        ("NRE over the deployment", usd(result["nre_usd"]), "-"),
        ("die cost / yield", f"{usd(result['die_cost_usd'])} / {result['yield']:.0%}", usd(result["gpu_price_usd"])),
        ("hardware per model generation", usd(result["hardware_per_generation_usd"]), "-"),
        ("power at load", f"{result['chip_power_w']:,.0f} W", f"{result['gpu_power_w']:,.0f} W"),
        ("cost over the deployment", usd(result["chip_cost_usd"]), usd(result["gpu_cost_usd"])),
        ("cost per million tokens", usd(result["chip_cost_per_mtok_usd"]), usd(result["gpu_cost_per_mtok_usd"])),
        ("GPU cost / chip cost", f"{result['cost_ratio']:.3g}×", ""),
        ("chip pays off after", "never" if breakeven is None else f"{breakeven:,.1f} months", ""),
    ]
    for row in rows:
        table.add_row(*row)
    show(table)


def plot_economics(path: str, result, label: str) -> None:
    """Cumulative cost of both fleets over months, the break-even marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    breakeven = result.break_even_months
    horizon = max(result.deployment.months, breakeven or 0) * 1.5
    months = [horizon * i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(months, [result.chip_fleet.cost_usd(m) / 1e6 for m in months],
            label=f"{result.estimate.chip.name}: {result.chips:,} chips")
    ax.plot(months, [result.gpu_fleet.cost_usd(m) / 1e6 for m in months],
            label=f"{result.gpu_serving.gpu.name}: {result.gpus:,} GPUs")
    if breakeven is not None:
        ax.axvline(breakeven, color="grey", linestyle=":", label=f"break-even {breakeven:,.1f} months")
    ax.axvline(result.deployment.months, color="black", alpha=0.3, label="deployment")
    ax.set_xlabel("months")
    ax.set_ylabel("cumulative cost, $M")
    ax.set_title(f"{label}: {result.deployment.load_tokens_per_s:,.0f} tok/s, "
                 f"{result.deployment.updates_per_year:g} updates/year")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_plot(fig, path)


def register(app: typer.Typer) -> None:
    @app.command()
    def estimate(
        model: Optional[str] = typer.Argument(None, help="checkpoint or die (default: the bundled model)"),
        preset: Optional[str] = typer.Option(None, "--preset", help="a published model shape, e.g. llama-3.1-8b"),
        chip: Optional[str] = typer.Option(None, "--chip", help="chip TOML file or preset name, or fit (default: "
                                           "hc1 for Llama 3.1 8B, else fit: hc1 sized for the model)"),
        node: Optional[str] = typer.Option(None, "--node", help="process node: N16, N7, N6, N5, N3"),
        weight_bits: Optional[int] = typer.Option(None, "--weight-bits", help="override the chip's weight format"),
        clock_ghz: Optional[float] = typer.Option(None, "--clock-ghz", help="override the chip's clock"),
        context: Optional[int] = typer.Option(None, "--context", help="cached positions per user while decoding "
                                              "(default: the chip file's default_context, else 1024; at most the model's maximum)"),
        prompt_tokens: int = typer.Option(1024, "--prompt-tokens", help="prompt length for time to first token"),
        users: Optional[int] = typer.Option(None, "--users", help="load for power and cost (default: KV-bound maximum)"),
        simulate: bool = typer.Option(False, "--simulate", help="also run the cycle-level pipeline simulator"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
        plot_path: Optional[str] = typer.Option(None, "--plot", help="write area and latency plots (PNG)"),
        list_presets: bool = typer.Option(False, "--list", help="list the model presets and chips, then exit"),
        patch: Optional[Path] = typer.Option(None, "--patch", help="a patch (hardwire patch train): add the cycles, "
                                             "lanes and energy of its low-rank adapter blocks; it must fit the chip's "
                                             "LoRA SRAM"),
    ):
        """Estimate the chip a model would be: area, transistors, power, speed, users, cost."""
        from hardwire.chip.estimate import estimate as run_estimate

        if list_presets:
            print_presets(as_json)
            return

        from hardwire.chip.fit import check_context, default_context

        label, spec, die_bits = resolve_spec(model, preset)
        context = default_context(spec, chip) if context is None else context
        check_context(spec, context)
        config = resolve_chip(chip, node, weight_bits, clock_ghz, die_bits, spec=spec, users=users, context=context)
        adapters = patch_adapters(patch, model, config)
        result = run_estimate(spec, config, context=context, prompt_tokens=prompt_tokens, users=users,
                              adapters=adapters)
        out = {"model": label, **result.to_json(), **fit_report(config, result)}
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

    @app.command()
    def economics(
        model: Optional[str] = typer.Argument(None, help="checkpoint or die (default: the bundled model)"),
        preset: Optional[str] = typer.Option(None, "--preset", help="a published model shape, e.g. llama-3.1-8b"),
        chip: Optional[str] = typer.Option(None, "--chip", help="chip TOML file or preset name, or fit (default: "
                                           "hc1 for Llama 3.1 8B, else fit)"),
        gpu: str = typer.Option("h100", "--gpu", help="the GPU to compare with: h100, h200, b200"),
        load: float = typer.Option(1_000_000.0, "--load", help="aggregate tokens/s to serve"),
        months: float = typer.Option(36.0, "--months", help="months the deployment lasts"),
        updates_per_year: float = typer.Option(1.0, "--updates-per-year", help="model updates a year (each re-spins the chip)"),
        context: Optional[int] = typer.Option(None, "--context", help="cached positions per user while decoding "
                                              "(default: the chip file's default_context, else 1024; at most the model's maximum)"),
        users: Optional[int] = typer.Option(None, "--users", help="users per model copy the fit chip's KV SRAM "
                                            "holds (default 4)"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
        plot_path: Optional[str] = typer.Option(None, "--plot", help="write cumulative cost vs months (PNG)"),
    ):
        """Cost of serving a model on chips that hold it against GPUs: NRE, fleets, $/Mtok, break-even."""
        from hardwire.chip.economics import Deployment
        from hardwire.chip.economics import economics as run_economics
        from hardwire.chip.estimate import estimate as run_estimate
        from hardwire.chip.gpus import gpu as named_gpu

        deployment = Deployment(load_tokens_per_s=load, months=months, updates_per_year=updates_per_year)
        gpu_ = named_gpu(gpu)
        from hardwire.chip.fit import check_context, default_context

        label, spec, die_bits = resolve_spec(model, preset)
        context = default_context(spec, chip) if context is None else context
        check_context(spec, context)
        config = resolve_chip(chip, None, None, None, die_bits, spec=spec, users=users, context=context)
        result = run_economics(run_estimate(spec, config, context=context), gpu_, deployment)
        out = {"model": label, **result.to_json()}
        if plot_path:
            plot_economics(plot_path, result, label)
        if as_json:
            typer.echo(json.dumps(out, indent=2))
        else:
            print_economics(label, out)
