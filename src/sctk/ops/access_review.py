"""The access review of the maintenance guide: who can do what, which accounts and tokens have
outlived their use, and which files holding secrets are readable by more than their owner.
Each item carries the command that fixes it; the compliance audit scores the same facts."""

from __future__ import annotations

import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sctk.config import Settings
from sctk.security.bootstrap import GENERATED_EVENT
from sctk.storage.models import ApiToken, AuditEntry, LoginAttempt, User


@dataclass
class ReviewItem:
    kind: str  # admin, dormant, old_password, token_no_expiry, locked, failed_logins, file_mode
    subject: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> datetime:
    return datetime.now(UTC)


def admins(session: Session) -> list[User]:
    return list(
        session.scalars(
            select(User).where(User.role == "admin", User.disabled.is_(False)).order_by(User.id)
        )
    )


def dormant(session: Session, days: int) -> list[User]:
    """Enabled accounts with no login for DAYS (never-used ones counted from creation)."""
    cutoff = _now() - timedelta(days=days)
    users = session.scalars(select(User).where(User.disabled.is_(False)).order_by(User.id))
    return [u for u in users if (u.last_login_at or u.created_at) < cutoff]


def tokens_without_expiry(session: Session) -> list[tuple[ApiToken, str]]:
    rows = session.execute(
        select(ApiToken, User.username)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.expires_at.is_(None), ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.id)
    )
    return [(token, username) for token, username in rows]


def first_admin_password_unchanged(session: Session) -> User | None:
    """The first admin account if its password is still the one an operator gave at
    installation (SCTK_ADMIN_PASSWORD, which may live on in an environment or a compose
    file). One `sctk init` generated was shown once and is nobody else's: not a finding."""
    first = session.scalar(select(User).where(User.role == "admin").order_by(User.id).limit(1))
    if first is None or first.disabled:
        return None
    # set together at creation; any reset moves password_changed_at
    unchanged = abs((first.password_changed_at - first.created_at).total_seconds()) < 1
    if not unchanged:
        return None
    generated = session.scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.event == GENERATED_EVENT, AuditEntry.target == first.username)
        .where(AuditEntry.at >= first.created_at - timedelta(seconds=1))
    )
    return None if generated else first


def secret_files(settings: Settings) -> list[Path]:
    """Files that hold secrets: the keyring, the configuration (it may hold a database URL
    with a password) and a backup passphrase file."""
    home = settings.home
    files = sorted(p for p in (home / "keys").glob("*") if p.is_file())
    files.append(home / "sctk.toml")
    if settings.backup.passphrase_file is not None:
        files.append(Path(settings.backup.passphrase_file))
    return [p for p in files if p.is_file()]


def too_open(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)


def review(settings: Settings, session: Session) -> list[ReviewItem]:
    sec = settings.security
    items: list[ReviewItem] = []
    for u in admins(session):
        items.append(
            ReviewItem(
                "admin",
                u.username,
                "holds the admin role",
                f"sctk users set-role {u.username} analyst  (if not needed)",
            )
        )
    for u in dormant(session, sec.dormant_days):
        last = u.last_login_at.date().isoformat() if u.last_login_at else "never"
        items.append(
            ReviewItem(
                "dormant",
                u.username,
                f"no login for {sec.dormant_days}+ days (last: {last})",
                f"sctk users disable {u.username}",
            )
        )
    cutoff = _now() - timedelta(days=sec.password_max_age_days)
    for u in session.scalars(select(User).where(User.disabled.is_(False)).order_by(User.id)):
        if u.password_changed_at < cutoff:
            items.append(
                ReviewItem(
                    "old_password",
                    u.username,
                    f"password older than {sec.password_max_age_days} days",
                    f"sctk users reset-password {u.username}",
                )
            )
        if u.locked_until is not None and u.locked_until > _now():
            items.append(
                ReviewItem(
                    "locked",
                    u.username,
                    f"locked until {u.locked_until.isoformat(timespec='minutes')}",
                    f"sctk users unlock {u.username}",
                )
            )
    for token, username in tokens_without_expiry(session):
        items.append(
            ReviewItem(
                "token_no_expiry",
                f"{username}/{token.name}",
                f"token {token.prefix}… never expires",
                f"sctk tokens revoke {token.id}  (and create one with --expires)",
            )
        )
    week = _now() - timedelta(days=7)
    failed: dict[str, int] = {}
    for attempt in session.scalars(
        select(LoginAttempt).where(LoginAttempt.success.is_(False), LoginAttempt.at >= week)
    ):
        failed[attempt.username] = failed.get(attempt.username, 0) + 1
    for username, count in sorted(failed.items(), key=lambda kv: -kv[1]):
        items.append(
            ReviewItem(
                "failed_logins",
                username,
                f"{count} failed logins in 7 days",
                f"sctk audit-log list --event login --user {username}",
            )
        )
    for path in secret_files(settings):
        if too_open(path):
            mode = oct(stat.S_IMODE(path.stat().st_mode))
            items.append(
                ReviewItem(
                    "file_mode", str(path), f"mode {mode}, readable by others", f"chmod 600 {path}"
                )
            )
    return items
