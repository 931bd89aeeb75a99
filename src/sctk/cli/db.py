"""`sctk db upgrade|downgrade|current|history|migrate-to`."""

from __future__ import annotations

import typer

from sctk.cli.common import console, json_option, print_json, runtime, table
from sctk.storage import migrate
from sctk.storage.layout import require_data_dir

app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


def _engine(ctx: typer.Context):
    rt = runtime(ctx)
    require_data_dir(rt.settings)
    return rt.engine


def _report(before: str | None, after: str | None) -> None:
    if before == after:
        console.print(f"database already at {after or 'base'}; nothing changed.")
    else:
        console.print(f"database {before or 'base'} -> {after or 'base'}")


@app.command("upgrade")
def upgrade(
    ctx: typer.Context, revision: str = typer.Argument("head", help="Target revision.")
) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    _report(*migrate.upgrade(_engine(ctx), revision))


@app.command("downgrade")
def downgrade(
    ctx: typer.Context,
    revision: str = typer.Argument(..., help="Target revision ('base' removes every table)."),
) -> None:
    """Downgrade the schema to REVISION."""
    _report(*migrate.downgrade(_engine(ctx), revision))


@app.command("current")
def current(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Show the revision the database is at."""
    rev, head = migrate.current(_engine(ctx)), migrate.head()
    if as_json:
        print_json({"current": rev, "head": head, "at_head": rev == head})
    else:
        console.print(
            f"{rev or 'base (empty)'}{' (head)' if rev == head else f' (head is {head})'}"
        )


@app.command("history")
def history(as_json: bool = json_option()) -> None:
    """List the migrations, newest first."""
    revs = migrate.history()
    if as_json:
        print_json([r.__dict__ for r in revs])
    else:
        table(
            "migrations",
            ["revision", "down revision", "message", "head"],
            [
                [r.revision, r.down_revision or "", r.message, "yes" if r.is_head else ""]
                for r in revs
            ],
        )


@app.command("migrate-to")
def migrate_to(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="SQLAlchemy URL of an empty database, e.g. PostgreSQL."),
    no_switch: bool = typer.Option(
        False, "--no-switch", help="Copy and verify only; keep using the current database."
    ),
    force: bool = typer.Option(False, "--force", help="Copy even while a service runs."),
    as_json: bool = json_option(),
) -> None:
    """Copy every row to an empty database, verify rows, files and the audit chain there,
    then point sctk.toml at it."""
    from dataclasses import asdict

    from sctk.cli.common import operator
    from sctk.ops.db_transfer import migrate_to as run

    rt = runtime(ctx)
    require_data_dir(rt.settings)
    report = run(
        rt,
        url,
        actor=operator(),
        switch=not no_switch,
        force=force,
        progress=None if as_json else lambda name, n: console.print(f"  {name}: {n} rows"),
    )
    if as_json:
        print_json(asdict(report))
        return
    total = sum(report.tables.values())
    console.print(
        f"copied {total} rows in {len(report.tables)} tables to {report.target} and verified "
        f"them, {report.files_checked} files and {report.audit_entries} audit entries "
        f"({report.seconds:.1f} s); "
        + ("sctk.toml now uses it" if report.switched else "sctk.toml unchanged (--no-switch)"),
        highlight=False,
    )
