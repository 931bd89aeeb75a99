"""The queue's state changes, on SQLite and PostgreSQL: submit, claim, finish, fail with
backoff, dead, cancel, retry, stale workers, and the one-sentence refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from sctk.config import JobSettings
from sctk.errors import Conflict, NotFound, SctkError
from sctk.jobs import events, queue
from sctk.security import audit_log
from sctk.storage.engine import session_scope
from sctk.storage.models import Job, JobEvent
from tests.jobs.conftest import job_dict, submit


def statuses(engine, job_id: int) -> list[str]:
    """The status of each "status" event of the job, in order."""
    with session_scope(engine) as s:
        return [e.data["status"] for e in events.history(s, job_id) if e.kind == "status"]


def job_count(engine) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(Job))


def make_due(engine, job_id: int) -> None:
    """Pretend a job's backoff has passed (rather than sleep through it)."""
    with session_scope(engine) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(run_after=datetime.now(UTC) - timedelta(seconds=1))
        )


def claim(engine, worker: str = "w1", limit: int = 10) -> list[int]:
    with session_scope(engine) as s:
        return [j.id for j in queue.claim(s, worker, limit)]


def test_submit_get_list(engine):
    first = submit(engine, "noop", {"echo": "a"}, owner="ann")
    second = submit(engine, "sleep", {"seconds": 1}, owner="bob", max_attempts=5)
    job = job_dict(engine, first)
    assert job["status"] == "queued" and job["attempts"] == 0 and job["max_attempts"] == 3
    assert job["params"] == {"echo": "a"} and job["owner"] == "ann"
    assert job_dict(engine, second)["max_attempts"] == 5
    assert statuses(engine, first) == ["queued"]
    with session_scope(engine) as s:
        assert [j.id for j in queue.list_jobs(s)] == [second, first]  # newest first
        assert [j.id for j in queue.list_jobs(s, owner="ann")] == [first]
        assert [j.id for j in queue.list_jobs(s, status="queued", limit=1)] == [second]
        assert queue.list_jobs(s, status="running") == []
        assert queue.counts(s)["queued"] == 2
        with pytest.raises(SctkError, match="Unknown job status 'bogus'; use one of queued"):
            queue.list_jobs(s, status="bogus")
        with pytest.raises(SctkError, match="limit must be between 1"):
            queue.list_jobs(s, limit=0)


def test_bad_submissions_are_refused_and_change_nothing(engine):
    cases = [
        (
            ("nope", {}),
            "Unknown job kind 'nope'; known kinds: backup.create, backup.verify, fail, noop, ",
        ),
        (("noop", [1, 2]), "must be a JSON object of names and values, not list"),
        (("noop", {"x": {1, 2}}), "must be plain JSON"),
        (("noop", {"x": float("nan")}), "must be plain JSON"),
        (("noop", {"x": "a" * (queue.MAX_PARAMS_BYTES + 1)}), "more than the 65536 allowed"),
    ]
    for (kind, params), fragment in cases:
        with pytest.raises(SctkError) as info, session_scope(engine) as s:
            queue.submit(s, kind, params, owner="tests")
        assert fragment in info.value.message, info.value.message
        assert info.value.message.endswith("."), info.value.message
        assert info.value.http_status == 400
    too_few = "max_attempts must be between 1 and 100, not 0"
    with pytest.raises(SctkError, match=too_few), session_scope(engine) as s:
        queue.submit(s, "noop", {}, max_attempts=0)
    assert job_count(engine) == 0


def test_unknown_job_ids(engine):
    for job_id in (999, 0, -1, 2**40):
        for call in (
            lambda s, i=job_id: queue.get(s, i),
            lambda s, i=job_id: queue.cancel(s, i, actor="tests"),
            lambda s, i=job_id: queue.retry(s, i, actor="tests"),
        ):
            with pytest.raises(NotFound) as info, session_scope(engine) as s:
                call(s)
            assert info.value.message.startswith(f"Job {job_id} does not exist;")
            assert info.value.http_status == 404


def test_claim_oldest_first_and_finish(engine):
    ids = [submit(engine, "noop", {"n": i}) for i in range(3)]
    assert claim(engine, "w1", 2) == ids[:2]
    assert claim(engine, "w2", 5) == ids[2:]
    assert claim(engine, "w3", 5) == []
    job = job_dict(engine, ids[0])
    assert job["status"] == "running" and job["attempts"] == 1 and job["worker"] == "w1"
    assert job["started_at"] and job["heartbeat_at"] and not job["finished_at"]

    with session_scope(engine) as s:
        # only the worker holding a job may finish it
        assert queue.finish(s, ids[0], {"x": 1}, worker="w2") is None
        done = queue.finish(s, ids[0], {"x": 1}, worker="w1")
        assert done is not None and done.status == "succeeded"
        assert queue.finish(s, ids[0], {"x": 2}, worker="w1") is None  # finished already
    job = job_dict(engine, ids[0])
    assert job["result"] == {"x": 1} and job["progress"] == 1.0 and job["finished_at"]
    assert statuses(engine, ids[0]) == ["queued", "running", "succeeded"]
    with session_scope(engine) as s:
        seqs = [e.seq for e in events.history(s, ids[0])]
    assert seqs == [1, 2, 3]


