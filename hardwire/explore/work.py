"""The work of a sweep, one function per kind of task a Dask worker runs.

    prepare_weights   (model, plan) -> Weights: the checkpoint frozen by the plan (or the die opened);
                      once per (model, plan), shared by every chip and task set
    score_quality     Weights -> perplexity, top-1 agreement, KL vs float (`hardwire quality`)
    attempt_tasks     (Weights, task set) -> every task's attempts on the die's golden model
                      (`hardwire ttc`); attempts do not depend on the clock, so they are made once
    measure_point     one point: the estimate of its (die, chip) pair, and the attempts timed on
                      that chip's clock (or, for a preset, a stated accuracy in closed form)

Each is a plain function of plain data, so it runs the same in a worker process of a local
cluster, on a remote worker, or in this process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from hardwire.errors import BadConfig
from hardwire.explore.spec import (ESTIMATE_FIGURES, QUALITY_FIGURES, TTC_FIGURES, ModelEntry, Point,
                                   chip_config)
from hardwire.model.spec import ModelSpec


@dataclass(frozen=True)
class Weights:
    """A die as the points read it: where it is and what the estimate needs of it."""
    path: str
    spec: ModelSpec
    die_id: str
    die_bits: dict                 # {bits: weights} over the quantized matrices
    bits_per_weight: float


def die_folder_name(model: ModelEntry, plan: str, plan_source: str | None) -> str:
    """`task-small-w4g32-1a2b3c4d.die`: readable, and distinct per (model source, plan source)."""
    digest = hashlib.sha256(f"{model.source}\n{plan_source}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{Path(model.label).name}-{plan}")[:60]
    return f"{readable}-{digest}.die"


def prepare_weights(model: ModelEntry, plan: str | None, die_path: str) -> Weights:
    """The die a point runs: a die given by the sweep is opened (and verified); a checkpoint is
    frozen by `plan` into `die_path`, unless a die is already there (a resumed sweep)."""
    from hardwire.chip.commands import die_weight_formats
    from hardwire.die import is_die, open_die

    if model.kind == "die":
        die_path = model.source
    elif not is_die(die_path):
        freeze_checkpoint(model.source, plan, die_path)
    die = open_die(die_path)
    return Weights(str(die.path), die.spec, die.id, die_weight_formats(die) or {},
                   die.manifest["totals"]["bits_per_weight"])


def freeze_checkpoint(source: str, plan_text: str, die_path: str) -> None:
    """`hardwire freeze SOURCE --plan PLAN -o DIE`, with the command's default calibration text."""
    from hardwire.freeze.commands import load_calibration
    from hardwire.freeze.freezer import freeze
    from hardwire.freeze.plan import check_budget, parse_plan
    from hardwire.model.load import load

    plan = parse_plan(plan_text)
    with load(source) as model, contextlib.redirect_stderr(io.StringIO()):
        check_budget(plan, model.spec)
        calibration = load_calibration(model, None, 16384)
        freeze(model, plan, die_path, calibration, overwrite=False)


def score_quality(weights: Weights, quality: dict) -> dict:
    """`hardwire quality DIE --json`'s figures. The text is the sweep's, else the checkpoint's own
    calibration text when it ships one (the task models), else the bundled TinyStories text."""
    from hardwire.freeze.commands import default_calibration_text
    from hardwire.measure.commands import quality_rows
    from hardwire.model.load import load

    text = quality["text"]
    if text is None:
        from hardwire.die import open_die, source_checkpoint
        source = source_checkpoint(open_die(weights.path, verify=False))   # its manifest only: quality_rows verifies
        if source is None:
            raise BadConfig("the checkpoint this die was frozen from is not found, so its calibration text "
                            "is unknown; set [quality] text in the sweep file", path=weights.path)
        with load(source) as model:
            text = default_calibration_text(model)
    with contextlib.redirect_stderr(io.StringIO()):
        rows, _ = quality_rows([Path(weights.path)], Path(text), quality["stories"], None, None, False, None,
                               quality["backend"])
    return {key: rows[0][key] for key in QUALITY_FIGURES}


