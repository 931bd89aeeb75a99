"""`sctk users add|list|disable|enable|set-role|reset-password|unlock`."""

from __future__ import annotations

from dataclasses import asdict

import typer

from sctk.cli.common import (
    console,
    db_session,
    json_option,
    operator,
    print_json,
    settings,
    table,
)
from sctk.security import users

app = typer.Typer(help="User accounts and roles.", no_args_is_help=True)

PASSWORD = typer.Option(
    ...,
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="The password (asked for when not given; at least 12 characters).",
)


@app.command("add")
def add(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="Login name: lowercase letters, digits, . _ -"),
    role: str = typer.Option("viewer", "--role", help="viewer, analyst or admin."),
    password: str = PASSWORD,
) -> None:
    """Create a user."""
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
                v.last_login_at,
                v.created_at,
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
def reset_password(ctx: typer.Context, username: str, password: str = PASSWORD) -> None:
    """Set a new password for a user."""
    with db_session(ctx) as session:
        users.reset_password(session, username, password, actor=operator())
    _done(f"password of '{username}' changed")


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
