"""The worker loop in this process, with a real process pool (and a real Dask cluster)."""

from __future__ import annotations

import threading

import psutil
import pytest

from sctk.jobs import events, queue
from sctk.jobs.executors import LocalExecutor
from sctk.jobs.worker import Worker, WorkerGroup
from sctk.runtime import Runtime
from sctk.storage.engine import session_scope
from tests.helpers import wait_until
from tests.jobs.conftest import job_dict, job_settings, status_of, submit
from tests.security.conftest import sqlite_only


def event_kinds(engine, job_id: int) -> list[tuple[str, dict]]:
    with session_scope(engine) as s:
        return [(e.kind, e.data) for e in events.history(s, job_id)]


def test_worker_runs_each_kind_to_its_end(fast_settings, engine):
    noops = [submit(engine, "noop", {"echo": i}) for i in range(4)]
    slept = submit(engine, "sleep", {"seconds": 0.2, "steps": 4})
    failing = submit(engine, "fail", {"message": "no luck"}, max_attempts=2)
    user_error = submit(engine, "test.user_error", max_attempts=3)
    bad_result = submit(engine, "test.bad_result")
    logged = submit(engine, "test.log", {"lines": 2})
    with Worker(fast_settings, concurrency=2) as worker:
        stats = worker.run_until_idle(timeout=120)
    assert stats["succeeded"] == 6 and stats["dead"] == 1 and stats["failed"] == 2, stats
    for job_id in noops:
        job = job_dict(engine, job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 1
        assert job["result"] == {"echo": noops.index(job_id)}

    progress = [d for k, d in event_kinds(engine, slept) if k == "progress"]
    assert [p["fraction"] for p in progress] == [0.25, 0.5, 0.75, 1.0]
    assert progress[-1]["message"] == "step 4 of 4"
    assert job_dict(engine, slept)["result"] == {"slept": 0.2}

    job = job_dict(engine, failing)
    assert job["status"] == "dead" and job["attempts"] == 2
    assert job["error"].startswith("RuntimeError: no luck")
    running = [d for k, d in event_kinds(engine, failing) if d.get("status") == "running"]
    assert [d["attempt"] for d in running] == [1, 2]

    job = job_dict(engine, user_error)  # a user error is not retried
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"] == "The dataset 'missing' does not exist; import it first."
    job = job_dict(engine, bad_result)
    assert job["status"] == "failed" and "not a plain JSON object" in job["error"]

    logs = [d["line"] for k, d in event_kinds(engine, logged) if k == "log"]
    assert logs == ["line 0", "line 1"]
    assert job_dict(engine, logged)["result"] == {"home": str(fast_settings.home)}


def test_a_running_job_is_cancelled_at_its_next_progress(fast_settings, engine):
    job_id = submit(engine, "sleep", {"seconds": 60, "steps": 600})
    worker = Worker(fast_settings, concurrency=1)
    thread = threading.Thread(target=worker.run_forever, kwargs={"grace": 5}, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: job_dict(engine, job_id)["progress"] > 0, timeout=60, what="job progress"
        )
        with session_scope(engine) as s:
            queue.cancel(s, job_id, actor="tests")
        wait_until(
            lambda: status_of(engine, job_id) == "cancelled", timeout=30, what="cancellation"
        )
    finally:
        worker.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
    job = job_dict(engine, job_id)
    assert job["progress"] < 1.0 and "cancelled on request" in job["message"]
    assert worker.stats["cancelled"] == 1


def test_stopping_a_worker_requeues_what_it_runs(fast_settings, engine):
    job_id = submit(engine, "sleep", {"seconds": 60, "steps": 600})
    worker = Worker(fast_settings, concurrency=1)
    thread = threading.Thread(target=worker.run_forever, kwargs={"grace": 0.2}, daemon=True)
    thread.start()
    wait_until(lambda: job_dict(engine, job_id)["progress"] > 0, timeout=60, what="progress")
    pids = worker.executor.pids()
    worker.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    job = job_dict(engine, job_id)
    assert job["status"] == "queued" and job["attempts"] == 0 and job["worker"] is None
    last = event_kinds(engine, job_id)[-1][1]
    assert last["status"] == "queued" and "shut down before the job finished" in last["reason"]
    assert pids and worker.stats["released"] == 1
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


@sqlite_only
def test_a_shared_executor_limits_what_the_loops_claim(fast_settings, engine):
    ids = [submit(engine, "noop") for _ in range(6)]
    group = WorkerGroup(Runtime(fast_settings), loops=2, concurrency=4)
    assert isinstance(group.executor, LocalExecutor) and group.executor.processes == 1
    group.start(grace=5)
    try:
        wait_until(
            lambda: all(status_of(engine, i) == "succeeded" for i in ids),
            timeout=60,
            what="jobs to succeed",
        )
    finally:
        group.stop()
    assert not group.alive()
    workers = {job_dict(engine, i)["worker"] for i in ids} - {None}
    assert workers <= {w.id for w in group.workers}
    assert group.stats()["succeeded"] == 6


@sqlite_only
def test_jobs_run_on_a_dask_local_cluster(settings, engine):
    pytest.importorskip("dask.distributed")
    dask_settings = job_settings(settings)
    dask_settings.executor.kind = "dask"
    noop = submit(engine, "noop", {"echo": "dask"})
    slept = submit(engine, "sleep", {"seconds": 0.3, "steps": 3})
    with Worker(dask_settings, concurrency=2) as worker:
        assert type(worker.executor).__name__ == "DaskExecutor"
        worker.run_until_idle(timeout=120)
    assert job_dict(engine, noop)["result"] == {"echo": "dask"}
    job = job_dict(engine, slept)
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    fractions = [d["fraction"] for k, d in event_kinds(engine, slept) if k == "progress"]
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])


@sqlite_only
def test_an_unreachable_dask_scheduler_is_one_sentence(settings):
    pytest.importorskip("dask.distributed")
    from sctk.errors import SctkError
    from sctk.jobs.executors import DaskExecutor
    from tests.helpers import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(SctkError, match=f"Cannot reach the Dask scheduler at {address}"):
        DaskExecutor(address, timeout=1)
