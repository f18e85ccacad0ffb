"""Freeze plans: which weight format (and quantizer) each matrix of the model gets.

Plan syntax (the `--plan` argument):

    w8                      every matrix 8-bit, one fp16 scale per output row, round-to-nearest
    w4g32                   4-bit, one scale per 32 input columns
    w3g32a                  asymmetric (a zero point per group)
    w3g64-e4m4              scales in the 8-bit e4m4 small float instead of fp16
    w4g32:gptq              GPTQ instead of round-to-nearest
    w3g32:rot+gptq          methods joined by `+`: offline transforms (`rot`, `awq`, see
                            freeze/transforms.py), `clip` (each group's range searched for the least
                            rounding error), at most one quantizer (`rtn`, the default, or `gptq`)
                            and `learn` (each weight's rounding direction re-chosen after the
                            quantizer, freeze/rounding.py), applied in the order rot, awq, clip +
                            quantizer, learn whatever the order written; `best` names the
                            recommended combination (BEST_METHODS)
    mix:3g32,6g32,avg=3.5   mixed: every matrix starts at the first format; the matrices whose
                            upgrade buys the most measured quality per bit move to the later ones
                            until the average storage (codes + scales + zero points) reaches 3.5
                            bits per weight. Formats may carry methods, e.g. mix:3g32:gptq,6g32:gptq,avg=3.5.
                            `rot` rotates the whole model: named on any format, it applies to all, and
                            the sensitivity that decides the mix is measured on the rotated model.
                            `had` (the online Walsh–Hadamard transform of every w_down input,
                            docs/arithmetic.md §12) is model-wide in the same way: w3g32:had+gptq,
                            w4g32:had+best
    plan.toml / plan.json   a file: default = "<any of the above>", overrides = {pattern = format},
                            activations = "int8" | "int16"

Override patterns are shell-style over canonical tensor names (`layers.*.w_down`, `embed`).
The matrices a plan covers: `embed`, `output` (when untied) and the seven projections per layer.
Norm (and bias) vectors are stored as float32 and are not part of the bit budget.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path

from hardwire.errors import BadPlan
from hardwire.formats import ACTIVATION_FORMATS, WeightFormat
from hardwire.jsonfile import parse_json
from hardwire.tomlfile import parse_toml
from hardwire.freeze.quantize import METHODS, REFINEMENTS
from hardwire.freeze.rounding import ROUNDINGS
from hardwire.freeze.transforms import TRANSFORMS
from hardwire.model.spec import ModelSpec

PLAN_FILE_KEYS = ("default", "overrides", "activations")
# `best`: the combination docs/validation.md (## Freeze) measured best at 4 bits and in the mixed
# 3/6 plan on the bundled model, at no extra ROM (`rot` unties the tied embedding: +12% ROM there).
BEST_METHODS = ("awq", "clip", "gptq", "learn")


@dataclass(frozen=True)
class Choice:
    """A weight format, the quantizer that fills it and the offline transforms applied before."""

    format: WeightFormat
    method: str = "rtn"                  # the quantizer: one of METHODS
    transforms: tuple[str, ...] = ()     # a subsequence of TRANSFORMS
    refinements: tuple[str, ...] = ()    # a subsequence of REFINEMENTS (options of the quantizer)
    rounding: tuple[str, ...] = ()       # a subsequence of ROUNDINGS (run on the quantizer's codes)

    @classmethod
    def parse(cls, text: str) -> "Choice":
        text = text.strip()
        fmt_text, _, methods = text.partition(":")
        parts = [part.strip() for part in methods.split("+")] if methods else []
        if "best" in parts:
            parts = [p for p in parts if p != "best"] + list(BEST_METHODS)
        known = TRANSFORMS + REFINEMENTS + METHODS + ROUNDINGS
        for part in parts:
            if part not in known:
                raise BadPlan(f"unknown quantizer or transform {part!r} in {text!r}; expected methods "
                              f"joined by '+' from {', '.join(known)}, or best")
        quantizers = [p for p in dict.fromkeys(parts) if p in METHODS]
        if len(quantizers) > 1:
            raise BadPlan(f"{text!r} names two quantizers ({', '.join(quantizers)}); expected at most one")
        transforms = tuple(t for t in TRANSFORMS if t in parts)
        refinements = tuple(r for r in REFINEMENTS if r in parts)
        rounding = tuple(r for r in ROUNDINGS if r in parts)
        return cls(WeightFormat.parse(fmt_text), quantizers[0] if quantizers else "rtn", transforms, refinements,
                   rounding)

    @property
    def clip(self) -> bool:
        return "clip" in self.refinements

    @property
    def name(self) -> str:
        methods = (list(self.transforms) + list(self.refinements) + ([] if self.method == "rtn" else [self.method])
                   + list(self.rounding))
        return self.format.name + (":" + "+".join(methods) if methods else "")


@dataclass(frozen=True)
class Mix:
    """Formats to choose among (cheapest first) and the average bits-per-weight budget."""

    choices: tuple[Choice, ...]
    average_bits: float

    @classmethod
    def parse(cls, text: str) -> "Mix":
        body = text.strip()[len("mix:"):]
        choices, budget = [], None
        for item in filter(None, (part.strip() for part in body.split(","))):
            if "=" in item:
                key, _, value = item.partition("=")
                if key.strip() != "avg":
                    raise BadPlan(f"unknown mixed-plan option {key.strip()!r} in {text!r}; expected avg=<bits>")
                try:
                    budget = float(value)
                except ValueError:
                    raise BadPlan(f"avg must be a number of bits per weight, got {value!r}") from None
            else:
                choices.append(Choice.parse(item))
        if len(choices) < 2:
            raise BadPlan(f"a mixed plan needs at least two formats, got {len(choices)} in {text!r}")
        if budget is None:
            raise BadPlan(f"a mixed plan needs a budget, e.g. {text.strip()},avg=3.5")
        if not (math.isfinite(budget) and budget > 0):
            raise BadPlan(f"avg must be a positive number of bits per weight, got {budget}")
        return cls(tuple(choices), budget)

    @property
    def name(self) -> str:
        return "mix:" + ",".join(c.name.removeprefix("w") for c in self.choices) + f",avg={self.average_bits:g}"


@dataclass(frozen=True)
class Plan:
    default: Choice | Mix
    overrides: tuple[tuple[str, Choice], ...] = ()
    activations: str = "int8"
    source: str = ""                     # the plan text or file content as given

    @property
    def is_mixed(self) -> bool:
        return isinstance(self.default, Mix)

    @property
    def choices(self) -> list[Choice]:
        default = list(self.default.choices) if self.is_mixed else [self.default]
        return default + [c for _, c in self.overrides]

    @property
    def methods(self) -> set[str]:
        return {c.method for c in self.choices}

    @property
    def rotated(self) -> bool:
        """Whether the model's residual stream is rotated (a model-wide transform: named on any
        format of the plan, it applies to every matrix)."""
        return any("rot" in c.transforms for c in self.choices)

    @property
    def online_hadamard(self) -> bool:
        """Whether every layer's w_down input gets the online Walsh–Hadamard transform (model-wide
        like the rotation: the datapath block serves every layer)."""
        return any("had" in c.transforms for c in self.choices)

    def to_dict(self) -> dict:
        return {"default": self.default.name, "overrides": {p: c.name for p, c in self.overrides},
                "activations": self.activations, "source": self.source}


def parse_choice_or_mix(text: str) -> Choice | Mix:
    if not isinstance(text, str) or not text.strip():
        raise BadPlan(f"expected a plan such as w8, w4g32, w4g32:rot+gptq or mix:3g32,6g32,avg=3.5, got {text!r}")
    return Mix.parse(text) if text.strip().startswith("mix:") else Choice.parse(text)


def parse_plan(text: str, activations: str | None = None) -> Plan:
    """A plan from its `--plan` text, or from a .toml/.json file named by it."""
    path = Path(text)
    if path.suffix in (".toml", ".json"):
        plan = _parse_plan_file(path)
    else:
        plan = Plan(parse_choice_or_mix(text), source=text.strip())
    if activations is not None:
        plan = Plan(plan.default, plan.overrides, activations, plan.source)
    if plan.activations not in ACTIVATION_FORMATS:
        given_in = path if activations is None and path.suffix in (".toml", ".json") else None
        raise BadPlan(f"unknown activation format {plan.activations!r}; expected one of "
                      f"{', '.join(ACTIVATION_FORMATS)}", path=given_in,
                      field="activations" if given_in else "--activations")
    return plan


def _parse_plan_file(path: Path) -> Plan:
    try:
        content = path.read_text()
    except OSError as e:
        raise BadPlan(f"cannot read plan file: {e.strerror}", path=path) from None
    if path.suffix != ".toml":
        data = parse_json(content, path, BadPlan, expect=None, what="plan JSON")
    else:
        data = parse_toml(content, path, BadPlan)
    if not isinstance(data, dict):
        raise BadPlan("expected a table with keys default, overrides, activations", path=path)
    unknown = set(data) - set(PLAN_FILE_KEYS)
    if unknown:
        raise BadPlan(f"unknown keys {sorted(unknown)}; expected {', '.join(PLAN_FILE_KEYS)}", path=path)
    if "default" not in data:
        raise BadPlan("missing `default` (e.g. default = \"w4g32\")", path=path)
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise BadPlan("`overrides` must be a table of pattern = format", path=path)
    try:
        default = parse_choice_or_mix(data["default"])
        pinned = tuple((str(pattern), Choice.parse(str(value))) for pattern, value in overrides.items())
    except BadPlan as e:
        raise BadPlan(str(e), path=path) from None
    return Plan(default, pinned, str(data.get("activations", "int8")), source=content)


def matrix_names(spec: ModelSpec) -> list[str]:
    """The tensors a plan assigns formats to (2-D weight matrices), in data-flow order."""
    return [name for name, shape in spec.tensor_shapes().items() if len(shape) == 2]


def matrix_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    shapes = spec.tensor_shapes()
    return {name: shapes[name] for name in matrix_names(spec)}


def pinned_choices(plan: Plan, spec: ModelSpec) -> dict[str, Choice]:
    """Matrices fixed by an override (first matching pattern wins) or by a uniform default."""
    names = matrix_names(spec)
    for pattern, _ in plan.overrides:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise BadPlan(f"override pattern {pattern!r} matches no tensor; tensors are named like "
                          f"embed, layers.0.wq, layers.3.w_down, output")
    chosen = {}
    for name in names:
        match = next((c for p, c in plan.overrides if fnmatch.fnmatchcase(name, p)), None)
        if match is not None:
            chosen[name] = match
        elif not plan.is_mixed:
            chosen[name] = plan.default
    return chosen


def average_bits(assignment: dict[str, Choice], shapes: dict[str, tuple[int, int]]) -> float:
    bits = sum(assignment[n].format.storage_bits(shapes[n]) for n in assignment)
    return bits / sum(math.prod(shapes[n]) for n in assignment)


def check_budget(plan: Plan, spec: ModelSpec) -> None:
    """Refuse a mixed plan whose budget the cheapest assignment already exceeds (before any
    calibration work is spent)."""
    if not plan.is_mixed:
        return
    if plan.rotated:          # the rotation unties a tied embedding: one more matrix to store
        spec = dataclasses.replace(spec, tied_embeddings=False)
    shapes = matrix_shapes(spec)
    pinned = pinned_choices(plan, spec)
    cheapest = min(plan.default.choices, key=lambda c: sum(c.format.storage_bits(shapes[n]) for n in shapes))
    floor = average_bits({n: pinned.get(n, cheapest) for n in shapes}, shapes)
    if floor > plan.default.average_bits + 1e-9:
        raise BadPlan(f"budget avg={plan.default.average_bits:g} bits/weight cannot be met: the cheapest "
                      f"assignment ({cheapest.name} plus overrides) already stores {floor:.3f} bits/weight "
                      f"counting scales")


def resolve(plan: Plan, spec: ModelSpec, damage: dict[str, dict[str, float]] | None = None) -> dict[str, Choice]:
    """Every matrix's choice. A mixed plan needs `damage[tensor][choice name]`: the measured loss
    of quality (e.g. KL divergence on calibration text) when only that tensor is quantized so.

    Allocation is a greedy multiple-choice knapsack: start everything at the cheapest format and
    repeatedly apply the upgrade with the largest damage reduction per added bit that still fits."""
    chosen = pinned_choices(plan, spec)
    if not plan.is_mixed:
        return chosen
    check_budget(plan, spec)
    shapes = matrix_shapes(spec)
    free = [n for n in shapes if n not in chosen]
    if damage is None or any(n not in damage for n in free):
        raise BadPlan("a mixed plan needs sensitivity measurements for every matrix it assigns")
    options = {n: sorted(plan.default.choices, key=lambda c: c.format.storage_bits(shapes[n])) for n in free}
    budget_bits = plan.default.average_bits * sum(math.prod(s) for s in shapes.values())
    current = {n: options[n][0] for n in free}
    spent = sum(c.format.storage_bits(shapes[n]) for n, c in {**chosen, **current}.items())
    while True:
        best = None
        for n in free:
            here_bits = current[n].format.storage_bits(shapes[n])
            for option in options[n]:
                extra = option.format.storage_bits(shapes[n]) - here_bits
                gain = damage[n][current[n].name] - damage[n][option.name]
                if extra <= 0 or gain <= 0 or spent + extra > budget_bits + 1e-6:
                    continue
                ratio = gain / extra
                if best is None or ratio > best[0]:
                    best = (ratio, n, option, extra)
        if best is None:
            break
        _, n, option, extra = best
        current[n] = option
        spent += extra
    chosen.update(current)
    return {n: chosen[n] for n in shapes}
