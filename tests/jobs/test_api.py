"""/api/v1/jobs over real HTTP, and `sctk serve`'s in-process workers."""

from __future__ import annotations

import threading

from sctk.api.app import create_app
from sctk.jobs import queue
from sctk.security import audit_log
from sctk.storage.engine import session_scope
from tests.helpers import LiveServer, wait_until
from tests.jobs.conftest import job_dict, job_settings, submit
from tests.security.conftest import assert_problem, sqlite_only


def all_jobs(engine) -> list[dict]:
    with session_scope(engine) as s:
        return [queue.as_dict(j) for j in queue.list_jobs(s)]


def test_submit_list_show_cancel_retry(api):
    http, analyst = api.http, api.headers("analyst")
    r = http.post(
        "/api/v1/jobs",
        json={"kind": "sleep", "params": {"seconds": 3}, "max_attempts": 2},
        headers=analyst,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["params"] == {"seconds": 3}
    assert job["owner"] == api.accounts["analyst"].username and job["max_attempts"] == 2
    job_id = job["id"]
    other = http.post("/api/v1/jobs", json={"kind": "noop"}, headers=api.headers("admin"))
    assert other.status_code == 201 and other.json()["max_attempts"] == 3

    viewer = api.headers("viewer")
    listed = http.get("/api/v1/jobs", headers=viewer).json()
    assert [j["id"] for j in listed] == [other.json()["id"], job_id]
    mine = http.get(
        "/api/v1/jobs", params={"owner": api.accounts["analyst"].username}, headers=viewer
    )
    assert [j["id"] for j in mine.json()] == [job_id]
    assert http.get("/api/v1/jobs?status=running", headers=viewer).json() == []
    assert http.get(f"/api/v1/jobs/{job_id}", headers=viewer).json()["kind"] == "sleep"
    kinds = {k["name"]: k for k in http.get("/api/v1/jobs/kinds", headers=viewer).json()}
    assert kinds["noop"]["permission"] == "jobs.run" and kinds["noop"]["description"]

    r = http.post(f"/api/v1/jobs/{job_id}/cancel", headers=analyst)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    r = http.post(f"/api/v1/jobs/{job_id}/retry", headers=analyst)
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    events = http.get(f"/api/v1/jobs/{job_id}/events", headers=viewer).json()
    assert [e["data"]["status"] for e in events] == ["queued", "cancelled", "queued"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    later = http.get(f"/api/v1/jobs/{job_id}/events?after=2", headers=viewer).json()
    assert [e["seq"] for e in later] == [3]
    with session_scope(api.engine) as s:
        actors = {e.actor for e in audit_log.entries(s, event="job")}
    assert actors == {api.accounts["analyst"].username}


def test_refusals_are_problems_and_change_nothing(api):
    http, analyst = api.http, api.headers("analyst")
    done = submit(api.engine, "noop", owner=api.accounts["analyst"].username)  # theirs
    with session_scope(api.engine) as s:
        queue.claim(s, "w1", 1)
        queue.finish(s, done, {}, worker="w1")
    before = all_jobs(api.engine)
    with session_scope(api.engine) as s:
        denied_before = len(audit_log.entries(s, event="permission.denied"))

    cases = [
        ("POST", "/api/v1/jobs", {"kind": "nope"}, 400, "Unknown job kind 'nope'; known kinds"),
        ("POST", "/api/v1/jobs", {"kind": "noop", "params": [1]}, 422, "Invalid params"),
        ("POST", "/api/v1/jobs", {"kind": "noop", "extra": 1}, 422, "Invalid extra"),
        ("POST", "/api/v1/jobs", {"kind": "noop", "max_attempts": 0}, 422, "max_attempts"),
        (
            "POST",
            "/api/v1/jobs",
            {"kind": "noop", "params": {"x": "a" * 70_000}},
            400,
            "more than the 65536 allowed",
        ),
        ("GET", "/api/v1/jobs/424242", None, 404, "Job 424242 does not exist;"),
        ("GET", "/api/v1/jobs/424242/events", None, 404, "Job 424242 does not exist;"),
        ("POST", "/api/v1/jobs/424242/cancel", None, 404, "Job 424242 does not exist;"),
        ("POST", "/api/v1/jobs/424242/retry", None, 404, "Job 424242 does not exist;"),
        ("GET", "/api/v1/jobs/0", None, 422, "job_id"),
        ("GET", "/api/v1/jobs?status=bogus", None, 400, "Unknown job status 'bogus'"),
        ("GET", "/api/v1/jobs?limit=100000", None, 422, "limit"),
        (
            "POST",
            f"/api/v1/jobs/{done}/cancel",
            None,
            409,
            f"Job {done} already succeeded; nothing to cancel.",
        ),
        ("POST", f"/api/v1/jobs/{done}/retry", None, 409, f"Job {done} already succeeded;"),
        # the kind's own permission: this one needs users.manage, which analysts lack
        ("POST", "/api/v1/jobs", {"kind": "test.admin_only"}, 403, "need 'users.manage'"),
    ]
    for method, url, body, status, fragment in cases:
        r = http.request(method, url, json=body, headers=analyst)
        assert_problem(r, status, fragment)
    assert all_jobs(api.engine) == before
    with session_scope(api.engine) as s:
        denied = audit_log.entries(s, event="permission.denied")
    assert len(denied) == denied_before + 1
    assert denied[0].details["permission"] == "users.manage"

    # an admin may submit it; a viewer may submit nothing
    r = http.post("/api/v1/jobs", json={"kind": "test.admin_only"}, headers=api.headers("admin"))
    assert r.status_code == 201, r.text
    r = http.post("/api/v1/jobs", json={"kind": "noop"}, headers=api.headers("viewer"))
    assert_problem(r, 403, "'viewer'", "'jobs.run'")


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("worker ")]


@sqlite_only
def test_the_app_runs_workers_only_when_asked(settings, engine):
    fast = job_settings(settings)
    with LiveServer(create_app(fast)) as server:
        assert server.server.config.app.state.job_workers is None
        assert _worker_threads() == []

    job_id = submit(engine, "sleep", {"seconds": 0.2, "steps": 2})
    with LiveServer(create_app(fast, workers=2)) as server:
        group = server.server.config.app.state.job_workers
        assert len(group.workers) == 2 and len(_worker_threads()) == 2
        wait_until(lambda: job_dict(engine, job_id)["status"] == "succeeded", timeout=60)
    # the shutdown stopped the loops and their process pool
    assert _worker_threads() == []
    assert not group.alive()
    assert job_dict(engine, job_id)["worker"] in {w.id for w in group.workers}


def test_a_repeated_submission_with_an_idempotency_key_queues_one_job(api, engine):
    headers = {**api.headers("analyst"), "Idempotency-Key": "run-2026-11-27-a"}
    first = api.http.post("/api/v1/jobs", json={"kind": "noop"}, headers=headers)
    again = api.http.post("/api/v1/jobs", json={"kind": "noop"}, headers=headers)
    assert first.status_code == 201 and again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.http.post("/api/v1/jobs", json={"kind": "noop"}, headers=api.headers("analyst"))
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    # another user's key space is their own
    theirs = api.http.post(
        "/api/v1/jobs", json={"kind": "noop"},
        headers={**api.headers("admin"), "Idempotency-Key": "run-2026-11-27-a"},
    )  # fmt: skip
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    too_long = api.http.post(
        "/api/v1/jobs", json={"kind": "noop"}, headers={**headers, "Idempotency-Key": "k" * 200}
    )
    assert too_long.status_code == 422
