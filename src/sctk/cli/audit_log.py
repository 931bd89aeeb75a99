"""`sctk audit-log list|verify`: read and check the tamper-evident audit chain."""

from __future__ import annotations

import json
import string

import typer

from sctk.cli.common import console, db_session, json_option, print_json, table
from sctk.errors import SctkError
from sctk.security import audit_log

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


def _anchor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not (
        seq.isdigit()
        and int(seq) >= 1
        and len(digest) == 64
        and all(c in string.hexdigits for c in digest)
    ):
        raise SctkError(
            f"--anchor {value!r} is not SEQ:HASH; copy both from the line an earlier "
            "'sctk audit-log verify' printed, e.g. 42:3fa2... (64 hex digits)."
        )
    return int(seq), digest.lower()


@app.command("list")
def list_(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None, "--since", help="ISO date/time (UTC unless it says) or a duration ago: 24h, 7d."
    ),
    user: str | None = typer.Option(None, "--user", help="Only entries by or about NAME."),
    event: str | None = typer.Option(
        None, "--event", help="Exact event (login.failed) or prefix (login)."
    ),
    limit: int = typer.Option(1000, "--limit", help="At most this many entries."),
    as_json: bool = json_option(),
) -> None:
    """List audit entries, newest first."""
    start = audit_log.parse_since(since) if since is not None else None
    with db_session(ctx) as session:
        found = audit_log.entries(session, since=start, user=user, event=event, limit=limit)
    if as_json:
        print_json([audit_log.as_dict(e) for e in found])
        return
    table(
        "audit log",
        ["seq", "at (UTC)", "event", "actor", "target", "client", "outcome", "details"],
        [
            [
                e.seq,
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.event,
                e.actor,
                e.target,
                e.client,
                e.outcome,
                json.dumps(e.details, sort_keys=True, ensure_ascii=False) if e.details else "",
            ]
            for e in found
        ],
    )


@app.command("verify")
def verify(
    ctx: typer.Context,
    anchor: str | None = typer.Option(
        None, "--anchor", help="SEQ:HASH of a head noted earlier that must still be in the chain."
    ),
    as_json: bool = json_option(),
) -> None:
    """Recompute the hash chain. Exit 0 when intact, 1 naming the first broken link."""
    expected = _anchor(anchor)
    with db_session(ctx) as session:
        report = audit_log.verify(session, anchor=expected)
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(report.summary, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)
