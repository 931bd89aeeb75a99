"""Credentials for the API: short-lived login JWTs and personal API tokens.

Personal tokens carry 256 bits of randomness, so a single SHA-256 is enough to store them
safely and keeps verification in microseconds; argon2 is kept for low-entropy passwords.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import jwt
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from sctk.errors import NotFound, SctkError
from sctk.security import audit_log, sessions
from sctk.security.auth_errors import AuthenticationFailed
from sctk.security.keyring import Keyring
from sctk.storage.models import ApiToken, User, utcnow

TOKEN_PREFIX = "sctk_"
_TOKEN_RE = re.compile(r"^sctk_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
_LAST_USE_RESOLUTION = timedelta(seconds=60)  # a write per minute, not per request
_DURATION = re.compile(r"^(\d+)([hdwy])$")
MAX_TOKEN_DAYS = 3650


class Identity(Protocol):
    """A user row or a request's Principal: all token functions need of an owner."""

    @property
    def id(self) -> int: ...

    @property
    def username(self) -> str: ...


@dataclass(frozen=True)
class TokenView:
    id: int
    name: str
    prefix: str
    username: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= utcnow():
            return "expired"
        return "active"


def _view(token: ApiToken, username: str) -> TokenView:
    return TokenView(
        token.id,
        token.name,
        token.prefix,
        username,
        token.created_at,
        token.expires_at,
        token.revoked_at,
        token.last_used_at,
    )


def parse_expiry(value: str | None) -> timedelta | None:
    """'30d', '12h', '2w', '1y' or 'never' -> a lifetime (None: never expires)."""
    if value is None or value == "never":
        return None
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise SctkError(
            f"Invalid expiry '{value[:32]}'; use a number and a unit like 12h, 30d, 2w or 1y, "
            "or 'never'."
        )
    n, unit = int(match.group(1)), match.group(2)
    days = {"h": n / 24, "d": n, "w": 7 * n, "y": 365 * n}[unit]
    if days > MAX_TOKEN_DAYS:
        raise SctkError(f"An expiry of more than {MAX_TOKEN_DAYS} days is not allowed.")
    return timedelta(days=days)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    session: Session, user: Identity, name: str, expires_in: timedelta | None, actor: str
) -> tuple[str, TokenView]:
    """Make a personal token; the plaintext is returned once and never stored."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise SctkError("A token name must be 1 to 100 characters long.")
    prefix = secrets.token_hex(4)
    plaintext = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        user_id=user.id,
        name=name,
        prefix=f"{TOKEN_PREFIX}{prefix}",
        token_hash=hash_token(plaintext),
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    session.add(token)
    session.flush()
    audit_log.record(
        session,
        "token.created",
        actor=actor,
        target=user.username,
        details={
            "token": token.prefix,
            "name": name,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        },
    )
    return plaintext, _view(token, user.username)


def list_tokens(session: Session, user: Identity | None = None) -> list[TokenView]:
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return [_view(t, name) for t, name in session.execute(query.order_by(ApiToken.id))]


def revoke(
    session: Session, token_id: int, actor: Identity | str, owner: Identity | None = None
) -> TokenView:
    """Revoke a token; with OWNER, only that user's token may be revoked."""
    query = (
        select(ApiToken, User.username)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.id == token_id)
    )
    if owner is not None:
        query = query.where(ApiToken.user_id == owner.id)
    row = session.execute(query).first()
    if row is None:
        raise NotFound(f"No API token with id {token_id}; 'sctk tokens list' shows them.")
    token, username = row
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        actor_name = actor if isinstance(actor, str) else actor.username
        audit_log.record(
            session,
            "token.revoked",
            actor=actor_name,
            target=username,
            details={"token": token.prefix},
        )
    return _view(token, username)


def revoke_all_of(session: Session, user: Identity, actor: str) -> int:
    """Revoke every active token of USER; the number revoked."""
    active = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    ).all()
    now = utcnow()
    for token in active:
        token.revoked_at = now
        audit_log.record(
            session,
            "token.revoked",
            actor=actor,
            target=user.username,
            details={"token": token.prefix, "why": "password reset"},
        )
    return len(active)


