"""/api/v1/tokens: personal API tokens (one's own; admins see and revoke everyone's)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Path, Query, Request, status

from sctk.api.deps import SessionDep, commit_and_forget_credentials, require
from sctk.api.routes.schemas import TokenCreate, TokenCreated, TokenOut
from sctk.security import tokens
from sctk.security.roles import allowed
from sctk.security.tokens import TokenView

router = APIRouter(tags=["tokens"])


def _out(view: TokenView) -> TokenOut:
    return TokenOut(**asdict(view), state=view.state)


@router.get("/tokens", response_model=list[TokenOut], summary="API tokens (never their values).")
def list_tokens(
    session: SessionDep,
    user=require("tokens.own"),
    all_users: bool = Query(False, alias="all", description="Every user's tokens (admins)."),
) -> list[TokenOut]:
    everyone = all_users and allowed(user.role, "users.manage")
    return [_out(v) for v in tokens.list_tokens(session, None if everyone else user)]


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a personal API token; its value is shown once.",
)
def create_token(
    body: TokenCreate, session: SessionDep, user=require("tokens.own")
) -> TokenCreated:
    plaintext, view = tokens.create(
        session, user, body.name, tokens.parse_expiry(body.expires), actor=user.username
    )
    return TokenCreated(**asdict(view), state=view.state, token=plaintext)


@router.delete("/tokens/{token_id}", response_model=TokenOut, summary="Revoke an API token.")
def revoke_token(
    request: Request,
    session: SessionDep,
    user=require("tokens.own"),
    token_id: int = Path(ge=1, le=2**31 - 1),
) -> TokenOut:
    owner = None if allowed(user.role, "users.manage") else user
    view = tokens.revoke(session, token_id, actor=user, owner=owner)
    commit_and_forget_credentials(request, session)
    return _out(view)
