"""The `sctk` command line: wiring only; every command calls one domain function.

Command modules are imported only when their command runs (or for --help), so that a quick
`sctk health` does not pay for importing alembic, argon2 and every other domain.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from sctk import __version__
from sctk.cli.common import err_console, state
from sctk.cli.helptext import tidy, tidy_params
from sctk.errors import SctkError
from sctk.fsutil import no_space_error
from sctk.storage.engine import DATABASE_ERRORS, database_error

# name -> (module, attribute); a typer.Typer attribute is a command group, a function a command
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("sctk.cli.init", "init"),
    "serve": ("sctk.cli.serve", "serve"),
    "health": ("sctk.cli.health", "health"),
    "config": ("sctk.cli.config_cmd", "app"),
    "db": ("sctk.cli.db", "app"),
    "users": ("sctk.cli.users", "app"),
    "tokens": ("sctk.cli.tokens", "app"),
    "keys": ("sctk.cli.keys", "app"),
    "audit-log": ("sctk.cli.audit_log", "app"),
    "data": ("sctk.cli.data", "app"),
    "jobs": ("sctk.cli.jobs", "app"),
    "worker": ("sctk.cli.worker", "worker"),
    "bus": ("sctk.cli.bus", "app"),
    "uq": ("sctk.cli.uq", "app"),
    "alerts": ("sctk.cli.alerts", "app"),
    "incident": ("sctk.cli.incident", "app"),
    "monitor": ("sctk.cli.monitor", "app"),
    "backup": ("sctk.cli.backup", "app"),
    "restore": ("sctk.cli.restore", "restore"),
    "doctor": ("sctk.cli.doctor", "doctor"),
    "selftest": ("sctk.cli.selftest", "selftest"),
    "maintenance": ("sctk.cli.maintenance", "app"),
    "scheduler": ("sctk.cli.scheduler", "scheduler"),
    "compliance": ("sctk.cli.compliance", "compliance"),
    "upgrade": ("sctk.cli.upgrade", "upgrade"),
    "rollback": ("sctk.cli.upgrade", "rollback"),
    "deps": ("sctk.cli.deps", "app"),
    "docs": ("sctk.cli.docs", "app"),
    "plugins": ("sctk.cli.plugins", "app"),
    "report": ("sctk.cli.report", "report"),
    "emergency": ("sctk.cli.emergency", "emergency"),
}


# old name -> new name: kept working for one release, hidden from the help, with a notice
ALIASES: dict[str, str] = {"audit": "compliance"}


class LazyGroup(TyperGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        tidy_params(params, ctx)  # sctk's own --home, --version and --help
        return params

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in ALIASES:
            return _alias(self.get_command(ctx, ALIASES[name]), name, ALIASES[name])
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attr = COMMANDS[name]
        target = getattr(importlib.import_module(module), attr)
        if not isinstance(target, typer.Typer):
            single = typer.Typer()
            single.command(name)(target)
            target = single
        # built on its own, a sub-app would offer shell completion options of its own
        target._add_completion = False
        command = typer.main.get_command(target)
        command.name = name
        return tidy(command)


def _alias(command: click.Command, old: str, new: str) -> click.Command:
    """COMMAND under its OLD name: hidden, and saying on stderr what to type instead."""
    run = command.callback

    def noticed(*args, **kwargs):
        err_console.print(
            f"'sctk {old}' is now 'sctk {new}'; the old name will be removed in the next release.",
            highlight=False,
        )
        return run(*args, **kwargs)

    command.callback = noticed
    command.hidden = True
    command.name = old
    return command


app = typer.Typer(
    name="sctk",
    cls=LazyGroup,
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


def _fail(exc: SctkError) -> None:
    err_console.print(f"Error: {exc.message}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one sentence on stderr and a non-zero exit."""
    try:
        app(args=argv, prog_name="sctk")
    except SctkError as exc:
        _fail(exc)
    except DATABASE_ERRORS as exc:
        # a database that goes away, stays locked or fills up mid-command: one sentence
        _fail(database_error(exc))
    except Exception as exc:
        full = no_space_error(exc, "the data directory")
        if full is None:
            raise
        _fail(full)
    except KeyboardInterrupt:
        sys.exit(130)
