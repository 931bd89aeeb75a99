"""`sctk jobs ...` as a user runs it, including the refusals (one sentence, nothing changed)."""

from __future__ import annotations

import json

import pytest

from sctk.jobs import queue
from sctk.storage.engine import session_scope
from tests.helpers import run_sctk
from tests.jobs.conftest import job_dict, submit
from tests.security.conftest import assert_cli_error, sqlite_only

pytestmark = [pytest.mark.e2e, sqlite_only]


def all_jobs(engine) -> list[dict]:
    with session_scope(engine) as s:
        return [queue.as_dict(j) for j in queue.list_jobs(s)]


def test_submit_list_show_cancel_retry(settings, engine):
    home = settings.home
    r = run_sctk(
        "jobs", "submit", "sleep", "--params-json", '{"seconds": 5, "note": "x"}',
        "--param", "steps=4", "-p", "label=two words", "--max-attempts", "2", "--json",
        home=home,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["status"] == "queued" and job["kind"] == "sleep" and job["max_attempts"] == 2
    assert job["params"] == {"seconds": 5, "note": "x", "steps": 4, "label": "two words"}
    assert job["owner"].startswith("cli")
    job_id = job["id"]

    r = run_sctk("jobs", "submit", "noop", home=home)
    assert r.returncode == 0 and r.stdout.startswith("queued job "), r.stderr

    r = run_sctk("jobs", "list", "--status", "queued", "--json", home=home)
    assert [j["kind"] for j in json.loads(r.stdout)] == ["noop", "sleep"]
    r = run_sctk("jobs", "list", home=home)
    assert r.returncode == 0 and "sleep" in r.stdout and "0/2" in r.stdout

    r = run_sctk("jobs", "cancel", str(job_id), home=home)
    assert r.returncode == 0 and f"cancelled job {job_id} (sleep)" in r.stdout, r.stderr
    r = run_sctk("jobs", "retry", str(job_id), home=home)
    assert r.returncode == 0 and f"queued job {job_id} (sleep) again" in r.stdout, r.stderr

    r = run_sctk("jobs", "show", str(job_id), "--json", home=home)
    shown = json.loads(r.stdout)
    assert shown["status"] == "queued" and shown["attempts"] == 0
    assert [e["data"]["status"] for e in shown["events"]] == ["queued", "cancelled", "queued"]
    r = run_sctk("jobs", "show", str(job_id), home=home)
    assert r.returncode == 0 and "events" in r.stdout and "cancelled" in r.stdout

    r = run_sctk("jobs", "kinds", "--json", home=home)
    assert {"noop", "sleep", "fail"} <= {k["name"] for k in json.loads(r.stdout)}


def test_refusals_are_one_sentence_and_change_nothing(settings, engine):
    home = settings.home
    done = submit(engine, "noop")
    with session_scope(engine) as s:
        queue.claim(s, "w1", 1)
        queue.finish(s, done, {}, worker="w1")
    before = all_jobs(engine)

    cases = [
        (
            ("jobs", "submit", "nope"),
            "Unknown job kind 'nope'; known kinds: backup.create, backup.verify, fail, noop,",
        ),
        (("jobs", "submit", "noop", "--param", "novalue"), "--param 'novalue' is not KEY=VALUE"),
        (("jobs", "submit", "noop", "--params-json", "[1]"), "must be a JSON object"),
        (("jobs", "submit", "noop", "--params-json", "{x"), "--params-json is not valid JSON"),
        (("jobs", "submit", "noop", "--param", "owner=ada"), "may not name 'owner'"),
        (("jobs", "submit", "sleep", "--param", "seconds=3600"), "from 0 to 60"),
        (("jobs", "list", "--status", "bogus"), "Unknown job status 'bogus'"),
        (("jobs", "show", "424242"), "Job 424242 does not exist;"),
        (("jobs", "cancel", "424242"), "Job 424242 does not exist;"),
        (("jobs", "retry", "99999999999"), "Job 99999999999 does not exist;"),
        (("jobs", "cancel", str(done)), f"Job {done} already succeeded; nothing to cancel."),
        (("jobs", "retry", str(done)), f"Job {done} already succeeded; submit a new job"),
    ]
    for args, fragment in cases:
        assert_cli_error(run_sctk(*args, home=home), fragment)
    assert all_jobs(engine) == before
    assert job_dict(engine, done)["status"] == "succeeded"
