"""The values a command-line option may take, checked once for every command that has the option.

Typer converts text to the option's type (`-n abc` is a usage error there); what a type cannot
say — a finite temperature, a top-p in (0, 1], a count of at least one, an output file whose folder
exists — is said here, by option name, and attached to every command as it is built. A bad value
is a usage error naming the option and the value: one line on stderr, exit code 2.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import typer

# The click the installed typer really uses (recent typers carry their own copy).
CLICK_EXCEPTIONS = sys.modules[typer.BadParameter.__module__]


class BadValue(ValueError):
    """A value outside what an option allows; the message says what was expected."""


def _number(value, what: str):
    if isinstance(value, float) and not math.isfinite(value):
        raise BadValue(f"expected {what}, got {value}")
    return value


def at_least(low: int | float) -> Callable:
    def check(value):
        _number(value, f"a finite number >= {low}")
        if value < low:
            raise BadValue(f"expected a number >= {low}, got {value}")
        return value
    return check


def positive(value):
    _number(value, "a finite number > 0")
    if value <= 0:
        raise BadValue(f"expected a number > 0, got {value}")
    return value


def temperature(value):
    """0 (greedy) or a normal positive number: NaN, infinities and subnormals (below 2.2e-308,
    where 1/T overflows) are refused rather than sampled from."""
    _number(value, "0 (greedy) or a finite positive number")
    if value < 0 or 0 < value < sys.float_info.min:
        raise BadValue(f"expected 0 (greedy) or a number >= {sys.float_info.min:.3g}, got {value}")
    return value


def probability(value):
    _number(value, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise BadValue(f"expected a number in (0, 1], got {value}")
    return value


def seed(value):
    if not 0 <= value < 1 << 64:
        raise BadValue(f"expected an integer in [0, 2^64), got {value}")
    return value


def token_ids(value):
    """Comma-separated non-negative integers, at least one."""
    parts = [part for part in value.replace(" ", "").split(",") if part]
    if not parts or not all(part.isdigit() for part in parts):
        raise BadValue(f"expected comma-separated token ids like 1,2,3, got {value!r}")
    return value


def text(value):
    """Text the user typed: invalid UTF-8 in the command line reaches Python as lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadValue("is not valid UTF-8") from None
    return value


def non_empty(value):
    text(value)
    if not value.strip():
        raise BadValue("expected a non-empty name")
    return value


def output_file(value):
    """A file to write: its folder must exist and it must not be a folder itself."""
    path = Path(value)
    if path.is_dir():
        raise BadValue(f"{value} is a directory; expected a file name")
    return output_directory(value)


def output_directory(value):
    """A path to create: its parent folder must exist."""
    parent = Path(value).parent
    if not parent.is_dir():
        raise BadValue(f"the folder {parent} does not exist")
    return value


def input_file(value):
    path = Path(value)
    if not path.exists():
        raise BadValue(f"{value} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise BadValue(f"{value} is empty")
    return value


# Option name -> check, for every command that has the option. Commands whose option of the same
# name means something else list an exception below.
CHECKS: dict[str, Callable] = {
    "--temperature": temperature, "--top-p": probability, "--seed": seed,
    "--max-tokens": at_least(0), "--calib-tokens": at_least(1), "--sensitivity-tokens": at_least(1),
    "--context": at_least(1), "--prompt-tokens": at_least(1), "--users": at_least(1),
    "--stories": at_least(1), "--window": at_least(2), "--attempts": at_least(1), "--jobs": at_least(1),
    "--weights-per-lane": at_least(1), "--weight-bits": at_least(1), "--clock-ghz": positive,
    "--budget-s": positive, "--overhead-ms": at_least(0), "--load": positive, "--months": positive,
    "--updates-per-year": at_least(0), "--workers": at_least(1),
    "--ids": token_ids, "--prompt": text, "--block": non_empty, "--host": non_empty,
    **{name: non_empty for name in ("--node", "--chip", "--preset", "--plan", "--backend", "--system", "--tasks",
                                    "--mode", "--gpu", "--style", "--simulator", "--activations", "--pace",
                                    "--scheduler", "--objectives")},
    "--plot": output_file, "--details": output_file, "--crossover": output_file, "--csv": output_file,
    "--resume": output_directory,
    "--output": output_file, "--text": input_file, "--ttc": input_file, "--explore": input_file,
    "--synth": input_file, "--sim": input_file, "--calib": input_file, "--calib-ids": input_file,
    "--tokenizer": input_file,
}
# (command, option) pairs whose meaning differs from the table's.
COMMAND_CHECKS: dict[tuple[str, str], Callable] = {
    ("freeze", "--output"): output_directory, ("rtl", "--output"): output_directory,
}


def _checked(check: Callable, previous: Callable | None) -> Callable:
    def callback(ctx, param, value):
        if previous is not None:
            value = previous(ctx, param, value)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if item is None:
                continue
            try:
                check(item)
            except BadValue as e:
                raise CLICK_EXCEPTIONS.BadParameter(str(e), ctx=ctx, param=param) from None
        return value
    return callback


def attach_checks(group) -> None:
    """Give every option of every command of `group` (a click group built by typer) its check."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            attach_checks(command)
            continue
        for param in command.params:
            long_name = next((opt for opt in param.opts if opt.startswith("--")), None)
            check = COMMAND_CHECKS.get((name, long_name)) or CHECKS.get(long_name)
            if check is not None and param.param_type_name == "option":
                param.callback = _checked(check, param.callback)
