"""What every command shares: the selected data directory, settings, output helpers."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from sctk import config
from sctk.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    home: Path | None = None


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = State()
    return root.obj


def settings(ctx: typer.Context, overrides: dict[str, Any] | None = None) -> Settings:
    return config.load(state(ctx).home, overrides).settings


def operator() -> str:
    """Who the audit log names for a command run from a shell."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


@contextmanager
def db_session(ctx: typer.Context, with_bus: bool = False) -> Iterator[Session]:
    """A committed-on-success session on the data directory's database."""
    from sctk.storage.engine import DATABASE_ERRORS, make_engine, session_scope, unavailable
    from sctk.storage.layout import require_data_dir

    s = settings(ctx)
    require_data_dir(s)
    if with_bus:
        from sctk.bus import get_bus

        # events this command records (a job queued or cancelled) are published once it
        # commits; on PostgreSQL they reach the API's WebSocket clients
        get_bus(s)
    engine = make_engine(s)
    try:
        with session_scope(engine) as session:
            yield session
    except DATABASE_ERRORS as exc:
        # named here, where the database is known: locked, full, not answering, unreachable
        raise unavailable(engine, exc) from None
    finally:
        engine.dispose()


def print_json(data: Any) -> None:
    # plain print: rich would wrap long lines and colour the output of a pipe
    print(json.dumps(data, indent=2, default=str))


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, show_lines=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*[("" if v is None else str(v)) for v in row])
    console.print(t)


def when(value: Any) -> str:
    """A time as every table shows it: 'YYYY-MM-DD HH:MM:SS' in UTC; empty for none."""
    if not value:
        return ""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)[:19].replace("T", " ")


def json_option() -> Any:
    return typer.Option(False, "--json", help="Print JSON instead of a table.")


def coordinate_option():
    """--coordinate of the commands that swap or migrate a data directory (sctk.runstate)."""
    return typer.Option(
        False,
        "--coordinate",
        help="Pause the services running on the data directory for the swap (they drain, "
        "close the database, then reopen it) instead of refusing while they run.",
    )
