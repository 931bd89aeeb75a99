"""`sctk config show|check`."""

from __future__ import annotations

from pathlib import Path

import typer

from sctk import config
from sctk.cli.common import (
    console,
    err_console,
    json_option,
    operator,
    print_json,
    state,
    table,
)

app = typer.Typer(help="Show and validate settings.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Print the effective settings, secrets redacted, and where each value came from."""
    rows = config.redacted(config.load(state(ctx).home))
    if as_json:
        print_json({key: {"value": value, "source": source} for key, value, source in rows})
    else:
        table("sctk settings", ["setting", "value", "source"], [list(r) for r in rows])


@app.command("set")
def set_(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Dotted setting name, e.g. server.port."),
    value: str = typer.Argument(..., help="New value: 9000, true, 1.5, or text."),
) -> None:
    """Change one setting in <home>/sctk.toml (validated, comments kept, audited)."""
    from sctk.ops.config_edit import set_value

    change = set_value(config.load(state(ctx).home).settings, key, value, actor=operator())
    console.print(f"{change.key}: {change.old!r} -> {change.new!r}", highlight=False)


@app.command("check")
def check(
    ctx: typer.Context,
    file: Path | None = typer.Argument(None, help="File to check (default: <home>/sctk.toml)."),
) -> None:
    """Validate a settings file and name every bad field."""
    path = file if file is not None else config.resolve_home(state(ctx).home) / "sctk.toml"
    problems = config.check_file(path)
    if problems:
        for p in problems:
            line = p if p.startswith(str(path)) else f"{path}: {p}"
            err_console.print(line, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{path} is valid.", highlight=False)
