"""`sctk selftest`: the installed product's smoke test on a scratch home (sctk.ops.selftest)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer
from rich.markup import escape

from sctk.cli.common import console, json_option, print_json

STYLE = {"pass": "green", "fail": "red", "skip": "yellow"}


def selftest(
    quick: bool = typer.Option(
        False, "--quick", help="Fewer training epochs and no full read of the backup's data."
    ),
    database: str | None = typer.Option(
        None,
        "--database",
        help="Also test this PostgreSQL server, in a throwaway database created and dropped "
        "(the role needs CREATEDB).",
    ),
    scratch: Path | None = typer.Option(
        None, "--scratch", help="Directory for the scratch home (default: the system's temp)."
    ),
    as_json: bool = json_option(),
) -> None:
    """Smoke-test settings, database, UQ, jobs, backup, bus and health on a scratch home.

    The live data directory is never opened; exit 0 when every step passes, 1 otherwise.
    """
    from sctk.ops import selftest as engine

    # this command's own process: SCTK_* settings must not reach the scratch home
    for name in engine.live_environment():
        os.environ.pop(name, None)
    logging.getLogger().addHandler(logging.NullHandler())  # the table is the report

    def shown(step: engine.Step) -> None:
        if not as_json:
            console.print(
                f"[{STYLE[step.status]}]{step.status:4}[/] {step.name:10} {step.seconds:6.2f} s  "
                f"{escape(step.message)}",
                highlight=False,
                soft_wrap=True,
            )

    report = engine.run(quick=quick, database_url=database, scratch=scratch, progress=shown)
    if as_json:
        print_json(report.as_dict())
    else:
        console.print(report.sentence(), highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)
