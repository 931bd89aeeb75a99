"""`sctk emergency`: the emergency response, each step written on an incident's timeline."""

from __future__ import annotations

import typer
from rich.markup import escape

from sctk.cli.common import console, json_option, operator, print_json, runtime, table


def emergency(
    ctx: typer.Context,
    reason: str = typer.Option("", "--reason", help="What happened, for the incident."),
    incident: int | None = typer.Option(None, "--incident", help="Add to this open incident."),
    yes: bool = typer.Option(False, "--yes", help="Restore the latest verified backup unasked."),
    no_restore: bool = typer.Option(False, "--no-restore", help="Skip the restore step."),
    keep_paused: bool = typer.Option(
        False, "--keep-paused", help="Leave job intake and the scheduler paused at the end."
    ),
    end_sessions: bool = typer.Option(
        False,
        "--end-sessions",
        help="End every login session (JWT) at once, in every API process.",
    ),
    as_json: bool = json_option(),
) -> None:
    """Assess, isolate, (end sessions,) restart workers, clear tmp/, optionally restore,
    notify, verify.
    Exit 0 when the service is healthy at the end, 2 when it is not."""
    from sctk.errors import SctkError
    from sctk.ops.emergency import run_emergency

    if yes and no_restore:
        raise SctkError("--yes and --no-restore contradict each other; give one of them.")
    report = run_emergency(
        runtime(ctx),
        actor=operator(),
        reason=reason,
        incident_id=incident,
        restore="yes" if yes else "no" if no_restore else "ask",
        confirm=lambda question: typer.confirm(question, default=False),
        keep_paused=keep_paused,
        end_all_sessions=end_sessions,
    )
    if as_json:
        print_json(report.as_dict())
    else:
        table(
            f"emergency response, incident {report.incident_id}",
            ["step", "", "what happened"],
            [
                [s.name, "[green]ok[/]" if s.ok else "[red]FAILED[/]", escape(s.summary)]
                for s in report.steps
            ],
        )
        console.print(f"timeline: sctk incident show {report.incident_id}", highlight=False)
    raise typer.Exit(0 if report.recovered else 2)
