"""/api/v1/alerts: list, inspect, acknowledge and silence alerts; history; test a channel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from sctk.api.deps import SessionDep, require
from sctk.monitoring import alerts, notifiers
from sctk.security.credentials import Principal

router = APIRouter(tags=["alerts"])

AlertId = Path(ge=1, le=2**31 - 1, description="Id of the alert.")


class AlertOut(BaseModel):
    id: int
    fingerprint: str
    rule: str
    metric: str
    labels: dict[str, Any]
    severity: str
    status: str
    message: str
    value: float | None
    threshold: float | None
    started_at: datetime
    resolved_at: datetime | None
    last_notified_at: datetime | None
    notified_count: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    silenced_until: datetime | None
    incident_id: int | None


class AlertEventOut(BaseModel):
    id: int
    alert_id: int
    at: datetime
    kind: str
    actor: str
    details: dict[str, Any]


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        min_length=1, max_length=64, description="An alert id or a fingerprint (16 hex digits)."
    )
    until: datetime | None = Field(None, description="End of the silence (ISO 8601; UTC if bare).")
    duration: str | None = Field(
        None, max_length=32, description="Instead of `until`: 30m, 2h, 1d, ..."
    )
    reason: str = Field("", max_length=1000, description="Why.")


class SilenceOut(BaseModel):
    id: int
    fingerprint: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str


class TestNotifyOut(BaseModel):
    channel: str
    ok: bool
    duration_ms: float


@router.get("/alerts", response_model=list[AlertOut], summary="Firing alerts (all: resolved too).")
def list_alerts(
    session: SessionDep,
    _user=require("read"),
    all_: bool = Query(False, alias="all", description="Resolved alerts too."),
    limit: int = Query(200, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    return alerts.describe(session, alerts.list_alerts(session, all_, limit))


@router.get(
    "/alerts/history", response_model=list[AlertEventOut], summary="Alert events, newest first."
)
def alert_history(
    session: SessionDep,
    _user=require("read"),
    alert_id: int | None = Query(None, ge=1, le=2**31 - 1, description="Only this alert."),
    limit: int = Query(200, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    return [alerts.event_dict(e) for e in alerts.history(session, alert_id, limit)]


@router.get("/alerts/silences", response_model=list[SilenceOut], summary="Active silences.")
def list_silences(
    session: SessionDep,
    _user=require("read"),
    all_: bool = Query(False, alias="all", description="Expired silences too."),
) -> list[dict[str, Any]]:
    return [alerts.silence_dict(s) for s in alerts.list_silences(session, None, all_)]


@router.post(
    "/alerts/silences",
    response_model=SilenceOut,
    status_code=status.HTTP_201_CREATED,
    summary="Silence a fingerprint (or an alert's) until a time in the future.",
)
def create_silence(
    body: SilenceIn, session: SessionDep, user: Principal = require("alerts.manage")
) -> dict[str, Any]:
    until = body.until
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    duration = alerts.parse_duration(body.duration) if body.duration is not None else None
    row = alerts.silence(
        session,
        body.target,
        until=until,
        duration=duration,
        reason=body.reason,
        actor=user.username,
    )
    data = alerts.silence_dict(row)
    session.commit()
    return data


@router.post(
    "/alerts/test-notify/{channel}",
    response_model=TestNotifyOut,
    summary="Send a test message over one channel (log, webhook, email).",
)
def test_notify(
    request: Request,
    session: SessionDep,
    _user=require("alerts.manage"),
    channel: str = Path(max_length=32, description="log, webhook or email."),
) -> TestNotifyOut:
    state = request.app.state
    record = notifiers.db_recorder(state.sessionmaker)
    attempt = notifiers.test_notify(channel, state.settings.alerts, session, state.keyring, record)
    return TestNotifyOut(channel=attempt.channel, ok=attempt.ok, duration_ms=attempt.duration_ms)


@router.get("/alerts/{alert_id}", response_model=AlertOut, summary="One alert.")
def get_alert(session: SessionDep, _user=require("read"), alert_id: int = AlertId) -> dict:
    return alerts.describe(session, [alerts.get(session, alert_id)])[0]


@router.get(
    "/alerts/{alert_id}/events", response_model=list[AlertEventOut], summary="An alert's events."
)
def get_alert_events(
    session: SessionDep, _user=require("read"), alert_id: int = AlertId
) -> list[dict[str, Any]]:
    return [alerts.event_dict(e) for e in alerts.history(session, alert_id, 10_000)]


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertOut,
    summary="Acknowledge a firing alert: no more reminders.",
)
def acknowledge(
    session: SessionDep, user: Principal = require("alerts.manage"), alert_id: int = AlertId
) -> dict[str, Any]:
    alert = alerts.acknowledge(session, alert_id, user.username)
    data = alerts.describe(session, [alert])[0]
    session.commit()
    return data
