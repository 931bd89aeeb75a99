"""The durable job queue: rows of the `jobs` table and every change of their status.

A job is `queued`, then `running` on one worker, then `succeeded`, `failed` (an error that a
retry cannot fix: a user error or a kind this installation lacks), `cancelled` or `dead` (an
error on every one of its max_attempts tries). A try that fails with attempts left puts the
job back in the queue after an exponential backoff. Each change appends a "status" event.

Claiming is safe with many workers in many processes: on PostgreSQL the claimed rows are
locked with `FOR UPDATE SKIP LOCKED`, so concurrent claimers take different rows without
waiting on each other; on SQLite the claiming transaction takes the database's write lock
before it reads, so claims run one after another. The functions work inside the caller's
transaction; the caller commits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sctk.config import JobSettings
from sctk.errors import Conflict, NotFound, SctkError
from sctk.jobs import events, switches
from sctk.jobs.kinds import RESERVED_PARAMS, get_kind
from sctk.security import audit_log
from sctk.storage.models import Job

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "dead")
FINISHED = frozenset({"succeeded", "failed", "cancelled", "dead"})
RETRYABLE = frozenset({"failed", "dead", "cancelled"})
MAX_PARAMS_BYTES = 64 * 1024
MAX_ATTEMPTS_LIMIT = 100
MAX_LIST = 10_000
_MAX_ERROR_CHARS = 10_000
_OWNER_MAX = 64
_MAX_ID = 2**31 - 1

_FINISHED_WORDS = {
    "succeeded": "already succeeded",
    "failed": "already failed",
    "cancelled": "was already cancelled",
    "dead": "is already dead (it failed on every attempt)",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _write_lock(session: Session) -> None:
    """On SQLite, take the database's write lock before reading what is about to change.

    A write that changes nothing makes SQLite begin the transaction and take the lock
    (waiting up to busy_timeout), so the rows read next cannot change under us; see
    sctk.security.audit_log for the same device. PostgreSQL locks rows instead.
    """
    if _is_sqlite(session):
        session.execute(text("UPDATE jobs SET id = id WHERE 1 = 0"))


def _set_status(session: Session, job: Job, status: str, **data: Any) -> None:
    job.status = status
    job.updated_at = _now()
    if status in FINISHED:
        job.finished_at = job.updated_at
    events.record(session, job.id, "status", {"status": status, **data})


def _checked_params(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise SctkError(
            f"Job parameters must be a JSON object of names and values, not "
            f'{type(params).__name__}; pass something like {{"seconds": 2}}.'
        )
    try:
        encoded = json.dumps(params, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SctkError(
            f"Job parameters must be plain JSON (strings, numbers, booleans, lists, objects): "
            f"{str(exc).rstrip('.')}."
        ) from None
    named = sorted(RESERVED_PARAMS & set(params))
    if named:
        raise SctkError(
            f"Job parameters may not name {', '.join(repr(n) for n in named)}: a job belongs to "
            "whoever submits it and what it makes is recorded under that name; leave the "
            "parameter out."
        )
    size = len(encoded.encode("utf-8"))
    if size > MAX_PARAMS_BYTES:
        raise SctkError(
            f"Job parameters take {size} bytes as JSON, more than the {MAX_PARAMS_BYTES} "
            "allowed; pass the name of a dataset or a file instead of the data itself."
        )
    # the round trip gives exactly what the database hands back (string keys, lists)
    return json.loads(encoded)


def _not_found(job_id: int) -> NotFound:
    return NotFound(
        f"Job {job_id} does not exist; 'sctk jobs list' (or GET /api/v1/jobs) shows the jobs "
        "there are."
    )


def submit(
    session: Session,
    kind: str,
    params: dict[str, Any] | None = None,
    owner: str = "system",
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
) -> Job:
    """Queue a job of KIND with PARAMS (a JSON object of at most 64 KiB) for OWNER.

    With IDEMPOTENCY_KEY, a job OWNER already submitted under that key is returned instead
    of a new one (its `replayed` attribute is then True), so a client, or a proxy, may repeat
    a submission whose answer it lost without queueing the work twice.
    """
    owner = (str(owner) or "system")[:_OWNER_MAX]
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 128 or not idempotency_key.isprintable():
            raise SctkError("An idempotency key must be 1 to 128 printable characters.")
        found = _by_key(session, owner, idempotency_key)
        if found is not None:
            found.replayed = True
            return found
    job_kind = get_kind(kind)
    checked = _checked_params(params)
    if job_kind.check is not None:
        job_kind.check(checked)
    if max_attempts is not None and not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise SctkError(
            f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, not {max_attempts}."
        )
    now = _now()
    job = Job(
        kind=kind,
        params=checked,
        owner=owner,
        idempotency_key=idempotency_key,
        status="queued",
        attempts=0,
        max_attempts=max_attempts or JobSettings().max_attempts,
        progress=0.0,
        message="",
        created_at=now,
        updated_at=now,
        run_after=now,
        cancel_requested=False,
    )
    if idempotency_key is None:
        session.add(job)
        session.flush()
    else:
        try:
            with session.begin_nested():  # two submissions racing with one key: one wins
                session.add(job)
                session.flush()
        except IntegrityError:
            found = _by_key(session, owner, idempotency_key)
            found.replayed = True
            return found
    job.replayed = False
    events.record(session, job.id, "status", {"status": "queued", "owner": job.owner})
    return job


def _by_key(session: Session, owner: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))


def get(session: Session, job_id: int) -> Job:
    """The job with JOB_ID; NotFound when there is none."""
    job = session.get(Job, job_id) if 1 <= job_id <= _MAX_ID else None
    if job is None:
        raise _not_found(job_id)
    return job


def _locked(session: Session, job_id: int) -> Job:
    """The job, locked against concurrent changes until the transaction ends."""
    if not 1 <= job_id <= _MAX_ID:
        raise _not_found(job_id)
    _write_lock(session)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise _not_found(job_id)
    return job


def list_jobs(
    session: Session, status: str | None = None, owner: str | None = None, limit: int = 100
) -> list[Job]:
    """Jobs newest first, optionally only those with STATUS or of OWNER."""
    if status is not None and status not in STATUSES:
        raise SctkError(f"Unknown job status '{status[:40]}'; use one of {', '.join(STATUSES)}.")
    if not 1 <= limit <= MAX_LIST:
        raise SctkError(f"The limit must be between 1 and {MAX_LIST} jobs, not {limit}.")
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if owner:
        query = query.where(Job.owner == owner)
    return list(session.scalars(query.order_by(Job.id.desc()).limit(limit)))


def counts(session: Session) -> dict[str, int]:
    """How many jobs there are in each status (every status named, zeros included)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    found = {status: 0 for status in STATUSES}
    found.update({status: n for status, n in rows})
    return found


