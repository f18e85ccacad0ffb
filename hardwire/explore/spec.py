"""A sweep file: which models, freeze plans and chips to combine, and what to measure at each point.

    models = ["task-small", "stories260K", "preset:llama-3.1-8b", "my.die"]
    plans = ["w8", "w4g32", "mix:3g32,6g32,avg=3.5"]      # frozen into each checkpoint
    objectives = ["ttc_median_s:min", "area_mm2:min"]     # the Pareto front's (optional)

    [chips]                  # or [[chips]], several groups; a list is an axis, a scalar is fixed
    base = "hc1"             # chip presets or TOML files
    node = ["N6", "N5", "N3"]
    weights_per_lane = [128, 256]

    [estimate]               # always measured: context, prompt_tokens, users
    [quality]                # optional: text, stories, backend
    [ttc]                    # optional: tasks, attempts, budget_s, mode, temperature, top_p, seed,
                             #   overhead_ms; accuracy and tokens for models without weights

A point is (model, plan, chip, task set). Checkpoints are frozen by every plan; dies and presets
keep their own weights (plan null). Every value is checked here, before anything runs, and a bad one
is a `BadConfig` naming its key (exit 2). docs/explore.md is the reference.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from hardwire.errors import BadConfig, HardwireError
from hardwire.tomlfile import read_toml

TOP_KEYS = ("models", "plans", "chips", "estimate", "quality", "ttc", "objectives")
ESTIMATE_KEYS = {"context": 1024, "prompt_tokens": 1024, "users": None}
QUALITY_KEYS = {"text": None, "stories": 8, "backend": "float"}
TTC_KEYS = {"tasks": None, "attempts": 16, "budget_s": None, "mode": "independent", "temperature": 1.0,
            "top_p": 1.0, "seed": 0, "overhead_ms": 0.0, "accuracy": None, "tokens": None}
PRESET_PREFIX = "preset:"

# The figures each measurement puts on a point (`hardwire estimate --json`, `hardwire quality --json`
# and `hardwire ttc --json` keys): an objective must be one of the measured ones.
ESTIMATE_FIGURES = ("tokens_per_s", "latency_us_per_token", "ttft_ms", "cycles_per_token", "area_mm2",
                    "transistors", "chips", "max_users", "load_users", "aggregate_tokens_per_s", "power_w",
                    "power_w_single_user", "energy_per_token_j", "yield", "die_cost_usd", "cost_per_mtok_usd",
                    "mean_weight_bits", "parameters")
QUALITY_FIGURES = ("perplexity", "float_perplexity", "top1_agreement", "kl_mean", "tokens", "bits_per_weight",
                   "rom_bits")
TTC_FIGURES = ("attempt_accuracy", "retry_accuracy", "solved", "mean_attempts", "tokens_per_attempt",
               "seconds_per_attempt", "ttc_median_s", "ttc_p90_s")


@dataclass(frozen=True)
class ModelEntry:
    label: str                   # as the sweep file writes it
    kind: str                    # "checkpoint" | "die" | "preset"
    source: str                  # a path, a bundled model's name or a preset's name


@dataclass(frozen=True)
class ChipEntry:
    base: str                    # a chip preset's name or a chip file's path
    overrides: tuple             # ((field, value), ...) in the sweep file's order
    varied: tuple = ()           # the fields given as lists (axes), which name the chip

    @property
    def label(self) -> str:
        return " ".join([Path(self.base).stem] + [f"{k}={v}" for k, v in self.overrides if k in self.varied])


@dataclass(frozen=True)
class Point:
    """One measured configuration; `axes` is what the output shows of it and identifies it."""
    model: ModelEntry
    plan: str | None
    chip: ChipEntry
    task_set: str | None

    @property
    def weights(self) -> tuple[str, str | None]:
        """The weights it runs: (model, plan); shared by every chip and task set."""
        return (self.model.label, self.plan)

    @property
    def axes(self) -> dict:
        return {"model": self.model.label, "plan": self.plan, "chip": self.chip.label, "chip_base": self.chip.base,
                **dict(self.chip.overrides), "task_set": self.task_set}


@dataclass
class Sweep:
    path: Path
    models: list[ModelEntry]
    plans: list[str]
    chips: list[ChipEntry]
    estimate: dict
    quality: dict | None
    ttc: dict | None
    objectives: list[str] | None
    plan_sources: dict[str, str] = field(default_factory=dict)    # plan as written -> as freeze takes it
    points: list[Point] = field(default_factory=list)

    @property
    def measured(self) -> set[str]:
        """The figures this sweep's measurements produce."""
        figures = set(ESTIMATE_FIGURES)
        if self.quality is not None:
            figures |= set(QUALITY_FIGURES)
        if self.ttc is not None:
            figures |= set(TTC_FIGURES)
        return figures

    def settings_digest(self) -> str:
        """A digest of what is measured and how: a resumed sweep reuses a point only if it matches."""
        settings = {"estimate": self.estimate, "quality": self.quality, "ttc": self.ttc}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def point_key(self, point: Point) -> str:
        identity = {**point.axes, "model_source": point.model.source, "plan_source": self.plan_sources.get(point.plan),
                    "settings": self.settings_digest()}
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def read_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    data = read_toml(path, "sweep file")
    try:
        return parse_sweep(data, path)
    except HardwireError as e:
        if e.path is None or Path(e.path) != path:       # name the sweep file first, then the key
            raise BadConfig(str(e), path=path) from None
        raise


