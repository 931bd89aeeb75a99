"""Job events: progress, log lines and state changes of a job, stored in order per job.

`record` adds an event inside the caller's transaction; once that transaction commits, the
event is published on the message bus as a `job.event` message (payload: `as_dict(event)`),
so subscribers (the WebSocket stream) hear of it — in other processes too on PostgreSQL.
Publishing after the commit, never before, means no subscriber hears of an event that a
rollback then takes back, and a subscriber that hears of one can read it from the database.
The bus is the process's bus for the session's database (`sctk.bus.get_bus`): a process that
records events (a worker) makes it at start; without one the events are only stored.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import Job, JobEvent

log = logging.getLogger(__name__)

EVENT_KINDS = ("progress", "log", "status")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled", "dead")
BUS_TYPE = "job.event"
_PENDING = "sctk.jobs.events.pending"  # key in Session.info: events to publish at commit


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
    session.info.setdefault(_PENDING, []).append(as_dict(event))
    return event


@orm_event.listens_for(Session, "after_commit")
def _publish_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    try:
        from sctk.bus import bus_for_url

        bus = bus_for_url(session.get_bind().engine.url)
        if bus is None:
            return
        for payload in pending:
            bus.publish(BUS_TYPE, payload)
    except Exception:  # the events are stored; a subscriber can read them
        log.error("publishing %d job event(s) on the bus failed", len(pending), exc_info=True)


@orm_event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


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
