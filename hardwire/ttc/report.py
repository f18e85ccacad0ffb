"""Summaries of a time-to-correct run: the per-system figures, the table, the solved-versus-time plot.

Per system (the `--json` keys):
  attempt_accuracy    fraction of tasks whose first attempt was verified (pass@1 at the run's
                      temperature; the first attempt is the same in both modes)
  retry_accuracy      fraction of second attempts that were verified: the same tasks reach a second
                      attempt in both modes, so this is where feedback shows (or does not)
  solved              fraction of tasks solved within the attempt limit and the budget
  mean_attempts       attempts made per task, failed tasks included
  tokens_per_attempt  sampled tokens per attempt (an EOS that ended an answer counts)
  seconds_per_attempt mean time per attempt on the system's clock
  ttc_median_s        the time by which half the tasks were solved; null if fewer than half were
  ttc_p90_s           the same for 90%
"""
from __future__ import annotations

import math
from statistics import fmean

from hardwire.atomic import atomic_path
from hardwire.errors import BadConfig
from hardwire.ttc import analytic
from hardwire.ttc.run import Settings, TaskOutcome, quantile_time
from hardwire.ttc.systems import AnalyticSystem


def plot_label(system: str) -> str:
    """A system's name for a plot: a die or checkpoint path shortened to its file name, without
    `.die` (the folder it was written to says nothing on a chart)."""
    target, at, clock = system.partition("@")
    if "://" in target or "=" in target:
        return system
    name = target.rstrip("/").rsplit("/", 1)[-1]
    return (name[:-4] if name.endswith(".die") else name) + at + clock


def summarize_measured(label: str, clock: str, backend: str, outcomes: list[TaskOutcome]) -> dict:
    attempts = [a for o in outcomes for a in o.attempts]
    tried = [o for o in outcomes if o.attempts]
    second = [o.attempts[1] for o in outcomes if len(o.attempts) > 1]
    times = [o.ttc_s for o in outcomes]
    return {
        "system": label, "clock": clock, "kind": "measured", "backend": backend,
        "attempt_accuracy": (sum(o.attempts[0].passed for o in tried) / len(tried)) if tried else None,
        "retry_accuracy": (sum(a.passed for a in second) / len(second)) if second else None,
        "solved": sum(o.solved for o in outcomes) / len(outcomes),
        "mean_attempts": fmean(len(o.attempts) for o in outcomes),
        "tokens_per_attempt": fmean(a.sampled_tokens for a in attempts) if attempts else None,
        "seconds_per_attempt": fmean(a.seconds for a in attempts) if attempts else None,
        "ttc_median_s": quantile_time(times, 0.5),
        "ttc_p90_s": quantile_time(times, 0.9),
        "attempts_total": len(attempts),
        "ttc_s": times,
    }


def summarize_analytic(label: str, system: AnalyticSystem, settings: Settings) -> dict:
    per_attempt = system.seconds_per_attempt
    allowed = analytic.attempts_allowed(per_attempt, settings.attempts, settings.budget_s)
    p = system.accuracy
    return {
        "system": label, "clock": system.clock.label, "kind": "analytic", "backend": None,
        "attempt_accuracy": p, "retry_accuracy": p,
        "solved": analytic.solved_fraction(p, allowed),
        "mean_attempts": analytic.mean_attempts(p, allowed),
        "tokens_per_attempt": system.tokens,
        "seconds_per_attempt": per_attempt,
        "ttc_median_s": analytic.time_for_fraction(p, per_attempt, 0.5, allowed),
        "ttc_p90_s": analytic.time_for_fraction(p, per_attempt, 0.9, allowed),
        "attempts_total": None,
        "ttc_s": None,
    }


def solved_curve(result: dict, settings: Settings) -> tuple[list[float], list[float]]:
    """(times, fraction solved by then), a step function's corners."""
    if result["kind"] == "analytic":
        per_attempt = result["seconds_per_attempt"]
        allowed = analytic.attempts_allowed(per_attempt, settings.attempts, settings.budget_s)
        return analytic.solved_curve(result["attempt_accuracy"], per_attempt, allowed)
    solved = sorted(t for t in result["ttc_s"] if t is not None)
    total = len(result["ttc_s"])
    return solved, [(i + 1) / total for i in range(len(solved))]


def format_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(value) >= scale or unit == "ns":
            return f"{value / scale:,.3g} {unit}"
    return f"{value:g} s"