def parse_sweep(data: dict, path: Path) -> Sweep:
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise BadConfig(f"unknown key; expected {', '.join(TOP_KEYS)}", path=path, field=unknown[0])
    folder = path.parent
    models = [model_entry(text, folder, f"models[{i}]") for i, text in enumerate(string_list(data, "models", path))]
    needs_plans = any(m.kind == "checkpoint" for m in models)
    plans = string_list(data, "plans", path, required=needs_plans)
    plan_sources = {plan: check_plan(plan, folder, path, f"plans[{i}]") for i, plan in enumerate(plans)}
    if "chips" not in data:
        raise BadConfig("missing; expected a [chips] table with base = \"hc1\" (or a chip file) and axes",
                        path=path, field="chips")
    groups = data["chips"] if isinstance(data["chips"], list) else [data["chips"]]
    if not groups:
        raise BadConfig("empty; expected at least one chip", path=path, field="chips")
    chips = []
    for i, group in enumerate(groups):
        chips += chip_entries(group, folder, path, "chips" if len(groups) == 1 else f"chips[{i}]")
    estimate = table_of(data, "estimate", ESTIMATE_KEYS, path, required=True)
    check_count(estimate, "context", 1, path, "estimate")
    check_count(estimate, "prompt_tokens", 1, path, "estimate")
    if estimate["users"] is not None:
        check_count(estimate, "users", 1, path, "estimate")
    quality = table_of(data, "quality", QUALITY_KEYS, path)
    if quality is not None:
        check_quality(quality, folder, path)
    ttc = table_of(data, "ttc", TTC_KEYS, path)
    if ttc is not None:
        check_ttc(ttc, folder, path, has_weights=any(m.kind != "preset" for m in models))
    sweep = Sweep(path, models, plans, chips, estimate, quality, ttc, None, plan_sources)
    if "objectives" in data:
        from hardwire.explore.pareto import parse_objectives
        sweep.objectives = string_list(data, "objectives", path)
        parse_objectives(",".join(sweep.objectives), sweep.measured, field="objectives", path=path)
    sweep.points = expand(sweep)
    return sweep


def expand(sweep: Sweep) -> list[Point]:
    task_sets = (sweep.ttc["tasks"] if sweep.ttc is not None else None) or [None]
    points = []
    for model in sweep.models:
        plans = sweep.plans if model.kind == "checkpoint" else [None]
        for plan, chip, task_set in itertools.product(plans, sweep.chips, task_sets):
            points.append(Point(model, plan, chip, task_set))
    return points


# -- the parts --------------------------------------------------------------------------------------

