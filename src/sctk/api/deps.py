"""Dependencies: a database session per request, the authenticated user, permissions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from sctk.security import audit, tokens
from sctk.security.ratelimit import retry_after_header
from sctk.security.roles import PERMISSIONS, allowed
from sctk.security.users import AuthenticationFailed
from sctk.storage.models import User

# Declared so the OpenAPI document (and /docs) show bearer authentication; the header itself
# is parsed below so that a malformed one gets a precise message.
bearer_scheme = HTTPBearer(auto_error=False, description="A login JWT or a personal API token.")


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request, session: SessionDep, _scheme=Depends(bearer_scheme)) -> User:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Authentication required; send 'Authorization: Bearer <token>'.")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise _unauthorized("The Authorization header must be 'Bearer <token>'.")
    try:
        if credential.startswith(tokens.TOKEN_PREFIX):
            user = tokens.authenticate_token(session, credential, client_address(request))
        else:
            user = tokens.authenticate_jwt(session, request.app.state.keyring, credential)
    except AuthenticationFailed as exc:
        raise _unauthorized(exc.message) from None
    wait = request.app.state.identity_limiter.hit(f"user:{user.id}")
    if wait:
        raise HTTPException(
            429,
            "Too many requests for this account; slow down and retry later.",
            headers={"Retry-After": retry_after_header(wait)},
        )
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(current_user)]


@dataclass(frozen=True)
class Permission:
    """A dependency that admits only roles holding PERMISSION (see security.roles)."""

    permission: str

    def __post_init__(self) -> None:
        if self.permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {self.permission!r}")

    def __call__(self, request: Request, user: CurrentUser) -> User:
        if allowed(user.role, self.permission):
            return user
        # recorded in a session of its own: the request's session is rolled back by the 403
        with request.app.state.sessionmaker() as session:
            audit.record(
                session,
                "permission.denied",
                actor=user.username,
                client=client_address(request),
                outcome="denied",
                details={
                    "permission": self.permission,
                    "method": request.method,
                    "path": request.url.path,
                },
            )
            session.commit()
        raise HTTPException(
            403, f"Your role '{user.role}' may not do this; it needs '{self.permission}'."
        )


def require(permission: str) -> Any:
    """`user: User = require("users.manage")` in a route signature."""
    return Depends(Permission(permission))
