"""`hardwire explore`: a sweep over models, freeze plans and chips, on Dask, with its Pareto front."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer

from hardwire.errors import BadConfig

DEFAULT_WORKERS = 2
MAX_WORKERS = 256


def default_objectives(measured: set[str]) -> str:
    first = "ttc_median_s:min" if "ttc_median_s" in measured else "tokens_per_s:max"
    return f"{first},area_mm2:min,cost_per_mtok_usd:min"


def register(app: typer.Typer) -> None:
    @app.command()
    def explore(spec: Path = typer.Argument(..., help="sweep file (TOML; see docs/explore.md)"),
                scheduler: Optional[str] = typer.Option(None, "--scheduler", help="a running Dask scheduler, "
                                                        "tcp://HOST:PORT (default: a local cluster)"),
                workers: int = typer.Option(DEFAULT_WORKERS, "--workers", help="worker processes of the local "
                                            "cluster"),
                as_json: bool = typer.Option(False, "--json", help="print {\"points\": [...], \"pareto\": [...]}"),
                csv_path: Optional[Path] = typer.Option(None, "--csv", help="write every point as CSV"),
                plot: Optional[Path] = typer.Option(None, "--plot", help="write the points and the Pareto front "
                                                    "(PNG): the first two objectives as axes"),
                resume: Optional[Path] = typer.Option(None, "--resume", help="folder for results and dies: points "
                                                      "already finished there are skipped"),
                objectives: Optional[str] = typer.Option(None, "--objectives", help="KEY:min|max,... for the "
                                                         "Pareto front (default: the sweep file's, else "
                                                         "ttc_median_s or tokens_per_s, area_mm2, "
                                                         "cost_per_mtok_usd)")):
        """Sweep models x freeze plans x chips, measure each point, and rank them by a Pareto front."""
        from hardwire.explore.pareto import pareto_front, parse_objectives
        from hardwire.explore.report import plot_front, print_points, write_csv
        from hardwire.explore.spec import read_sweep
        from hardwire.explore.sweep import dask_client, run_sweep
        from hardwire.progress import progress_bar

        if not 1 <= workers <= MAX_WORKERS:
            raise BadConfig(f"expected 1..{MAX_WORKERS} workers, got {workers}", field="--workers")
        if scheduler is not None and "://" not in scheduler:
            raise BadConfig(f"expected a scheduler address like tcp://HOST:PORT, got {scheduler!r}",
                            field="--scheduler")
        if resume is not None and resume.exists() and not resume.is_dir():
            raise BadConfig("expected a folder to keep the sweep's results in", path=resume)
        sweep = read_sweep(spec)
        chosen = parse_objectives(objectives or ",".join(sweep.objectives or []) or default_objectives(sweep.measured),
                                  sweep.measured, field="--objectives" if objectives else "objectives")
        if plot is not None and len(chosen) < 2:
            raise BadConfig("a plot needs two objectives for its axes", field="--objectives")

        with tempfile.TemporaryDirectory(prefix="hardwire-explore-") as scratch, \
                progress_bar("exploring", len(sweep.points)) as advance:
            shown = 0

            def progress(done: int, running: int, failed: int, total: int) -> None:
                nonlocal shown
                while shown < done:
                    shown += 1
                    advance(f"({running} running, {failed} failed)")

            with dask_client(scheduler, workers) as client:
                points = run_sweep(sweep, client, resume or Path(scratch), progress)
        front = pareto_front(points, chosen)
        if csv_path is not None:
            write_csv(csv_path, points, front)
        if plot is not None:
            plot_front(plot, points, front, chosen)
        if as_json:
            print(json.dumps({"points": points, "pareto": front, "objectives": [str(o) for o in chosen]},
                             indent=1, default=str))
        else:
            print_points(points, front, chosen)
