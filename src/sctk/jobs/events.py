"""Job events: progress, log lines and state changes of a job, stored in order per job.

`record` adds an event inside the caller's transaction; the message bus publishes it to
subscribers (the WebSocket stream) once that transaction commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import Job, JobEvent

EVENT_KINDS = ("progress", "log", "status")


def record(session: Session, job_id: int, kind: str, data: dict[str, Any]) -> JobEvent:
    """Append an event to job JOB_ID with the next sequence number."""
    if kind not in EVENT_KINDS:
        raise SctkError(f"Unknown job event kind '{kind}'; use one of {', '.join(EVENT_KINDS)}.")
    # Touching the job row first serialises concurrent writers of one job's events (a row
    # lock on PostgreSQL, the write lock on SQLite), so seq never repeats.
    session.execute(update(Job).where(Job.id == job_id).values(id=Job.id))
    last = session.scalar(select(func.max(JobEvent.seq)).where(JobEvent.job_id == job_id))
    event = JobEvent(job_id=job_id, seq=(last or 0) + 1, kind=kind, data=data)
    session.add(event)
    session.flush()
    return event


def history(session: Session, job_id: int, after_seq: int = 0) -> list[JobEvent]:
    """A job's events after AFTER_SEQ, oldest first."""
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
            .order_by(JobEvent.seq)
        )
    )


def as_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "seq": event.seq,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "data": event.data,
    }
