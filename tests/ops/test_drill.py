"""The disaster-recovery drill on a real backup: restore elsewhere, serve, predict, clean up."""

from __future__ import annotations

import socket

from sqlalchemy import select

from sctk.backup.create import create_backup
from sctk.backup.location import init_repo
from sctk.storage.engine import session_scope
from sctk.storage.models import MaintenanceRun
from tests.backup.backup_support import ENV, populate
from tests.helpers import free_port, run_task


def test_the_drill_serves_the_restored_copy_and_reports_rto_and_rpo(
    settings, engine, monkeypatch, runtime
):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    populate(settings)
    init_repo(settings)
    create_backup(runtime, "daily")
    port = settings.drill.port = free_port()  # [drill] port: the one a firewall allows

    record = run_task(settings, "dr_drill")
    assert record.status == "ok", record.summary
    d = record.details
    assert d["port"] == port and f"127.0.0.1:{port}" in record.summary
    assert d["health_status"] == 200 and d["rto_seconds"] > 0 and 0 <= d["rpo_seconds"] < 600
    assert d["prediction"]["made"] and d["prediction"]["model"] == "'tiny' v1"
    assert d["restored_files"] > 0
    assert "recovered in" in record.summary and "(RTO)" in record.summary
    assert not list((settings.home / "tmp" / "scratch").glob("dr-drill-*"))  # nothing left
    with session_scope(engine) as s:
        row = s.scalar(select(MaintenanceRun).where(MaintenanceRun.task == "dr_drill"))
        assert row.details["rto_seconds"] == d["rto_seconds"]


def test_the_drill_without_a_backup_fails_with_a_reason(settings, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    record = run_task(settings, "dr_drill")
    assert record.status == "fail" and "backup" in record.summary.lower()


def test_a_configured_drill_port_that_is_taken_is_refused_before_the_restore(settings, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        settings.drill.port = holder.getsockname()[1]
        record = run_task(settings, "dr_drill")
    assert record.status == "fail"
    assert f"The drill's port {settings.drill.port} on 127.0.0.1 is not free" in record.summary
    assert "[drill] port" in record.summary
    assert not list((settings.home / "tmp" / "scratch").glob("dr-drill-*"))
