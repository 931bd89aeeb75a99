"""`sctk init`: create or complete a data directory."""

from __future__ import annotations

from pathlib import Path

import typer

from sctk import config
from sctk.cli.common import console, state
from sctk.storage.layout import init_home


def init(
    ctx: typer.Context,
    directory: Path | None = typer.Argument(
        None, help="Data directory to create (default: --home, SCTK_HOME, or the default home)."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Use this database (e.g. PostgreSQL) instead of SQLite."
    ),
    force: bool = typer.Option(
        False, "--force", help="Use a non-empty directory that is not yet an sctk data directory."
    ),
) -> None:
    """Create the data directory layout, write a commented sctk.toml, run the migrations."""
    home = config.resolve_home(directory if directory is not None else state(ctx).home)
    report, _settings = init_home(home, database_url=database_url, force=force)
    if not report.changed:
        console.print(f"{home} is already an initialised sctk data directory; nothing changed.")
        return
    for item in report.created:
        console.print(f"created  {item}")
    for item in report.fixed:
        console.print(f"fixed    {item}")
    if report.revision_before != report.revision_after:
        console.print(f"database {report.revision_before or 'empty'} -> {report.revision_after}")
    console.print(f"sctk data directory ready at {home}")
