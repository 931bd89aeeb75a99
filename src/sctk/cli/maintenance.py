"""`sctk maintenance list|run NAME|daily|weekly|monthly|quarterly|history|pause|resume`."""

from __future__ import annotations

import typer
from rich.markup import escape

from sctk.cli.common import (
    console,
    db_session,
    json_option,
    operator,
    print_json,
    runtime,
    settings,
    table,
)

app = typer.Typer(
    help="Scheduled maintenance: the tasks, running them, their history.", no_args_is_help=True
)
STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "running": "cyan"}
EXIT = {"ok": 0, "warn": 0, "fail": 1}


def _show(records, as_json: bool) -> None:
    if as_json:
        print_json(
            [
                {
                    "id": r.id,
                    "task": r.task,
                    "status": r.status,
                    "summary": r.summary,
                    "details": r.details,
                    "seconds": round(r.seconds, 3),
                }
                for r in records
            ]
        )
    else:
        table(
            None,
            ["task", "status", "seconds", "summary"],
            [
                [r.task, f"[{STYLE[r.status]}]{r.status}[/]", f"{r.seconds:.1f}", escape(r.summary)]
                for r in records
            ],
        )
    worst = max((r.status for r in records), key=["ok", "warn", "fail"].index, default="ok")
    raise typer.Exit(EXIT[worst])


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Every task, its schedule group and when that group runs."""
    from sctk.ops.tasks import GROUPS, registered

    s = settings(ctx)
    cron = {g: getattr(s.maintenance, f"schedule_{g}") for g in GROUPS}
    rows = [
        {"name": t.name, "group": t.group, "schedule": cron[t.group], "description": t.description}
        for t in registered().values()
    ]
    if as_json:
        print_json(rows)
        return
    table(
        None,
        ["task", "group", "cron", "what it does"],
        [[r["name"], r["group"], r["schedule"], r["description"]] for r in rows],
    )


@app.command("run")
def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A task from 'sctk maintenance list'."),
    as_json: bool = json_option(),
) -> None:
    """Run one task now and record it; exit 1 if it failed."""
    from sctk.ops.runner import run_task

    _show([run_task(runtime(ctx), name)], as_json)


def _group_command(group: str) -> None:
    def command(ctx: typer.Context, as_json: bool = json_option()) -> None:
        from sctk.ops.runner import run_group

        _show(run_group(runtime(ctx), group), as_json)

    command.__doc__ = f"Run every {group} task now and record them; exit 1 if one failed."
    app.command(group)(command)


for _group in ("daily", "weekly", "monthly", "quarterly"):
    _group_command(_group)


@app.command("history")
def history(
    ctx: typer.Context,
    task: str | None = typer.Option(None, "--task", help="Only this task or group."),
    limit: int = typer.Option(50, "--limit", min=1, max=10000, help="Newest runs shown."),
    as_json: bool = json_option(),
) -> None:
    """Recorded runs, newest first."""
    from sctk.ops import runner

    runs = runner.history(runtime(ctx).engine, task, limit)
    rows = [
        {
            "id": r.id,
            "task": r.task,
            "status": r.status,
            "trigger": r.trigger,
            "started_at": r.started_at.isoformat(),
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "summary": r.summary,
            "details": r.details,
        }
        for r in runs
    ]
    if as_json:
        print_json(rows)
        return
    table(
        None,
        ["id", "started", "task", "trigger", "status", "summary"],
        [
            [
                str(r["id"]),
                r["started_at"][:19],
                r["task"],
                r["trigger"],
                f"[{STYLE.get(r['status'], 'white')}]{r['status']}[/]",
                escape(r["summary"]),
            ]
            for r in rows
        ],
    )


@app.command("pause")
def pause(
    ctx: typer.Context, reason: str = typer.Option("", "--reason", help="Why, for the audit log.")
) -> None:
    """Hold the scheduler: no scheduled task starts until 'sctk maintenance resume'."""
    from sctk.jobs import switches

    with db_session(ctx) as session:
        changed = switches.turn_on(session, switches.SCHEDULER_PAUSED, operator(), reason)
    console.print("scheduler paused" if changed else "the scheduler was already paused")


@app.command("resume")
def resume(ctx: typer.Context) -> None:
    """Let the scheduler start due tasks again (a missed run then runs once)."""
    from sctk.jobs import switches

    with db_session(ctx) as session:
        changed = switches.turn_off(session, switches.SCHEDULER_PAUSED, operator())
    console.print("scheduler resumed" if changed else "the scheduler was not paused")
