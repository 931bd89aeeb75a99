"""Incidents: opened by a critical alert (or by hand, or by `sctk emergency`), a timeline of
what happened and what was done, an owner, and a resolution when closed.

Functions take the caller's session and do not commit: the caller's transaction decides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sctk.errors import Conflict, NotFound, SctkError
from sctk.security import audit_log
from sctk.storage.models import Incident, IncidentEvent

OPEN = "open"
CLOSED = "closed"
SEVERITIES = ("info", "warning", "critical")
MAX_TEXT = 10_000


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise SctkError(f"The {what} is empty; write a few words.")
    if len(value) > MAX_TEXT:
        raise SctkError(f"The {what} is {len(value)} characters long; keep it under {MAX_TEXT}.")
    return value


def get(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"No incident with id {incident_id}; 'sctk incident list' shows them.")
    return incident


def list_incidents(session: Session, status: str | None = None, limit: int = 100) -> list[Incident]:
    if status not in (None, OPEN, CLOSED):
        raise SctkError(f"Unknown incident status '{status}'; use 'open' or 'closed'.")
    stmt = select(Incident).order_by(Incident.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Incident.status == status)
    return list(session.scalars(stmt))


def timeline(session: Session, incident_id: int) -> list[IncidentEvent]:
    return list(
        session.scalars(
            select(IncidentEvent)
            .where(IncidentEvent.incident_id == incident_id)
            .order_by(IncidentEvent.at, IncidentEvent.id)
        )
    )


def add_event(
    session: Session,
    incident_id: int,
    kind: str,
    text: str,
    actor: str = "system",
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> IncidentEvent:
    """Write one line on the timeline (kinds used: alert.fired, alert.resolved, action, note,
    opened, closed, and the steps of `sctk emergency`)."""
    get(session, incident_id)
    event = IncidentEvent(
        incident_id=incident_id,
        at=at or _now(),
        kind=kind[:32],
        text=_text(text, "timeline text"),
        actor=str(actor)[:64],
        details=details or {},
    )
    session.add(event)
    session.flush()
    return event


def open_incident(
    session: Session,
    title: str,
    severity: str,
    fingerprint: str | None = None,
    actor: str = "system",
    owner: str | None = None,
    at: datetime | None = None,
) -> Incident:
    """A new open incident with an 'opened' line on its timeline."""
    if severity not in SEVERITIES:
        raise SctkError(f"Unknown severity '{severity}'; use one of {', '.join(SEVERITIES)}.")
    title = _text(title, "incident title")[:200]
    at = at or _now()
    incident = Incident(
        title=title,
        severity=severity,
        status=OPEN,
        fingerprint=fingerprint,
        owner=owner,
        opened_by=str(actor)[:64],
        opened_at=at,
    )
    session.add(incident)
    session.flush()
    add_event(session, incident.id, "opened", f"Incident opened: {title}", actor, at=at)
    return incident


def find_open(session: Session, fingerprint: str) -> Incident | None:
    return session.scalar(
        select(Incident)
        .where(Incident.status == OPEN, Incident.fingerprint == fingerprint)
        .order_by(Incident.id.desc())
        .limit(1)
    )


def open_or_join(
    session: Session, fingerprint: str, title: str, severity: str, at: datetime | None = None
) -> tuple[Incident, bool]:
    """The open incident of FINGERPRINT, or a new one: (incident, created)."""
    found = find_open(session, fingerprint)
    if found is not None:
        return found, False
    return open_incident(session, title, severity, fingerprint=fingerprint, at=at), True


def note(session: Session, incident_id: int, text: str, actor: str) -> IncidentEvent:
    event = add_event(session, incident_id, "note", text, actor)
    audit_log.record(session, "incident.noted", actor=actor, target=f"incident:{incident_id}")
    return event


def set_owner(session: Session, incident_id: int, owner: str, actor: str) -> Incident:
    incident = get(session, incident_id)
    owner = _text(owner, "owner")[:64]
    incident.owner = owner
    add_event(session, incident_id, "owner", f"Owner set to {owner}", actor)
    return incident


def close(session: Session, incident_id: int, resolution: str, actor: str) -> Incident:
    """Close an open incident with its resolution; Conflict when it is closed already."""
    incident = get(session, incident_id)
    resolution = _text(resolution, "resolution")
    if incident.status == CLOSED:
        raise Conflict(
            f"Incident {incident_id} was closed already at {incident.closed_at:%Y-%m-%d %H:%M} "
            "UTC; add a note instead."
        )
    incident.status = CLOSED
    incident.closed_at = _now()
    incident.closed_by = str(actor)[:64]
    incident.resolution = resolution
    add_event(session, incident_id, "closed", f"Closed: {resolution}", actor)
    audit_log.record(session, "incident.closed", actor=actor, target=f"incident:{incident_id}")
    return incident


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def as_dict(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "severity": incident.severity,
        "status": incident.status,
        "fingerprint": incident.fingerprint,
        "owner": incident.owner,
        "opened_by": incident.opened_by,
        "opened_at": _iso(incident.opened_at),
        "closed_at": _iso(incident.closed_at),
        "closed_by": incident.closed_by,
        "resolution": incident.resolution,
    }


def event_dict(event: IncidentEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": _iso(event.at),
        "kind": event.kind,
        "text": event.text,
        "actor": event.actor,
        "details": event.details,
    }


def show(session: Session, incident_id: int) -> dict[str, Any]:
    data = as_dict(get(session, incident_id))
    data["timeline"] = [event_dict(e) for e in timeline(session, incident_id)]
    return data
