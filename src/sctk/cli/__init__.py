"""The `sctk` command line: wiring only; every command calls one domain function."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sctk import __version__
from sctk.cli import audit_log, config_cmd, db, keys, tokens, users
from sctk.cli.common import err_console, state
from sctk.cli.health import health
from sctk.cli.init import init
from sctk.cli.serve import serve
from sctk.errors import SctkError

app = typer.Typer(
    name="sctk",
    help="Scientific Computing Toolkit: a hybrid UQ service with its operations built in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"sctk {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", help="Data directory (default: $SCTK_HOME, else ~/.local/share/sctk)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state(ctx).home = home


app.command("init")(init)
app.command("health")(health)
app.command("serve")(serve)
app.add_typer(config_cmd.app, name="config")
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="tokens")
app.add_typer(keys.app, name="keys")
app.add_typer(audit_log.app, name="audit-log")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one sentence on stderr and a non-zero exit."""
    try:
        app(args=argv, prog_name="sctk")
    except SctkError as exc:
        err_console.print(f"Error: {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
