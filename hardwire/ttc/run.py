"""The attempt loop: per task, sample attempts until one is verified, the attempt limit is reached or
the time budget is spent.

Modes:
  independent   every attempt answers the task's prompt afresh, with its own seed
  feedback      after a failed attempt, the next prompt shows that attempt and the verifier's message
                (`tasks.feedback_prompt`), so a model can use what it was told

Attempt k of task i is sampled with seed `attempt_seed(S, i, k)`: the same run seed gives the same
attempts on every clock, and a task's attempts do not depend on which other tasks are in the set. The
clock only decides how long each attempt took, and so where the budget cuts. An attempt that would
end after the budget is not counted (its answer arrives too late).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable

from hardwire.ttc.systems import System
from hardwire.ttc.tasks import Task, feedback_prompt

MODES = ("independent", "feedback")
DEFAULT_ATTEMPTS = 16
DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True)
class Settings:
    attempts: int = DEFAULT_ATTEMPTS           # attempt limit per task
    budget_s: float | None = None              # time budget per task on the system's clock
    mode: str = "independent"
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = 1.0
    seed: int = 0
    overhead_s: float = 0.0                    # fixed cost added to every attempt (verifier, network)


@dataclass
class Attempt:
    number: int                # 1-based
    seed: int
    prompt_tokens: int
    sampled_tokens: int
    answer: str
    passed: bool
    message: str
    seconds: float             # on the system's clock, overhead included
    wall_s: float              # generation wall time on this machine


@dataclass
class TaskOutcome:
    task_id: str
    attempts: list[Attempt] = field(default_factory=list)
    ttc_s: float | None = None                 # time to the first verified attempt; None if unsolved
    over_budget: bool = False                  # stopped because the next attempt would pass the budget

    @property
    def solved(self) -> bool:
        return self.ttc_s is not None


def attempt_seed(seed: int, task_index: int, attempt: int) -> int:
    """The seed of attempt `attempt` of task `task_index` in a run seeded `seed`: 31 bits, the
    range OpenAI-compatible servers accept, so an endpoint serving the same model samples the same
    attempts as the local engine."""
    digest = hashlib.sha256(f"hardwire-ttc:{seed}:{task_index}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1


# Independent attempts under a clock that does not measure are decoded in batches that double up
# to this size: most tasks are solved in a few attempts, so the first batches stay small (an
# attempt decoded past the one that passes is wasted work, never a different result).
MAX_ATTEMPT_BATCH = 16


def attempt_batches(attempts: int) -> list[range]:
    """1, 1, 2, 4, 8, 16, 16, ... attempt numbers per batch, covering 1..attempts."""
    batches, first, size = [], 1, 1
    while first <= attempts:
        batches.append(range(first, min(first + size, attempts + 1)))
        first += size
        if len(batches) > 1:
            size = min(2 * size, MAX_ATTEMPT_BATCH)
    return batches


def samples(system: System, task: Task, task_index: int, settings: Settings):
    """(number, seed, sample) of each independent attempt in order, batched where that is exact."""
    batched = hasattr(system.generator, "sample_many") and not system.clock.measured
    for numbers in attempt_batches(settings.attempts) if batched else [[n] for n in range(1, settings.attempts + 1)]:
        seeds = [attempt_seed(settings.seed, task_index, n) for n in numbers]
        if batched:
            made = system.generator.sample_many(task.prompt, task.max_tokens, settings.temperature, settings.top_p,
                                                seeds, task.stop)
        else:
            made = [system.generator.sample(task.prompt, task.max_tokens, settings.temperature, settings.top_p,
                                            seeds[0], task.stop, reuse_prompt=not system.clock.measured)]
        yield from zip(numbers, seeds, made)


def feedback_samples(system: System, task: Task, task_index: int, settings: Settings, verdicts: list):
    """(number, seed, sample) of each attempt in feedback mode: after a failed attempt the prompt
    carries it and the verifier's message (`verdicts`, appended by the caller before the next)."""
    prompt = task.prompt
    for number in range(1, settings.attempts + 1):
        seed = attempt_seed(settings.seed, task_index, number)
        sample = system.generator.sample(prompt, task.max_tokens, settings.temperature, settings.top_p, seed,
                                         task.stop, reuse_prompt=False)
        yield number, seed, sample
        prompt = feedback_prompt(task.prompt, sample.text, verdicts[-1].message)


def run_task(system: System, task: Task, task_index: int, settings: Settings) -> TaskOutcome:
    outcome = TaskOutcome(task.id)
    elapsed = 0.0
    verdicts: list = []
    if settings.mode == "independent":
        attempts = samples(system, task, task_index, settings)
    else:
        attempts = feedback_samples(system, task, task_index, settings, verdicts)
    for number, seed, sample in attempts:
        seconds = system.clock.attempt_seconds(sample.prompt_tokens, sample.sampled_tokens, sample.wall_s) \
            + settings.overhead_s
        if settings.budget_s is not None and elapsed + seconds > settings.budget_s:
            outcome.over_budget = True
            break
        elapsed += seconds
        verdict = task.verifier.check(sample.text, task.prompt)
        outcome.attempts.append(Attempt(number, seed, sample.prompt_tokens, sample.sampled_tokens, sample.text,
                                        verdict.passed, verdict.message, seconds, sample.wall_s))
        if verdict.passed:
            outcome.ttc_s = elapsed
            break
        verdicts.append(verdict)
    return outcome


def run_system(system: System, tasks: list[Task], settings: Settings,
               advance: Callable[[], None] = lambda: None) -> list[TaskOutcome]:
    outcomes = []
    for index, task in enumerate(tasks):
        outcomes.append(run_task(system, task, index, settings))
        advance()
    return outcomes


def quantile_time(times: list[float], fraction: float) -> float | None:
    """The time by which `fraction` of the tasks were solved (unsolved tasks count as never solved),
    or None when fewer than that fraction were solved: the ceil(fraction * N)-th smallest time."""
    ordered = sorted(math.inf if t is None else t for t in times)
    if not ordered:
        return None
    value = ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]
    return None if math.isinf(value) else value
