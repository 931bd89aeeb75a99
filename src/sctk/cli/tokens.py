"""`sctk tokens create|list|revoke`: personal API tokens."""

from __future__ import annotations

from dataclasses import asdict

import typer

from sctk.cli.common import console, db_session, json_option, operator, print_json, table
from sctk.security import tokens, users

app = typer.Typer(help="Personal API tokens.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="What the token is for."),
    user: str = typer.Option("admin", "--user", help="Whose token it is."),
    expires: str = typer.Option("90d", "--expires", help="Lifetime: 12h, 30d, 2w, 1y or never."),
    as_json: bool = json_option(),
) -> None:
    """Create a token; its value is printed once and cannot be shown again."""
    lifetime = tokens.parse_expiry(expires)
    with db_session(ctx) as session:
        owner = users.get(session, user)
        plaintext, view = tokens.create(session, owner, name, lifetime, actor=operator())
    if as_json:
        print_json({**asdict(view), "token": plaintext})
        return
    console.print(plaintext, highlight=False, soft_wrap=True)
    console.print(
        f"token {view.prefix} '{view.name}' for {view.username}, expires "
        f"{view.expires_at or 'never'}. Store it now: it is not shown again.",
        highlight=False,
        style="dim",
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", help="Only this user's tokens."),
    as_json: bool = json_option(),
) -> None:
    """List tokens (prefix, state, last use; never their values)."""
    with db_session(ctx) as session:
        owner = users.get(session, user) if user else None
        views = tokens.list_tokens(session, owner)
    if as_json:
        print_json([{**asdict(v), "state": v.state} for v in views])
        return
    table(
        None,
        ["id", "prefix", "name", "user", "state", "expires", "last used"],
        [
            [v.id, v.prefix, v.name, v.username, v.state, v.expires_at or "never", v.last_used_at]
            for v in views
        ],
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context, token_id: int = typer.Argument(..., help="Id from 'tokens list'.")
) -> None:
    """Revoke a token; requests using it are refused from now on."""
    with db_session(ctx) as session:
        view = tokens.revoke(session, token_id, actor=operator())
    console.print(f"revoked token {view.id} ({view.prefix}) of {view.username}", highlight=False)
