"""`sctk init`: create or complete a data directory."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from sctk import config
from sctk.cli.common import console, state
from sctk.ops.init_home import init_home
from sctk.security.bootstrap import FirstAdmin, check_admin_password, ensure_first_admin
from sctk.storage.layout import InitReport


def initialise(home: Path, database_url: str | None = None, force: bool = False) -> None:
    """Create the layout, migrate, make the first admin; print what changed (shared by serve)."""
    admin_password = os.environ.get("SCTK_ADMIN_PASSWORD") or None
    check_admin_password(admin_password)
    report, settings = init_home(home, database_url=database_url, force=force)
    admin = ensure_first_admin(settings, admin_password)
    _backups(settings, report)
    _print(report, admin)


def _backups(settings: config.Settings, report: InitReport) -> None:
    """With a passphrase at hand the repository is made now, so the first nightly backup
    needs no manual step; without one, say that backups are not configured."""
    from sctk.backup.admin import ensure_repo
    from sctk.backup.passphrase import configuration_problem
    from sctk.runtime import Runtime

    # the directory was made by this command: its runtime is this one, closed here
    with Runtime(settings) as rt:
        created = ensure_repo(rt, actor="init")
    if created:
        report.created.append(f"backup repository at {created}")
        return
    problem = configuration_problem(settings)
    if problem:
        from sctk.cli.common import err_console

        err_console.print(
            f"Note: {problem} Then 'sctk backup init' (or the next daily maintenance) "
            "creates the repository.",
            highlight=False,
        )


def _print(report: InitReport, admin: FirstAdmin | None) -> None:
    if not report.changed and admin is None:
        console.print(
            f"{report.home} is already an initialised sctk data directory; nothing changed.",
            highlight=False,
        )
        return
    for item in report.created:
        console.print(f"created  {item}", highlight=False)
    for item in report.fixed:
        console.print(f"fixed    {item}", highlight=False)
    if report.revision_before != report.revision_after:
        console.print(f"database {report.revision_before or 'empty'} -> {report.revision_after}")
    if admin is not None:
        if admin.generated_password:
            console.print(
                f"created  user '{admin.username}' (admin) with password: "
                f"{admin.generated_password}\n         This password is shown only once: keep "
                "it in a password manager (or choose another with "
                "'sctk users reset-password admin').",
                highlight=False,
            )
        else:
            console.print(
                f"created  user '{admin.username}' (admin) with the password from "
                "SCTK_ADMIN_PASSWORD",
                highlight=False,
            )
    console.print(f"sctk data directory ready at {report.home}", highlight=False)


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
    """Create the data directory, its settings file, schema, keyring and first admin.

    The admin's password comes from SCTK_ADMIN_PASSWORD, or is generated and shown once.
    """
    home = config.resolve_home(directory if directory is not None else state(ctx).home)
    initialise(home, database_url=database_url, force=force)
