"""ORM models, one module per domain. Every schema change is a new Alembic migration;
old migrations are never edited. Import a model from here so Base.metadata knows them all."""

from sctk.storage.models.alerts import (
    Alert,
    AlertEvent,
    AlertSilence,
    Incident,
    IncidentEvent,
    NotificationAttempt,
)
from sctk.storage.models.backup import BackupRun, BackupSnapshot
from sctk.storage.models.base import Base, utcnow
from sctk.storage.models.bus import BusMessage, DeadLetter
from sctk.storage.models.data import Dataset
from sctk.storage.models.jobs import Job, JobEvent
from sctk.storage.models.monitoring import MetricAggregate
from sctk.storage.models.platform import CheckResult, MaintenanceRun
from sctk.storage.models.security import ApiToken, AuditEntry, LoginAttempt, Secret, User
from sctk.storage.models.service import Lease, ServiceFlag
from sctk.storage.models.uq import UqAdaptive, UqModel, UqObservation

__all__ = [
    "Alert",
    "AlertEvent",
    "AlertSilence",
    "Incident",
    "IncidentEvent",
    "NotificationAttempt",
    "ApiToken",
    "AuditEntry",
    "BackupRun",
    "BackupSnapshot",
    "Base",
    "BusMessage",
    "Dataset",
    "DeadLetter",
    "Job",
    "JobEvent",
    "CheckResult",
    "Lease",
    "LoginAttempt",
    "MaintenanceRun",
    "MetricAggregate",
    "Secret",
    "ServiceFlag",
    "UqAdaptive",
    "UqModel",
    "UqObservation",
    "User",
    "utcnow",
]
