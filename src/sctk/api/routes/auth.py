"""POST /api/v1/auth/token: exchange a username and password for a short-lived JWT."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from sctk.api.deps import client_address
from sctk.api.errors import problem
from sctk.security import tokens, users
from sctk.security.ratelimit import retry_after_header
from sctk.security.users import AccountLocked, AuthenticationFailed

router = APIRouter(tags=["auth"])
_MAX_RETRY_AFTER = 24 * 3600.0  # a lock kept until an admin lifts it: ask again tomorrow


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
    responses={
        401: {"description": "Wrong credentials, or the account is disabled"},
        429: {"description": "Too many failed logins for this account (from this address)"},
    },
)
def login(body: Credentials, request: Request):
    state = request.app.state
    policy = state.settings.security
    with state.sessionmaker() as session:
        try:
            user = users.authenticate(
                session, body.username, body.password, client_address(request), policy
            )
        except AccountLocked as exc:
            session.commit()  # keep the record of the refused attempt
            wait = retry_after_header(min(exc.retry_after, _MAX_RETRY_AFTER))
            return problem(429, exc.message, title=exc.title, headers={"Retry-After": wait})
        except AuthenticationFailed as exc:
            session.commit()  # keep the record of the failed attempt (and any lockout)
            return problem(
                401, exc.message, title=exc.title, headers={"WWW-Authenticate": "Bearer"}
            )
        token, ttl = tokens.issue_jwt(
            state.keyring, user, timedelta(minutes=policy.jwt_ttl_minutes)
        )
        session.commit()
    return AccessToken(access_token=token, expires_in=ttl)
