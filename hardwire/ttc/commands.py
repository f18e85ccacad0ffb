"""`hardwire ttc`: time to a verified answer, per system, on a task set."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import typer

from hardwire.errors import BadConfig


def check_settings(attempts: int, budget_s: Optional[float], mode: str, temperature: float, top_p: float,
                   seed: int, overhead_ms: float):
    from hardwire.ttc.run import MODES, Settings

    if mode not in MODES:
        raise BadConfig(f"expected one of {', '.join(MODES)}, got {mode!r}", field="--mode")
    if not 1 <= attempts <= 100_000:
        raise BadConfig(f"expected an attempt limit in [1, 100000], got {attempts}", field="--attempts")
    if budget_s is not None and not (math.isfinite(budget_s) and budget_s > 0):
        raise BadConfig(f"expected a positive, finite budget in seconds, got {budget_s}", field="--budget-s")
    if not (math.isfinite(temperature) and 0 <= temperature <= 100):
        raise BadConfig(f"expected a temperature in [0, 100], got {temperature}", field="--temperature")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise BadConfig(f"expected top-p in (0, 1], got {top_p}", field="--top-p")
    if seed < 0:
        raise BadConfig(f"expected a non-negative seed, got {seed}", field="--seed")
    if not (math.isfinite(overhead_ms) and overhead_ms >= 0):
        raise BadConfig(f"expected an overhead >= 0 ms, got {overhead_ms}", field="--overhead-ms")
    return Settings(attempts=attempts, budget_s=budget_s, mode=mode, temperature=temperature, top_p=top_p,
                    seed=seed, overhead_s=overhead_ms / 1e3)


def register(app: typer.Typer) -> None:
    @app.command()
    def ttc(tasks: Optional[str] = typer.Option(None, "--tasks", help="task file (JSONL) or bundled set: add[:N], "
                                                "expr[:N] (needed unless every system is stated)"),
            systems: List[str] = typer.Option(..., "--system", help="MODEL_OR_DIE[@chip|@chip:CHIP|@rate:TOK_S"
                                              "[:TTFT_MS]|@wall], URL[#MODEL][@CLOCK], or "
                                              "name=N,rate=R,accuracy=A,tokens=T (repeatable)"),
            attempts: int = typer.Option(16, "--attempts", help="attempt limit per task"),
            budget_s: Optional[float] = typer.Option(None, "--budget-s", help="time budget per task, seconds"),
            mode: str = typer.Option("independent", "--mode", help="independent | feedback"),
            temperature: float = typer.Option(1.0, "--temperature", help="sampling temperature (> 0 to vary "
                                              "attempts)"),
            top_p: float = typer.Option(1.0, "--top-p"),
            seed: int = typer.Option(0, "--seed", help="run seed: attempt k of task i uses a seed derived from it"),
            overhead_ms: float = typer.Option(0.0, "--overhead-ms", help="fixed cost per attempt (verifier, "
                                              "network round trip), added on every clock"),
            as_json: bool = typer.Option(False, "--json", help="print JSON"),
            plot: Optional[Path] = typer.Option(None, "--plot", help="write fraction solved vs time (PNG)"),
            crossover: Optional[Path] = typer.Option(None, "--crossover", help="write a map of who is correct "
                                                     "first against the slowest system, by speed and accuracy "
                                                     "ratio (PNG)"),
            details: Optional[Path] = typer.Option(None, "--details", help="write every attempt as JSONL")):
        """Time to correct: sample attempts until a verifier accepts one, per task and system."""
        from hardwire.atomic import write_text_atomic
        from hardwire.progress import progress_bar
        from hardwire.ttc.report import (plot_crossover, plot_solved, print_table, summarize_analytic,
                                         summarize_measured)
        from hardwire.ttc.run import run_system
        from hardwire.ttc.systems import open_system
        from hardwire.ttc.tasks import load_tasks

        settings = check_settings(attempts, budget_s, mode, temperature, top_p, seed, overhead_ms)
        task_list = load_tasks(tasks) if tasks is not None else []
        for path in (plot, crossover, details):
            if path is not None and not path.parent.is_dir():
                raise BadConfig("the folder to write into does not exist", path=path)
        opened = [open_system(text) for text in systems]
        if tasks is None and any(s.analytic is None for s in opened):
            raise BadConfig("systems that are run need tasks: give --tasks FILE.jsonl or a bundled set such as "
                            "add:200", field="--tasks")
        results, records = [], []
        for system in opened:
            if system.analytic is not None:
                results.append(summarize_analytic(system.label, system.analytic, settings))
                continue
            with progress_bar(f"{system.label}", len(task_list)) as advance:
                outcomes = run_system(system, task_list, settings, advance)
            results.append(summarize_measured(system.label, system.clock.label, system.generator.backend, outcomes))
            if details is not None:
                records += [{"system": system.label, "task": o.task_id, "solved": o.solved, "ttc_s": o.ttc_s,
                             "attempt": a.number, "seed": a.seed, "answer": a.answer, "passed": a.passed,
                             "message": a.message, "prompt_tokens": a.prompt_tokens,
                             "sampled_tokens": a.sampled_tokens, "seconds": a.seconds, "wall_s": a.wall_s}
                            for o in outcomes for a in o.attempts]
        where = f"{tasks} ({len(task_list)} tasks)" if tasks else "stated systems"
        title = (f"time to correct on {where}, {mode} attempts, limit {attempts}"
                 + (f", budget {budget_s:g} s" if budget_s else "") + f", temperature {temperature:g}")
        if details is not None:
            write_text_atomic(details, "".join(json.dumps(r) + "\n" for r in records))
        if plot is not None:
            plot_solved(str(plot), title, results, settings)
        if crossover is not None:
            plot_crossover(str(crossover), results, settings)
        if as_json:
            print(json.dumps({"tasks": len(task_list) if tasks else None, "task_set": tasks, "mode": mode, "attempts": attempts,
                              "budget_s": budget_s, "temperature": temperature, "top_p": top_p, "seed": seed,
                              "overhead_ms": overhead_ms, "systems": results}, indent=1))
        else:
            print_table(title, results)
