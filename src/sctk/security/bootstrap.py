"""The first admin account, created when a data directory has no users yet."""

from __future__ import annotations

from dataclasses import dataclass

from sctk.config import Settings
from sctk.security import audit_log, passwords, users
from sctk.storage.engine import one_off_session

FIRST_ADMIN = "admin"
GENERATED_EVENT = "user.password_generated"


@dataclass(frozen=True)
class FirstAdmin:
    username: str
    generated_password: str | None  # shown once when sctk made it up; None when given


def check_admin_password(password: str | None) -> None:
    """Refuse a weak SCTK_ADMIN_PASSWORD before anything is created."""
    if password is not None:
        problem = passwords.policy_problem(FIRST_ADMIN, password)
        if problem:
            from sctk.errors import SctkError

            raise SctkError(f"SCTK_ADMIN_PASSWORD is not acceptable: {problem}")


def ensure_first_admin(settings: Settings, password: str | None) -> FirstAdmin | None:
    """Create the admin when there are no users; return it, or None when users exist."""
    with one_off_session(settings) as session:
        if users.count(session):
            return None
        generated = None
        if password is None:
            generated = password = passwords.generate_password()
        users.create(session, FIRST_ADMIN, password, "admin", actor="sctk init")
        if generated is not None:
            # shown once to whoever ran init and known to nobody else: the audit does not
            # ask for it to be changed, as it does for one taken from SCTK_ADMIN_PASSWORD
            audit_log.record(session, GENERATED_EVENT, actor="sctk init", target=FIRST_ADMIN)
        return FirstAdmin(FIRST_ADMIN, generated)