def string_list(data: dict, key: str, path: Path, required: bool = True) -> list[str]:
    if key not in data:
        if required:
            raise BadConfig("missing; expected a list of strings", path=path, field=key)
        return []
    value = data[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadConfig(f"expected a list of non-empty strings, got {value!r}", path=path, field=key)
    if not value:
        raise BadConfig("empty; expected at least one entry", path=path, field=key)
    if len(set(value)) != len(value):
        raise BadConfig("lists an entry twice", path=path, field=key)
    return value


def model_entry(text: str, folder: Path, where: str) -> ModelEntry:
    from hardwire.chip.presets import MODEL_PRESETS
    from hardwire.die import is_die
    from hardwire.model.load import BUNDLED_MODELS

    if text.lower().startswith(PRESET_PREFIX):
        name = text[len(PRESET_PREFIX):].lower()
        if name not in MODEL_PRESETS:
            raise BadConfig(f"unknown preset {name!r}; expected one of {', '.join(MODEL_PRESETS)}", field=where)
        return ModelEntry(text, "preset", name)
    local = Path(text) if Path(text).is_absolute() else folder / text
    if local.exists():
        return ModelEntry(text, "die" if is_die(local) else "checkpoint", str(local.resolve()))
    if text.lower() in BUNDLED_MODELS:
        return ModelEntry(text, "checkpoint", text.lower())
    if text.lower() in MODEL_PRESETS:
        return ModelEntry(text, "preset", text.lower())
    raise BadConfig(f"{text!r} is no file, bundled model ({', '.join(BUNDLED_MODELS)}) or preset "
                    f"(preset:NAME, one of {', '.join(MODEL_PRESETS)})", field=where)


def check_plan(plan: str, folder: Path, path: Path, where: str) -> str:
    """The plan as `hardwire freeze --plan` takes it: a plan file's path made relative to nothing
    (it was written relative to the sweep file), a plan text as it is."""
    from hardwire.freeze.plan import parse_plan

    if plan.endswith((".toml", ".json")) and not Path(plan).is_absolute():
        plan = str((folder / plan).resolve())
    try:
        parse_plan(plan)
    except HardwireError as e:
        raise BadConfig(str(e), path=path, field=where) from None
    return plan


def chip_entries(group: object, folder: Path, path: Path, where: str) -> list[ChipEntry]:
    """Every chip of a [chips] group: the product of its list-valued fields over each base."""
    from hardwire.chip.arch import chip_from_dict, load_chip

    if not isinstance(group, dict):
        raise BadConfig(f"expected a table, got {group!r}", path=path, field=where)
    bases = group.get("base", "hc1")
    bases = bases if isinstance(bases, list) else [bases]
    if not bases or not all(isinstance(b, str) and b.strip() for b in bases):
        raise BadConfig(f"expected a chip preset name, a chip file or a list of them, got {group.get('base')!r}",
                        path=path, field=f"{where}.base")
    resolved = []
    for base in bases:
        local = folder / base
        base = str(local.resolve()) if Path(base).suffix and local.exists() else base
        try:
            load_chip(base)
        except HardwireError as e:
            raise BadConfig(str(e), path=path, field=f"{where}.base") from None
        resolved.append(base)
    axes = []
    varied = tuple(key for key, value in group.items() if key != "base" and isinstance(value, list))
    for key, value in group.items():
        if key == "base":
            continue
        values = value if isinstance(value, list) else [value]
        if not values:
            raise BadConfig("empty axis; expected at least one value", path=path, field=f"{where}.{key}")
        for v in values:
            try:
                chip_from_dict({key: v.upper() if key == "node" and isinstance(v, str) else v})
            except HardwireError as e:
                raise BadConfig(str(e).split(": ", 1)[-1] if e.field == key else str(e), path=path,
                                field=f"{where}.{key}") from None
        axes.append([(key, v.upper() if key == "node" and isinstance(v, str) else v) for v in values])
    entries = []
    for base in resolved:
        for combination in itertools.product(*axes):
            entry = ChipEntry(base, tuple(combination), varied)
            try:
                chip_config(entry, None)
            except HardwireError as e:
                raise BadConfig(f"{entry.label}: {e}", path=path, field=where) from None
            entries.append(entry)
    return entries


def chip_config(entry: ChipEntry, die_bits: dict[int, int] | None):
    """The chip of a point: its base with the point's fields set. A die's own weight formats replace
    the base's unless the point sets weight_bits (as `hardwire estimate DIE --chip C` does)."""
    from hardwire.chip.commands import resolve_chip
    from hardwire.datapath import weight_style

    overrides = dict(entry.overrides)
    config = resolve_chip(entry.base, overrides.pop("node", None), overrides.pop("weight_bits", None),
                          overrides.pop("clock_ghz", None), die_bits)
    if "weight_style" in overrides:
        overrides["weight_style"] = weight_style(overrides["weight_style"])
    return config.replace(**overrides) if overrides else config


def table_of(data: dict, key: str, known: dict, path: Path, required: bool = False) -> dict | None:
    if key not in data:
        return dict(known) if required else None
    table = data[key]
    if not isinstance(table, dict):
        raise BadConfig(f"expected a table, got {table!r}", path=path, field=key)
    for name in table:
        if name not in known:
            raise BadConfig(f"unknown key; expected one of {', '.join(known)}", path=path, field=f"{key}.{name}")
    return {**known, **table}


def check_count(table: dict, key: str, low: int, path: Path, where: str) -> None:
    value = table[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise BadConfig(f"expected an integer >= {low}, got {value!r}", path=path, field=f"{where}.{key}")


def check_number(table: dict, key: str, low: float, high: float, path: Path, where: str,
                 open_low: bool = False) -> None:
    value = table[key]
    if isinstance(value, int) and not isinstance(value, bool):
        value = table[key] = float(value)
    if not isinstance(value, float) or not math.isfinite(value) or not low <= value <= high \
            or (open_low and value == low):
        bound = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        raise BadConfig(f"expected a number in {bound}, got {table[key]!r}", path=path, field=f"{where}.{key}")


def check_quality(quality: dict, folder: Path, path: Path) -> None:
    if quality["text"] is not None:
        if not isinstance(quality["text"], str):
            raise BadConfig(f"expected a file name, got {quality['text']!r}", path=path, field="quality.text")
        text = Path(quality["text"]) if Path(quality["text"]).is_absolute() else folder / quality["text"]
        if not text.is_file():
            raise BadConfig(f"no such file: {text}", path=path, field="quality.text")
        quality["text"] = str(text.resolve())
    check_count(quality, "stories", 1, path, "quality")
    if quality["backend"] not in ("float", "golden"):
        raise BadConfig(f"expected float or golden, got {quality['backend']!r}", path=path, field="quality.backend")


def check_ttc(ttc: dict, folder: Path, path: Path, has_weights: bool) -> None:
    from hardwire.ttc.run import MODES
    from hardwire.ttc.tasks import load_tasks

    check_count(ttc, "attempts", 1, path, "ttc")
    check_count(ttc, "seed", 0, path, "ttc")
    if ttc["budget_s"] is not None:
        check_number(ttc, "budget_s", 0.0, math.inf, path, "ttc", open_low=True)
    if ttc["mode"] not in MODES:
        raise BadConfig(f"expected one of {', '.join(MODES)}, got {ttc['mode']!r}", path=path, field="ttc.mode")
    check_number(ttc, "temperature", 0.0, 100.0, path, "ttc")
    check_number(ttc, "top_p", 0.0, 1.0, path, "ttc", open_low=True)
    check_number(ttc, "overhead_ms", 0.0, math.inf, path, "ttc")
    # models without weights: an accuracy and an answer length stated (both or neither)
    stated = [ttc["accuracy"] is not None, ttc["tokens"] is not None]
    if any(stated) and not all(stated):
        raise BadConfig("models without weights need both accuracy and tokens", path=path,
                        field="ttc.accuracy" if not stated[0] else "ttc.tokens")
    if all(stated):
        check_number(ttc, "accuracy", 0.0, 1.0, path, "ttc")
        check_number(ttc, "tokens", 0.0, 1e9, path, "ttc", open_low=True)
    if ttc["tasks"] is None:
        if has_weights or not all(stated):
            raise BadConfig("missing; expected task sets such as [\"add:50\"] or task files (models without "
                            "weights may instead state accuracy and tokens)", path=path, field="ttc.tasks")
        return
    ttc["tasks"] = string_list({"ttc.tasks": ttc["tasks"]}, "ttc.tasks", path)
    for i, tasks in enumerate(ttc["tasks"]):
        local = folder / tasks
        if local.exists():
            ttc["tasks"][i] = str(local.resolve())
        try:
            load_tasks(ttc["tasks"][i])
        except HardwireError as e:
            raise BadConfig(str(e), path=path, field=f"ttc.tasks[{i}]") from None

