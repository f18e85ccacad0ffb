"""`hardwire patch train` and `hardwire patch inspect`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hardwire.errors import BadConfig

DEFAULT_CHIP = "hc1"


def open_die_for_patch(die_path: Path):
    from hardwire.die import is_die, open_die
    if not is_die(die_path):
        raise BadConfig("a patch is trained against a frozen die; freeze the model first "
                        "(hardwire freeze MODEL --plan w8 -o NAME.die)", path=die_path, field="DIE")
    return open_die(die_path)


def train_patch(die_path: Path, data: Path, output: Path, options, name: str | None = None,
                plot: Path | None = None, force: bool = False, keep: Path | None = None):
    """Train, convert to integers and write the patch; returns (patch, TrainResult)."""
    from hardwire.adapters import save_patch
    from hardwire.golden.adapter import row_ratios
    from hardwire.golden.tables import tables_for
    from hardwire.patch.quantize import integer_adapter
    from hardwire.patch.train import check_options, data_digest, inner_ranges, plot_losses, read_examples, train_lora
    from hardwire.progress import progress_bar

    if output.exists() and not force:
        raise BadConfig("already exists; choose another name or pass --force to replace it", path=output)
    if not output.parent.is_dir():
        raise BadConfig("the parent directory does not exist", path=output)
    die = open_die_for_patch(die_path)
    check_options(die, options)
    tables = tables_for(die)
    examples = read_examples(data, die.tokenizer, die.spec.bos_id, die.spec.max_context)
    kept = read_examples(keep, die.tokenizer, die.spec.bos_id, die.spec.max_context, "--keep") if keep else None
    activation_bits = int(tables["activation_bits"][0])
    with progress_bar("training the patch", options.steps) as advance:
        result = train_lora(die, examples, options, activation_bits, advance, keep=kept)
    ranges = inner_ranges(die, tables, result.adapters, [e.ids for e in examples + (kept or [])])
    adapters = {target: integer_adapter(target, a, b, row_ratios(die, tables, target), ranges[target])
                for target, (a, b) in result.adapters.items()}
    fields = {"name": name or output.stem, "die": die.manifest.get("name") or die_path.name,
              "training": {"data_sha256": data_digest(data), "examples": len(examples), "steps": options.steps,
                           "lr": options.lr, "seed": options.seed, "batch": options.batch,
                           "alpha": options.alpha if options.alpha is not None else options.rank,
                           "keep_sha256": data_digest(keep) if keep else None,
                           "keep_examples": len(kept) if kept else 0, "keep_weight": options.keep_weight,
                           "first_loss": round(result.losses[0], 6), "final_loss": round(result.losses[-1], 6),
                           "seconds": round(result.seconds, 1), "threads": options.threads}}
    patch = save_patch(output, die.id, adapters, fields)
    if plot is not None:
        plot_losses(result.losses, plot, f"patch {patch.name} on {die_path.name}")
    return patch, result


def summarize_targets(targets: list[str]) -> str:
    """"wq, wv in layers 0-4" rather than every layer's name."""
    from hardwire.adapters import split_target
    layers: dict[str, list[int]] = {}
    for target in targets:
        layer, short = split_target(target)
        layers.setdefault(short, []).append(layer)
    parts = []
    for short, found in layers.items():
        found = sorted(found)
        span = (f"{found[0]}-{found[-1]}" if found == list(range(found[0], found[-1] + 1)) and len(found) > 1
                else ",".join(map(str, found)))
        parts.append(f"{short} (layers {span})")
    return f"{len(targets)} adapters: " + "; ".join(parts)


