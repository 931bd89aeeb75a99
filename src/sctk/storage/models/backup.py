"""Backups: a cache of the repository's snapshot catalog, and a record of every backup run.

The repository is the truth about which snapshots exist (it stays listable when the database
is lost); `backup_snapshots` only mirrors it so that the API can answer without opening the
repository. `backup_runs` records each create / verify / prune / copy / restore, failed or not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sctk.storage.models.base import Base, utcnow


class BackupSnapshot(Base):
    """One snapshot of the configured repository, as last read from it."""

    __tablename__ = "backup_snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    time: Mapped[datetime] = mapped_column(index=True)
    label: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255), default="")
    files: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    added_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    repository: Mapped[str] = mapped_column(String(1000), default="")
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)


class BackupRun(Base):
    """One backup operation: what ran, when, how it ended and why."""

    __tablename__ = "backup_runs"
    __table_args__ = (Index("ix_backup_runs_kind_started_at", "kind", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # create / verify / prune / copy / restore
    status: Mapped[str] = mapped_column(String(16), default="running")  # running/succeeded/failed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    snapshot_id: Mapped[str | None] = mapped_column(String(64), default=None)
    repository: Mapped[str] = mapped_column(String(1000), default="")
    actor: Mapped[str] = mapped_column(String(64), default="system")
    message: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
