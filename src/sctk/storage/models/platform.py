"""Platform records: health check results and maintenance runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sctk.storage.models.base import Base, utcnow


class CheckResult(Base):
    """One health check's outcome, recorded each time `sctk health` (or the scheduler) runs."""

    __tablename__ = "check_results"
    __table_args__ = (Index("ix_check_results_name_checked_at", "name", "checked_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class MaintenanceRun(Base):
    """One run of a maintenance task: when, how it ended, and what it found."""

    __tablename__ = "maintenance_runs"
    __table_args__ = (Index("ix_maintenance_runs_task_started_at", "task", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10), default="running")
    summary: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    trigger: Mapped[str] = mapped_column(String(20), default="manual")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
