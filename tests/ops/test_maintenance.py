"""Maintenance tasks against prepared data directories, the scheduler's lease and catch-up,
and the refusals of `sctk maintenance`."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import zstandard
from sqlalchemy import func, select, update

from sctk import config
from sctk.jobs import switches
from sctk.ops.scheduler import Scheduler, due_groups
from sctk.pipeline.service import import_file
from sctk.runtime import Runtime
from sctk.storage import lease
from sctk.storage.engine import session_scope
from sctk.storage.models import Lease, MaintenanceRun
from tests.helpers import UNREACHABLE_INDEX, run_sctk, run_task
from tests.security.conftest import sqlite_only

DAY = 86400


def age(path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def test_logs_task_compresses_a_big_log_and_deletes_old_compressed_ones(settings):
    logs = settings.home / "logs"
    big = logs / "sctk.log.1"
    big.write_bytes(b'{"level": "INFO", "message": "x"}\n' * 40_000)  # ~1.3 MB
    old = logs / "sctk.log.20260101T000000.zst"
    old.write_bytes(b"old")
    age(old, 100)  # beyond maintenance.log_retention_days (90)
    settings = config.load(settings.home, {"maintenance": {"log_compress_mb": 1}}).settings
    record = run_task(settings, "logs")
    assert record.status == "ok", record.summary
    assert record.summary == "compressed 1 log(s), deleted 1 old compressed log(s)"
    (packed,) = logs.glob("sctk.log.1.*.zst")
    assert not big.exists() and not old.exists()
    restored = zstandard.ZstdDecompressor().decompressobj().decompress(packed.read_bytes())
    assert restored.startswith(b'{"level": "INFO"') and len(restored) == 40_000 * 34


def test_tmp_task_deletes_only_old_files_and_keeps_the_pid_file(settings):
    tmp = settings.home / "tmp"
    stale, fresh, pid = tmp / "upload.part", tmp / "now.part", tmp / "serve" / str(os.getpid())
    dead = tmp / "serve" / str(2**22 + 12345)  # a record left by a kill -9: above pid_max
    scratch_old, scratch_young = tmp / "scratch" / "a.npy", tmp / "scratch" / "b.npy"
    for p in (stale, fresh, pid, dead, scratch_old, scratch_young):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100)
    age(stale, 2)
    age(pid, 30)
    age(scratch_old, 8)
    age(scratch_young, 3)  # older than tmp's 1 day, younger than scratch's 7
    record = run_task(settings, "tmp")
    assert sorted(record.details["deleted"]) == [
        "tmp/scratch/a.npy",
        f"tmp/serve/{dead.name}",
        "tmp/upload.part",
    ]
    assert fresh.exists() and pid.exists() and scratch_young.exists()


def test_archive_task_moves_old_results_and_keeps_models(settings):
    results = settings.home / "results"
    report = results / "reports" / "march.json"
    model = results / "models" / "m" / "v1" / "model.pt"
    for p in (report, model):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text('{"coverage": 0.9}')
        age(p, 120)
    record = run_task(settings, "archive_results")
    assert record.details["archived"] == [
        {"from": "results/reports/march.json", "to": "archive/reports/march.json.zst"}
    ]
    assert not report.exists() and model.exists()
    packed = settings.home / "archive" / "reports" / "march.json.zst"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(packed.read_bytes()) == (
        b'{"coverage": 0.9}'
    )


def test_integrity_task_names_a_changed_dataset_file(settings, engine, tmp_path):
    csv = tmp_path / "obs.csv"
    csv.write_text("x,y\n1,2\n")
    with session_scope(engine) as s:
        stored = import_file(s, settings.home, csv, name="obs").dataset.path
    assert run_task(settings, "integrity").status == "ok"
    path = settings.home / stored
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    record = run_task(settings, "integrity")
    assert record.status == "fail"
    assert f"dataset 'obs' (id 1): {stored} is changed" in record.summary
    with session_scope(engine) as s:
        row = s.scalar(select(MaintenanceRun).where(MaintenanceRun.task == "integrity")
                       .order_by(MaintenanceRun.id.desc()))  # fmt: skip
        assert row.status == "fail" and row.details["problems"] and row.finished_at


def test_database_and_reindex_tasks_run_on_either_backend(settings):
    assert run_task(settings, "database").status == "ok"
    assert run_task(settings, "reindex").status == "ok"


def test_a_task_that_raises_is_a_recorded_failure(settings):
    settings.home.joinpath("keys", "keyring.json").write_text("not json")
    record = run_task(settings, "key_rotation")
    assert record.status == "fail" and record.summary


@pytest.fixture
def offline_index(monkeypatch) -> None:
    """The scheduler tests run whole groups; the weekly one includes the dependency report,
    which would ask the real package index about every installed package (about 20 s, and
    the network). Pointed at an unreachable index it answers 'warn' at once; which groups
    run, and how often, is what these tests are about (so the benchmark's self-test, seconds
    of its own and tested in test_weekly_reports, is left out)."""
    for key, value in UNREACHABLE_INDEX.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SCTK_MAINTENANCE__BENCHMARK_SELFTEST", "false")


def scheduled_runs(engine, group: str) -> int:
    with session_scope(engine) as s:
        return s.scalar(
            select(func.count()).select_from(MaintenanceRun).where(MaintenanceRun.task == group)
        )


def every_minute(settings):
    """Only the weekly group falls due (every minute); the others wait for next year."""
    never = "0 0 1 1 *"
    return config.load(settings.home, {"maintenance": {
        "schedule_daily": never, "schedule_monthly": never, "schedule_quarterly": never,
        "schedule_weekly": "* * * * *", "poll_seconds": 0.05, "lease_seconds": 5,
    }}).settings  # fmt: skip


def started_long_ago(engine) -> None:
    """As if a scheduler had first run on this database an hour ago."""
    with session_scope(engine) as session:
        lease.acquire(session, "scheduler", "earlier", ttl_seconds=1)
        session.execute(update(Lease).values(
            acquired_at=datetime.now(UTC) - timedelta(hours=1),
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        ))  # fmt: skip


def test_two_schedulers_on_one_database_run_each_due_group_once(settings, engine, offline_index):
    s = every_minute(settings)
    started_long_ago(engine)
    frozen = datetime.now(UTC)  # a fixed clock: no new slot opens while the test runs

    def clock():
        return frozen

    first = Scheduler(Runtime(s), holder="one", clock=clock)
    second = Scheduler(Runtime(s), holder="two", clock=clock)
    try:
        barrier = threading.Barrier(2)
        ran: dict[str, list[str]] = {}

        def go(sched):
            barrier.wait()
            ran[sched.holder] = sched.tick() + sched.tick()

        threads = [threading.Thread(target=go, args=(x,)) for x in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        first.stop()
        second.stop()
    assert sorted(ran["one"] + ran["two"]) == ["weekly"]
    assert scheduled_runs(engine, "weekly") == 1
    assert scheduled_runs(engine, "reindex") == 1


def test_a_missed_slot_runs_once_at_start_and_a_paused_scheduler_runs_nothing(
    settings, engine, offline_index
):
    s = config.load(settings.home, {"maintenance": {"poll_seconds": 1}}).settings
    now = datetime.now(UTC)
    assert due_groups(s, engine, now) == []  # a new installation starts on schedule
    with session_scope(engine) as session:  # a scheduler first ran here two years ago...
        lease.acquire(session, "scheduler", "old", ttl_seconds=1)
        session.execute(update(Lease).values(acquired_at=now - timedelta(days=730),
                                             expires_at=now - timedelta(days=1)))  # fmt: skip
    # ...and the service was down since: every group missed its latest slot
    due = {group: trigger for group, _, trigger in due_groups(s, engine, now)}
    assert due == dict.fromkeys(("daily", "weekly", "monthly", "quarterly"), "catch-up")

    with session_scope(engine) as session:
        switches.turn_on(session, switches.SCHEDULER_PAUSED, actor="ops")
    sched = Scheduler(Runtime(s), holder="paused")
    try:
        assert sched.tick() == []
        with session_scope(engine) as session:
            switches.turn_off(session, switches.SCHEDULER_PAUSED, actor="ops")
        assert sched.tick() == ["daily", "weekly", "monthly", "quarterly"]
        assert sched.tick() == []  # caught up: once, not once per missed slot
        later = now + timedelta(days=1, hours=1)
        assert "daily" in [g for g, _, _ in due_groups(s, engine, later)]
    finally:
        sched.stop()


@sqlite_only
def test_cli_refusals_and_history(settings):
    r = run_sctk("maintenance", "run", "nonesuch", home=settings.home)
    assert r.returncode != 0
    assert "Unknown maintenance task 'nonesuch'; 'sctk maintenance list' shows" in r.stderr

    r = run_sctk("maintenance", "list", home=settings.home,
                 env={"SCTK_MAINTENANCE__SCHEDULE_DAILY": "0 25 * * *"})  # fmt: skip
    assert r.returncode != 0
    assert "schedule_daily '0 25 * * *' is not a valid cron expression" in r.stderr

    r = run_sctk("maintenance", "run", "tmp", "--json", home=settings.home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["status"] == "ok"
    r = run_sctk("maintenance", "history", "--json", home=settings.home)
    (run,) = json.loads(r.stdout)
    assert run["task"] == "tmp" and run["trigger"] == "manual" and run["status"] == "ok"


@pytest.fixture
def engine(settings):
    from sctk.storage.engine import make_engine

    eng = make_engine(settings)
    yield eng
    eng.dispose()
