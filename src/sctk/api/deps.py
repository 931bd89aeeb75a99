"""Dependencies: a database session per request, the authenticated user, permissions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer, OAuth2PasswordBearer
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from sctk.security import audit_log, tokens
from sctk.security.auth_errors import AuthenticationFailed
from sctk.security.credentials import Principal
from sctk.security.ratelimit import retry_after_header
from sctk.security.roles import PERMISSIONS, allowed

# Declared so the OpenAPI document (and /docs) show bearer authentication; the header itself
# is parsed below so that a malformed one gets a precise message.
bearer_scheme = HTTPBearer(auto_error=False, description="A login JWT or a personal API token.")
# The same bearer header, got by the OAuth2 password flow: with it declared, "Authorize" in
# /docs asks for a username and password and logs in at the token route itself.
password_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    scheme_name="OAuth2Password",
    auto_error=False,
    description="Log in with a username and password (a login JWT, sent as a bearer token).",
)


def client_address(request: HTTPConnection) -> str:
    return request.client.host if request.client else ""


def get_session(request: Request) -> Iterator[Session]:
    """The request's session, from the app's runtime (`sctk.runtime.Runtime.session`).

    The commit rule, stated here and in docs/architecture.md only: the session commits when
    the route function returns without an error, before the response is sent, so a client
    acting on the answer at once never reads the state from before it; any error (an
    HTTPException too) rolls everything back. A route that must keep a record whatever
    happens (a refused permission: `record_denial`) writes it in a session of its own.
    """
    with request.app.state.runtime.session() as session:
        yield session


# scope="function" is what makes the commit happen when the route function returns (the
# default would be after the response is sent): see get_session
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _verify(request: HTTPConnection, credential: str) -> Principal:
    """Check a credential against the database (in a worker thread) and cache the result."""
    state = request.app.state
    with state.sessionmaker() as session:
        if credential.startswith(tokens.TOKEN_PREFIX):
            user, expires_at = tokens.authenticate_token(
                session, credential, client_address(request)
            )
            principal = Principal.of(user, "token")
        else:
            user, expires_at = tokens.authenticate_jwt(session, state.keyring, credential)
            principal = Principal.of(user, "jwt")
        session.commit()  # the token's last use
    state.credential_cache.put(credential, principal, expires_at)
    return principal


async def authenticate(conn: HTTPConnection, credential: str) -> Principal:
    """The identity behind CREDENTIAL: cached, or verified against the database in a worker
    thread; AuthenticationFailed when it is not valid. Shared by HTTP routes and WebSockets."""
    principal = conn.app.state.credential_cache.get(credential)
    if principal is None:
        principal = await run_in_threadpool(_verify, conn, credential)
    return principal


async def current_user(
    request: Request,
    _scheme=Depends(bearer_scheme),
    _password_flow=Depends(password_scheme),
) -> Principal:
    """The identity behind the bearer credential; 401 problem+json when there is none.

    Async on purpose: a cached credential is answered without a database or thread hop.
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Authentication required; send 'Authorization: Bearer <token>'.")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise _unauthorized("The Authorization header must be 'Bearer <token>'.")
    try:
        principal = await authenticate(request, credential)
    except AuthenticationFailed as exc:
        raise _unauthorized(exc.message) from None
    wait = request.app.state.identity_limiter.hit(f"user:{principal.id}")
    if wait:
        raise HTTPException(
            429,
            "Too many requests for this account; slow down and retry later.",
            headers={"Retry-After": retry_after_header(wait)},
        )
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def commit_and_forget_credentials(request: Request, session: Session) -> None:
    """After a change to who may do what: commit it, then verify every credential afresh.

    In this order, so that no request can re-cache the old state between the two.
    """
    session.commit()
    request.app.state.credential_cache.clear()


@dataclass(frozen=True)
class Permission:
    """A dependency that admits only roles holding PERMISSION (see security.roles)."""

    permission: str

    def __post_init__(self) -> None:
        if self.permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {self.permission!r}")

    async def __call__(self, request: Request, user: CurrentUser) -> Principal:
        if allowed(user.role, self.permission):
            return user
        await run_in_threadpool(record_denial, request, user, self.permission, request.method)
        raise HTTPException(
            403, f"Your role '{user.role}' may not do this; it needs '{self.permission}'."
        )


def record_denial(conn: HTTPConnection, user: Principal, permission: str, method: str) -> None:
    """Audit a refused request (HTTP or WebSocket)."""
    # recorded in a session of its own: the request's session is rolled back by the 403
    with conn.app.state.sessionmaker() as session:
        audit_log.record(
            session,
            "permission.denied",
            actor=user.username,
            client=client_address(conn),
            outcome="denied",
            details={"permission": permission, "method": method, "path": conn.url.path},
        )
        session.commit()


def require(permission: str) -> Any:
    """`user=require("users.manage")` in a route signature gives the request's Principal."""
    return Depends(Permission(permission))
