"""Jobs belong to whoever submitted them, over real HTTP: cancel and retry need the job's
ownership (or jobs.manage) and always the kind's own permission; no caller names an owner."""

from __future__ import annotations

import pytest

from sctk.errors import SctkError
from sctk.jobs import queue
from sctk.jobs.worker import Worker
from sctk.security import audit_log
from sctk.storage.engine import session_scope
from sctk.storage.models import Job
from tests.jobs.conftest import job_dict, submit
from tests.jobs.test_api import all_jobs
from tests.security.conftest import assert_problem, sqlite_only


def test_an_analyst_may_not_cancel_or_retry_an_admins_jobs(api):
    http, analyst, admin = api.http, api.headers("analyst"), api.headers("admin")
    r = http.post("/api/v1/backups", json={"label": "manual"}, headers=admin)
    assert r.status_code == 202, r.text
    backup = r.json()["job"]
    r = http.post("/api/v1/jobs", json={"kind": "noop"}, headers=admin)
    assert r.status_code == 201, r.text
    noop = r.json()["id"]
    before = all_jobs(api.engine)

    # the kind's permission first: an analyst may not touch a backup job of anyone's
    r = http.post(f"/api/v1/jobs/{backup}/cancel", headers=analyst)
    assert_problem(r, 403, "'analyst'", f"may not cancel job {backup}", "'backups.manage'")
    # a kind the analyst may run, but another's job
    r = http.post(f"/api/v1/jobs/{noop}/cancel", headers=analyst)
    assert_problem(r, 403, f"Job {noop} belongs to ada.admin", "'analyst'", "'jobs.manage'")
    assert all_jobs(api.engine) == before

    # the admin cancels their own; the analyst may not queue them again either
    for job_id in (backup, noop):
        r = http.post(f"/api/v1/jobs/{job_id}/cancel", headers=admin)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    cancelled = all_jobs(api.engine)
    r = http.post(f"/api/v1/jobs/{backup}/retry", headers=analyst)
    assert_problem(r, 403, "'analyst'", f"may not retry job {backup}", "'backups.manage'")
    r = http.post(f"/api/v1/jobs/{noop}/retry", headers=analyst)
    assert_problem(r, 403, f"Job {noop} belongs to ada.admin", "'jobs.manage'")
    assert all_jobs(api.engine) == cancelled
    r = http.post(f"/api/v1/jobs/{backup}/retry", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text

    with session_scope(api.engine) as s:
        denied = audit_log.entries(s, event="permission.denied")
        actions = {(e.event, e.actor) for e in audit_log.entries(s, event="job")}
    assert len(denied) == 4 and {e.actor for e in denied} == {"ali.analyst"}
    assert {e.details["permission"] for e in denied} == {"backups.manage", "jobs.manage"}
    assert actions == {("job.cancelled", "ada.admin"), ("job.retried", "ada.admin")}


def test_an_admin_may_cancel_and_retry_an_analysts_job(api):
    http = api.http
    r = http.post("/api/v1/jobs", json={"kind": "noop"}, headers=api.headers("analyst"))
    job_id = r.json()["id"]
    r = http.post(f"/api/v1/jobs/{job_id}/cancel", headers=api.headers("admin"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    r = http.post(f"/api/v1/jobs/{job_id}/retry", headers=api.headers("admin"))
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    # the job stays its submitter's
    assert r.json()["owner"] == api.accounts["analyst"].username


def test_no_caller_names_a_jobs_owner_for_any_kind(api):
    http, admin = api.http, api.headers("admin")  # the admin may submit every kind
    listed = http.get("/api/v1/jobs/kinds", headers=admin).json()
    assert {"noop", "sleep", "uq.train", "pipeline.run", "backup.create", "backup.verify"} <= {
        k["name"] for k in listed
    }
    for kind in listed:
        r = http.post(
            "/api/v1/jobs",
            json={"kind": kind["name"], "params": {"owner": "ali.analyst"}},
            headers=admin,
        )
        assert_problem(r, 400, "may not name 'owner'", "belongs to whoever submits it")
    assert all_jobs(api.engine) == []
    # the routes that queue jobs for one kind take no owner either
    analyst = api.headers("analyst")
    body = {"dataset": "d", "target": "y", "owner": "ada.admin"}
    r = http.post("/api/v1/models", json=body, headers=analyst)
    assert_problem(r, 422, "owner")
    r = http.post("/api/v1/backups", json={"owner": "ali.analyst"}, headers=admin)
    assert_problem(r, 422, "owner")
    assert all_jobs(api.engine) == []


@sqlite_only
def test_a_job_runs_for_its_submitter_whatever_its_stored_parameters_say(fast_settings, engine):
    with session_scope(engine) as s, pytest.raises(SctkError, match="may not name 'owner'"):
        queue.submit(s, "test.owner", {"owner": "ada.admin", "n": 1}, owner="ali.analyst")
    # a row written before owners were refused (or by hand) still runs as its submitter's
    job_id = submit(engine, "test.owner", {"n": 1}, owner="ali.analyst")
    with session_scope(engine) as s:
        s.get(Job, job_id).params = {"owner": "ada.admin", "n": 1}
    with Worker(fast_settings, concurrency=1) as worker:
        worker.run_until_idle(timeout=60)
    job = job_dict(engine, job_id)
    assert job["status"] == "succeeded", job
    assert job["result"] == {"owner": "ali.analyst", "params": {"n": 1}}
