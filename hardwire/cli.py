"""The `hardwire` command.

Each pipeline stage registers its own subcommands from `hardwire/<stage>/commands.py`
(a `register(app)` function); a new stage adds its folder and its name to STAGES. Errors: a
`HardwireError` becomes one line on stderr and exit code 2; anything else exits 1.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import typer
import typer.main

from hardwire.errors import HardwireError
from hardwire.options import CLICK_EXCEPTIONS, attach_checks

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None,
                  help="Turn a trained language model into a chip that is the model.")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            number = version("hardwire")
        except PackageNotFoundError:        # run from a source tree that was never installed
            number = "unknown"
        print(f"hardwire {number}")
        raise typer.Exit()


@app.callback()
def _options(show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                               help="print the version and exit")) -> None:
    """Turn a trained language model into a chip that is the model."""

# The stages that have commands, in data-flow order (the order `hardwire --help` lists them). `inspect`
# is freeze's (it reads a checkpoint or a die); `quality` is measure's, right after the freeze it judges.
STAGES = ("freeze", "measure", "rtl", "chip", "runtime", "patch", "ttc", "explore", "report")


def _register_stages() -> None:
    for stage in STAGES:
        importlib.import_module(f"hardwire.{stage}.commands").register(app)


_register_stages()


def command():
    """The click command typer builds from `app`, each option given its value check."""
    group = typer.main.get_command(app)
    attach_checks(group)
    return group


# Every character str.splitlines() breaks a line at, shown escaped: a message quoting a user's text
# (a fuzzed manifest key of U+0085 reached a spec error) stays one line.
_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode("ascii") for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def say(line: str) -> None:
    """One line on stderr: line breaks inside it, and text that came from the command line as
    invalid UTF-8 (lone surrogates), are shown escaped instead of breaking the line or failing to
    print."""
    print(line.translate(_LINE_BREAKS).encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr)


def _given_value(param, argv: list[str]) -> str | None:
    """The text the user gave an option on the command line (its last occurrence), if any."""
    if param is None or getattr(param, "param_type_name", None) != "option":
        return None
    given = None
    for i, arg in enumerate(argv):
        for opt in param.opts:
            if arg == opt and i + 1 < len(argv):
                given = argv[i + 1]
            elif opt.startswith("--") and arg.startswith(opt + "="):
                given = arg[len(opt) + 1:]
    return given


_show_warning = warnings.showwarning


def _show_note(message, category, *args, **kwargs) -> None:
    """Notes hardwire gives a user (a short tokenizer) as one plain line, not a source line."""
    from hardwire.model.load import TokenizerNote

    if issubclass(category, TokenizerNote):
        say(f"hardwire: note: {message}")
    else:
        _show_warning(message, category, *args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_note
    try:
        return _main(argv)
    except BrokenPipeError:     # the reader went away (`hardwire -h | head`): nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    try:
        command().main(args=argv, prog_name="hardwire", standalone_mode=False)
    except HardwireError as e:
        say(f"hardwire: error: {e}")
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("hardwire: aborted", file=sys.stderr)
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    except CLICK_EXCEPTIONS.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":       # no command given: the help, as with -h
            print(e.ctx.get_help() if e.ctx else e.format_message())
            return 0
        name = f" {e.ctx.command_path.split(' ', 1)[1]}" if e.ctx and " " in e.ctx.command_path else ""
        message = e.format_message()
        given = _given_value(getattr(e, "param", None), sys.argv[1:] if argv is None else argv)
        if given is not None and given not in message and repr(given) not in message:
            message += f" (got {given!r})"
        say(f"hardwire{name}: error: {' '.join(message.split())}")
        return 2
    except CLICK_EXCEPTIONS.ClickException as e:
        say(f"hardwire: error: {e.format_message()}")
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
