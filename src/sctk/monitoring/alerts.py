"""Alerts as stored: firing and resolving them (`fire`), their events, acknowledging and
silencing them, and their JSON forms; the engine that decides when they fire is
sctk.monitoring.alert_engine.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sctk.errors import Conflict, NotFound, SctkError
from sctk.monitoring import incidents
from sctk.monitoring.rules import (
    fingerprint,
)
from sctk.security import audit_log
from sctk.storage.models import Alert, AlertEvent, AlertSilence

if TYPE_CHECKING:
    pass

log = logging.getLogger("sctk.alerts")

FIRING = "firing"
RESOLVED = "resolved"
ANOMALY_RULE = "anomaly"
MAINTENANCE_RULE = "maintenance"  # a scheduled maintenance task that failed
COVERAGE_RULE = "coverage"  # a model's intervals cover less than promised (sctk.uq.observations)
# rules raised by an event rather than evaluated on samples: they resolve once quiet
EVENT_RULES = frozenset({ANOMALY_RULE, MAINTENANCE_RULE, COVERAGE_RULE})
_FP_RE = re.compile(r"^[0-9a-f]{16}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SILENCE = timedelta(days=365)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- stored alerts: queries and operator actions ------------------------------------------------


def event(
    session: Session,
    alert_id: int,
    kind: str,
    at: datetime,
    actor: str = "system",
    **details: Any,
) -> AlertEvent:
    row = AlertEvent(alert_id=alert_id, at=at, kind=kind, actor=str(actor)[:64], details=details)
    session.add(row)
    return row


def get(session: Session, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"No alert with id {alert_id}; 'sctk alerts list --all' shows them.")
    return alert


def list_alerts(session: Session, include_resolved: bool = False, limit: int = 200) -> list[Alert]:
    stmt = select(Alert).order_by(Alert.id.desc()).limit(limit)
    if not include_resolved:
        stmt = stmt.where(Alert.status == FIRING)
    return list(session.scalars(stmt))


def history(session: Session, alert_id: int | None = None, limit: int = 200) -> list[AlertEvent]:
    """Alert events, newest first."""
    stmt = select(AlertEvent).order_by(AlertEvent.at.desc(), AlertEvent.id.desc()).limit(limit)
    if alert_id is not None:
        get(session, alert_id)
        stmt = stmt.where(AlertEvent.alert_id == alert_id)
    return list(session.scalars(stmt))


def active_silence(session: Session, fp: str, now: datetime) -> AlertSilence | None:
    return session.scalar(
        select(AlertSilence)
        .where(
            AlertSilence.fingerprint == fp,
            AlertSilence.starts_at <= now,
            AlertSilence.ends_at > now,
        )
        .order_by(AlertSilence.ends_at.desc())
        .limit(1)
    )


def list_silences(
    session: Session, now: datetime | None = None, include_expired: bool = False
) -> list[AlertSilence]:
    stmt = select(AlertSilence).order_by(AlertSilence.id.desc())
    if not include_expired:
        stmt = stmt.where(AlertSilence.ends_at > (now or _now()))
    return list(session.scalars(stmt))


def acknowledge(session: Session, alert_id: int, actor: str, now: datetime | None = None) -> Alert:
    """Stop the reminders of a firing alert (its resolution is still announced)."""
    now = now or _now()
    alert = get(session, alert_id)
    if alert.status != FIRING:
        raise Conflict(
            f"Alert {alert_id} is resolved already (at {alert.resolved_at:%Y-%m-%d %H:%M} UTC); "
            "there is nothing to acknowledge."
        )
    if alert.acknowledged_at is None:
        alert.acknowledged_by = str(actor)[:64]
        alert.acknowledged_at = now
        event(session, alert.id, "acknowledged", now, actor)
        audit_log.record(session, "alert.acknowledged", actor=actor, target=f"alert:{alert_id}")
    return alert


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '2h', '1d', '1w' -> a timedelta."""
    match = _DURATION_RE.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise SctkError(
            f"'{(text or '')[:32]}' is not a duration; use a number and a unit such as "
            "30m, 2h or 1d."
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_until(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SctkError(
            f"'{text[:40]}' is not an ISO time; write it like 2026-12-01T18:00:00Z."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def resolve_target(session: Session, target: str) -> str:
    """An alert id or a fingerprint -> the fingerprint; NotFound when neither is known."""
    target = str(target).strip()
    if target.isdigit():
        return get(session, int(target)).fingerprint
    if not _FP_RE.match(target):
        raise SctkError(
            f"'{target[:40]}' is neither an alert id nor a fingerprint (16 hex digits); "
            "'sctk alerts list --all' shows both."
        )
    if session.scalar(select(Alert.id).where(Alert.fingerprint == target).limit(1)) is None:
        raise NotFound(
            f"No alert has the fingerprint {target}; 'sctk alerts list --all' shows them."
        )
    return target


def silence(
    session: Session,
    target: str,
    *,
    until: datetime | None = None,
    duration: timedelta | None = None,
    reason: str = "",
    actor: str = "system",
    now: datetime | None = None,
) -> AlertSilence:
    """Silence a fingerprint (or the fingerprint of an alert id) until a time in the future."""
    now = now or _now()
    if (until is None) == (duration is None):
        raise SctkError("Give either an end time (--until ISO) or a duration (--for 2h), not both.")
    if until is None:
        until = now + duration  # type: ignore[operator]
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    if until <= now:
        raise SctkError(
            f"The silence would end at {until:%Y-%m-%d %H:%M:%S} UTC, which is not in the "
            "future; give a later --until or a duration such as --for 2h."
        )
    if until - now > MAX_SILENCE:
        raise SctkError("A silence may last at most 365 days; give an earlier end.")
    fp = resolve_target(session, target)
    row = AlertSilence(
        fingerprint=fp, starts_at=now, ends_at=until, reason=reason[:1000], created_by=actor[:64]
    )
    session.add(row)
    session.flush()
    for alert in session.scalars(
        select(Alert).where(Alert.fingerprint == fp, Alert.status == FIRING)
    ):
        event(session, alert.id, "silenced", now, actor, until=until.isoformat(), reason=reason)
    audit_log.record(
        session,
        "alert.silenced",
        actor=actor,
        target=f"fingerprint:{fp}",
        details={"until": until.isoformat(), "reason": reason[:200]},
    )
    return row


def as_dict(alert: Alert, silenced_until: datetime | None = None) -> dict[str, Any]:
    return {
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "metric": alert.metric,
        "labels": alert.labels,
        "severity": alert.severity,
        "status": alert.status,
        "message": alert.message,
        "value": alert.value,
        "threshold": alert.threshold,
        "started_at": _iso(alert.started_at),
        "resolved_at": _iso(alert.resolved_at),
        "last_notified_at": _iso(alert.last_notified_at),
        "notified_count": alert.notified_count,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": _iso(alert.acknowledged_at),
        "silenced_until": _iso(silenced_until),
        "incident_id": alert.incident_id,
    }


def describe(session: Session, alerts: Iterable[Alert], now: datetime | None = None) -> list[dict]:
    """as_dict for each alert, with the end of its active silence (if any)."""
    now = now or _now()
    out = []
    for alert in alerts:
        s = active_silence(session, alert.fingerprint, now)
        out.append(as_dict(alert, s.ends_at if s else None))
    return out


def event_dict(e: AlertEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "alert_id": e.alert_id,
        "at": _iso(e.at),
        "kind": e.kind,
        "actor": e.actor,
        "details": e.details,
    }


def silence_dict(s: AlertSilence) -> dict[str, Any]:
    return {
        "id": s.id,
        "fingerprint": s.fingerprint,
        "starts_at": _iso(s.starts_at),
        "ends_at": _iso(s.ends_at),
        "reason": s.reason,
        "created_by": s.created_by,
    }


def fire(
    session: Session,
    *,
    rule: str,
    metric: str,
    severity: str,
    message: str,
    now: datetime,
    labels: dict[str, str] | None = None,
    value: float | None = None,
    threshold: float | None = None,
) -> Alert:
    """Store a new firing alert (and its incident, when critical); no notification here."""
    fp = fingerprint(rule, metric, labels)
    alert = Alert(
        fingerprint=fp,
        rule=rule,
        metric=metric,
        labels=labels or {},
        severity=severity,
        status=FIRING,
        message=message,
        value=value,
        threshold=threshold,
        started_at=now,
        last_seen_at=now,
        notified_count=0,
    )
    session.add(alert)
    session.flush()
    shown = round(value, 3) if value is not None else None
    event(session, alert.id, "fired", now, value=shown, threshold=threshold, severity=severity)
    if severity == "critical":
        title = f"{rule} critical: {message}"[:200]
        incident, created = incidents.open_or_join(session, fp, title, "critical", at=now)
        alert.incident_id = incident.id
        incidents.add_event(
            session,
            incident.id,
            "alert.fired",
            f"Alert {alert.id} fired: {message}",
            details={"alert_id": alert.id, "value": value, "joined": not created},
            at=now,
        )
    return alert


# -- the engine -------------------------------------------------------------------------------
