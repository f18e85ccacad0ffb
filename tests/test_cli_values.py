"""Every bad command-line value is one line on stderr and exit code 2, for every command.

These run `hardwire.cli.main` in this process (the same function the `hardwire` script calls), so
they are fast enough to cover every option of every command; tests/test_cli.py runs a few of the
same cases as a user would, in a subprocess.
"""
from __future__ import annotations

import pytest

from hardwire.cli import command, main
from hardwire.options import CHECKS, COMMAND_CHECKS


def one_line_exit(capsys, args, code=2) -> str:
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == code and len(lines) == 1 and "Traceback" not in err, (args, status, err)
    return lines[0]


def commands():
    return command().commands


def options_of(name):
    """(long option name, the typer type name) of every value-taking option of a command."""
    for param in commands()[name].params:
        if param.param_type_name != "option" or param.is_flag:
            continue
        long_name = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        yield long_name, param.type_descriptor.annotation


COMMANDS = sorted(commands())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_refuses_an_unknown_option_in_one_line(capsys, name):
    line = one_line_exit(capsys, [name, "--no-such-option"])
    assert line.startswith(f"hardwire {name}: error:") and "--no-such-option" in line


def test_an_unknown_command_is_one_line_naming_it(capsys):
    assert "frobnicate" in one_line_exit(capsys, ["frobnicate"])
    assert "--frobnicate" in one_line_exit(capsys, ["--frobnicate"])


@pytest.mark.parametrize("name", COMMANDS)
def test_every_numeric_option_refuses_text_naming_the_option(capsys, name):
    numeric = [(opt, kind) for opt, kind in options_of(name) if kind in (int, float)]
    for option, _ in numeric:
        line = one_line_exit(capsys, [name, option, "many"])
        assert option in line and "many" in line, line


@pytest.mark.parametrize("name", COMMANDS)
def test_every_checked_option_refuses_its_bad_values(capsys, name, tmp_path):
    """Each option the value table checks, given values its check must refuse, names itself."""
    bad_values = {
        "--temperature": ["nan", "inf", "-inf", "-0.5", "1e-310", "1e-308"],
        "--top-p": ["0", "1.0000001", "nan", "-1", "inf"],
        "--seed": ["-1", str(1 << 64)],
        "--ids": ["", ",", "1,,x", "-1", "1.5"],
        "--prompt": ["\udcff"], "--block": [" "], "--host": [""], "--node": [""], "--chip": [" "],
        "--preset": [""], "--gpu": [" "], "--plan": [""], "--backend": [""], "--system": [" "], "--tasks": [""], "--mode": [""],
        "--style": [""], "--simulator": [""], "--activations": [""], "--pace": [""],
        "--scheduler": [""], "--objectives": [" "], "--csv": [str(tmp_path)], "--resume": [str(tmp_path / "missing" / "d")],
        "--plot": [str(tmp_path / "missing" / "x.png"), str(tmp_path)],
        "--details": [str(tmp_path / "missing" / "x.jsonl")],
        "--crossover": [str(tmp_path)],
        "--output": [str(tmp_path / "missing" / "out")],
        "--text": [str(tmp_path / "absent.txt")], "--calib": [str(tmp_path / "absent.txt")],
        "--tokenizer": [str(tmp_path / "absent.model")],
    }
    (tmp_path / "empty.txt").write_text("")
    bad_values["--calib"].append(str(tmp_path / "empty.txt"))
    for option, kind in options_of(name):
        check = COMMAND_CHECKS.get((name, option)) or CHECKS.get(option)
        if check is None:
            continue
        values = bad_values.get(option) or (["-5", "nan", "inf"] if kind is float else ["-5"])
        for value in values:
            line = one_line_exit(capsys, [name, option, value])
            assert option in line, line


def test_counts_of_zero_are_refused_where_a_count_must_be_positive(capsys):
    for args in (["freeze", "--plan", "w8", "-o", "x.die", "--calib-tokens", "0"],
                 ["freeze", "--plan", "w8", "-o", "x.die", "--calib-tokens", "-5"],
                 ["estimate", "--context", "0"], ["quality", "--stories", "0"], ["ttc", "--attempts", "0"]):
        assert args[-2] in one_line_exit(capsys, args)


def test_file_outputs_must_be_files_in_existing_folders(capsys, tmp_path):
    line = one_line_exit(capsys, ["logits", "--ids", "1", "-o", tmp_path / "no" / "such" / "x.npy"])
    assert "--output" in line and "does not exist" in line
    line = one_line_exit(capsys, ["logits", "--ids", "1", "-o", tmp_path])
    assert "is a directory" in line


def test_version_and_help(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("hardwire ")
    for args in (["-h"], ["--help"], [], ["run", "-h"]):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert out.startswith("Usage: hardwire"), (args, out)


def test_help_text_renders_literally(capsys):
    """Help is plain text: brackets in a docstring are not taken for markup and dropped."""
    assert main(["logits", "--help"]) == 0
    assert "[len(ids), vocab]" in capsys.readouterr().out


@pytest.mark.parametrize("content, needle", [
    (b"", "sets nothing"), (b"x = [[[", "not valid TOML"), (b"\xff\xfe", "cannot read"),
    (b"x = " + b"[" * 50_000 + b"]" * 50_000, "nested too deeply"), (b'clock_ghz = "fast"\n', "clock_ghz"),
    (b"clock_ghz = nan\n", "clock_ghz"),
])
def test_empty_or_invalid_chip_files_are_refused_naming_the_file(capsys, tmp_path, content, needle):
    chip = tmp_path / "chip.toml"
    chip.write_bytes(content)
    line = one_line_exit(capsys, ["estimate", "--chip", chip])
    assert "chip.toml" in line and needle in line, line


def test_plan_files_nested_too_deeply_are_refused(capsys, tmp_path):
    for suffix, text in ((".toml", "default = " + "[" * 50_000 + "]" * 50_000),
                         (".json", "[" * 50_000 + "]" * 50_000)):
        plan = tmp_path / f"plan{suffix}"
        plan.write_text(text)
        line = one_line_exit(capsys, ["freeze", "--plan", plan, "-o", tmp_path / "x.die"])
        assert plan.name in line and "deep" in line, line
