"""`sctk keys rotate|status`: the encryption keyring."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from sctk.cli.common import console, json_option, operator, print_json, runtime, settings, table
from sctk.security import rotation

app = typer.Typer(help="Encryption keys: rotation and status.", no_args_is_help=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    days, rest = divmod(int(seconds), 86400)
    return f"{days}d {rest // 3600}h" if days else f"{rest // 3600}h {rest % 3600 // 60}m"


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    batch_size: int = typer.Option(
        rotation.DEFAULT_BATCH,
        "--batch-size",
        min=1,
        help="Values re-encrypted per committed transaction.",
    ),
    revoke_sessions: bool = typer.Option(
        False,
        "--revoke-sessions",
        help="Also end every login session (JWT) at once, in every API process; for a key "
        "that may have leaked. Without it, sessions run until they expire.",
    ),
) -> None:
    """Add a new key, re-encrypt every stored value with it, retire the old keys.

    An interrupted rotation is resumed (no further key is added) by running this again.
    """
    s = settings(ctx)
    with Progress(
        TextColumn("re-encrypting"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("re-encrypting", total=None)
        report = rotation.rotate(
            runtime(ctx),
            actor=operator(),
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            revoke_sessions=revoke_sessions,
        )
    if report.resumed:
        console.print(f"resumed an interrupted rotation to key {report.new_key_id}")
    else:
        console.print(f"new key {report.new_key_id}")
    console.print(f"values re-encrypted: {report.reencrypted}")
    retired = ", ".join(map(str, report.retired_key_ids)) or "none"
    console.print(f"keys retired: {retired}", highlight=False)
    if report.sessions_revoked:
        console.print("login sessions: all ended; everyone logs in again", highlight=False)
    else:
        console.print(
            "login sessions: kept until they expire (at most "
            f"{s.security.jwt_ttl_minutes} minutes); --revoke-sessions ends them at once",
            highlight=False,
        )


@app.command("status")
def status(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Show every key: id, age, state, and how many stored values it encrypts."""
    keys = rotation.status(runtime(ctx))
    if as_json:
        print_json([k.as_dict() for k in keys])
        return
    table(
        "encryption keys",
        ["id", "created", "age", "state", "values"],
        [
            [
                k.id,
                k.created_at.strftime("%Y-%m-%d %H:%M UTC") if k.created_at else "",
                _age(k.age.total_seconds() if k.age is not None else None),
                k.state,
                k.values,
            ]
            for k in keys
        ],
    )
    if any(k.state == "retiring" for k in keys):
        console.print("a rotation is unfinished; run 'sctk keys rotate' to complete it.")
    if any(k.state == rotation.MISSING for k in keys):
        console.print(
            "some values use a key the keyring does not hold; restore the keyring saved "
            "with the database."
        )
