"""Verifiers: does an attempt's answer solve its task, and if not, what to tell the model.

Kinds (the `"type"` of a task's `"verifier"` object; docs/time-to-correct.md):

  exact     the answer equals `answer` (after stripping whitespace unless `"strip": false`)
  numeric   the answer is a number within `abs_tol` / `rel_tol` of `answer`; says "too high"/"too low"
  regex     the answer matches `pattern` (whole answer, or anywhere with `"search": true`)
  python    a user function `module:function` or `file.py:function` called as f(answer, prompt),
            returning a bool or (bool, message)
  tests     user unit tests (`code` or `file`) run after the answer, which is Python source; any
            failure (an assertion, an exception, a non-zero exit) fails the attempt

User code (python, tests) never runs in the harness's process: each check is a fresh Python
subprocess with a wall-time limit, a CPU-time limit and an address-space limit, in its own process
group, killed whole when the time is up. A verifier that hangs, crashes or exhausts memory fails
that attempt with a message saying so; the harness goes on.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hardwire.errors import HardwireError

DEFAULT_TIME_LIMIT_S = 5.0
DEFAULT_MEMORY_MB = 1024
MAX_MESSAGE_CHARS = 200          # feedback text handed back to the model


class BadVerifier(HardwireError):
    """A verifier description is malformed."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    message: str             # "" when passed; otherwise feedback a model could use


class Verifier:
    kind = "abstract"

    def check(self, answer: str, prompt: str) -> Verdict:
        raise NotImplementedError


def clean(answer: str, strip: bool) -> str:
    return answer.strip() if strip else answer


@dataclass(frozen=True)
class ExactVerifier(Verifier):
    answer: str
    strip: bool = True
    ignore_case: bool = False
    kind = "exact"

    def check(self, answer: str, prompt: str) -> Verdict:
        got, want = clean(answer, self.strip), clean(self.answer, self.strip)
        if self.ignore_case:
            got, want = got.casefold(), want.casefold()
        return Verdict(True, "") if got == want else Verdict(False, "wrong")


def parse_number(text: str) -> float | None:
    """A decimal number, optionally signed, nothing else (no NaN, no infinity)."""
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class NumericVerifier(Verifier):
    answer: float
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    kind = "numeric"

    def check(self, answer: str, prompt: str) -> Verdict:
        value = parse_number(answer.strip())
        if value is None:
            return Verdict(False, "not a number")
        if math.isclose(value, self.answer, rel_tol=self.rel_tol, abs_tol=self.abs_tol):
            return Verdict(True, "")
        return Verdict(False, "too high" if value > self.answer else "too low")


@dataclass(frozen=True)
class RegexVerifier(Verifier):
    pattern: str
    search: bool = False
    ignore_case: bool = False
    kind = "regex"

    def check(self, answer: str, prompt: str) -> Verdict:
        compiled = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)
        found = compiled.search(answer) if self.search else compiled.fullmatch(answer.strip())
        return Verdict(True, "") if found else Verdict(False, "no match")


# -- user code, in a sandboxed subprocess -----------------------------------------------------------

# Runs in the child. The verdict travels on a private copy of stdout's descriptor, so whatever the
# user's code prints (to stdout or stderr) cannot forge or garble it.
RUNNER = r"""
import importlib, importlib.util, json, os, sys, traceback
result = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
request = json.load(sys.stdin)
def verdict(passed, message=""):
    result.write(json.dumps({"passed": bool(passed), "message": str(message)}))
    result.flush()
    os._exit(0)
try:
    if request["kind"] == "python":
        sys.path[:0] = request["path"]
        if request["file"]:
            spec = importlib.util.spec_from_file_location("hardwire_user_verifier", request["file"])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(request["module"])
        outcome = getattr(module, request["function"])(request["answer"], request["prompt"])
        if isinstance(outcome, tuple) and len(outcome) == 2:
            verdict(bool(outcome[0]), outcome[1] if not outcome[0] else "")
        if isinstance(outcome, bool):
            verdict(outcome, "" if outcome else "rejected")
        verdict(False, "the verifier returned %s, expected a bool or (bool, message)" % type(outcome).__name__)
    else:
        namespace = {"__name__": "__main__"}
        exec(compile(request["answer"], "<answer>", "exec"), namespace)
        exec(compile(request["tests"], request["tests_name"], "exec"), namespace)
        verdict(True)
except SystemExit as e:
    if e.code in (None, 0) and request["kind"] == "tests":
        verdict(True)
    verdict(False, "exited with status %s" % e.code)
except BaseException as e:
    last = traceback.format_exception_only(type(e), e)[-1].strip()
    verdict(False, last)
"""


