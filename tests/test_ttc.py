"""Time to correct: tasks and verifiers, the attempt loop, clocks, stated systems and the command."""
from __future__ import annotations

import json
import math
import random
import time

import pytest

from hardwire.errors import HardwireError
from hardwire.ttc import analytic
from hardwire.ttc.clocks import RateClock, make_clock
from hardwire.ttc.report import summarize_analytic, summarize_measured
from hardwire.ttc.run import Settings, attempt_seed, quantile_time, run_system, run_task
from hardwire.ttc.systems import Sample, System, open_system, parse_analytic
from hardwire.ttc.tasks import (BadTasks, evaluate_expression, feedback_prompt, is_held_out, load_tasks,
                                parse_task_set_name)
from hardwire.ttc.verifiers import parse_verifier


# -- tasks ------------------------------------------------------------------------------------------

def test_bundled_task_sets_are_seeded_held_out_and_correct():
    first, again = load_tasks("add:40"), load_tasks("add:40")
    assert [t.prompt for t in first] == [t.prompt for t in again]
    assert [t.prompt for t in load_tasks("add:40:7")] != [t.prompt for t in first]
    assert len({t.prompt for t in first}) == 40 and all(is_held_out(t.prompt) for t in first)
    for task in first:
        a, b = task.prompt.rstrip("=").split("+")
        assert task.verifier.check(str(int(a) + int(b)), task.prompt).passed
    for task in load_tasks("expr:60"):
        expression = task.prompt.rstrip("=")
        assert evaluate_expression(expression) == eval(expression)       # Python's own precedence
        assert task.verifier.check(str(eval(expression)), task.prompt).passed


def test_held_out_split_is_about_a_tenth_of_problems():
    rng = random.Random(5)
    prompts = {f"{rng.randint(0, 999)}+{rng.randint(0, 999)}=" for _ in range(4000)}
    share = sum(map(is_held_out, prompts)) / len(prompts)
    assert 0.07 < share < 0.13


def test_task_set_names():
    assert parse_task_set_name("add:200") == ("add", 200, 1234)
    assert parse_task_set_name("expr:5:9") == ("expr", 5, 9)
    assert parse_task_set_name("tasks.jsonl") is None
    for bad in ("add:x", "add:0", "add:5:-1"):
        with pytest.raises(BadTasks):
            parse_task_set_name(bad)


def test_verifiers_of_each_kind(tmp_path):
    def check(spec, answer):
        return parse_verifier(spec, base=tmp_path).check(answer, "prompt")

    assert check({"type": "exact", "answer": "Paris"}, " Paris\n").passed
    assert not check({"type": "exact", "answer": "Paris"}, "paris").passed
    assert check({"type": "exact", "answer": "Paris", "ignore_case": True}, "paris").passed
    assert check({"type": "numeric", "answer": 85}, "85").passed
    assert check({"type": "numeric", "answer": 85}, "84").message == "too low"
    assert check({"type": "numeric", "answer": 85}, "9e9").message == "too high"
    assert check({"type": "numeric", "answer": 85}, "eighty").message == "not a number"
    assert check({"type": "numeric", "answer": 3.14159, "abs_tol": 0.01}, "3.14").passed
    assert check({"type": "regex", "pattern": r"\d+ apples"}, "12 apples").passed
    assert not check({"type": "regex", "pattern": r"\d+ apples"}, "I have 12 apples").passed
    assert check({"type": "regex", "pattern": r"\d+ apples", "search": True}, "I have 12 apples").passed
    (tmp_path / "checks.py").write_text("def even(answer, prompt):\n    n = int(answer)\n"
                                        "    return (n % 2 == 0, 'odd, try again')\n")
    assert check({"type": "python", "function": "checks.py:even"}, "4").passed
    verdict = check({"type": "python", "function": "checks:even"}, "5")
    assert not verdict.passed and verdict.message == "odd, try again"
    tests = {"type": "tests", "code": "assert square(3) == 9\nassert square(-2) == 4\n"}
    assert check(tests, "def square(x):\n    return x * x\n").passed
    assert check(tests, "```python\ndef square(x):\n    return x * x\n```").passed
    failing = check(tests, "def square(x):\n    return 2 * x\n")
    assert not failing.passed and "AssertionError" in failing.message