def format_fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def print_table(title: str, results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name, justify in (("system", "left"), ("clock", "left"), ("attempt acc.", "right"),
                          ("retry acc.", "right"), ("solved", "right"), ("mean attempts", "right"),
                          ("tokens/attempt", "right"), ("time/attempt", "right"), ("TTC median", "right"),
                          ("TTC p90", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for r in results:
        tokens = r["tokens_per_attempt"]
        table.add_row(r["system"], r["clock"] + (" (stated)" if r["kind"] == "analytic" else ""),
                      format_fraction(r["attempt_accuracy"]), format_fraction(r["retry_accuracy"]),
                      format_fraction(r["solved"]), f"{r['mean_attempts']:.2f}",
                      "—" if tokens is None else f"{tokens:.1f}", format_seconds(r["seconds_per_attempt"]),
                      format_seconds(r["ttc_median_s"]), format_seconds(r["ttc_p90_s"]))
    Console(width=max(160, Console().width)).print(table)


def plot_solved(path: str, title: str, results: list[dict], settings: Settings) -> None:
    """Fraction of tasks solved against time on each system's clock (log time axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8.5, 5))
    styles = ["-", "--", "-.", ":"]
    for i, r in enumerate(results):
        times, fractions = solved_curve(r, settings)
        label = plot_label(r["system"]) + ("" if r["system"].endswith(r["clock"]) else f" ({r['clock']})")
        if not times:
            axis.plot([], [], label=label + ": none solved")
            continue
        xs = [times[0]] + times
        ys = [0.0] + fractions
        axis.step(xs, ys, where="post", linestyle=styles[i % len(styles)], linewidth=1.8, label=label)
    axis.set_xscale("log")
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("time to correct on the system's clock, s (log)")
    axis.set_ylabel("fraction of tasks solved")
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")
    plt.close(fig)


def finite_or_none(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def median_ratio_grid(reference_accuracy: float, reference_seconds: float, speed_ratios, accuracy_ratios,
                      settings: Settings):
    """log10(reference median TTC / candidate median TTC) on a grid of candidates that are
    `speed_ratio` times faster per attempt and have `accuracy_ratio` times the reference's pass rate,
    under independent attempts with the run's limit and budget. NaN where the candidate never
    reaches half the tasks; +inf where only it does."""
    import numpy as np

    allowed = analytic.attempts_allowed(reference_seconds, settings.attempts, settings.budget_s)
    reference = analytic.time_for_fraction(reference_accuracy, reference_seconds, 0.5, allowed)
    grid = np.full((len(accuracy_ratios), len(speed_ratios)), np.nan)
    for i, a in enumerate(accuracy_ratios):
        p = min(1.0, reference_accuracy * a)
        for j, r in enumerate(speed_ratios):
            seconds = reference_seconds / r
            mine = analytic.time_for_fraction(p, seconds, 0.5,
                                              analytic.attempts_allowed(seconds, settings.attempts, settings.budget_s))
            if mine is None:
                continue
            grid[i, j] = np.inf if reference is None else np.log10(reference / mine)
    return grid


def plot_crossover(path: str, results: list[dict], settings: Settings) -> None:
    """Which system reaches correct first: a candidate `speed ratio` times faster per attempt than
    the reference (the system with the slowest attempts) and with `accuracy ratio` times its pass
    rate, under independent attempts within the run's limits; the measured systems on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    timed = [r for r in results if r["seconds_per_attempt"] and r["attempt_accuracy"]]
    if not timed:
        raise BadConfig("a crossover map needs a system with a non-zero pass rate", field="--crossover")
    reference = max(timed, key=lambda r: r["seconds_per_attempt"])
    p_ref, t_ref = reference["attempt_accuracy"], reference["seconds_per_attempt"]
    speeds = np.logspace(0, 5, 121)
    accuracies = np.logspace(-4, np.log10(1 / p_ref), 97)          # up to a candidate that always passes
    grid = median_ratio_grid(p_ref, t_ref, speeds, accuracies, settings)
    shown = np.clip(np.where(np.isinf(grid), 3.0, grid), -3, 3)
    fig, axis = plt.subplots(figsize=(8.5, 6))
    mesh = axis.pcolormesh(speeds, accuracies, np.ma.masked_invalid(shown), cmap="PuOr_r",
                           norm=TwoSlopeNorm(0, -3, 3), shading="auto")
    never = np.isnan(grid)
    axis.contourf(speeds, accuracies, never.astype(float), levels=[0.5, 1.5], colors="none", hatches=["//"])
    axis.contour(speeds, accuracies, np.where(never, -9, shown), levels=[0], colors="black", linewidths=1.2)
    bar = fig.colorbar(mesh, ax=axis)
    bar.set_label("log10(reference median TTC / candidate's); > 0: candidate first")
    for k, r in enumerate(r for r in timed if r is not reference):
        x = t_ref / r["seconds_per_attempt"]
        y = r["attempt_accuracy"] / p_ref
        mine, theirs = r["ttc_median_s"], reference["ttc_median_s"]
        won = mine is not None and (theirs is None or mine < theirs)
        axis.scatter([x], [y], marker="o" if won else "X", s=70, color="white", edgecolors="black", zorder=3)
        axis.annotate(f"{plot_label(r['system'])} ({'first' if won else 'not first'})", (x, y), fontsize=7,
                      xytext=(6, 4 - 9 * (k % 4)), textcoords="offset points")     # staggered: points cluster
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("speed ratio: reference seconds per attempt / candidate's")
    axis.set_ylabel(f"accuracy ratio: candidate pass@1 / reference's ({p_ref:.1%})")
    limit = f"limit {settings.attempts} attempts" + (f", budget {settings.budget_s:g} s" if settings.budget_s else "")
    axis.set_title(f"who is correct first against {plot_label(reference['system'])}, by median time "
                   f"to correct;\nmodel: independent attempts, {limit}. Hatched: the candidate never solves half "
                   "the tasks.\nPoints: measured systems (o: correct first, x: not)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")
    plt.close(fig)