def limit_resources(memory_bytes: int, cpu_seconds: int):
    def apply():
        import resource
        os.setsid()                   # its own process group, so a timeout kills its children too
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_sandboxed(request: dict, time_limit_s: float, memory_mb: int, cwd: Path) -> Verdict:
    """One verification in a fresh interpreter under limits; never raises for user-code failures."""
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen([sys.executable, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=stderr, cwd=cwd,
                                    preexec_fn=limit_resources(memory_mb << 20, math.ceil(time_limit_s)))
        except OSError as e:
            return Verdict(False, f"verifier could not start: {e.strerror}")
        try:
            out, _ = proc.communicate(json.dumps(request).encode(), timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return Verdict(False, f"verifier timed out after {time_limit_s:g} s")
        finally:
            kill_group(proc)
        try:
            data = json.loads(out.decode("utf-8", "replace"))
            return Verdict(bool(data["passed"]), str(data["message"])[:MAX_MESSAGE_CHARS])
        except (ValueError, KeyError, TypeError):
            stderr.seek(0)
            tail = stderr.read()[-400:].decode("utf-8", "replace").strip().splitlines()
            reason = "killed by the memory or CPU limit" if proc.returncode and proc.returncode < 0 \
                else (tail[-1] if tail else f"exit status {proc.returncode}")
            return Verdict(False, f"verifier crashed: {reason}"[:MAX_MESSAGE_CHARS])


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


@dataclass(frozen=True)
class PythonVerifier(Verifier):
    """`module:function` (importable from the task file's folder or the working directory) or
    `path/to/file.py:function` (relative to the task file's folder)."""
    module: str
    function: str
    file: str | None
    search_path: tuple[str, ...]
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    kind = "python"

    def check(self, answer: str, prompt: str) -> Verdict:
        request = {"kind": "python", "module": self.module, "function": self.function, "file": self.file,
                   "path": list(self.search_path), "answer": answer, "prompt": prompt}
        return run_sandboxed(request, self.time_limit_s, self.memory_mb, Path.cwd())


@dataclass(frozen=True)
class TestsVerifier(Verifier):
    """The answer is Python source; `tests` run after it in the same namespace."""
    tests: str
    tests_name: str = "<tests>"
    strip_fences: bool = True
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    kind = "tests"

    def check(self, answer: str, prompt: str) -> Verdict:
        source = code_in(answer) if self.strip_fences else answer
        request = {"kind": "tests", "answer": source, "tests": self.tests, "tests_name": self.tests_name}
        return run_sandboxed(request, self.time_limit_s, self.memory_mb, Path.cwd())


def code_in(answer: str) -> str:
    """The body of the first ``` fenced block, or the whole answer when there is none."""
    match = re.search(r"```[A-Za-z0-9_+-]*\n(.*?)```", answer, re.DOTALL)
    return match.group(1) if match else answer


# -- parsing ---------------------------------------------------------------------------------------

def parse_verifier(data: object, base: Path | None = None) -> Verifier:
    """A verifier from its JSON description; `base` is the folder relative paths start from."""
    if not isinstance(data, dict):
        raise BadVerifier(f"expected an object with a 'type', got {type(data).__name__}")
    kind = data.get("type")
    fields = {k: v for k, v in data.items() if k != "type"}

    def take(name, kinds, default=None, required=False):
        if name not in fields:
            if required:
                raise BadVerifier(f"a {kind} verifier needs {name!r}")
            return default
        value = fields.pop(name)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
            raise BadVerifier(f"{name!r} has the wrong type ({type(value).__name__})")
        return value

    def limits():
        time_limit = take("time_limit_s", (int, float), DEFAULT_TIME_LIMIT_S)
        memory = take("memory_mb", int, DEFAULT_MEMORY_MB)
        if not (math.isfinite(time_limit) and 0 < time_limit <= 3600):
            raise BadVerifier(f"'time_limit_s' must be in (0, 3600], got {time_limit}")
        if not 64 <= memory <= 1 << 20:
            raise BadVerifier(f"'memory_mb' must be in [64, 1048576], got {memory}")
        return float(time_limit), memory

    if kind == "exact":
        answer = take("answer", (str, int), required=True)
        verifier = ExactVerifier(str(answer), take("strip", bool, True), take("ignore_case", bool, False))
    elif kind == "numeric":
        answer = take("answer", (int, float), required=True)
        abs_tol, rel_tol = take("abs_tol", (int, float), 0.0), take("rel_tol", (int, float), 0.0)
        for name, value in (("answer", answer), ("abs_tol", abs_tol), ("rel_tol", rel_tol)):
            if not math.isfinite(value) or (name != "answer" and value < 0):
                raise BadVerifier(f"{name!r} must be a finite number{' >= 0' if name != 'answer' else ''}")
        verifier = NumericVerifier(float(answer), float(abs_tol), float(rel_tol))
    elif kind == "regex":
        pattern = take("pattern", str, required=True)
        try:
            re.compile(pattern)
        except re.error as e:
            raise BadVerifier(f"'pattern' is not a valid regular expression ({e})") from None
        verifier = RegexVerifier(pattern, take("search", bool, False), take("ignore_case", bool, False))
    elif kind == "python":
        reference = take("function", str, required=True)
        target, _, function = reference.rpartition(":")
        if not target or not function.isidentifier():
            raise BadVerifier(f"'function' must be module:function or file.py:function, got {reference!r}")
        folder = base or Path.cwd()
        file = None
        if target.endswith(".py"):
            path = Path(target) if Path(target).is_absolute() else folder / target
            if not path.is_file():
                raise BadVerifier(f"verifier file {path} does not exist")
            file = str(path.resolve())
        time_limit, memory = limits()
        verifier = PythonVerifier(target, function, file, (str(folder.resolve()), str(Path.cwd())),
                                  time_limit, memory)
    elif kind == "tests":
        code, file = take("code", str), take("file", str)
        if (code is None) == (file is None):
            raise BadVerifier("a tests verifier needs exactly one of 'code' or 'file'")
        name = "<tests>"
        if file is not None:
            path = Path(file) if Path(file).is_absolute() else (base or Path.cwd()) / file
            try:
                code, name = path.read_text(encoding="utf-8"), str(path)
            except (OSError, UnicodeDecodeError) as e:
                raise BadVerifier(f"cannot read tests file {path} ({getattr(e, 'strerror', None) or e})") from None
        try:
            compile(code, name, "exec")
        except SyntaxError as e:
            raise BadVerifier(f"the tests do not compile ({e.msg}, line {e.lineno})") from None
        strip_fences = take("strip_fences", bool, True)
        time_limit, memory = limits()
        verifier = TestsVerifier(code, name, strip_fences, time_limit, memory)
    else:
        raise BadVerifier(f"unknown verifier type {kind!r}; expected exact, numeric, regex, python or tests")
    if fields:
        raise BadVerifier(f"unknown field {sorted(fields)[0]!r} for a {kind} verifier")
    return verifier


def _tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)
