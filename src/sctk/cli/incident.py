"""`sctk incident list|show|note|close|own`: incidents and their timelines."""

from __future__ import annotations

import typer

from sctk.cli.common import console, db_session, json_option, operator, print_json, table, when

app = typer.Typer(
    help="Incidents: list, show the timeline, add notes, close.", no_args_is_help=True
)


def _plain(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="open or closed."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="At most this many."),
    as_json: bool = json_option(),
) -> None:
    """Incidents, newest first."""
    from sctk.monitoring import incidents

    with db_session(ctx) as session:
        rows = [incidents.as_dict(i) for i in incidents.list_incidents(session, status, limit)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        _plain("no incidents")
        return
    table(
        None,
        ["id", "status", "severity", "title", "owner", "opened", "closed"],
        [
            [i["id"], i["status"], i["severity"], i["title"], i["owner"] or "",
             when(i["opened_at"]), when(i["closed_at"])]
            for i in rows
        ],
    )  # fmt: skip


@app.command("show")
def show(
    ctx: typer.Context,
    incident_id: int = typer.Argument(..., help="Id from 'sctk incident list'."),
    as_json: bool = json_option(),
) -> None:
    """One incident with its timeline."""
    from sctk.monitoring import incidents

    with db_session(ctx) as session:
        data = incidents.show(session, incident_id)
    if as_json:
        print_json(data)
        return
    _plain(f"incident {data['id']} [{data['status']}, {data['severity']}]: {data['title']}")
    _plain(f"owner: {data['owner'] or '-'}   opened: {when(data['opened_at'])} UTC")
    if data["resolution"]:
        _plain(f"resolution: {data['resolution']}")
    table(
        None,
        ["at", "event", "by", "text"],
        [[when(e["at"]), e["kind"], e["actor"], e["text"]] for e in data["timeline"]],
    )


@app.command("note")
def note(
    ctx: typer.Context,
    incident_id: int = typer.Argument(..., help="Id from 'sctk incident list'."),
    text: str = typer.Argument(..., help="The note."),
    as_json: bool = json_option(),
) -> None:
    """Add a note to an incident's timeline."""
    from sctk.monitoring import incidents

    with db_session(ctx) as session:
        data = incidents.event_dict(incidents.note(session, incident_id, text, operator()))
    if as_json:
        print_json(data)
        return
    _plain(f"note added to incident {incident_id}")


@app.command("own")
def own(
    ctx: typer.Context,
    incident_id: int = typer.Argument(..., help="Id from 'sctk incident list'."),
    owner: str = typer.Argument(..., help="Who owns the incident from now on."),
) -> None:
    """Set an incident's owner."""
    from sctk.monitoring import incidents

    with db_session(ctx) as session:
        incidents.set_owner(session, incident_id, owner, operator())
    _plain(f"incident {incident_id} is owned by {owner}")


@app.command("close")
def close(
    ctx: typer.Context,
    incident_id: int = typer.Argument(..., help="Id from 'sctk incident list'."),
    resolution: str = typer.Option(..., "--resolution", help="What was wrong and what fixed it."),
    as_json: bool = json_option(),
) -> None:
    """Close an open incident with its resolution."""
    from sctk.monitoring import incidents

    with db_session(ctx) as session:
        data = incidents.as_dict(incidents.close(session, incident_id, resolution, operator()))
    if as_json:
        print_json(data)
        return
    _plain(f"incident {incident_id} closed")
