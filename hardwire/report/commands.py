"""`hardwire report`: the chip on one page (docs/report.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hardwire.report.content import DEFAULT_STORIES


def register(app: typer.Typer) -> None:
    @app.command()
    def report(die_or_preset: str = typer.Argument(..., help="a die directory or a model preset "
                                                   "(hardwire estimate --list)"),
               output: Path = typer.Option(..., "--output", "-o", help="the HTML file to write"),
               chip: Optional[str] = typer.Option(None, "--chip", help="chip TOML file or preset name, or fit "
                                                  "(default: as hardwire estimate)"),
               ttc: Optional[Path] = typer.Option(None, "--ttc", help="a `hardwire ttc --json` result: "
                                                  "time-to-correct curves"),
               explore: Optional[Path] = typer.Option(None, "--explore", help="a `hardwire explore --json` result: "
                                                      "the Pareto front"),
               synth: Optional[Path] = typer.Option(None, "--synth", help="a `hardwire synth --json` result: "
                                                    "synthesis beside the estimate"),
               sim: Optional[Path] = typer.Option(None, "--sim", help="a `hardwire sim DIE --json` result: "
                                                  "golden against RTL"),
               stories: int = typer.Option(DEFAULT_STORIES, "--stories", help="documents of the text the quality "
                                           "table scores"),
               text: Optional[Path] = typer.Option(None, "--text", help="text file the quality table scores (default: "
                                                   "the bundled TinyStories validation text)")):
        """One self-contained HTML page of the chip: summary, area, floorplan, bits, quality, context, economics."""
        from hardwire.atomic import write_text_atomic
        from hardwire.report.content import gather
        from hardwire.report.page import render

        page = render(gather(die_or_preset, chip=chip, stories=stories, ttc=ttc, explore=explore, synth=synth, sim=sim, text=text))
        write_text_atomic(output, page)
        print(f"{output}  {len(page.encode()) / 1024:,.0f} KiB")
