"""A sweep's results: the table, the CSV and the Pareto plot."""
from __future__ import annotations

import csv
import io
import math

from hardwire.atomic import write_text_atomic
from hardwire.errors import BadConfig
from hardwire.explore.pareto import Objective

TABLE_ROWS = 40        # more points than this: the table shows the front, the CSV and JSON show all
LEADING_COLUMNS = ("model", "plan", "chip", "task_set", "error")


def columns(points: list[dict]) -> list[str]:
    """Every key of every point, axes first, in first-seen order."""
    seen = dict.fromkeys(LEADING_COLUMNS)
    for point in points:
        seen.update(dict.fromkeys(point))
    return list(seen)


def write_csv(path, points: list[dict], front: list[int]) -> None:
    on_front = set(front)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(points) + ["pareto"], lineterminator="\n")
    writer.writeheader()
    for index, point in enumerate(points):
        writer.writerow({**{k: "" if v is None else v for k, v in point.items()}, "pareto": index in on_front})
    try:
        write_text_atomic(path, out.getvalue())
    except OSError as e:
        raise BadConfig(f"cannot write the CSV: {e.strerror}", path=path) from None


def format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:,.4g}" if 1e-3 <= abs(value) < 1e6 else f"{value:.3e}"


def print_points(points: list[dict], front: list[int], objectives: list[Objective]) -> None:
    from rich.table import Table

    from hardwire.console import show

    on_front = set(front)
    failed = sum(p.get("error") is not None for p in points)
    shown = list(range(len(points))) if len(points) <= TABLE_ROWS else front
    figures = [o.key for o in objectives]
    figures += [k for k in ("tokens_per_s", "area_mm2", "cost_per_mtok_usd", "perplexity", "attempt_accuracy",
                            "ttc_median_s") if k not in figures and any(p.get(k) is not None for p in points)]
    title = (f"{len(points)} points, {len(front)} on the Pareto front of {', '.join(map(str, objectives))}"
             + (f", {failed} failed" if failed else "")
             + ("" if shown is not front or len(points) <= TABLE_ROWS else "; showing the front (--csv or --json "
                "for every point)"))
    table = Table(title=title)
    for name in ("#", "front", "model", "plan", "chip", "task set") + tuple(figures) + ("error",):
        table.add_column(name, justify="right" if name in figures or name == "#" else "left", overflow="fold")
    for index in shown:
        point = points[index]
        table.add_row(str(index), "★" if index in on_front else "", str(point.get("model")),
                      str(point.get("plan") or "—"), str(point.get("chip")), str(point.get("task_set") or "—"),
                      *(format_value(point.get(k)) for k in figures), point.get("error") or "")
    show(table)


def plot_front(path, points: list[dict], front: list[int], objectives: list[Objective]) -> None:
    """The first two objectives as axes, the third as colour and the fourth as size; the front is
    ringed in red and joined by a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(objectives) < 2:
        raise BadConfig("a plot needs two objectives for its axes", field="--plot")
    x_key, y_key = objectives[0].key, objectives[1].key
    keys = [o.key for o in objectives]
    usable = [i for i, p in enumerate(points)
              if not p.get("error") and all(isinstance(p.get(k), (int, float)) for k in keys)]
    fig, axes = plt.subplots(figsize=(8.5, 6))
    if usable:
        xs = [points[i][x_key] for i in usable]
        ys = [points[i][y_key] for i in usable]
        colour = [points[i][keys[2]] for i in usable] if len(keys) > 2 else None
        size = [points[i][keys[3]] for i in usable] if len(keys) > 3 else None
        if size is not None:
            low, high = min(size), max(size)
            size = [20 + 180 * ((s - low) / (high - low) if high > low else 0.5) for s in size]
        shading = {"c": colour, "cmap": "viridis"} if colour is not None else {"color": "tab:blue"}
        scatter = axes.scatter(xs, ys, s=size if size is not None else 30, alpha=0.75, edgecolors="none", **shading)
        if colour is not None:
            fig.colorbar(scatter, ax=axes, label=f"{keys[2]} ({objectives[2].direction})")
        ringed = sorted((points[i][x_key], points[i][y_key]) for i in front)
        if ringed:
            axes.scatter(*zip(*ringed), s=140, facecolors="none", edgecolors="red", linewidths=1.5,
                         label=f"Pareto front ({len(front)} of {len(points)})")
            axes.plot(*zip(*ringed), color="red", alpha=0.4, linewidth=1)
            axes.legend(loc="best")
        for key, setter in ((x_key, axes.set_xscale), (y_key, axes.set_yscale)):
            values = [points[i][key] for i in usable]
            if min(values) > 0 and max(values) / min(values) > 100:
                setter("log")
    axes.set_xlabel(f"{x_key} ({objectives[0].direction})")
    axes.set_ylabel(f"{y_key} ({objectives[1].direction})")
    title = f"{len(points)} points" + (f"; size: {keys[3]}" if len(keys) > 3 else "")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(str(path), dpi=110)
    except OSError as e:
        raise BadConfig(f"cannot write the plot: {e.strerror}", path=path) from None
    finally:
        plt.close(fig)
