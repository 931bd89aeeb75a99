"""`sctk monitor status|history|export`: the system metrics, now and as stored aggregates.

`status` samples the machine once (no server needed); `history` and `export` read the
1-minute aggregates that the running service (`sctk serve`) stores in the database.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sctk.cli.common import console, db_session, json_option, print_json, settings, table

app = typer.Typer(
    help="System metrics: current values, stored history, export.", no_args_is_help=True
)


def _shown(name: str, value: float | None) -> str:
    if value is None:
        return ""
    if name.endswith("_bytes"):
        return f"{value / 2**20:,.1f} MiB"
    if name.endswith("_bytes_per_s"):
        return f"{value / 1024:,.1f} KiB/s"
    if "percent" in name:
        return f"{value:.1f}%"
    return f"{value:.2f}"


@app.command("status")
def status(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Sample the system once and print every metric's current value."""
    from sctk.monitoring import service

    data = service.current(settings(ctx))
    if as_json:
        print_json(data)
        return
    table(
        f"metrics at {data['time'][:19].replace('T', ' ')} UTC",
        ["metric", "value"],
        [[name, _shown(name, value)] for name, value in data["metrics"].items()],
    )


@app.command("history")
def history(
    ctx: typer.Context,
    metric: str = typer.Argument(..., help="A metric, e.g. cpu_percent ('status' lists them)."),
    hours: float = typer.Option(24.0, "--hours", help="How far back, in hours."),
    as_json: bool = json_option(),
) -> None:
    """A metric's stored 1-minute aggregates (avg, min, max) over the last hours."""
    from sctk.monitoring import service

    s = settings(ctx)
    with db_session(ctx) as session:
        data = service.history(s, session, metric, hours)
    if as_json:
        print_json(data)
        return
    points = data["points"]
    if not points:
        console.print(
            f"No stored aggregates of {metric} in the last {hours:g} hours; the running "
            "service ('sctk serve') stores one a minute.",
            highlight=False,
        )
        return
    table(
        f"{metric}, last {hours:g} hours ({len(points)} minutes)",
        ["minute (UTC)", "avg", "min", "max", "samples"],
        [
            [
                p["time"][:16].replace("T", " "),
                _shown(metric, p["avg"]),
                _shown(metric, p["min"]),
                _shown(metric, p["max"]),
                p["count"],
            ]
            for p in points
        ],
    )


@app.command("export")
def export(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The file to write.", dir_okay=False),
    fmt: str = typer.Option("json", "--format", help="json or csv."),
    hours: float = typer.Option(24.0, "--hours", help="How far back, in hours."),
    metric: list[str] = typer.Option(
        [], "--metric", help="Only this metric (repeatable; default: all)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    as_json: bool = json_option(),
) -> None:
    """Write the stored aggregates of the last hours to FILE (atomically)."""
    from sctk.monitoring import service

    s = settings(ctx)
    service.check_format(fmt)  # before touching the database
    with db_session(ctx) as session:
        result = service.export(
            s, session, file.absolute(), fmt, hours, metric or None, overwrite=force
        )
    if as_json:
        print_json(result)
        return
    console.print(
        f"wrote {result['rows']} aggregate(s) of the last {hours:g} hours to {result['path']} "
        f"({fmt})",
        highlight=False,
    )
