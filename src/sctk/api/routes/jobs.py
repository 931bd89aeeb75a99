"""/api/v1/jobs: submit, list, inspect, cancel and retry durable jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from sctk.api.deps import SessionDep, record_denial, require
from sctk.jobs import access, events, queue
from sctk.jobs.kinds import get_kind, kinds
from sctk.security.credentials import Principal
from sctk.security.roles import allowed
from sctk.uq import physics_registry

router = APIRouter(tags=["jobs"])

JobId = Path(ge=1, le=2**31 - 1, description="Id of the job.")


class JobSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=100, description="A job kind: GET /jobs/kinds.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The kind's parameters, at most 64 KiB as JSON; never 'owner' (a job "
        "belongs to whoever submits it).",
    )
    max_attempts: int | None = Field(
        None, ge=1, le=queue.MAX_ATTEMPTS_LIMIT, description="Default: jobs.max_attempts."
    )


class JobOut(BaseModel):
    id: int
    kind: str
    status: str
    params: dict[str, Any]
    owner: str
    attempts: int
    max_attempts: int
    progress: float
    message: str
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    updated_at: datetime
    run_after: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None


class JobEventOut(BaseModel):
    job_id: int
    seq: int
    at: datetime
    kind: str
    data: dict[str, Any]


class JobKindOut(BaseModel):
    name: str
    description: str
    permission: str


@router.get("/jobs", response_model=list[JobOut], summary="Jobs, newest first.")
def list_jobs(
    session: SessionDep,
    _user=require("read"),
    status_: str | None = Query(
        None, alias="status", max_length=16, description=f"One of {', '.join(queue.STATUSES)}."
    ),
    owner: str | None = Query(None, max_length=64, description="Only this owner's jobs."),
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return [queue.as_dict(j) for j in queue.list_jobs(session, status_, owner, limit)]


@router.get("/jobs/kinds", response_model=list[JobKindOut], summary="Kinds of job there are.")
def list_kinds(_user=require("read")) -> list[JobKindOut]:
    return [
        JobKindOut(name=k.name, description=k.description, permission=k.permission)
        for k in sorted(kinds().values(), key=lambda k: k.name)
    ]


def _may_act_on(
    request: Request, session: Session, user: Principal, job_id: int, action: str
) -> None:
    """403 (audited) unless USER may ACTION the job: see sctk.jobs.access."""
    refused = access.refusal(queue.get(session, job_id), user.username, user.role, action)
    if refused is not None:
        permission, sentence = refused
        record_denial(request, user, permission, request.method)
        raise HTTPException(403, sentence)


@router.post(
    "/jobs",
    response_model=JobOut,
    status_code=status.HTTP_201_CREATED,
    summary="Queue a job (needs jobs.run and the kind's own permission).",
)
def submit_job(
    request: Request,
    response: Response,
    body: JobSubmit,
    session: SessionDep,
    user: Principal = require("jobs.run"),
    idempotency_key: str | None = Header(
        None,
        max_length=128,
        description="Repeat a submission safely: the job submitted earlier with this key is "
        "returned (200) instead of a second one being queued.",
    ),
) -> dict[str, Any]:
    kind = get_kind(body.kind)  # an unknown kind: 400 naming the known ones
    if not allowed(user.role, kind.permission):
        record_denial(request, user, kind.permission, request.method)
        raise HTTPException(
            403,
            f"Your role '{user.role}' may not run '{kind.name}' jobs; they need "
            f"'{kind.permission}'.",
        )
    settings = request.app.state.settings
    attempts = body.max_attempts or settings.jobs.max_attempts
    # a kind's check at submission sees the physics an admin lists (uq.train)
    with physics_registry.admitted(settings.uq.physics_allowed):
        job = queue.submit(
            session, body.kind, body.params, user.username, attempts, idempotency_key
        )
    if job.replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return queue.as_dict(job)


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job.")
def get_job(session: SessionDep, _user=require("read"), job_id: int = JobId) -> dict[str, Any]:
    return queue.as_dict(queue.get(session, job_id))


@router.get(
    "/jobs/{job_id}/events", response_model=list[JobEventOut], summary="A job's events in order."
)
def job_events(
    session: SessionDep,
    _user=require("read"),
    job_id: int = JobId,
    after: int = Query(0, ge=0, le=2**31 - 1, description="Only events after this seq."),
) -> list[dict[str, Any]]:
    queue.get(session, job_id)  # 404 for a job that does not exist
    return [events.as_dict(e) for e in events.history(session, job_id, after)]


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a queued job, or stop a running one within seconds (one's own job, or "
    "anyone's with jobs.manage; always with the kind's own permission).",
)
def cancel_job(
    request: Request,
    session: SessionDep,
    user: Principal = require("jobs.run"),
    job_id: int = JobId,
) -> dict[str, Any]:
    _may_act_on(request, session, user, job_id, "cancel")
    return queue.as_dict(queue.cancel(session, job_id, actor=user.username))


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    summary="Queue a failed job again (one's own, or anyone's with jobs.manage; always with "
    "the kind's own permission).",
)
def retry_job(
    request: Request,
    session: SessionDep,
    user: Principal = require("jobs.run"),
    job_id: int = JobId,
) -> dict[str, Any]:
    _may_act_on(request, session, user, job_id, "retry")
    return queue.as_dict(queue.retry(session, job_id, actor=user.username))
