"""`sctk users add|list|disable|enable|set-role|reset-password|unlock`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from sctk.cli import secret_input
from sctk.cli.common import (
    console,
    db_session,
    json_option,
    operator,
    print_json,
    settings,
    table,
    when,
)
from sctk.security import users

app = typer.Typer(help="User accounts and roles.", no_args_is_help=True)

# --password VALUE is still recognised, to refuse it with a sentence naming the new options
PASSWORD_ON_ARGV = typer.Option(None, "--password", hidden=True)
PASSWORD_STDIN = secret_input.stdin_option("--password-stdin", "password")
PASSWORD_FILE = secret_input.file_option("--password-file", "password")


def _password(on_argv: str | None, from_stdin: bool, from_file: Path | None) -> str:
    """The new password: prompted for twice, or read from stdin or a file (12+ characters)."""
    if on_argv is not None:
        raise secret_input.refused_on_argv("password", "--password")
    return secret_input.read_secret(
        "password", "--password", from_stdin=from_stdin, from_file=from_file, confirm=True
    )


@app.command("add")
def add(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="Login name: lowercase letters, digits, . _ -"),
    role: str = typer.Option("viewer", "--role", help="viewer, analyst or admin."),
    password_on_argv: str | None = PASSWORD_ON_ARGV,
    password_stdin: bool = PASSWORD_STDIN,
    password_file: Path | None = PASSWORD_FILE,
) -> None:
    """Create a user; the password is asked for (or read with --password-stdin/-file)."""
    password = _password(password_on_argv, password_stdin, password_file)
    with db_session(ctx) as session:
        user = users.create(session, username, password, role, actor=operator())
        console.print(f"created user '{user.username}' ({user.role})", highlight=False)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """List users, their roles and states."""
    with db_session(ctx) as session:
        views = users.list_users(session)
    if as_json:
        print_json([asdict(v) for v in views])
        return
    table(
        None,
        ["username", "role", "state", "last login", "created"],
        [
            [
                v.username,
                v.role,
                "disabled" if v.disabled else ("locked" if v.locked else "active"),
                when(v.last_login_at),
                when(v.created_at),
            ]
            for v in views
        ],
    )


def _done(message: str) -> None:
    console.print(message, highlight=False)


@app.command("disable")
def disable(ctx: typer.Context, username: str) -> None:
    """Disable an account (its tokens stop working at once)."""
    with db_session(ctx) as session:
        users.set_disabled(session, username, True, actor=operator())
    _done(f"disabled '{username}'")


@app.command("enable")
def enable(ctx: typer.Context, username: str) -> None:
    """Enable a disabled account."""
    with db_session(ctx) as session:
        users.set_disabled(session, username, False, actor=operator())
    _done(f"enabled '{username}'")


@app.command("set-role")
def set_role(ctx: typer.Context, username: str, role: str) -> None:
    """Give a user another role: viewer, analyst or admin."""
    with db_session(ctx) as session:
        user = users.set_role(session, username, role, actor=operator())
    _done(f"'{username}' is now {user.role}")


@app.command("reset-password")
def reset_password(
    ctx: typer.Context,
    username: str,
    password_on_argv: str | None = PASSWORD_ON_ARGV,
    password_stdin: bool = PASSWORD_STDIN,
    password_file: Path | None = PASSWORD_FILE,
) -> None:
    """Set a new password for a user; their login sessions and personal API tokens end."""
    password = _password(password_on_argv, password_stdin, password_file)
    with db_session(ctx) as session:
        revoked = users.reset_password(session, username, password, actor=operator())
    _done(
        f"password of '{username}' changed; their login sessions ended and "
        f"{revoked} API token(s) revoked"
    )


@app.command("unlock")
def unlock(ctx: typer.Context, username: str) -> None:
    """Lift a lockout caused by failed logins."""
    with db_session(ctx) as session:
        users.unlock(session, username, actor=operator())
    _done(f"unlocked '{username}'")


@app.command("review")
def review(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """The access review: admins, dormant accounts, old passwords, tokens without expiry,
    locked accounts, failed logins and secret files open to others, each with its fix."""
    from rich.markup import escape

    from sctk.ops.access_review import review as run_review

    s = settings(ctx)
    with db_session(ctx) as session:
        items = run_review(s, session)
    if as_json:
        print_json([i.as_dict() for i in items])
        return
    table(
        None,
        ["kind", "subject", "finding", "fix"],
        [[i.kind, escape(i.subject), escape(i.detail), escape(i.fix)] for i in items],
    )