def test_heartbeat_touches_only_own_running_jobs(engine):
    a, b = submit(engine, "noop"), submit(engine, "noop")
    claim(engine, "w1", 1)
    claim(engine, "w2", 1)
    with session_scope(engine) as s:
        before = queue.get(s, a).heartbeat_at
        assert queue.heartbeat(s, "w1", [a, b]) == 1
        assert queue.heartbeat(s, "w1", []) == 0
    assert datetime.fromisoformat(job_dict(engine, a)["heartbeat_at"]) >= before


def test_backoff_doubles_up_to_the_cap():
    policy = JobSettings(backoff_seconds=2, max_backoff_seconds=10)
    assert [queue.backoff(policy, n) for n in (1, 2, 3, 4, 5, 200)] == [2, 4, 8, 10, 10, 10]


def test_failures_retry_with_backoff_then_dead(engine):
    policy = JobSettings(backoff_seconds=10, max_backoff_seconds=25)
    job_id = submit(engine, "fail", max_attempts=4)
    expected_delays = [10, 20, 25]  # 10 * 2**(attempt-1), capped at 25
    for attempt, delay in enumerate(expected_delays, start=1):
        assert claim(engine) == [job_id]
        before = datetime.now(UTC)
        with session_scope(engine) as s:
            job = queue.fail(s, job_id, f"boom {attempt}\ndetails", worker="w1", policy=policy)
            assert job is not None
        after = datetime.now(UTC)
        job = job_dict(engine, job_id)
        assert job["status"] == "queued" and job["attempts"] == attempt
        assert job["error"] == f"boom {attempt}\ndetails" and job["worker"] is None
        run_after = datetime.fromisoformat(job["run_after"])
        assert before + timedelta(seconds=delay) <= run_after <= after + timedelta(seconds=delay)
        assert claim(engine) == [], "a job waiting for its retry is not claimed early"
        make_due(engine, job_id)
    assert claim(engine) == [job_id]
    with session_scope(engine) as s:
        assert queue.fail(s, job_id, "boom 4", worker="w1", policy=policy).status == "dead"
    job = job_dict(engine, job_id)
    assert job["status"] == "dead" and job["attempts"] == 4 and job["finished_at"]
    assert statuses(engine, job_id) == ["queued"] + ["running", "queued"] * 3 + ["running", "dead"]
    with session_scope(engine) as s:
        retry_event = [e for e in events.history(s, job_id) if e.kind == "status"][2]
    assert retry_event.data["error"] == "boom 1" and retry_event.data["retry_at"]


def test_an_error_a_retry_cannot_fix_fails_at_once(engine):
    job_id = submit(engine, "noop", max_attempts=5)
    claim(engine)
    with session_scope(engine) as s:
        queue.fail(s, job_id, "bad parameter", worker="w1", retryable=False)
    job = job_dict(engine, job_id)
    assert job["status"] == "failed" and job["attempts"] == 1


def test_cancel_queued_running_and_finished(engine):
    queued, running, finished = (submit(engine, "noop") for _ in range(3))
    # queued: cancelled at once and never claimed
    with session_scope(engine) as s:
        assert queue.cancel(s, queued, actor="ann").status == "cancelled"
    assert claim(engine, "w1", 1) == [running]
    assert claim(engine, "w1", 1) == [finished]
    with session_scope(engine) as s:
        queue.finish(s, finished, {}, worker="w1")

    # running: the worker is asked to stop it; the job stays running until it does
    with session_scope(engine) as s:
        job = queue.cancel(s, running, actor="ann")
        assert job.status == "running" and job.cancel_requested
        queue.cancel(s, running, actor="ann")  # asking twice changes nothing more
    assert statuses(engine, running) == ["queued", "running", "running"]
    with session_scope(engine) as s:
        assert queue.mark_cancelled(s, running, "stopped", worker="w1").status == "cancelled"

    # finished: refused with one sentence, nothing changed
    before = job_dict(engine, finished)
    with pytest.raises(Conflict) as info, session_scope(engine) as s:
        queue.cancel(s, finished, actor="ann")
    assert info.value.message == f"Job {finished} already succeeded; nothing to cancel."
    assert info.value.http_status == 409
    assert job_dict(engine, finished) == before
    for job_id, word in ((queued, "was already cancelled"), (running, "was already cancelled")):
        refused = f"Job {job_id} {word}; nothing to cancel."
        with pytest.raises(Conflict, match=refused), session_scope(engine) as s:
            queue.cancel(s, job_id, actor="ann")
    with session_scope(engine) as s:
        cancels = audit_log.entries(s, event="job.cancelled")
    assert {e.target for e in cancels} == {f"job {queued}", f"job {running}"}
    assert {e.actor for e in cancels} == {"ann"}


