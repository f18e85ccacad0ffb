"""Explore: sweep files, the Pareto front, and sweeps run on Dask (a real local cluster, a given
scheduler, resumed, with a failing point)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hardwire.cli import main
from hardwire.explore.pareto import Objective, pareto_front, parse_objectives
from hardwire.explore.spec import read_sweep
from hardwire.explore.sweep import RESULTS_FILE, dask_client, run_sweep

TINY = """
models = ["task-small", "preset:stories15m"]
plans = ["w8"]

[chips]
base = "hc1"
node = ["N6", "N3"]

[quality]
stories = 2

[ttc]
tasks = ["add:6"]
attempts = 3
accuracy = 0.5
tokens = 8
"""


def write_sweep(folder: Path, text: str = TINY, name: str = "sweep.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def explore_json(capsys, *args) -> dict:
    status = main(["explore", *map(str, args), "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def figures(points: list[dict]) -> list[dict]:
    """What a point measured, without what only says where it ran."""
    return [{k: v for k, v in p.items() if k != "chip_base"} for p in points]


# -- end to end --------------------------------------------------------------------------------------

def test_a_sweep_on_a_local_cluster_matches_the_same_sweep_on_a_given_scheduler(tmp_path, capsys):
    from dask.distributed import LocalCluster

    from hardwire.chip.commands import resolve_chip
    from hardwire.chip.estimate import estimate
    from hardwire.chip.presets import model_preset

    spec = write_sweep(tmp_path)
    default = explore_json(capsys, spec, "--workers", "1")          # a real cluster: one worker process
    points = default["points"]
    assert [(p["model"], p["plan"], p["node"]) for p in points] == [
        ("task-small", "w8", "N6"), ("task-small", "w8", "N3"),
        ("preset:stories15m", None, "N6"), ("preset:stories15m", None, "N3")]
    assert all(p["error"] is None for p in points)
    weighted, preset = points[0], points[3]
    for key in ("tokens_per_s", "area_mm2", "cost_per_mtok_usd", "perplexity", "top1_agreement", "kl_mean",
                "ttc_median_s", "attempt_accuracy"):
        assert isinstance(weighted[key], float), key
    assert preset["perplexity"] is None and preset["ttc_median_s"] > 0
    # the estimate's figures are `hardwire estimate --json`'s for the same model and chip
    reference = estimate(model_preset("stories15m"), resolve_chip("hc1", "N3", None, None, None)).to_json()
    for key in ("tokens_per_s", "area_mm2", "cost_per_mtok_usd", "power_w", "max_users"):
        assert preset[key] == pytest.approx(reference[key]), key
    # one die, two chips: the same quality and attempts, the time on each chip's clock
    assert points[0]["die_id"] == points[1]["die_id"] and points[0]["perplexity"] == points[1]["perplexity"]
    assert default["pareto"] == pareto_front(points, [Objective(o.split(":")[0], o.split(":")[1])
                                                      for o in default["objectives"]])

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        given = explore_json(capsys, spec, "--scheduler", cluster.scheduler_address)
    assert figures(given["points"]) == figures(points) and given["pareto"] == default["pareto"]


def test_resume_skips_finished_points_and_drops_a_torn_line(tmp_path):
    sweep = read_sweep(write_sweep(tmp_path))
    folder = tmp_path / "run"
    with dask_client(workers=1, processes=False) as client:
        first = run_sweep(sweep, client, folder)
        results = folder / RESULTS_FILE
        lines = results.read_text().splitlines(keepends=True)
        assert len(lines) == len(sweep.points) == 4
        # a run killed after one point, in the middle of writing the second
        results.write_text(lines[0] + lines[1][:len(lines[1]) // 2])
        finished = []
        resumed = run_sweep(sweep, client, folder, lambda done, running, failed, total: finished.append(done))
        assert len(results.read_text().splitlines()) == 4          # three new lines after the one kept
        assert finished[0] == 1                                     # the kept point counted as done
        again = run_sweep(sweep, client, folder)
    assert len(results.read_text().splitlines()) == 4               # nothing computed twice
    assert figures(resumed) == figures(first) == figures(again)


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, task_die, capsys):
    good, bad = tmp_path / "good.die", tmp_path / "bad.die"
    shutil.copytree(task_die, good)
    shutil.copytree(task_die, bad)
    weights = max((p for p in bad.rglob("*") if p.is_file() and p.name != "manifest.json"),
                  key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF                                     # one flipped byte: the hash fails
    weights.write_bytes(bytes(data))
    spec = write_sweep(tmp_path, '''
models = ["good.die", "bad.die"]
[chips]
node = ["N6", "N5"]
[ttc]
tasks = ["add:4"]
attempts = 2
''')
    result = explore_json(capsys, spec, "--workers", "1", "--objectives", "ttc_median_s:min,area_mm2:min",
                          "--csv", tmp_path / "points.csv", "--plot", tmp_path / "front.png")
    good_points, bad_points = result["points"][:2], result["points"][2:]
    rows = (tmp_path / "points.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("model,plan,chip,task_set,error,") and rows[0].endswith(",pareto")
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(p["error"] is None and p["ttc_median_s"] is not None for p in good_points)
    assert all(p["error"] and "BadDie" in p["error"] for p in bad_points)
    assert set(result["pareto"]) <= {0, 1}


# -- the Pareto front ----------------------------------------------------------------------------------

def test_the_pareto_front_keeps_exactly_the_undominated_points():
    points = [
        {"time": 1.0, "area": 10.0, "speed": 5.0, "error": None},      # 0 front: fastest
        {"time": 2.0, "area": 5.0, "speed": 5.0, "error": None},       # 1 front: a trade
        {"time": 2.0, "area": 6.0, "speed": 5.0, "error": None},       # 2 dominated by 1
        {"time": 3.0, "area": 1.0, "speed": 1.0, "error": None},       # 3 front: smallest
        {"time": 0.5, "area": 0.5, "speed": 0.0, "error": "failed"},   # 4 failed: not ranked
        {"time": None, "area": 0.1, "speed": 9.0, "error": None},      # 5 unmeasured: not ranked
        {"time": 1.0, "area": 10.0, "speed": 5.0, "error": None},      # 6 a tie with 0: both stay
    ]
    two = [Objective("time", "min"), Objective("area", "min")]
    assert pareto_front(points, two) == [0, 1, 3, 6]
    # speed to maximise: point 2 is no faster than 1, still dominated; 3 is slower but smallest
    assert pareto_front(points, two + [Objective("speed", "max")]) == [0, 1, 3, 6]
    assert pareto_front(points, [Objective("speed", "max")]) == [5]      # only speed: 5 is measured
    # brute force over every pair agrees on a larger random set
    import random
    rng = random.Random(3)
    many = [{"a": rng.randint(0, 9), "b": rng.randint(0, 9), "c": rng.random()} for _ in range(200)]
    objectives = [Objective("a", "min"), Objective("b", "max"), Objective("c", "min")]
    cost = [(p["a"], -p["b"], p["c"]) for p in many]
    expected = [i for i, x in enumerate(cost)
                if not any(all(y[k] <= x[k] for k in range(3)) and y != x for y in cost)]
    assert pareto_front(many, objectives) == expected


def test_objectives_must_be_measured_and_well_formed():
    measured = {"area_mm2", "tokens_per_s"}
    assert parse_objectives("area_mm2:min,tokens_per_s:max", measured) == [
        Objective("area_mm2", "min"), Objective("tokens_per_s", "max")]
    for text, needle in (("ttc_median_s:min", "not measured"), ("area_mm2:up", "KEY:min"),
                         ("area_mm2,area_mm2", "twice")):
        with pytest.raises(Exception, match=needle):
            parse_objectives(text, measured)


# -- bad sweep files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, key", [
    ('models = ["task-small"]\nplans = ["w8"]\nspeed = 3\n[chips]\n', "speed"),
    ('models = ["preset:llama-9t"]\n[chips]\n', "models[0]"),
    ('models = ["no-such-model"]\n[chips]\n', "models[0]"),
    ('models = []\n[chips]\n', "models"),
    ('models = ["task-small"]\n[chips]\n', "plans"),
    ('models = ["task-small"]\nplans = ["w99"]\n[chips]\n', "plans[0]"),
    ('models = ["preset:llama-3.1-8b"]\n[chips]\nnode = []\n', "chips.node"),
    ('models = ["preset:llama-3.1-8b"]\n[chips]\nnode = ["N2"]\n', "chips.node"),
    ('models = ["preset:llama-3.1-8b"]\n[chips]\nlanes = [4]\n', "chips.lanes"),
    ('models = ["preset:llama-3.1-8b"]\n[chips]\nbase = "hc9"\n', "chips.base"),
    ('models = ["preset:llama-3.1-8b"]\n', "chips"),
    ('models = ["preset:llama-3.1-8b"]\n[chips]\n[ttc]\ntasks = ["add:4"]\nmode = "x"\n', "ttc.mode"),
    ('models = ["preset:llama-3.1-8b"]\n[chips]\n[quality]\nwords = 3\n', "quality.words"),
    ('models = ["preset:llama-3.1-8b"]\nobjectives = ["perplexity:min"]\n[chips]\n', "objectives"),
    ('models = [', "not valid TOML"),
])
def test_bad_sweep_files_exit_2_naming_the_key(tmp_path, capsys, text, key):
    spec = write_sweep(tmp_path, text)
    assert main(["explore", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.toml" in err[0] and key in err[0], err


def test_an_objective_the_sweep_does_not_measure_exits_2(tmp_path, capsys):
    spec = write_sweep(tmp_path, 'models = ["preset:llama-3.1-8b"]\n[chips]\n')
    assert main(["explore", str(spec), "--objectives", "ttc_median_s:min,area_mm2:min"]) == 2
    err = capsys.readouterr().err
    assert "--objectives" in err and "ttc_median_s" in err


def test_files_named_by_a_sweep_are_found_beside_it(tmp_path, monkeypatch):
    (tmp_path / "plan.toml").write_text('default = "w4g32"\n')
    (tmp_path / "chip.toml").write_text('name = "mine"\nnode = "N5"\n')
    spec = write_sweep(tmp_path, 'models = ["task-small"]\nplans = ["plan.toml", "w8"]\n[chips]\nbase = "chip.toml"\n')
    monkeypatch.chdir(tmp_path.parent)
    sweep = read_sweep(spec)
    assert sweep.plan_sources == {"plan.toml": str(tmp_path / "plan.toml"), "w8": "w8"}
    assert [p.chip.base for p in sweep.points] == [str(tmp_path / "chip.toml")] * 2
    assert [p.plan for p in sweep.points] == ["plan.toml", "w8"]


def test_the_bundled_example_sweeps_are_valid():
    root = Path(__file__).resolve().parent.parent / "examples" / "sweeps"
    tasks, presets = read_sweep(root / "tasks.toml"), read_sweep(root / "presets.toml")
    assert len(tasks.points) >= 50 and all(m.kind != "preset" for m in tasks.models)
    assert len(presets.points) >= 1000 and all(m.kind == "preset" for m in presets.models)


def test_a_worker_killed_mid_sweep_loses_no_finished_point(tmp_path):
    """A worker process killed after the first point: the points written stay written, the sweep
    finishes (Dask reruns the lost tasks, or the points fail and a resume runs them), and a resume
    computes nothing twice."""
    import os
    import signal

    sweep = read_sweep(write_sweep(tmp_path))
    folder = tmp_path / "run"
    killed = []
    with dask_client(workers=1) as client:
        def kill_once(done, running, failed, total):
            if done >= 1 and not killed:
                written = (folder / RESULTS_FILE).read_text().splitlines()
                killed.append(written)
                for pid in client.run(os.getpid).values():
                    os.kill(pid, signal.SIGKILL)
        run_sweep(sweep, client, folder, kill_once)
        lines = (folder / RESULTS_FILE).read_text().splitlines()
        assert killed and lines[:len(killed[0])] == killed[0]         # nothing written before was lost
        resumed = run_sweep(sweep, client, folder)
    assert all(p["error"] is None for p in resumed) and len(resumed) == len(sweep.points)
    finished = sum(json.loads(line)["error"] is None for line in lines)
    assert len((folder / RESULTS_FILE).read_text().splitlines()) == len(lines) + len(sweep.points) - finished


@pytest.mark.slow
def test_the_preset_sweep_of_over_a_thousand_points_takes_under_a_minute(capsys):
    import time

    spec = Path(__file__).resolve().parent.parent / "examples" / "sweeps" / "presets.toml"
    started = time.monotonic()
    result = explore_json(capsys, spec)
    assert time.monotonic() - started < 60
    points = result["points"]
    assert len(points) >= 1000 and not any(p["error"] for p in points)
    assert points[0]["chip"] == "hc1" and result["pareto"]
