"""`sctk jobs submit|list|show|cancel|retry|kinds|pause|resume`: the durable job queue."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape

from sctk.cli.common import (
    console,
    db_session,
    json_option,
    operator,
    print_json,
    settings,
    table,
    when,
)
from sctk.errors import SctkError

app = typer.Typer(help="Durable jobs: submit, list, show, cancel, retry.", no_args_is_help=True)


def _value(text: str) -> Any:
    """A --param value: JSON when it parses (3, 2.5, true, [1,2]), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(pairs: list[str], params_json: str | None) -> dict[str, Any]:
    """Parameters from --params-json (an object), then each --param KEY=VALUE on top."""
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise SctkError(
                f"--params-json is not valid JSON ({exc.args[0]}); give an object such as "
                "'{\"seconds\": 2}'."
            ) from None
        if not isinstance(loaded, dict):
            raise SctkError(
                f"--params-json must be a JSON object such as '{{\"seconds\": 2}}', not a "
                f"{type(loaded).__name__}."
            )
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SctkError(f"--param '{pair[:100]}' is not KEY=VALUE; write it as seconds=2.")
        params[key.strip()] = _value(raw)
    return params


def _plain(text: str) -> None:
    """Print data as it is: brackets in it are not rich markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("submit")
def submit(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="The job kind ('sctk jobs kinds' lists them)."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="A parameter KEY=VALUE (VALUE read as JSON when it parses)."
    ),
    params_json: str | None = typer.Option(
        None, "--params-json", help="All parameters as one JSON object."
    ),
    max_attempts: int | None = typer.Option(
        None, "--max-attempts", help="Tries before the job is dead (default: jobs.max_attempts)."
    ),
    as_json: bool = json_option(),
) -> None:
    """Queue a job; a worker (`sctk worker` or `sctk serve`) runs it."""
    from sctk.jobs import queue
    from sctk.uq import physics_registry

    params = parse_params(param, params_json)
    s = settings(ctx)
    attempts = max_attempts or s.jobs.max_attempts
    # a kind's check at submission sees the physics an admin lists (uq.train)
    with (
        db_session(ctx, with_bus=True) as session,
        physics_registry.admitted(s.uq.physics_allowed),
    ):
        job = queue.submit(session, kind, params, owner=operator(), max_attempts=attempts)
        data = queue.as_dict(job)
    if as_json:
        print_json(data)
        return
    console.print(f"queued job {data['id']} ({data['kind']})", highlight=False)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="Only jobs in this status."),
    owner: str | None = typer.Option(None, "--owner", help="Only jobs of this owner."),
    limit: int = typer.Option(100, "--limit", help="At most this many, newest first."),
    as_json: bool = json_option(),
) -> None:
    """List jobs, newest first."""
    from sctk.jobs import queue

    with db_session(ctx, with_bus=True) as session:
        jobs = [queue.as_dict(j) for j in queue.list_jobs(session, status, owner, limit)]
    if as_json:
        print_json(jobs)
        return
    table(
        None,
        ["id", "kind", "status", "tries", "progress", "owner", "created", "finished"],
        [
            [
                j["id"],
                j["kind"],
                j["status"]
                + (" (cancelling)" if j["cancel_requested"] and j["status"] == "running" else ""),
                f"{j['attempts']}/{j['max_attempts']}",
                f"{j['progress']:.0%}",
                j["owner"],
                when(j["created_at"]),
                when(j["finished_at"]),
            ]
            for j in jobs
        ],
    )


@app.command("show")
def show(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., help="Id from 'sctk jobs list'."),
    as_json: bool = json_option(),
) -> None:
    """One job with its parameters, result or error, and its events."""
    from sctk.jobs import events, queue

    with db_session(ctx, with_bus=True) as session:
        data = queue.as_dict(queue.get(session, job_id))
        data["events"] = [events.as_dict(e) for e in events.history(session, job_id)]
    if as_json:
        print_json(data)
        return
    fields = [
        "id", "kind", "status", "owner", "attempts", "max_attempts", "progress", "message",
        "cancel_requested", "worker", "created_at", "started_at", "heartbeat_at", "run_after",
        "finished_at",
    ]  # fmt: skip
    table(None, ["field", "value"], [[k, escape(str(data[k]))] for k in fields])
    _plain("params: " + json.dumps(data["params"]))
    if data["result"] is not None:
        _plain("result: " + json.dumps(data["result"]))
    if data["error"]:
        _plain("error: " + data["error"])
    table(
        "events",
        ["seq", "at", "kind", "data"],
        [
            [e["seq"], when(e["at"]), e["kind"], escape(json.dumps(e["data"]))]
            for e in data["events"]
        ],
    )


@app.command("cancel")
def cancel(
    ctx: typer.Context, job_id: int = typer.Argument(..., help="Id from 'sctk jobs list'.")
) -> None:
    """Cancel a queued job, or ask the worker of a running one to stop it."""
    from sctk.jobs import queue

    with db_session(ctx, with_bus=True) as session:
        job = queue.cancel(session, job_id, actor=operator())
        status, kind = job.status, job.kind
    if status == "cancelled":
        console.print(f"cancelled job {job_id} ({kind})", highlight=False)
    else:
        console.print(
            f"asked the worker running job {job_id} ({kind}) to stop it; "
            "'sctk jobs show' tells when it has",
            highlight=False,
        )


@app.command("retry")
def retry(
    ctx: typer.Context, job_id: int = typer.Argument(..., help="Id from 'sctk jobs list'.")
) -> None:
    """Queue a failed, dead or cancelled job again."""
    from sctk.jobs import queue

    with db_session(ctx, with_bus=True) as session:
        job = queue.retry(session, job_id, actor=operator())
        kind = job.kind
    console.print(f"queued job {job_id} ({kind}) again", highlight=False)


@app.command("kinds")
def kinds_(as_json: bool = json_option()) -> None:
    """The job kinds this installation can run."""
    from sctk.jobs.kinds import kinds

    rows = [
        {"name": k.name, "description": k.description, "permission": k.permission}
        for k in sorted(kinds().values(), key=lambda k: k.name)
    ]
    if as_json:
        print_json(rows)
        return
    table(
        None,
        ["kind", "permission", "description"],
        [[r["name"], r["permission"], r["description"]] for r in rows],
    )


@app.command("pause")
def pause(
    ctx: typer.Context,
    reason: str = typer.Option("", "--reason", help="Why, for the audit log."),
) -> None:
    """Stop workers taking new jobs (running ones finish; queued ones wait, nothing is lost)."""
    from sctk.jobs import switches

    with db_session(ctx) as session:
        changed = switches.turn_on(session, switches.JOBS_PAUSED, actor=operator(), reason=reason)
    console.print(
        "job intake paused; 'sctk jobs resume' starts it again"
        if changed
        else "job intake was already paused",
        highlight=False,
    )


@app.command("resume")
def resume(ctx: typer.Context) -> None:
    """Let workers take queued jobs again after 'sctk jobs pause'."""
    from sctk.jobs import switches

    with db_session(ctx) as session:
        changed = switches.turn_off(session, switches.JOBS_PAUSED, actor=operator())
    console.print("job intake resumed" if changed else "job intake was not paused", highlight=False)
