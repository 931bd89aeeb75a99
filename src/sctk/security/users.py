"""User accounts: creation, roles, enabling, passwords, lockout and password login."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sctk.config import SecuritySettings
from sctk.errors import NotFound, SctkError
from sctk.security import audit_log, passwords, tokens
from sctk.security.auth_errors import AccountLocked, AuthenticationFailed
from sctk.security.roles import Role, parse_role
from sctk.storage.models import LoginAttempt, User, utcnow

USERNAME = re.compile(r"^[a-z][a-z0-9._-]{2,63}$")


@dataclass(frozen=True)
class UserView:
    """What may be shown of a user (no hash)."""

    id: int
    username: str
    role: str
    disabled: bool
    locked: bool
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(
            user.id,
            user.username,
            user.role,
            user.disabled,
            is_locked(user),
            user.locked_until,
            user.created_at,
            user.last_login_at,
        )


def _lock_forever() -> datetime:
    return datetime(9999, 12, 31, tzinfo=utcnow().tzinfo)


def is_locked(user: User, now: datetime | None = None) -> bool:
    return user.locked_until is not None and user.locked_until > (now or utcnow())


def validate_username(username: str) -> str:
    if not USERNAME.match(username):
        raise SctkError(
            f"Invalid username '{username[:64]}'; use 3-64 lowercase letters, digits, '.', '_' "
            "or '-', starting with a letter."
        )
    return username


def get(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"No user named '{username[:64]}'; 'sctk users list' shows the users.")
    return user


def list_users(session: Session) -> list[UserView]:
    return [UserView.of(u) for u in session.scalars(select(User).order_by(User.username))]


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def create(
    session: Session, username: str, password: str, role: str, actor: str = "system"
) -> User:
    validate_username(username)
    parsed = parse_role(role)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise SctkError(f"A user named '{username}' already exists; choose another username.")
    passwords.check_policy(username, password)
    user = User(
        username=username, role=parsed.value, password_hash=passwords.hash_password(password)
    )
    session.add(user)
    session.flush()
    audit_log.record(
        session, "user.created", actor=actor, target=username, details={"role": parsed.value}
    )
    return user


def set_role(session: Session, username: str, role: str, actor: str) -> User:
    user = get(session, username)
    parsed = parse_role(role)
    if user.role == parsed.value:
        return user
    if user.role == Role.admin and _would_leave_no_admin(session, user):
        raise SctkError(f"'{username}' is the last enabled admin; make another admin first.")
    old, user.role = user.role, parsed.value
    audit_log.record(
        session,
        "user.role_changed",
        actor=actor,
        target=username,
        details={"from": old, "to": parsed.value},
    )
    return user


def _would_leave_no_admin(session: Session, user: User) -> bool:
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.admin.value, User.disabled.is_(False), User.id != user.id)
    )
    return not others


def set_disabled(session: Session, username: str, disabled: bool, actor: str) -> User:
    user = get(session, username)
    if user.disabled == disabled:
        return user
    if disabled and user.role == Role.admin and _would_leave_no_admin(session, user):
        raise SctkError(f"'{username}' is the last enabled admin; make another admin first.")
    user.disabled = disabled
    audit_log.record(
        session, "user.disabled" if disabled else "user.enabled", actor=actor, target=username
    )
    return user


def reset_password(
    session: Session, username: str, password: str, actor: str, revoke_tokens: bool = True
) -> int:
    """Set USERNAME's password; its login JWTs end, and (REVOKE_TOKENS, for a reset by an
    admin) so do its personal API tokens, which whoever knew the old password may have made.
    Returns the number of tokens revoked."""

    user = get(session, username)
    passwords.check_policy(username, password)
    user.password_hash = passwords.hash_password(password)
    user.password_changed_at = utcnow()
    audit_log.record(session, "user.password_reset", actor=actor, target=username)
    return tokens.revoke_all_of(session, user, actor) if revoke_tokens else 0


def unlock(session: Session, username: str, actor: str) -> User:
    user = get(session, username)
    user.locked_until = None
    # the failures that caused the lock no longer count towards the next one
    session.add(LoginAttempt(username=username, client="", success=True, reason="unlocked"))
    audit_log.record(session, "user.unlocked", actor=actor, target=username)
    return user


# Failures that were guesses: a refusal while throttled is recorded but does not extend the
# throttle, so that a script hammering a locked pair cannot push the account-wide count up.
GUESSES = ("bad password", "unknown user")
# An account lock leaves out addresses the account logged in from this recently: its owner.
KNOWN_ADDRESS_DAYS = 30


def _last_success(session: Session, username: str, client: str | None = None) -> datetime | None:
    """The last good login of USERNAME (from CLIENT when given) or admin unlock."""
    query = select(func.max(LoginAttempt.at)).where(
        LoginAttempt.username == username, LoginAttempt.success.is_(True)
    )
    if client is not None:
        query = query.where((LoginAttempt.client == client) | (LoginAttempt.reason == "unlocked"))
    return session.scalar(query)


def _failures(
    session: Session, username: str, since: datetime, client: str | None = None
) -> tuple[int, datetime | None]:
    """Guesses at USERNAME (from CLIENT when given) since SINCE or the last good login,
    whichever is later: their number and the time of the last one."""
    last_ok = _last_success(session, username, client)
    start = max(since, last_ok) if last_ok else since
    query = select(func.count(), func.max(LoginAttempt.at)).where(
        LoginAttempt.username == username,
        LoginAttempt.success.is_(False),
        LoginAttempt.reason.in_(GUESSES),
        LoginAttempt.at > start,
    )
    if client is not None:
        query = query.where(LoginAttempt.client == client)
    n, last = session.execute(query).one()
    return n or 0, last


def _pair_delay(policy: SecuritySettings, failures: int) -> timedelta | None:
    """How long one address waits after FAILURES guesses at one account (None: no wait)."""
    if failures < policy.lockout_threshold:
        return None
    # capped exponent: the delay stops growing long before the float would overflow
    delay = policy.lockout_delay_seconds * 2.0 ** min(failures - policy.lockout_threshold, 40)
    if policy.lockout_minutes:
        delay = min(delay, policy.lockout_minutes * 60.0)
    return timedelta(seconds=delay)


def _known_address(session: Session, username: str, client: str, now: datetime) -> bool:
    since = now - timedelta(days=KNOWN_ADDRESS_DAYS)
    return (
        session.scalar(
            select(LoginAttempt.id)
            .where(
                LoginAttempt.username == username,
                LoginAttempt.client == client,
                LoginAttempt.success.is_(True),
                LoginAttempt.at > since,
            )
            .limit(1)
        )
        is not None
    )


def throttle(
    session: Session,
    username: str,
    client: str,
    user: User | None,
    policy: SecuritySettings,
    now: datetime,
) -> AccountLocked | None:
    """Why a login of USERNAME from CLIENT must wait now, or None.

    Computed from the recorded attempts, the same way whether the account exists or not, so
    a refusal never tells which usernames exist.
    """
    window_start = now - timedelta(minutes=policy.lockout_window_minutes)
    failures, last = _failures(session, username, window_start, client)
    delay = _pair_delay(policy, failures)
    if delay is not None and last is not None and last + delay > now:
        return AccountLocked(
            "Too many failed logins for this account from this address; try again later "
            "or ask an admin to unlock it.",
            retry_after=(last + delay - now).total_seconds(),
        )
    if user is not None:
        until = user.locked_until if is_locked(user, now) else None
    else:  # what an existing account's lock would be: the same for a name nobody holds
        total, last_any = _failures(session, username, window_start)
        until = None
        if total >= policy.account_lockout_threshold and last_any is not None:
            until = (
                last_any + timedelta(minutes=policy.lockout_minutes)
                if policy.lockout_minutes
                else _lock_forever()
            )
            until = until if until > now else None
    if until is not None and not _known_address(session, username, client, now):
        return AccountLocked(
            "Too many failed logins for this account; try again later "
            "or ask an admin to unlock it.",
            retry_after=(until - now).total_seconds(),
        )
    return None


def authenticate(
    session: Session, username: str, password: str, client: str, policy: SecuritySettings
) -> User:
    """Check a password login; record the attempt; throttle guessing.

    One address that guesses wrong lockout_threshold times at one account waits
    lockout_delay_seconds, doubled with each further failure (up to lockout_minutes); the
    account itself is locked only after account_lockout_threshold failures from everywhere,
    and then not for the addresses its owner logged in from recently. An unknown username is
    answered exactly as a wrong password, throttled alike, after as long a hash.

    The caller must commit even when this raises, so the failed attempt is kept.
    """
    now = utcnow()
    username = username[:64]
    user = session.scalar(select(User).where(User.username == username))

    def fail(reason: str, exc: AuthenticationFailed | None = None) -> AuthenticationFailed:
        session.add(
            LoginAttempt(username=username, client=client, success=False, reason=reason, at=now)
        )
        audit_log.record(
            session,
            "login.failed",
            actor=username,
            client=client,
            outcome="denied",
            details={"reason": reason},
        )
        return exc or AuthenticationFailed("Wrong username or password.")

    waiting = throttle(session, username, client, user, policy, now)
    if waiting is not None:
        raise fail("locked", waiting)
    if user is None:
        passwords.burn_time(password)
        raise fail("unknown user")
    if not passwords.verify_password(user.password_hash, password):
        window_start = now - timedelta(minutes=policy.lockout_window_minutes)
        failures = _failures(session, username, window_start)[0] + 1  # before this one's row
        exc = fail("bad password")
        if failures >= policy.account_lockout_threshold and not is_locked(user, now):
            user.locked_until = (
                now + timedelta(minutes=policy.lockout_minutes)
                if policy.lockout_minutes
                else _lock_forever()
            )
            audit_log.record(
                session,
                "user.locked",
                actor="system",
                target=username,
                client=client,
                details={"failures": failures},
            )
        raise exc
    if user.disabled:
        raise fail("disabled", AuthenticationFailed("This account is disabled; ask an admin."))
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    user.last_login_at = now
    session.add(LoginAttempt(username=username, client=client, success=True, reason="", at=now))
    audit_log.record(session, "login.ok", actor=username, client=client)
    return user
