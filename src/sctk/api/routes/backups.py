"""/api/v1/backups: the backup catalog (a cache of the repository) and recent runs; taking and
verifying backups as jobs (`backup.create`, `backup.verify`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from sctk.api.deps import SessionDep, require
from sctk.jobs import queue
from sctk.security.credentials import Principal

router = APIRouter(tags=["backups"])

PERMISSION = "backups.manage"
SnapshotRef = Path(
    min_length=4,
    max_length=64,
    pattern="^([0-9a-fA-F]{4,64}|latest)$",
    description="A snapshot id, a unique prefix of at least 4 hex digits, or 'latest'.",
)


class SnapshotOut(BaseModel):
    id: str
    short_id: str
    time: str | None
    label: str
    kind: Literal["regular", "safety"] = Field(
        description="regular: a backup; safety: taken before a restore, upgrade or rollback."
    )
    status: Literal["verified", "inconsistent", "unverified"] = Field(
        description="From the newest verification: inconsistent snapshots are skipped by the "
        "restore drill and the emergency restore."
    )
    problems: list[str] = Field(description="Why an inconsistent snapshot is inconsistent.")
    host: str
    files: int
    size: int
    added_bytes: int
    verified_at: str | None
    manifest: dict[str, Any]
    repository: str


class RunOut(BaseModel):
    id: int
    kind: str
    status: str
    started_at: str | None
    finished_at: str | None
    snapshot_id: str | None
    repository: str
    actor: str
    message: str
    details: dict[str, Any]
    seconds: float | None


class CatalogOut(BaseModel):
    snapshots: list[SnapshotOut]
    runs: list[RunOut]
    configured: bool = Field(description="False: no backup passphrase, so no backup is taken.")
    problem: str | None = Field(None, description="Why backups are not configured.")


class CreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Literal["daily", "weekly", "monthly", "pre-update", "manual"] = "manual"


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    read_data: bool = Field(False, description="Decrypt and check every byte of the snapshot.")


class JobAccepted(BaseModel):
    job: int
    kind: str
    status: str


@router.get(
    "/backups",
    response_model=CatalogOut,
    summary="Cached snapshot list (newest first) and the last backup runs.",
)
def list_backups(
    request: Request, session: SessionDep, _user=require(PERMISSION), runs: int = 20
) -> dict[str, Any]:
    from sctk.backup import catalog
    from sctk.backup import runs as backup_runs

    limit = max(1, min(runs, 200))
    from sctk.backup.passphrase import configuration_problem

    problem = configuration_problem(request.app.state.settings)
    return {
        "snapshots": [catalog.cached_dict(r) for r in catalog.cached(session)],
        "runs": [backup_runs.as_dict(r) for r in backup_runs.last_runs(session, limit)],
        "configured": problem is None,
        "problem": problem,
    }


@router.post(
    "/backups",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Take a backup: queues a backup.create job; follow it under /api/v1/jobs/{id}.",
)
def create_backup(
    session: SessionDep, body: CreateIn | None = None, user: Principal = require(PERMISSION)
) -> JobAccepted:
    from sctk.backup import jobs as backup_jobs

    params = backup_jobs.create_params((body or CreateIn()).label)
    # one attempt: a failed backup is recorded with its reason, not silently retried
    job = queue.submit(session, backup_jobs.CREATE, params, owner=user.username, max_attempts=1)
    answer = JobAccepted(job=job.id, kind=backup_jobs.CREATE, status=job.status)
    session.commit()  # before answering: a client may poll the job at once
    return answer


IncludeSafety = Query(
    False, description="Let 'latest' name a safety snapshot (taken before a restore) too."
)


@router.get("/backups/{snapshot_id}", response_model=SnapshotOut, summary="One snapshot.")
def show_backup(
    session: SessionDep,
    _user=require(PERMISSION),
    snapshot_id: str = SnapshotRef,
    include_safety: bool = IncludeSafety,
) -> dict[str, Any]:
    from sctk.backup import catalog

    return catalog.cached_dict(catalog.cached_one(session, snapshot_id, include_safety))


@router.post(
    "/backups/{snapshot_id}/verify",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Verify a snapshot: queues a backup.verify job.",
)
def verify_backup(
    session: SessionDep,
    body: VerifyIn | None = None,
    user: Principal = require(PERMISSION),
    snapshot_id: str = SnapshotRef,
    include_safety: bool = IncludeSafety,
) -> JobAccepted:
    from sctk.backup import catalog
    from sctk.backup import jobs as backup_jobs

    row = catalog.cached_one(session, snapshot_id, include_safety)
    params = backup_jobs.verify_params(row.id, (body or VerifyIn()).read_data)
    job = queue.submit(session, backup_jobs.VERIFY, params, owner=user.username, max_attempts=1)
    answer = JobAccepted(job=job.id, kind=backup_jobs.VERIFY, status=job.status)
    session.commit()
    return answer
