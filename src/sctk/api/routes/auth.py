"""POST /api/v1/auth/token: exchange a username and password for a short-lived JWT."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from sctk.api.deps import client_address
from sctk.api.errors import problem
from sctk.security import tokens, users
from sctk.security.users import AccountLocked, AuthenticationFailed

router = APIRouter(tags=["auth"])


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post(
    "/auth/token",
    response_model=AccessToken,
    summary="Log in with a username and password; returns a short-lived bearer JWT.",
    responses={401: {"description": "Wrong credentials, or the account is locked or disabled"}},
)
def login(body: Credentials, request: Request):
    state = request.app.state
    policy = state.settings.security
    with state.sessionmaker() as session:
        try:
            user = users.authenticate(
                session, body.username, body.password, client_address(request), policy
            )
        except AuthenticationFailed as exc:
            session.commit()  # keep the record of the failed attempt (and any lockout)
            title = "Account locked" if isinstance(exc, AccountLocked) else exc.title
            return problem(401, exc.message, title=title, headers={"WWW-Authenticate": "Bearer"})
        token, ttl = tokens.issue_jwt(
            state.keyring, user, timedelta(minutes=policy.jwt_ttl_minutes)
        )
        session.commit()
    return AccessToken(access_token=token, expires_in=ttl)