def test_a_failure_after_a_cancel_request_cancels(engine):
    job_id = submit(engine, "fail")
    claim(engine)
    with session_scope(engine) as s:
        queue.cancel(s, job_id, actor="ann")
        assert queue.fail(s, job_id, "interrupted", worker="w1").status == "cancelled"


def test_retry(engine):
    dead, cancelled, succeeded, queued = (submit(engine, "noop", max_attempts=1) for _ in range(4))
    claim(engine, "w1", 1)
    with session_scope(engine) as s:
        queue.fail(s, dead, "boom", worker="w1")
        queue.cancel(s, cancelled, actor="ann")
    assert claim(engine, "w1", 1) == [succeeded]
    with session_scope(engine) as s:
        queue.finish(s, succeeded, {"ok": True}, worker="w1")
    assert job_dict(engine, dead)["status"] == "dead"

    for job_id in (dead, cancelled):
        with session_scope(engine) as s:
            job = queue.retry(s, job_id, actor="ann")
            assert job.status == "queued" and job.attempts == 0 and job.error is None
            assert not job.cancel_requested and job.finished_at is None
    assert sorted(claim(engine, "w2")) == sorted([dead, cancelled, queued])

    refusals = {
        succeeded: "already succeeded; submit a new job to run it again.",
        dead: "is running; only a failed, dead or cancelled job can be retried.",
    }
    for job_id, ending in refusals.items():
        before = job_dict(engine, job_id)
        with pytest.raises(Conflict) as info, session_scope(engine) as s:
            queue.retry(s, job_id, actor="ann")
        assert info.value.message == f"Job {job_id} {ending}"
        assert job_dict(engine, job_id) == before
    fresh = submit(engine, "noop")
    refused = f"Job {fresh} is already queued; a worker will run it."
    with pytest.raises(Conflict, match=refused), session_scope(engine) as s:
        queue.retry(s, fresh, actor="ann")
    with session_scope(engine) as s:
        assert len(audit_log.entries(s, event="job.retried")) == 2


def test_stale_running_jobs_are_requeued_or_dead(engine):
    again, last_try = (
        submit(engine, "sleep", max_attempts=3),
        submit(engine, "sleep", max_attempts=1),
    )
    alive = submit(engine, "sleep")
    assert claim(engine, "lost-worker", 2) == [again, last_try]
    assert claim(engine, "live-worker", 1) == [alive]
    with session_scope(engine) as s:
        assert queue.requeue_stale(s, stale_after=60) == []  # all heartbeats are fresh
        s.execute(
            update(Job)
            .where(Job.worker == "lost-worker")
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=5))
        )
    with session_scope(engine) as s:
        changed = {j.id: j.status for j in queue.requeue_stale(s, stale_after=2)}
    assert changed == {again: "queued", last_try: "dead"}
    job = job_dict(engine, again)
    assert job["attempts"] == 1 and job["worker"] is None  # the lost try counts
    assert "worker lost-worker sent no heartbeat for 2 s" in job["error"]
    with session_scope(engine) as s:
        last = events.history(s, again)[-1]
        assert last.data["status"] == "queued" and "lost-worker" in last.data["reason"]
        # the lost worker finishing late changes nothing
        assert queue.finish(s, again, {"late": True}, worker="lost-worker") is None
    assert job_dict(engine, alive)["status"] == "running"
    assert claim(engine, "live-worker", 5) == [again]
    assert job_dict(engine, again)["attempts"] == 2


def test_release_gives_the_try_back(engine):
    job_id = submit(engine, "sleep")
    claim(engine, "w1")
    with session_scope(engine) as s:
        assert queue.release(s, job_id, "w2", "not mine") is None
        job = queue.release(s, job_id, "w1", "worker w1 shut down")
        assert job.status == "queued" and job.attempts == 0 and job.worker is None


def test_cancel_pending_sweeps_queued_jobs_marked_for_cancellation(engine):
    job_id = submit(engine, "noop")
    with session_scope(engine) as s:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert claim(engine) == []
    with session_scope(engine) as s:
        assert [j.id for j in queue.cancel_pending(s)] == [job_id]
        assert queue.cancel_pending(s) == []
    assert job_dict(engine, job_id)["status"] == "cancelled"


def test_events_are_numbered_per_job(engine):
    a, b = submit(engine, "noop"), submit(engine, "noop")
    claim(engine)
    with session_scope(engine) as s:
        events.record(s, a, "log", {"line": "hello"})
        rows = s.execute(select(JobEvent.job_id, JobEvent.seq).order_by(JobEvent.id)).all()
    assert [tuple(r) for r in rows] == [(a, 1), (b, 1), (a, 2), (b, 2), (a, 3)]