# Built once: constructing the statement on every request cost more than running it.
_BY_HASH = (
    select(ApiToken, User)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)
_BY_USERNAME = select(User).where(User.username == bindparam("username"))


def authenticate_token(
    session: Session, presented: str, client: str
) -> tuple[User, datetime | None]:
    """The user behind a personal token and the token's expiry; AuthenticationFailed when
    it is not valid now."""
    if not _TOKEN_RE.match(presented):
        raise AuthenticationFailed("The API token is malformed.")
    row = session.execute(_BY_HASH, {"token_hash": hash_token(presented)}).first()
    if row is None:
        raise AuthenticationFailed("The API token is not valid.")
    token, user = row
    now = utcnow()
    if token.revoked_at is not None:
        raise AuthenticationFailed("The API token has been revoked.")
    if token.expires_at is not None and token.expires_at <= now:
        raise AuthenticationFailed("The API token has expired.")
    if user.disabled:
        raise AuthenticationFailed("This account is disabled; ask an admin.")
    if token.last_used_at is None or now - token.last_used_at > _LAST_USE_RESOLUTION:
        token.last_used_at = now
        token.last_used_from = client[:64]
    return user, token.expires_at


# A login JWT names the moment its user's password last changed, to the microsecond: a
# password reset then refuses every token issued before it, even one from the same second
# (the issue time, `iat`, has whole seconds only).
PASSWORD_CLAIM = "pwc"
# The issue time to the microsecond, for the same reason: a JWT issued in the second after
# every session was ended (sessions.revoke_all) is not refused with those before it.
ISSUED_CLAIM = "iatus"


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def _password_epoch(user: User) -> int:
    return _micros(user.password_changed_at)


def issue_jwt(ring: Keyring, user: User, ttl: timedelta) -> tuple[str, int]:
    """A signed login JWT for USER and its lifetime in seconds."""
    kid, key = ring.jwt_key()
    now = utcnow()
    claims = {
        "sub": user.username,
        "role": user.role,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
        PASSWORD_CLAIM: _password_epoch(user),
        ISSUED_CLAIM: _micros(now),
    }
    token = jwt.encode(claims, key, algorithm="HS256", headers={"kid": str(kid)})
    return token, int(ttl.total_seconds())


def authenticate_jwt(session: Session, ring: Keyring, presented: str) -> tuple[User, datetime]:
    """The user a login JWT names and its expiry; AuthenticationFailed if it is forged,
    expired or stale."""
    try:
        header = jwt.get_unverified_header(presented)
        kid = int(header.get("kid", ""))
        _, key = ring.jwt_key(kid)
    except (jwt.PyJWTError, ValueError, SctkError):
        raise AuthenticationFailed("The access token is not valid.") from None
    try:
        claims = jwt.decode(
            presented, key, algorithms=["HS256"], options={"require": ["exp", "iat", "jti", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationFailed("The access token has expired; log in again.") from None
    except jwt.PyJWTError:
        raise AuthenticationFailed("The access token is not valid.") from None
    user = session.scalar(_BY_USERNAME, {"username": claims["sub"]})
    if user is None or user.disabled:
        raise AuthenticationFailed("The access token's account no longer exists or is disabled.")
    epoch = claims.get(PASSWORD_CLAIM)
    if epoch is not None:
        stale = epoch != _password_epoch(user)
    else:  # issued before tokens carried the claim: only the second of issue is known
        stale = int(user.password_changed_at.timestamp()) > claims["iat"]
    if stale:
        raise AuthenticationFailed(
            "The password changed after this token was issued; log in again."
        )
    ended = sessions.not_before(session)
    if ended is not None:
        issued = claims.get(ISSUED_CLAIM)
        if not isinstance(issued, int) or issued < _micros(ended):
            raise AuthenticationFailed(
                "An administrator ended every login session after this token was issued; "
                "log in again."
            )
    return user, datetime.fromtimestamp(claims["exp"], UTC)
