"""Operator switches and single-holder leases, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from sctk.errors import SctkError
from sctk.jobs import queue, switches
from sctk.security import audit_log
from sctk.storage import lease
from sctk.storage.engine import session_scope
from sctk.storage.models import Lease
from tests.helpers import run_sctk
from tests.jobs.conftest import submit
from tests.security.conftest import sqlite_only


def test_paused_intake_leaves_queued_jobs_waiting_until_resumed(engine):
    job_id = submit(engine, "noop", {})
    with session_scope(engine) as s:
        assert switches.turn_on(s, switches.JOBS_PAUSED, actor="ops", reason="emergency drill")
        assert not switches.turn_on(s, switches.JOBS_PAUSED, actor="ops")  # already on
    with session_scope(engine) as s:
        assert queue.claim(s, "w1", 5) == []
        assert queue.get(s, job_id).status == "queued"
    with session_scope(engine) as s:
        assert switches.turn_off(s, switches.JOBS_PAUSED, actor="ops")
        assert not switches.turn_off(s, switches.JOBS_PAUSED, actor="ops")
    with session_scope(engine) as s:
        assert [j.id for j in queue.claim(s, "w1", 5)] == [job_id]
    with session_scope(engine) as s:
        events = [e.event for e in audit_log.entries(s)]
    assert events.count("service.paused") == 1 and events.count("service.resumed") == 1


def test_an_unknown_switch_is_refused(engine):
    with session_scope(engine) as s, pytest.raises(SctkError, match="Unknown switch 'jobs'"):
        switches.is_on(s, "jobs")


def test_one_holder_at_a_time_and_takeover_after_expiry(engine):
    with session_scope(engine) as s:
        assert lease.acquire(s, "scheduler", "a", ttl_seconds=60)
        assert not lease.acquire(s, "scheduler", "b", ttl_seconds=60)
        assert lease.acquire(s, "scheduler", "a", ttl_seconds=60)  # renewal
        assert lease.current(s, "scheduler").holder == "a"
        s.execute(
            update(Lease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )  # a dies and stops renewing
        s.commit()
        assert lease.current(s, "scheduler") is None
        assert lease.acquire(s, "scheduler", "b", ttl_seconds=60)
        lease.release(s, "scheduler", "b")
        assert lease.acquire(s, "scheduler", "c", ttl_seconds=60)


@sqlite_only
def test_cli_pause_and_resume(settings, engine):
    paused = run_sctk("jobs", "pause", "--reason", "drill", home=settings.home)
    assert paused.returncode == 0 and "job intake paused" in paused.stdout, paused.stderr
    with session_scope(engine) as s:
        assert switches.is_on(s, switches.JOBS_PAUSED)
    again = run_sctk("jobs", "pause", home=settings.home)
    assert "already paused" in again.stdout
    resumed = run_sctk("jobs", "resume", home=settings.home)
    assert resumed.returncode == 0 and "job intake resumed" in resumed.stdout
    with session_scope(engine) as s:
        assert not switches.is_on(s, switches.JOBS_PAUSED)
