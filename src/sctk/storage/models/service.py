"""Service-wide state shared by every process on one database: switches an operator flips
(job intake paused during an emergency) and leases that keep a role single (one scheduler)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sctk.storage.models.base import Base, utcnow


class ServiceFlag(Base):
    """A named switch, e.g. 'jobs.paused'; a row exists only while the switch is on."""

    __tablename__ = "service_flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(64), default="system")
    set_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """Who holds a single-holder role (the scheduler) and until when, unless renewed."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