def test_user_code_that_prints_cannot_forge_a_verdict(tmp_path):
    (tmp_path / "noisy.py").write_text('import sys\ndef check(answer, prompt):\n'
                                       '    print(\'{"passed": true, "message": ""}\')\n'
                                       '    sys.stderr.write("noise")\n    return False\n')
    assert not parse_verifier({"type": "python", "function": "noisy.py:check"}, base=tmp_path).check("1", "p").passed


@pytest.mark.parametrize("body, expect", [
    ("import time\n    time.sleep(1000)", "timed out"),
    ("import os\n    os._exit(3)", "crashed"),
    ("raise RuntimeError('broken')", "RuntimeError: broken"),
    ("x = bytearray(4 << 30)", "MemoryError"),
    ("import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)", "crashed"),
])
def test_hanging_or_crashing_verifier_fails_the_attempt_within_its_limit(tmp_path, body, expect):
    (tmp_path / "bad.py").write_text(f"def check(answer, prompt):\n    {body}\n    return True\n")
    verifier = parse_verifier({"type": "python", "function": "bad.py:check", "time_limit_s": 1,
                               "memory_mb": 512}, base=tmp_path)
    started = time.monotonic()
    verdict = verifier.check("1", "p")
    assert not verdict.passed and expect in verdict.message
    assert time.monotonic() - started < 5


def test_task_file_with_a_bad_line_exits_2_naming_the_line(cli, tmp_path):
    good = json.dumps({"prompt": "1+1=", "verifier": {"type": "numeric", "answer": 2}})
    cases = {
        "not json": "{oops",
        "no verifier": json.dumps({"prompt": "2+2="}),
        "bad verifier": json.dumps({"prompt": "2+2=", "verifier": {"type": "telepathy"}}),
        "empty prompt": json.dumps({"prompt": "", "verifier": {"type": "exact", "answer": "4"}}),
    }
    for name, line in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        path.write_text(f"{good}\n\n{line}\n{good}\n")
        proc = cli("ttc", "--tasks", path, "--system", "name=x,rate=1,accuracy=1,tokens=1", expect=2)
        assert f"{path}:3:" in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1


# -- the attempt loop ---------------------------------------------------------------------------------

class ScriptedGenerator:
    """Answers from a list, one per call, recording the prompts it was given."""
    backend = "scripted"

    def __init__(self, answers):
        self.answers, self.prompts = list(answers), []

    def sample(self, prompt, max_tokens, temperature, top_p, seed, stop, reuse_prompt):
        self.prompts.append(prompt)
        return Sample(self.answers[len(self.prompts) - 1], prompt_tokens=len(prompt), sampled_tokens=3, wall_s=0.0)


def scripted_system(answers, clock="rate:10"):
    return System("scripted", clock=make_clock(clock), generator=ScriptedGenerator(answers))


def test_loop_stops_at_the_first_verified_attempt():
    task = load_tasks("add:1")[0]
    right = str(int(task.verifier.answer))
    system = scripted_system(["1", "2", right, right, "3"])
    outcome = run_task(system, task, 0, Settings(attempts=5))
    assert [a.passed for a in outcome.attempts] == [False, False, True]
    assert len(system.generator.prompts) == 3
    assert outcome.ttc_s == pytest.approx(3 * 3 / 10)


def test_feedback_mode_shows_the_previous_attempt_and_the_verifier_message():
    task = load_tasks("add:1")[0]
    answer = int(task.verifier.answer)
    system = scripted_system([str(answer + 10), str(answer - 1), str(answer)])
    run_task(system, task, 0, Settings(attempts=3, mode="feedback"))
    assert system.generator.prompts == [
        task.prompt,
        feedback_prompt(task.prompt, str(answer + 10), "too high"),
        feedback_prompt(task.prompt, str(answer - 1), "too low")]


def test_budget_cuts_attempts_that_would_end_too_late():
    task = load_tasks("add:1")[0]
    right = str(int(task.verifier.answer))
    system = scripted_system(["0", "0", right])             # 0.3 s per attempt at rate:10
    outcome = run_task(system, task, 0, Settings(attempts=5, budget_s=0.7))
    assert not outcome.solved and len(outcome.attempts) == 2 and outcome.over_budget


def test_attempt_seeds_differ_per_task_and_attempt():
    seeds = {attempt_seed(0, t, a) for t in range(50) for a in range(1, 20)}
    assert len(seeds) == 50 * 19 and all(0 <= s < 1 << 31 for s in seeds)