def cancel(session: Session, job_id: int, actor: str) -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop it.

    Conflict (409) for a job that has already finished.
    """
    job = _locked(session, job_id)
    if job.status == "queued":
        job.cancel_requested = True
        _set_status(session, job, "cancelled", by=actor)
    elif job.status == "running":
        if not job.cancel_requested:
            job.cancel_requested = True
            job.updated_at = _now()
            events.record(
                session,
                job.id,
                "status",
                {"status": "running", "cancel_requested": True, "by": actor},
            )
    else:
        raise Conflict(f"Job {job.id} {_FINISHED_WORDS[job.status]}; nothing to cancel.")
    audit_log.record(
        session,
        "job.cancelled",
        actor=actor,
        target=f"job {job.id}",
        details={"kind": job.kind, "status": job.status},
    )
    return job


def retry(session: Session, job_id: int, actor: str) -> Job:
    """Queue a failed, dead or cancelled job again, with its attempts counted from zero."""
    job = _locked(session, job_id)
    if job.status not in RETRYABLE:
        if job.status == "succeeded":
            reason = "already succeeded; submit a new job to run it again"
        elif job.status == "queued":
            reason = "is already queued; a worker will run it"
        else:
            reason = "is running; only a failed, dead or cancelled job can be retried"
        raise Conflict(f"Job {job.id} {reason}.")
    before = job.status
    job.attempts = 0
    job.cancel_requested = False
    job.run_after = _now()
    job.started_at = job.finished_at = job.heartbeat_at = None
    job.worker = None
    job.error = None
    job.result = None
    job.progress = 0.0
    job.message = ""
    _set_status(session, job, "queued", by=actor, retried_from=before)
    audit_log.record(
        session,
        "job.retried",
        actor=actor,
        target=f"job {job.id}",
        details={"kind": job.kind, "status_before": before},
    )
    return job


def _claimable(now: datetime):
    return (Job.status == "queued", Job.run_after <= now, Job.cancel_requested.is_(False))


def has_runnable(session: Session) -> bool:
    """Whether some queued job could be claimed now."""
    return session.scalar(select(Job.id).where(*_claimable(_now())).limit(1)) is not None


def claim(session: Session, worker_id: str, limit: int) -> list[Job]:
    """Take up to LIMIT runnable queued jobs, oldest first, for WORKER_ID: they are `running`.

    Two claimers never take the same job (see the module docstring for how).
    """
    if limit < 1 or switches.is_on(session, switches.JOBS_PAUSED):
        return []
    now = _now()
    # An unlocked look first: an idle poll then costs one read and takes no lock.
    if not has_runnable(session):
        return []
    _write_lock(session)
    query = select(Job).where(*_claimable(now)).order_by(Job.run_after, Job.id).limit(limit)
    if not _is_sqlite(session):
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query.execution_options(populate_existing=True)))
    for job in jobs:
        job.attempts += 1
        job.worker = worker_id
        job.started_at = job.heartbeat_at = now
        job.finished_at = None
        job.progress = 0.0
        job.message = ""
        _set_status(session, job, "running", worker=worker_id, attempt=job.attempts)
    return jobs


def heartbeat(session: Session, worker_id: str, job_ids: list[int]) -> int:
    """Say WORKER_ID still runs JOB_IDS; the number of them it still holds."""
    if not job_ids:
        return 0
    result = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.worker == worker_id, Job.status == "running")
        .values(heartbeat_at=_now())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def _held(session: Session, job_id: int, worker: str | None) -> Job | None:
    """The running job, locked; None when it is no longer running (or no longer WORKER's:
    re-queued as stale, released, and possibly claimed by another worker since)."""
    job = _locked(session, job_id)
    if job.status != "running" or (worker is not None and job.worker != worker):
        return None
    return job


def finish(
    session: Session, job_id: int, result: dict[str, Any] | None, worker: str | None = None
) -> Job | None:
    """Mark a running job succeeded with RESULT; None (nothing changed) if not held."""
    job = _held(session, job_id, worker)
    if job is None:
        return None
    job.result = result
    job.error = None
    job.progress = 1.0
    _set_status(session, job, "succeeded", attempt=job.attempts)
    return job


def backoff(policy: JobSettings, attempts: int) -> float:
    """Seconds before try ATTEMPTS + 1, after ATTEMPTS tries failed."""
    exponent = min(max(attempts - 1, 0), 62)
    return min(policy.backoff_seconds * 2**exponent, policy.max_backoff_seconds)


def fail(
    session: Session,
    job_id: int,
    error: str,
    worker: str | None = None,
    policy: JobSettings | None = None,
    retryable: bool = True,
) -> Job | None:
    """Record a failed try of a running job: queued again after a backoff while attempts
    remain, else `dead`; `failed` at once when RETRYABLE is false. None if not held."""
    job = _held(session, job_id, worker)
    if job is None:
        return None
    policy = policy or JobSettings()
    error = str(error)[:_MAX_ERROR_CHARS]
    job.error = error
    job.worker = None
    job.heartbeat_at = None
    summary = error.splitlines()[0][:500] if error else ""
    if job.cancel_requested:
        _set_status(session, job, "cancelled", error=summary, attempt=job.attempts)
    elif not retryable:
        _set_status(session, job, "failed", error=summary, attempt=job.attempts)
    elif job.attempts >= job.max_attempts:
        _set_status(session, job, "dead", error=summary, attempt=job.attempts)
    else:
        job.run_after = _now() + timedelta(seconds=backoff(policy, job.attempts))
        _set_status(
            session,
            job,
            "queued",
            error=summary,
            attempt=job.attempts,
            retry_at=job.run_after.isoformat(),
        )
    return job


def mark_cancelled(
    session: Session, job_id: int, reason: str, worker: str | None = None
) -> Job | None:
    """A running job stopped on request (it raised JobCancelled); None if not held."""
    job = _held(session, job_id, worker)
    if job is None:
        return None
    job.worker = None
    job.heartbeat_at = None
    job.message = reason[:500]
    _set_status(session, job, "cancelled", reason=reason[:500], attempt=job.attempts)
    return job


def release(session: Session, job_id: int, worker: str, reason: str) -> Job | None:
    """Give back a running job its worker stops holding (a shutdown): queued again, and the
    try does not count, since the job did nothing wrong. None if not held."""
    job = _held(session, job_id, worker)
    if job is None:
        return None
    job.worker = None
    job.heartbeat_at = None
    if job.cancel_requested:
        _set_status(session, job, "cancelled", reason=reason)
        return job
    job.attempts = max(job.attempts - 1, 0)
    job.run_after = _now()
    _set_status(session, job, "queued", reason=reason)
    return job


def requeue_stale(
    session: Session, stale_after: float, policy: JobSettings | None = None
) -> list[Job]:
    """Running jobs whose worker has been silent for STALE_AFTER seconds go back to the queue
    (the try counts; `dead` when it was the last one). Returns the jobs changed."""
    del policy  # a lost worker's job runs again at once: the delay was already spent waiting
    now = _now()
    cutoff = now - timedelta(seconds=stale_after)
    stale = (
        Job.status == "running",
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
    )
    if session.scalar(select(Job.id).where(*stale).limit(1)) is None:
        return []
    _write_lock(session)
    query = select(Job).where(*stale).order_by(Job.id)
    if not _is_sqlite(session):
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query.execution_options(populate_existing=True)))
    for job in jobs:
        last = job.heartbeat_at.isoformat() if job.heartbeat_at else "never"
        reason = (
            f"worker {job.worker} sent no heartbeat for {stale_after:g} s (last {last}); "
            "it is presumed dead"
        )
        job.worker = None
        job.heartbeat_at = None
        job.error = reason
        if job.cancel_requested:
            _set_status(session, job, "cancelled", reason=reason, attempt=job.attempts)
        elif job.attempts >= job.max_attempts:
            _set_status(session, job, "dead", reason=reason, attempt=job.attempts)
        else:
            job.run_after = now
            _set_status(session, job, "queued", reason=reason, attempt=job.attempts)
    return jobs


def cancel_pending(session: Session) -> list[Job]:
    """Queued jobs whose cancellation was asked for while they ran become `cancelled`."""
    pending = (Job.status == "queued", Job.cancel_requested.is_(True))
    if session.scalar(select(Job.id).where(*pending).limit(1)) is None:
        return []
    _write_lock(session)
    query = select(Job).where(*pending)
    if not _is_sqlite(session):
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query.execution_options(populate_existing=True)))
    for job in jobs:
        _set_status(session, job, "cancelled", reason="cancellation requested")
    return jobs


def as_dict(job: Job) -> dict[str, Any]:
    """The JSON form of a job, shared by `sctk jobs ... --json` and the API."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "params": job.params,
        "owner": job.owner,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": job.progress,
        "message": job.message,
        "cancel_requested": job.cancel_requested,
        "worker": job.worker,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "run_after": iso(job.run_after),
        "started_at": iso(job.started_at),
        "heartbeat_at": iso(job.heartbeat_at),
        "finished_at": iso(job.finished_at),
        "result": job.result,
        "error": job.error,
    }
