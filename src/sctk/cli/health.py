"""`sctk health`: run the check registry; exit with the Nagios code of the worst result."""

from __future__ import annotations

import logging

import typer

from sctk.cli.common import console, err_console, json_option, print_json, runtime, table
from sctk.errors import SctkError
from sctk.health import HealthReport, Status, run_checks
from sctk.health.registry import record
from sctk.runtime import Runtime

STYLE = {
    Status.OK: "green",
    Status.WARNING: "yellow",
    Status.CRITICAL: "red",
    Status.UNKNOWN: "magenta",
}


def health(
    ctx: typer.Context,
    as_json: bool = json_option(),
    only: list[str] = typer.Option(None, "--check", help="Run only this check (repeatable)."),
    no_record: bool = typer.Option(False, "--no-record", help="Do not store the results."),
) -> None:
    """Run the health checks. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    try:
        rt = runtime(ctx)
    except SctkError as exc:
        # settings that do not load make the health of the service unknown, not a usage error
        console.print(f"UNKNOWN: {exc.message}", highlight=False)
        raise typer.Exit(int(Status.UNKNOWN)) from None
    _quiet_logs()
    report = run_checks(rt, only or None)
    schema = next((o for o in report.outcomes if o.name == "migrations"), None)
    # results are stored only where the table is known to exist: schema at head
    if not no_record and schema is not None and schema.status is Status.OK:
        _record(rt, report)
    if as_json:
        print_json(report.as_dict())
    else:
        rows = []
        for o in report.outcomes:
            # the table shows the headline figure; --json carries every measured value
            shown = next((f"{k}={v}" for k, v in o.values.items() if k != "path"), "")
            rows.append([f"[{STYLE[o.status]}]{o.status.name}[/]", o.name, shown, o.message])
        table(None, ["status", "check", "measured", "message"], rows)
        console.print(f"overall: [{STYLE[report.status]}]{report.status.name}[/]")
    raise typer.Exit(int(report.status))


def _quiet_logs() -> None:
    """What the checks log stays off the terminal: the table is the report (without a
    handler, Python would print warnings and their tracebacks to stderr)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def _record(rt: Runtime, report: HealthReport) -> None:
    """Store the results when the database takes them; a full disk or a database that fails
    meanwhile is already in the report, so the exit code stays the report's."""
    from sctk.storage.engine import DATABASE_ERRORS, database_error, normalise_url

    s = rt.settings
    try:
        record(rt.engine, report)
    except (SctkError, *DATABASE_ERRORS) as exc:
        if not isinstance(exc, SctkError):
            exc = database_error(exc, normalise_url(s.db_url), s)
        why = exc.message
        err_console.print(f"note: results not stored: {why}", highlight=False, soft_wrap=True)