def test_quantiles_count_unsolved_tasks_as_never_solved():
    assert quantile_time([1.0, 2.0, None, None], 0.5) == 2.0
    assert quantile_time([1.0, None, None, None], 0.5) is None
    assert quantile_time([3.0] * 9 + [None], 0.9) == 3.0
    assert quantile_time([3.0] * 8 + [None] * 2, 0.9) is None


# -- clocks on a real model ---------------------------------------------------------------------------

def test_same_seeds_same_attempts_whatever_the_clock_and_rates_scale_exactly(task_die):
    tasks = load_tasks("add:12")
    settings = Settings(attempts=4, seed=3)
    runs = {clock: run_system(open_system(f"{task_die}@{clock}"), tasks, settings)
            for clock in ("rate:100", "rate:1000", "chip")}
    answers = {clock: [[a.answer for a in o.attempts] for o in outcomes] for clock, outcomes in runs.items()}
    assert answers["rate:100"] == answers["rate:1000"] == answers["chip"]
    slow = summarize_measured("s", "rate:100", "golden", runs["rate:100"])
    fast = summarize_measured("f", "rate:1000", "golden", runs["rate:1000"])
    assert slow["solved"] > 0
    for a, b in zip(slow["ttc_s"], fast["ttc_s"]):
        assert (a is None and b is None) or b == pytest.approx(a / 10, rel=1e-12)


def test_chip_clock_is_the_estimate_prefill_then_one_step_per_token(task_die):
    from hardwire import open_die
    from hardwire.chip.commands import die_weight_formats, resolve_chip
    from hardwire.chip.estimate import estimate

    die = open_die(task_die)
    clock = make_clock("chip", die)
    config = resolve_chip("hc1", None, None, None, die_weight_formats(die))
    prompt, sampled = 7, 4
    expected = estimate(die.spec, config, context=prompt, prompt_tokens=prompt, users=1).ttft_ms / 1e3
    for context in range(prompt + 1, prompt + sampled):
        expected += estimate(die.spec, config, context=context, users=1).latency_us_per_token / 1e6
    assert clock.attempt_seconds(prompt, sampled, 0.0) == pytest.approx(expected, rel=1e-12)


def test_never_solved_task_gives_zero_solved_and_null_times(cli, tmp_path, task_die):
    path = tmp_path / "impossible.jsonl"
    path.write_text(json.dumps({"prompt": "1+1=", "verifier": {"type": "exact", "answer": "banana"}}) + "\n")
    out = json.loads(cli("ttc", "--tasks", path, "--system", task_die, "--attempts", "3", "--json").stdout)
    result = out["systems"][0]
    assert out["tasks"] == 1
    assert result["solved"] == 0 and result["ttc_median_s"] is None and result["ttc_p90_s"] is None
    assert result["mean_attempts"] == 3


# -- stated systems -------------------------------------------------------------------------------------

def test_stated_system_in_closed_form():
    system = parse_analytic("name=fast,rate=100,accuracy=0.5,tokens=200,ttft_ms=500")
    assert system.seconds_per_attempt == pytest.approx(2.5)
    result = summarize_analytic("fast", system, Settings(attempts=10))
    # solved after k attempts: 1/2, 3/4, 7/8, 15/16: half by the first, 90% by the fourth
    assert result["ttc_median_s"] == pytest.approx(2.5) and result["ttc_p90_s"] == pytest.approx(10.0)
    assert result["solved"] == pytest.approx(1 - 0.5 ** 10)
    limited = summarize_analytic("fast", system, Settings(attempts=10, budget_s=7.5))
    assert limited["solved"] == pytest.approx(0.875) and limited["ttc_p90_s"] is None


def test_closed_form_matches_simulated_independent_attempts():
    rng = random.Random(0)
    p, per_attempt, limit, tasks = 0.2, 1.5, 12, 20000
    times = []
    for _ in range(tasks):
        k = next((i for i in range(1, limit + 1) if rng.random() < p), None)
        times.append(None if k is None else k * per_attempt)
    allowed = analytic.attempts_allowed(per_attempt, limit, None)
    assert sum(t is not None for t in times) / tasks == pytest.approx(analytic.solved_fraction(p, allowed), abs=0.01)
    assert quantile_time(times, 0.5) == analytic.time_for_fraction(p, per_attempt, 0.5, allowed)


