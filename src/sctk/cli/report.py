"""`sctk report --period month|quarter|year`: the operations report."""

from __future__ import annotations

import typer

from sctk.cli.common import console, settings


def report(
    ctx: typer.Context,
    period: str = typer.Option("month", "--period", help="month, quarter or year."),
    fmt: str = typer.Option("html", "--format", help="html, md or json."),
) -> None:
    """Availability, incidents, alerts, backups, drills, maintenance and scores over a period;
    the file goes to <data dir>/reports/."""
    from sctk.errors import SctkError
    from sctk.ops import reports

    if fmt not in reports.FORMATS:
        raise SctkError(f"Unknown format '{fmt}'; use one of {', '.join(reports.FORMATS)}.")
    s = settings(ctx)
    built = reports.build(s, period)
    path = reports.write(s, built, fmt)
    if fmt == "json":
        typer.echo(reports.render(built, "json"))
    else:
        console.print(f"{period} report written to {path}", highlight=False)