def attempt_tasks(weights: Weights, task_set: str, ttc: dict) -> list:
    """Every task's attempts on the die's golden model, up to the attempt limit, with no budget:
    a chip's clock and the budget decide later which of them count (`on_clock`)."""
    from hardwire.die import open_die
    from hardwire.ttc.clocks import RateClock
    from hardwire.ttc.run import Settings, run_system
    from hardwire.ttc.systems import EngineGenerator, System
    from hardwire.ttc.tasks import load_tasks

    settings = Settings(attempts=ttc["attempts"], budget_s=None, mode=ttc["mode"], temperature=ttc["temperature"],
                        top_p=ttc["top_p"], seed=ttc["seed"])
    # a clock that is not measured: attempts reuse their prompt as on the chip clock
    system = System(weights.path, clock=RateClock(1.0), generator=EngineGenerator(open_die(weights.path), "golden"))
    return run_system(system, load_tasks(task_set), settings)


def on_clock(outcomes: list, clock, budget_s: float | None, overhead_s: float) -> list:
    """The same attempts timed on another clock: each takes that clock's seconds, and the budget
    cuts where it would have cut on it (the attempt loop of `hardwire.ttc.run`)."""
    from hardwire.ttc.run import TaskOutcome

    timed = []
    for outcome in outcomes:
        new = TaskOutcome(outcome.task_id)
        elapsed = 0.0
        for attempt in outcome.attempts:
            seconds = clock.attempt_seconds(attempt.prompt_tokens, attempt.sampled_tokens, attempt.wall_s) + overhead_s
            if budget_s is not None and elapsed + seconds > budget_s:
                new.over_budget = True
                break
            elapsed += seconds
            new.attempts.append(dataclasses.replace(attempt, seconds=seconds))
            if attempt.passed:
                new.ttc_s = elapsed
                break
        timed.append(new)
    return timed


def measure_point(point: Point, weights: Weights | None, quality: dict | None, outcomes: list | None,
                  estimate_settings: dict, ttc: dict | None) -> dict:
    """A point's record: its axes, the estimate's figures for its (die, chip) pair, the die's
    quality, and its time to correct on this chip."""
    from hardwire.chip.estimate import estimate
    from hardwire.chip.presets import model_preset

    spec = weights.spec if weights is not None else model_preset(point.model.source)
    config = chip_config(point.chip, weights.die_bits if weights is not None else None)
    result = estimate(spec, config, context=estimate_settings["context"],
                      prompt_tokens=estimate_settings["prompt_tokens"], users=estimate_settings["users"])
    figures = result.to_json()
    record = {"chip_name": config.name, "node": config.node, "weight_style": config.weight_style,
              "clock_ghz": config.clock_ghz, "weight_bits": config.weight_bits,
              "weights_per_lane": config.weights_per_lane,
              **{key: figures[key] for key in ESTIMATE_FIGURES}}
    record.update({key: None for key in QUALITY_FIGURES + TTC_FIGURES})
    record["die_id"] = weights.die_id if weights is not None else None
    if weights is not None:
        record["bits_per_weight"] = weights.bits_per_weight
    if quality is not None:
        record.update(quality)
    if ttc is not None:
        record.update(time_to_correct(point, weights, outcomes, config, result, ttc))
    return {**record, **point.axes, "error": None}


def time_to_correct(point: Point, weights: Weights | None, outcomes: list | None, config, result, ttc: dict) -> dict:
    from hardwire.ttc.clocks import ChipClock, RateClock
    from hardwire.ttc.report import summarize_analytic, summarize_measured
    from hardwire.ttc.run import Settings
    from hardwire.ttc.systems import AnalyticSystem

    overhead_s = ttc["overhead_ms"] / 1e3
    if outcomes is not None:
        timed = on_clock(outcomes, ChipClock(weights, config=config), ttc["budget_s"], overhead_s)
        summary = summarize_measured(point.model.label, "chip", "golden", timed)
    elif ttc["accuracy"] is not None:
        # no weights: an answer of `tokens` tokens after a prompt of the estimate's prompt length
        stated = AnalyticSystem(point.model.label, ttc["accuracy"], ttc["tokens"],
                                RateClock(result.tokens_per_s, result.ttft_ms), overhead_s)
        settings = Settings(attempts=ttc["attempts"], budget_s=ttc["budget_s"])
        summary = summarize_analytic(point.model.label, stated, settings)
    else:
        return {}
    return {key: summary[key] for key in TTC_FIGURES}
