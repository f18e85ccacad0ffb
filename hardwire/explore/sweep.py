"""Running a sweep on Dask: a local cluster of worker processes by default, or a given scheduler.

The task graph follows the data: one `prepare_weights` per (model, plan) (the freeze), one
`score_quality` per die, one `attempt_tasks` per (die, task set), and one `measure_point` per point,
which waits for the three it reads. A point whose freeze failed fails with the freeze's error; the
others go on.

Every finished point, failed or not, is appended to `points.jsonl` in the sweep's folder as one
line written by one `write` (a line is there whole or not at all; a torn last line from a killed
run is dropped when the folder is opened again). Resuming from the folder skips the points that
finished without error under the same measurement settings, and reuses the dies already frozen.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from hardwire.errors import BadConfig
from hardwire.explore.spec import Point, Sweep
from hardwire.explore.work import attempt_tasks, die_folder_name, measure_point, prepare_weights, score_quality

RESULTS_FILE = "points.jsonl"
DIES_FOLDER = "dies"
SCHEDULER_TIMEOUT_S = 10


class ResultStore:
    """The finished points of a sweep folder, by point key; the last record of a key wins."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / RESULTS_FILE
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self.records = self.read()

    def read(self) -> dict[str, dict]:
        data = self.path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) != len(data):              # a line cut short by a killed run: drop it
            with open(self.path, "r+b") as f:
                f.truncate(len(whole))
        records = {}
        for number, line in enumerate(whole.decode("utf-8", "replace").splitlines(), 1):
            try:
                record = json.loads(line)
                records[record["key"]] = record
            except (ValueError, KeyError, TypeError):
                raise BadConfig(f"line {number} is not a point record; is this a sweep folder?",
                                path=self.path) from None
        return records

    def add(self, record: dict) -> None:
        line = (json.dumps(record, default=str) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[record["key"]] = record

    def finished(self, key: str) -> bool:
        record = self.records.get(key)
        return record is not None and record.get("error") is None


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2, processes: bool = True):
    """A Dask client: of the cluster at `scheduler` (tcp://HOST:PORT), or of a local cluster of
    `workers` single-threaded worker processes (threads in this process with `processes=False`)."""
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as e:
            raise BadConfig(f"cannot reach the Dask scheduler {scheduler}: {e}", field="--scheduler") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def run_sweep(sweep: Sweep, client, folder: Path,
              progress: Callable[[int, int, int, int], None] = lambda done, running, failed, total: None) -> list[dict]:
    """Every point's record, in the sweep's order. `progress(done, running, failed, total)` is
    called as points finish."""
    from dask.distributed import as_completed

    store = ResultStore(folder)
    keys = [sweep.point_key(p) for p in sweep.points]
    todo = [(key, point) for key, point in zip(keys, sweep.points) if not store.finished(key)]
    dies = Path(folder) / DIES_FOLDER
    dies.mkdir(exist_ok=True)
    weights, quality, attempts, points = {}, {}, {}, {}
    for key, point in todo:
        die = scored = tried = None
        if point.model.kind != "preset":
            if point.weights not in weights:
                path = str(dies / die_folder_name(point.model, point.plan or "die", sweep.plan_sources.get(point.plan)))
                weights[point.weights] = client.submit(prepare_weights, point.model, sweep.plan_sources.get(point.plan),
                                                       path, pure=False)
            die = weights[point.weights]
            if sweep.quality is not None:
                if point.weights not in quality:
                    quality[point.weights] = client.submit(score_quality, die, sweep.quality, pure=False)
                scored = quality[point.weights]
            if sweep.ttc is not None:
                if (point.weights, point.task_set) not in attempts:
                    attempts[point.weights, point.task_set] = client.submit(attempt_tasks, die, point.task_set,
                                                                            sweep.ttc, pure=False)
                tried = attempts[point.weights, point.task_set]
        future = client.submit(measure_point, point, die, scored, tried, sweep.estimate, sweep.ttc, pure=False)
        points[future] = (key, point)
    total, done, failed = len(sweep.points), len(sweep.points) - len(todo), 0
    progress(done, 0, failed, total)
    for future in as_completed(list(points)):
        key, point = points.pop(future)
        record = future.result() if future.status == "finished" else failed_record(point, future.exception())
        failed += record["error"] is not None
        store.add({"key": key, **record})
        done += 1
        progress(done, min(len(points), running_capacity(client)), failed, total)
    return [{k: v for k, v in store.records[key].items() if k != "key"} for key in keys]


def failed_record(point: Point, error: BaseException) -> dict:
    message = " ".join(str(error).split()) or type(error).__name__
    return {**point.axes, "error": f"{type(error).__name__}: {message}"}


_capacity: dict[int, tuple[float, int]] = {}


def running_capacity(client) -> int:
    """How many tasks the cluster runs at once (its worker threads), asked at most every 5 s."""
    now = time.monotonic()
    cached = _capacity.get(id(client))
    if cached is None or now - cached[0] > 5:
        try:
            threads = sum(client.nthreads().values())
        except Exception:                      # the scheduler went away: the count is only for display
            threads = cached[1] if cached else 1
        cached = _capacity[id(client)] = (now, threads)
    return cached[1]
