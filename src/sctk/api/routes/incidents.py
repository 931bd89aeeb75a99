"""/api/v1/incidents: list, inspect (with the timeline), add notes, close."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from sctk.api.deps import SessionDep, require
from sctk.monitoring import incidents
from sctk.security.credentials import Principal

router = APIRouter(tags=["incidents"])

IncidentId = Path(ge=1, le=2**31 - 1, description="Id of the incident.")


class IncidentOut(BaseModel):
    id: int
    title: str
    severity: str
    status: str
    fingerprint: str | None
    owner: str | None
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    resolution: str | None


class TimelineEventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    text: str
    actor: str
    details: dict[str, Any]


class IncidentDetail(IncidentOut):
    timeline: list[TimelineEventOut]


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=incidents.MAX_TEXT, description="The note.")


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: str = Field(
        min_length=1, max_length=incidents.MAX_TEXT, description="What was wrong, what fixed it."
    )


@router.get("/incidents", response_model=list[IncidentOut], summary="Incidents, newest first.")
def list_incidents(
    session: SessionDep,
    _user=require("read"),
    status_: Literal["open", "closed"] | None = Query(None, alias="status"),
    limit: int = Query(100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    return [incidents.as_dict(i) for i in incidents.list_incidents(session, status_, limit)]


@router.get(
    "/incidents/{incident_id}", response_model=IncidentDetail, summary="One incident + timeline."
)
def get_incident(
    session: SessionDep, _user=require("read"), incident_id: int = IncidentId
) -> dict[str, Any]:
    return incidents.show(session, incident_id)


@router.post(
    "/incidents/{incident_id}/notes",
    response_model=TimelineEventOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a note to the timeline.",
)
def add_note(
    body: NoteIn,
    session: SessionDep,
    user: Principal = require("alerts.manage"),
    incident_id: int = IncidentId,
) -> dict[str, Any]:
    data = incidents.event_dict(incidents.note(session, incident_id, body.text, user.username))
    session.commit()
    return data


@router.post(
    "/incidents/{incident_id}/close",
    response_model=IncidentOut,
    summary="Close an open incident with its resolution.",
)
def close_incident(
    body: CloseIn,
    session: SessionDep,
    user: Principal = require("alerts.manage"),
    incident_id: int = IncidentId,
) -> dict[str, Any]:
    data = incidents.as_dict(incidents.close(session, incident_id, body.resolution, user.username))
    session.commit()
    return data
