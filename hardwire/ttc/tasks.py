"""Verifiable tasks: a prompt, a verifier, and the limits of one attempt.

Two sources, one `Task` type:

- a JSONL file, one task per line: `{"prompt": "38+47=", "verifier": {"type": "numeric", "answer": 85}}`
  with optional `"id"`, `"max_tokens"` and `"stop"` (format in docs/time-to-correct.md);
- a bundled generator addressed as `NAME[:COUNT[:SEED]]`, e.g. `add:200`.

Generators are seeded and reproducible, and they only draw **held-out** problems: every problem
belongs to the evaluation split or the training split by a hash of its prompt (`is_held_out`), the
bundled task models were trained only on the training split, and `add:200` only yields problems from
the evaluation split. The answer of a bundled problem is one line; the model ends it with EOS.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from hardwire.errors import HardwireError
from hardwire.ttc.verifiers import Verifier, parse_verifier

DEFAULT_MAX_TOKENS = 32
DEFAULT_STOP = ("\n",)             # an answer is one line unless the task says otherwise
DEFAULT_TASK_SEED = 1234           # the evaluation sets people compare results on
HELD_OUT_PER_MILLE = 100           # 10% of the problem space is never trained on
MAX_TASKS = 1_000_000


class BadTasks(HardwireError):
    """A task file or task-set name is malformed."""


@dataclass(frozen=True)
class Task:
    prompt: str
    verifier: Verifier
    id: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = DEFAULT_STOP


def feedback_prompt(prompt: str, attempt: str, message: str) -> str:
    """The prompt of a retry in feedback mode: the previous attempt and the verifier's message,
    then the task again. The bundled task models were trained on exactly this layout."""
    return f"{prompt}{attempt.rstrip(chr(10))}\n{message}\n{prompt}"


def is_held_out(prompt: str) -> bool:
    """Whether a problem belongs to the evaluation split (stable across machines and versions)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") % 1000 < HELD_OUT_PER_MILLE


# -- bundled generators ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: int


