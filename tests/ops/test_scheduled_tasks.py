"""The remaining scheduled tasks, each against a data directory where it has work to do."""

from __future__ import annotations

from sctk import config
from sctk.backup.location import init_repo, open_repo
from sctk.security import rotation
from tests.backup.backup_support import ENV, populate
from tests.helpers import run_group, run_task


def test_health_task_stores_every_check(settings):
    record = run_task(settings, "health")
    assert record.status in ("ok", "warn", "fail")
    names = {c["name"] for c in record.details["checks"]}
    assert {"database", "migrations", "disk", "keyring"} <= names


def test_a_directory_without_a_recent_backup_gets_one_and_keeps_the_retention(
    settings, monkeypatch
):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    populate(settings, model=False)
    init_repo(settings)
    s = config.load(
        settings.home,
        {"backup": {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}},
    ).settings
    first = run_task(s, "backup")
    assert first.status == "ok", first.summary
    second = run_task(s, "backup")
    assert "prune removed 1 snapshot(s)" in second.summary
    snaps = open_repo(s).snapshots()
    assert [x.label for x in snaps] == ["daily"]


def test_monthly_tasks_audit_drill_and_report(settings, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    populate(settings)
    init_repo(settings)
    assert run_task(settings, "backup").status == "ok"

    records = {r.task: r for r in run_group(settings, "monthly")}
    assert set(records) == {"system_audit", "restore_drill", "compliance_audit", "ops_report"}
    audit = records["system_audit"].details
    assert audit["cpus"] >= 1 and any(u["username"] == "bea.backup" for u in audit["users"])
    drill = records["restore_drill"]
    assert drill.status == "ok", drill.summary
    assert drill.details["restore_test"]["ok"] and drill.details["check"]["read_data"]
    comp = records["compliance_audit"]
    assert comp.details["score"] < 100 and comp.details["report"].startswith("reports/audit-")
    assert (settings.home / comp.details["report"]).exists()
    report = records["ops_report"]
    assert report.status == "ok" and list((settings.home / "reports").glob("ops-month-*.html"))


def test_key_rotation_rotates_a_key_past_its_period(settings):
    # a period of 86 µs: the key made when the directory was initialised is older
    s = config.load(settings.home, {"maintenance": {"key_max_age_days": 1e-9}}).settings
    record = run_task(s, "key_rotation")
    assert record.status == "ok" and record.summary.startswith("rotated")
    assert record.details["new_key_id"] == 2 and rotation.newest_key_age(s).total_seconds() < 60