def test_bad_systems_are_refused(cli):
    for system in ("name=x,rate=0,accuracy=0.5,tokens=10", "name=x,rate=1,accuracy=2,tokens=10",
                   "rate=1,accuracy=0.5", "nosuchmodel@rate:100", "task-small@rate:-3", "task-small@lightspeed"):
        proc = cli("ttc", "--tasks", "add:2", "--system", system, expect=2)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, system


def test_rate_clock_has_no_ttft_unless_stated():
    assert RateClock(100).attempt_seconds(50, 10, 9.9) == pytest.approx(0.1)
    assert RateClock(100, 250).attempt_seconds(50, 10, 9.9) == pytest.approx(0.35)
    assert math.isclose(make_clock("rate:1000").attempt_seconds(0, 7, 0) * 10, make_clock("rate:100").attempt_seconds(0, 7, 0))


# -- the command ------------------------------------------------------------------------------------------

def test_ttc_command_json_and_plot(cli, tmp_path, task_die):
    plot = tmp_path / "solved.png"
    out = json.loads(cli("ttc", "--tasks", "add:20", "--system", f"{task_die}@chip", "--system",
                         "task-small@rate:200", "--system", "name=frontier,rate=80,accuracy=0.7,tokens=600",
                         "--attempts", "4", "--json", "--plot", plot).stdout)
    assert out["tasks"] == 20 and len(out["systems"]) == 3
    keys = {"system", "clock", "attempt_accuracy", "solved", "mean_attempts", "tokens_per_attempt",
            "ttc_median_s", "ttc_p90_s"}
    for result in out["systems"]:
        assert keys <= set(result)
    assert [r["clock"] for r in out["systems"]] == ["chip", "rate:200", "rate:80"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_endpoint_system_samples_what_the_local_engine_does(tmp_path):
    """A server over the same model, asked with the same seeds, gives the same attempts."""
    import threading

    import uvicorn

    from hardwire.runtime.engine import make_engine
    from hardwire.runtime.server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(make_engine("task-small"), "task-small"), host="127.0.0.1",
                                           port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        tasks = load_tasks("add:6")
        settings = Settings(attempts=3, seed=1)
        remote = run_system(open_system(f"http://127.0.0.1:{port}/v1@rate:100"), tasks, settings)
        local = run_system(open_system("task-small@rate:100"), tasks, settings)
    finally:
        server.should_exit = True
        thread.join(10)
    assert [[a.answer for a in o.attempts] for o in remote] == [[a.answer for a in o.attempts] for o in local]
    assert [o.ttc_s for o in remote] == [o.ttc_s for o in local]


def test_bundled_names_are_refused_cleanly_when_misspelled():
    with pytest.raises(HardwireError):
        open_system("task-smol@rate:10")


def test_batched_attempts_are_the_one_by_one_attempts(task_die):
    """Independent attempts decoded together (golden's exact batched step, batches 1, 1, 2, 4, ...)
    are, attempt by attempt, those decoded one after another."""
    from hardwire.ttc.run import attempt_batches

    class OneByOne:                         # the same generator without its batched path
        def __init__(self, inner):
            self.sample = inner.sample

    tasks = load_tasks("add:10")
    settings = Settings(attempts=12, seed=5)
    batched = run_system(open_system(f"{task_die}@chip"), tasks, settings)
    alone_system = open_system(f"{task_die}@chip")
    alone_system.generator = OneByOne(alone_system.generator)
    alone = run_system(alone_system, tasks, settings)
    assert [[(a.answer, a.passed, a.seconds) for a in o.attempts] for o in batched] == \
        [[(a.answer, a.passed, a.seconds) for a in o.attempts] for o in alone]
    assert any(len(o.attempts) > 2 for o in batched)          # batches beyond the first were used
    assert [list(r) for r in attempt_batches(12)] == [[1], [2], [3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]


def test_generate_many_is_generate_per_seed(task_die):
    from hardwire.runtime.engine import make_engine
    for backend in ("golden", "float"):
        engine = make_engine(task_die, backend=backend)
        prompt = engine.tokenizer.encode("12+34=", bos=True)
        seeds = [3, 1, 4, 1, 5]
        many = engine.generate_many(prompt, seeds, max_tokens=6, temperature=1.0, stop=("\n",))
        alone = [engine.generate(prompt, max_tokens=6, temperature=1.0, seed=s, stop=("\n",)) for s in seeds]
        assert [(g.ids, g.text, g.stop_reason) for g in many] == [(g.ids, g.text, g.stop_reason) for g in alone]
