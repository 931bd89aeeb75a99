"""`sctk bus dead-letters list|replay|purge`: messages the bus could not deliver."""

from __future__ import annotations

import typer

from sctk.cli.common import console, db_session, json_option, operator, print_json, runtime, table
from sctk.errors import SctkError

app = typer.Typer(help="The message bus between sctk's components.", no_args_is_help=True)
dead_letters = typer.Typer(
    help="Messages a handler kept failing on: list, replay, purge.", no_args_is_help=True
)
app.add_typer(dead_letters, name="dead-letters")


@dead_letters.command("list")
def list_(
    ctx: typer.Context,
    pending: bool = typer.Option(False, "--pending", help="Only those not yet replayed."),
    as_json: bool = json_option(),
) -> None:
    """List dead letters, oldest first."""
    from sctk.bus import deadletters

    with db_session(ctx) as session:
        found = [
            deadletters.as_dict(d) for d in deadletters.list_dead(session, pending_only=pending)
        ]
    if as_json:
        print_json(found)
        return
    table(
        "dead letters",
        ["id", "created (UTC)", "type", "handler", "attempts", "last error", "replayed"],
        [
            [
                d["id"],
                d["created_at"][:19].replace("T", " "),
                d["type"],
                d["handler"],
                d["attempts"],
                d["last_error"][:120],
                (d["replayed_at"] or "")[:19].replace("T", " "),
            ]
            for d in found
        ],
    )


def _retry_window(s) -> float:
    """How long the local deliveries of a replay may take, every retry included."""
    backoff = s.bus.backoff_seconds
    return sum(min(backoff * 2**i, 3600.0) for i in range(s.bus.max_attempts - 1)) + 10.0


@dead_letters.command("replay")
def replay(
    ctx: typer.Context,
    dead_letter_id: str | None = typer.Argument(None, help="Id from 'dead-letters list'."),
    all_: bool = typer.Option(False, "--all", help="Every dead letter not yet replayed."),
) -> None:
    """Publish a dead letter again to the handler that failed on it, and mark it replayed.

    On PostgreSQL it reaches that handler in every running sctk process. On SQLite it reaches
    only the handlers of this command's own process.
    """
    from sctk.bus import deadletters
    from sctk.bus.bus import Bus

    if all_ == (dead_letter_id is not None):
        raise SctkError("Give either one dead letter id or --all.")
    which: int | str = deadletters.ALL
    if dead_letter_id is not None:
        if not dead_letter_id.isdigit() or len(dead_letter_id) > 18:
            raise SctkError(
                f"'{dead_letter_id[:40]}' is not a dead letter id; "
                "'sctk bus dead-letters list' shows the ids."
            )
        which = int(dead_letter_id)
    from sctk.storage.layout import require_data_dir

    rt = runtime(ctx)
    require_data_dir(rt.settings)
    # this command's own bus: its local deliveries are awaited below
    bus = Bus(rt.settings, engine=rt.engine, keyring=rt.keyring)
    try:
        with rt.session() as session:
            done = deadletters.replay(session, bus, which, actor=operator())
        before = bus.stats["dead_lettered"]
        bus.drain(_retry_window(rt.settings))
        failed_again = bus.stats["dead_lettered"] - before
    finally:
        bus.shutdown()
    if not done:
        console.print("No dead letters to replay.", highlight=False)
        return
    for r in done:
        console.print(
            f"Replayed dead letter {r.dead_letter_id} ({r.type}) to handler '{r.handler}' "
            f"as message {r.message_id}.",
            highlight=False,
            soft_wrap=True,
        )
    if failed_again:
        raise SctkError(
            f"{failed_again} replayed message(s) failed again and are new dead letters; "
            "'sctk bus dead-letters list' shows why."
        )


@dead_letters.command("purge")
def purge(
    ctx: typer.Context,
    older_than: str | None = typer.Option(
        None, "--older-than", help="Only those older than this: 30m, 24h, 7d, 2w."
    ),
) -> None:
    """Delete dead letters (all of them, or those older than --older-than)."""
    from sctk.bus import deadletters

    age = deadletters.parse_age(older_than) if older_than is not None else None
    with db_session(ctx) as session:
        count = deadletters.purge(session, age, actor=operator())
    console.print(f"Purged {count} dead letter(s).", highlight=False)