def describe(patch, chip_name: str) -> dict:
    """What `patch inspect --json` prints: the manifest's facts, the footprint and the chip check."""
    from hardwire.chip.arch import load_chip
    chip = load_chip(chip_name)
    m = patch.manifest
    return {"id": patch.id, "name": patch.name, "die_id": patch.die_id, "rank": m["rank"],
            "targets": m["targets"], "formats": m["formats"], "sram_bits": patch.sram_bits(),
            "sram_mib": patch.sram_mib(), "chip": chip.name, "chip_lora_sram_mib": chip.lora_sram_mib,
            "fits": patch.sram_mib() <= chip.lora_sram_mib, "training": m.get("training")}


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True, help="LoRA patches in the chip's adapter SRAM: train, inspect.")
    app.add_typer(group, name="patch")

    @group.command("train")
    def train(die: Path = typer.Argument(..., help="the frozen die the patch is for"),
              data: Path = typer.Option(..., "--data", help='JSONL: {"prompt", "completion"} or {"text"} per line'),
              keep: Optional[Path] = typer.Option(None, "--keep", help="JSONL of text whose predictions the patch "
                                                  "should leave as the die makes them (a KL term)"),
              keep_weight: float = typer.Option(1.0, "--keep-weight", help="weight of the --keep KL term"),
              output: Path = typer.Option(..., "-o", "--output", help="NAME.patch to write"),
              rank: int = typer.Option(8, "--rank", help="adapter rank"),
              targets: str = typer.Option("wq,wv,w_up,w_down", "--targets",
                                          help="matrices to adapt in every layer: wq,wk,wv,wo,w_gate,w_up,w_down"),
              steps: int = typer.Option(300, "--steps"),
              lr: float = typer.Option(3e-3, "--lr"),
              seed: int = typer.Option(0, "--seed"),
              batch: int = typer.Option(16, "--batch", help="examples per step"),
              threads: int = typer.Option(1, "--threads", min=1, help="torch threads"),
              plot: Optional[Path] = typer.Option(None, "--plot", help="loss curve PNG"),
              force: bool = typer.Option(False, "--force", help="replace an existing patch"),
              as_json: bool = typer.Option(False, "--json")):
        """Train a LoRA patch against the die's exact weights and the chip's input quantization."""
        from hardwire.adapters import parse_targets
        from hardwire.patch.train import TrainOptions
        options = TrainOptions(rank=rank, targets=parse_targets(targets), steps=steps, lr=lr, seed=seed,
                               batch=batch, threads=threads, keep_weight=keep_weight)
        patch, result = train_patch(die, data, output, options, plot=plot, force=force, keep=keep)
        info = describe(patch, DEFAULT_CHIP)
        if as_json:
            print(json.dumps({**info, "path": str(output)}))
        else:
            print(f"wrote {output}: patch {patch.id[:16]} for die {patch.die_id[:16]}, rank {rank}, "
                  f"{len(patch.adapters)} adapters, {info['sram_mib'] * 1024:.1f} KiB of adapter SRAM; "
                  f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} in {result.seconds:.0f} s")

    @group.command("eval")
    def evaluate(die: Path = typer.Argument(..., help="the die the patch is for"),
                 patch_path: Path = typer.Argument(..., help="NAME.patch"),
                 prompts: Path = typer.Option(..., "--prompts", help='held-out prompts: JSONL {"prompt"} or lines'),
                 word: str = typer.Option(..., "--word", help="the word whose rate in completions is measured"),
                 max_tokens: int = typer.Option(16, "-n", "--max-tokens", min=1),
                 first_words: Optional[int] = typer.Option(None, "--first-words", min=1,
                                                           help="look for the word only in the first N words"),
                 text: Optional[Path] = typer.Option(None, "--text", help="perplexity text (default: the bundled "
                                                     "TinyStories validation text)"),
                 stories: int = typer.Option(200, "--stories", min=0, help="documents of --text scored (0: skip)"),
                 as_json: bool = typer.Option(False, "--json")):
        """Greedy completions' rate of --word and perplexity, before and after the patch (golden backend)."""
        from hardwire.adapters import open_patch
        from hardwire.model.load import bundled_text_path
        from hardwire.model.text import read_sequences
        from hardwire.patch.evaluate import evaluate_patch, read_prompts
        from hardwire.progress import progress_bar
        opened = open_die_for_patch(die)
        patch = open_patch(patch_path)
        patch.check_die(opened)
        prompt_list = read_prompts(prompts)
        sequences = (read_sequences(text or bundled_text_path(), opened.tokenizer, limit=stories,
                                    window=opened.spec.max_context) if stories else [])
        with progress_bar("evaluating the patch", 4) as advance:
            result = evaluate_patch(opened, patch, prompt_list, word, max_tokens, first_words, sequences, advance)
        if as_json:
            print(json.dumps(result))
            return
        b, a = result["before"], result["after"]
        print(f"{word!r} in greedy completions of {b['prompts']} prompts: {b['rate']:.1%} before, "
              f"{a['rate']:.1%} after the patch")
        if b["perplexity"] is not None:
            print(f"perplexity on {result['text_sequences']} documents ({result['text_tokens']:,} tokens): "
                  f"{b['perplexity']:.4f} before, {a['perplexity']:.4f} after ({result['perplexity_change']:+.2%})")
        for before, after in zip(result["examples"]["before"], result["examples"]["after"]):
            print(f"  {before['prompt']!r}\n    before: {before['completion']!r}\n    after:  {after['completion']!r}")

    @group.command("inspect")
    def inspect(patch_path: Path = typer.Argument(..., help="NAME.patch"),
                die: Optional[Path] = typer.Option(None, "--die", help="also check it against this die"),
                chip: str = typer.Option(DEFAULT_CHIP, "--chip", help="chip whose LoRA SRAM it must fit"),
                as_json: bool = typer.Option(False, "--json")):
        """Print a patch's die, rank, targets, formats and SRAM footprint, and whether it fits the chip."""
        from hardwire.adapters import open_patch
        patch = open_patch(patch_path)
        if die is not None:
            patch.check_die(open_die_for_patch(die))
        info = describe(patch, chip)
        if as_json:
            print(json.dumps(info))
            return
        from hardwire.console import show
        from rich.table import Table
        table = Table(title=f"patch {patch_path.name}")
        table.add_column("field")
        table.add_column("value")
        for key in ("id", "name", "die_id", "rank"):
            table.add_row(key, str(info[key]))
        table.add_row("targets", summarize_targets(info["targets"]))
        f = info["formats"]
        table.add_row("formats", f"A, B int{f['codes_bits']}; t' int{f['inner_bits']}; a_mult u{f['a_mult_bits']}, "
                                 f"b_mult u{f['b_mult_bits']}")
        table.add_row("SRAM", f"{info['sram_bits']:,} bits = {info['sram_mib'] * 1024:,.2f} KiB")
        table.add_row(f"fits {info['chip']}?", f"{'yes' if info['fits'] else 'NO'} "
                                               f"({info['chip_lora_sram_mib']:g} MiB of LoRA SRAM)")
        training = info.get("training") or {}
        if training:
            table.add_row("training", f"{training.get('examples')} examples, {training.get('steps')} steps, "
                                      f"lr {training.get('lr')}, seed {training.get('seed')}, loss "
                                      f"{training.get('first_loss')} -> {training.get('final_loss')}, "
                                      f"{training.get('seconds')} s")
        show(table)
