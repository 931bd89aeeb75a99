"""Cancel stops work, over real HTTP against an app serving a real worker: a running job is
interrupted within seconds (between its steps, by an interruption, or by ending its process
after the grace period), its slot goes to the next job, and a job past its maximum run time
is stopped and marked failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from sctk.api.app import create_app
from tests.helpers import LiveServer, wait_until
from tests.jobs.conftest import job_settings
from tests.security.conftest import Api, assert_problem, sqlite_only


@contextmanager
def serving(settings, engine, accounts, **jobs: Any) -> Iterator[Api]:
    """The app with one worker loop running one job at a time on one pool process, its pool
    warmed by a first job so that the timings below measure stopping, not starting."""
    fast = job_settings(settings, concurrency=1, **jobs)
    with LiveServer(create_app(fast, workers=1)) as server:
        api = Api(server, fast, engine, dict(accounts))
        try:
            warm = submit(api, "sleep", {"seconds": 0, "steps": 1})  # uses the database
            wait_for(api, warm, "succeeded", timeout=120)
            yield api
        finally:
            api.close()


def submit(api: Api, kind: str, params: dict | None = None) -> int:
    r = api.http.post(
        "/api/v1/jobs", json={"kind": kind, "params": params or {}}, headers=api.headers("admin")
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def job(api: Api, job_id: int) -> dict[str, Any]:
    r = api.http.get(f"/api/v1/jobs/{job_id}", headers=api.headers("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(api: Api, job_id: int, status: str, timeout: float) -> dict[str, Any]:
    return wait_until(
        lambda: (j := job(api, job_id))["status"] == status and j,
        timeout=timeout,
        interval=0.05,
        what=f"job {job_id} to be {status}",
    )


def cancel_running(api: Api, job_id: int) -> float:
    """Cancel the running job JOB_ID; the seconds until it was `cancelled`."""
    wait_for(api, job_id, "running", timeout=60)
    started = time.monotonic()
    r = api.http.post(f"/api/v1/jobs/{job_id}/cancel", headers=api.headers("admin"))
    assert r.status_code == 200 and r.json()["cancel_requested"], r.text
    wait_for(api, job_id, "cancelled", timeout=30)
    return time.monotonic() - started


def test_a_running_sleep_is_cancelled_within_seconds_and_the_next_job_runs(
    settings, engine, accounts
):
    with serving(settings, engine, accounts) as api:
        # one step of 60 s: the sleep must notice the cancel in the middle of its step
        slow = submit(api, "sleep", {"seconds": 60, "steps": 1})
        after = submit(api, "noop", {"echo": "next"})
        took = cancel_running(api, slow)
        assert took < 5.0, f"the cancel took {took:.1f} s"
        stopped = job(api, slow)
        assert "cancelled on request" in stopped["message"] and stopped["progress"] < 1.0
        # the slot is free: the job queued behind it runs
        assert wait_for(api, after, "succeeded", timeout=30)["result"] == {"echo": "next"}
        events = api.http.get(f"/api/v1/jobs/{slow}/events", headers=api.headers("viewer"))
        statuses = [e["data"].get("status") for e in events.json() if e["kind"] == "status"]
        assert statuses == ["queued", "running", "running", "cancelled"]


@sqlite_only
def test_a_job_that_never_checks_is_interrupted_and_one_that_will_not_stop_is_ended(
    settings, engine, accounts
):
    with serving(settings, engine, accounts, cancel_grace_seconds=1.0) as api:
        group = api.server.server.config.app.state.job_workers
        # no checkpoint at all: the interruption cuts its sleep short
        deaf = submit(api, "test.stubborn", {"seconds": 60})
        took = cancel_running(api, deaf)
        assert took < 5.0, f"the cancel took {took:.1f} s"
        pids = group.executor.pids()
        assert len(pids) == 1

        # it swallows the interruption too: after the grace period its process is ended
        stubborn = submit(api, "test.stubborn", {"seconds": 60, "swallow": True})
        after = submit(api, "noop", {"echo": "next"})
        took = cancel_running(api, stubborn)
        assert took < 5.0, f"the cancel took {took:.1f} s"
        ended = job(api, stubborn)
        assert "its process was ended" in ended["message"], ended
        wait_until(
            lambda: not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == "zombie",
            timeout=10,
            what="the stuck job's process to end",
        )
        # a new pool process runs the next job
        assert wait_for(api, after, "succeeded", timeout=60)["result"] == {"echo": "next"}
        assert group.executor.pids() and group.executor.pids() != pids


@sqlite_only
def test_a_job_past_its_maximum_run_time_is_stopped_and_failed(settings, engine, accounts):
    limits = {"sleep": 1.0, "test.stubborn": 1.0}
    with serving(settings, engine, accounts, max_runtime_by_kind=limits) as api:
        for kind in ("sleep", "test.stubborn"):
            job_id = submit(api, kind, {"seconds": 60, "steps": 1} if kind == "sleep" else {})
            wait_for(api, job_id, "running", timeout=60)
            started = time.monotonic()
            failed = wait_for(api, job_id, "failed", timeout=30)
            assert time.monotonic() - started < 6.0
            assert failed["attempts"] == 1, failed  # a timeout is not retried
            assert f"({kind}) ran longer than its maximum run time of 1 s" in failed["error"]
            assert "max_runtime_seconds" in failed["error"]
        # the default applies to the kinds not named
        assert api.settings.jobs.max_runtime("noop") == api.settings.jobs.max_runtime_seconds


@sqlite_only
def test_sleep_is_bounded_at_submission(api):
    for params, fragment in (
        ({"seconds": 61}, "'seconds' must be a number from 0 to 60"),
        ({"seconds": "long"}, "'seconds' must be a number from 0 to 60"),
        ({"seconds": 1, "steps": 0}, "'steps' must be a whole number from 1 to 10000"),
    ):
        r = api.http.post(
            "/api/v1/jobs", json={"kind": "sleep", "params": params}, headers=api.headers("admin")
        )
        assert_problem(r, 400, fragment)
    r = api.http.post(
        "/api/v1/jobs",
        json={"kind": "sleep", "params": {"seconds": 60}},
        headers=api.headers("analyst"),
    )
    assert r.status_code == 201, r.text
