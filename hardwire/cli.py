"""The `hardwire` command.

Each pipeline stage registers its own subcommands from `hardwire/<stage>/commands.py`
(a `register(app)` function); a new stage adds its folder and its name to STAGES. Errors: a
`HardwireError` becomes one line on stderr and exit code 2; anything else exits 1.
"""
from __future__ import annotations

import importlib
import sys

import typer

from hardwire.errors import HardwireError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn a trained language model into a chip that is the model.")

# The stages that have commands, in data-flow order (the order `hardwire --help` lists them). `inspect`
# is freeze's (it reads a checkpoint or a die); `quality` is measure's, right after the freeze it judges.
STAGES = ("freeze", "measure", "rtl", "chip", "runtime", "ttc")


def _register_stages() -> None:
    for stage in STAGES:
        importlib.import_module(f"hardwire.{stage}.commands").register(app)


_register_stages()


# The click that typer really uses: recent typers ship their own copy (typer._click), older ones use
# the click package. Its exceptions are the ones a usage error raises.
CLICK_EXCEPTIONS = sys.modules[typer.BadParameter.__module__]


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except HardwireError as e:
        print(f"hardwire: error: {e}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("hardwire: aborted", file=sys.stderr)
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    except CLICK_EXCEPTIONS.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":       # the help was printed: nothing went wrong
            return 0
        command = f" {e.ctx.command_path.split(' ', 1)[1]}" if e.ctx and " " in e.ctx.command_path else ""
        print(f"hardwire{command}: error: {e.format_message()}", file=sys.stderr)
        return 2
    except CLICK_EXCEPTIONS.ClickException as e:
        print(f"hardwire: error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