def random_number(rng: random.Random, max_digits: int) -> int:
    """A non-negative integer whose digit count is uniform in 1..max_digits."""
    digits = rng.randint(1, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def addition_problem(rng: random.Random) -> Problem:
    """`a+b=` with operands of 1 to 3 digits: one-digit sums are recall, three-digit sums need
    two carries computed before the first digit is written."""
    a, b = random_number(rng, 3), random_number(rng, 3)
    return Problem(f"{a}+{b}=", a + b)


def expression_problem(rng: random.Random) -> Problem:
    """Two operations on three numbers with the usual precedence, e.g. `7*8-19=` or `45-6+13=`:
    products of one-digit factors, sums and differences of one- or two-digit numbers."""
    ops = [rng.choice("+-*"), rng.choice("+-*")]
    numbers = [0, 0, 0]
    for i in range(3):
        next_to_product = (i > 0 and ops[i - 1] == "*") or (i < 2 and ops[i] == "*")
        numbers[i] = rng.randint(2, 9) if next_to_product else random_number(rng, 2)
    text = f"{numbers[0]}{ops[0]}{numbers[1]}{ops[1]}{numbers[2]}"
    return Problem(text + "=", evaluate_expression(text))


def evaluate_expression(text: str) -> int:
    """+, - and * on non-negative integers with * binding tighter (no eval of the text)."""
    terms: list[int] = []
    signs: list[int] = []
    number, sign, product = "", 1, None
    for char in text + "+":
        if char.isdigit():
            number += char
            continue
        value = int(number) if product is None else product * int(number)
        number = ""
        if char == "*":
            product = value
            continue
        product = None
        terms.append(value)
        signs.append(sign)
        sign = 1 if char == "+" else -1
    return sum(s * t for s, t in zip(signs, terms))


GENERATORS: dict[str, tuple[Callable[[random.Random], Problem], str]] = {
    "add": (addition_problem, "multi-digit addition, operands of 1-3 digits: 38+47="),
    "expr": (expression_problem, "two operations on three numbers with precedence: 7*8-19="),
}
GENERATOR_SALT = {"add": 0, "expr": 1}     # so add:N and expr:N with one seed are unrelated


def problems(name: str, seed: int, held_out: bool) -> Iterator[Problem]:
    """An endless seeded stream of distinct problems of one split (the training stream repeats
    none of the evaluation prompts)."""
    make = GENERATORS[name][0]
    rng = random.Random(seed * 1009 + GENERATOR_SALT[name])
    seen: set[str] = set()
    while True:
        problem = make(rng)
        if is_held_out(problem.prompt) != held_out:
            continue
        if held_out:                       # an evaluation set names each problem once
            if problem.prompt in seen:
                continue
            seen.add(problem.prompt)
        yield problem


def generated_tasks(name: str, count: int, seed: int) -> list[Task]:
    stream = problems(name, seed, held_out=True)
    tasks = []
    for index in range(count):
        problem = next(stream)
        verifier = parse_verifier({"type": "numeric", "answer": problem.answer})
        tasks.append(Task(problem.prompt, verifier, id=f"{name}-{index}", max_tokens=8))
    return tasks


# -- task files -------------------------------------------------------------------------------------

TASK_FIELDS = {"prompt", "verifier", "id", "max_tokens", "stop"}


def task_from_json(data: object, where: str, index: int, base: Path | None) -> Task:
    def bad(message: str):
        raise BadTasks(f"{where}: {message}")

    if not isinstance(data, dict):
        bad(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - TASK_FIELDS)
    if unknown:
        bad(f"unknown field {unknown[0]!r}; expected {', '.join(sorted(TASK_FIELDS))}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        bad("'prompt' must be a non-empty string")
    if "verifier" not in data:
        bad("missing 'verifier'")
    try:
        verifier = parse_verifier(data["verifier"], base=base)
    except HardwireError as e:
        bad(f"verifier: {e}")
    max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 1 << 16:
        bad(f"'max_tokens' must be an integer in [1, 65536], got {max_tokens!r}")
    stop = data.get("stop", list(DEFAULT_STOP))
    if stop is None:
        stop = []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        bad("'stop' must be a non-empty string, a list of them, or null")
    task_id = data.get("id", str(index))
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool):
        bad(f"'id' must be a string or integer, got {task_id!r}")
    return Task(prompt, verifier, id=str(task_id), max_tokens=max_tokens, stop=tuple(stop))


def read_task_file(path: Path) -> list[Task]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadTasks(f"{path}: cannot read the task file ({getattr(e, 'strerror', None) or e})") from None
    tasks = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise BadTasks(f"{where}: not valid JSON ({getattr(e, 'msg', e)})") from None
        tasks.append(task_from_json(data, where, len(tasks), base=path.parent))
        if len(tasks) > MAX_TASKS:
            raise BadTasks(f"{where}: more than {MAX_TASKS:,} tasks")
    if not tasks:
        raise BadTasks(f"{path}: the task file holds no tasks")
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise BadTasks(f"{path}: task id {duplicate!r} appears more than once")
    return tasks


def parse_task_set_name(text: str) -> tuple[str, int, int] | None:
    """(generator, count, seed) for `NAME[:COUNT[:SEED]]`, None when NAME is no generator."""
    parts = text.split(":")
    if parts[0] not in GENERATORS or len(parts) > 3:
        return None
    try:
        count = int(parts[1]) if len(parts) > 1 else 100
        seed = int(parts[2]) if len(parts) > 2 else DEFAULT_TASK_SEED
    except ValueError:
        raise BadTasks(f"{text!r}: expected NAME[:COUNT[:SEED]] with integers, e.g. add:200") from None
    if not 1 <= count <= 100_000:
        raise BadTasks(f"{text!r}: expected a task count in [1, 100000], got {count}")
    if seed < 0:
        raise BadTasks(f"{text!r}: expected a non-negative seed, got {seed}")
    return parts[0], count, seed


def load_tasks(source: str | Path) -> list[Task]:
    """A bundled generator (`add:200`) or a JSONL task file."""
    named = parse_task_set_name(str(source))
    if named is not None:
        return generated_tasks(*named)
    path = Path(source)
    if not path.is_file():
        names = ", ".join(f"{n}[:COUNT]" for n in GENERATORS)
        raise BadTasks(f"{source}: no such task file, and not a bundled task set ({names})")
    return read_task_file(path)


@dataclass
class TaskSet:
    """Tasks with the name they were loaded by (for reports)."""
    name: str
    tasks: list[Task] = field(default_factory=list)
