"""Roles and the one permission map that says which role may do what."""

from __future__ import annotations

from enum import StrEnum

from sctk.errors import SctkError


class Role(StrEnum):
    viewer = "viewer"
    analyst = "analyst"
    admin = "admin"


# Each role includes everything the roles before it may do.
_RANK = {Role.viewer: 0, Role.analyst: 1, Role.admin: 2}

# permission -> the least role that holds it
PERMISSIONS: dict[str, Role] = {
    "read": Role.viewer,  # see service state, results, models, jobs
    "tokens.own": Role.viewer,  # manage one's own API tokens and password
    "data.write": Role.analyst,  # upload datasets
    "jobs.run": Role.analyst,  # submit jobs; cancel and retry one's own
    "jobs.manage": Role.admin,  # cancel and retry anyone's jobs
    "models.train": Role.analyst,
    "models.predict": Role.analyst,
    "users.manage": Role.admin,
    "keys.manage": Role.admin,
    "audit.read": Role.admin,
    "backups.manage": Role.admin,
    "restore.run": Role.admin,
    "maintenance.run": Role.admin,
    "settings.manage": Role.admin,
    "alerts.manage": Role.admin,  # acknowledge and silence alerts, test channels, incidents
}


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise SctkError(
            f"Unknown role '{value}'; choose one of: {', '.join(r.value for r in Role)}."
        ) from None


def allowed(role: str, permission: str) -> bool:
    """Whether ROLE holds PERMISSION. An unknown permission is a programming error."""
    least = PERMISSIONS[permission]
    try:
        return _RANK[Role(role)] >= _RANK[least]
    except ValueError:
        return False  # a role name not (or no longer) known holds nothing
