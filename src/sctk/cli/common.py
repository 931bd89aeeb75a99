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
from sctk.runtime import Runtime

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    home: Path | None = None
    runtime: Runtime | None = None


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


def runtime(ctx: typer.Context) -> Runtime:
    """The command's runtime: built on first use from the data directory's settings, one
    per command, closed when the command ends (its engine disposed)."""
    root = ctx.find_root()
    st = state(ctx)
    if st.runtime is None:
        st.runtime = Runtime(settings(ctx))
        root.call_on_close(st.runtime.close)
    return st.runtime


@contextmanager
def db_session(ctx: typer.Context, with_bus: bool = False) -> Iterator[Session]:
    """A committed-on-success session on the data directory's database."""
    from sctk.storage.engine import DATABASE_ERRORS, unavailable
    from sctk.storage.layout import require_data_dir

    rt = runtime(ctx)
    require_data_dir(rt.settings)
    if with_bus:
        # events this command records (a job queued or cancelled) are published once it
        # commits; on PostgreSQL they reach the API's WebSocket clients
        rt.bus  # noqa: B018 (made for its side effect: the process's bus exists)
    try:
        with rt.session() as session:
            yield session
    except DATABASE_ERRORS as exc:
        # named here, where the database is known: locked, full, not answering, unreachable
        raise unavailable(rt.engine, exc) from None


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
