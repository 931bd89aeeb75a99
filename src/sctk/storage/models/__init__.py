"""ORM models, one module per domain. Every schema change is a new Alembic migration;
old migrations are never edited. Import a model from here so Base.metadata knows them all."""

from sctk.storage.models.base import Base, utcnow
from sctk.storage.models.platform import CheckResult, MaintenanceRun
from sctk.storage.models.security import ApiToken, AuditEntry, LoginAttempt, Secret, User

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "CheckResult",
    "LoginAttempt",
    "MaintenanceRun",
    "Secret",
    "User",
    "utcnow",
]
