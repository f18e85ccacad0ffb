"""The `hardwire` command.

Each pipeline stage registers its own subcommands from `hardwire/<stage>/commands.py`
(a `register(app)` function), so adding a stage touches one folder. Errors: a
`HardwireError` becomes one line on stderr and exit code 2; anything else exits 1.
"""
from __future__ import annotations

import importlib
import sys

import typer

from hardwire.errors import HardwireError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn a trained language model into a chip that is the model.")

# Stages in data-flow order; a stage whose module is absent is simply not offered.
STAGES = ("model", "freeze", "golden", "rtl", "chip", "runtime", "patch", "ttc", "explore")


def _register_stages() -> None:
    for stage in STAGES:
        try:
            module = importlib.import_module(f"hardwire.{stage}.commands")
        except ModuleNotFoundError as e:
            if e.name == f"hardwire.{stage}.commands":
                continue
            raise
        module.register(app)


_register_stages()


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
    except Exception as e:  # click usage errors carry their own exit code
        import click
        if isinstance(e, click.exceptions.UsageError):
            e.show()
            return 2
        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
