"""Alerts (their lifecycle and history), silences, notification attempts, incidents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sctk.storage.models.base import Base, utcnow


class Alert(Base):
    """One episode of a rule's condition at one severity: firing until resolved.

    The fingerprint (rule + metric + labels) is shared by the warning and the critical alert
    of the same condition, so that the critical one can inhibit the warning.
    """

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_status_fingerprint", "status", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    rule: Mapped[str] = mapped_column(String(120))
    metric: Mapped[str] = mapped_column(String(120))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    severity: Mapped[str] = mapped_column(String(16))  # warning / critical
    status: Mapped[str] = mapped_column(String(16), default="firing")  # firing / resolved
    message: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float | None] = mapped_column(Float, default=None)
    threshold: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    # when the condition last stopped holding; the alert resolves once it stays clear for
    # the cooldown (persisted so a restart does not lose or repeat a resolution)
    clear_since: Mapped[datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    last_notified_at: Mapped[datetime | None] = mapped_column(default=None)
    notified_count: Mapped[int] = mapped_column(Integer, default=0)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    incident_id: Mapped[int | None] = mapped_column(Integer, default=None)


class AlertEvent(Base):
    """The history of an alert: fired, notified, suppressed, acknowledged, resolved, ..."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64), default="system")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AlertSilence(Base):
    """No notification for a fingerprint until a time (alerts that fire later included)."""

    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    starts_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="system")


class NotificationAttempt(Base):
    """One delivery attempt of one notification over one channel, successful or not."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    kind: Mapped[str] = mapped_column(String(16))  # firing / reminder / resolved / test
    channel: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)


class Incident(Base):
    """Something operators deal with: opened by a critical alert or by hand, closed with a
    resolution."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open / closed
    fingerprint: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    opened_by: Mapped[str] = mapped_column(String(64), default="system")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    resolution: Mapped[str | None] = mapped_column(Text, default=None)


class IncidentEvent(Base):
    """One line of an incident's timeline: an alert, an action taken, a note."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64), default="system")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
