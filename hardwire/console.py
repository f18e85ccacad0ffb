"""Tables on stdout that keep every number.

rich fits a table to the terminal by cutting cells to `perpl…`; a number cut short is worse than no
number. Piped or redirected output gets all the width it needs (nothing wraps or is cut); on a
terminal, cells that do not fit fold onto the next line instead of losing their end.
"""
from __future__ import annotations

import sys

PIPED_WIDTH = 10_000      # wide enough for any table we print; rich only uses what the table needs


def show(*renderables) -> None:
    from rich.console import Console
    from rich.table import Table

    for item in renderables:
        if isinstance(item, Table):
            for column in item.columns:
                column.overflow = "fold"
    console = Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH, no_color=True)
    for item in renderables:
        console.print(item)
