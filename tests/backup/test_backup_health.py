"""Backups on from the first day: `sctk init` with a passphrase makes the repository, the daily
maintenance backs up a fresh home, and the `backup` health check says how things stand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from sctk import config
from sctk.backup.location import open_repo
from sctk.health import Status, run_checks
from sctk.runtime import Runtime
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import BackupRun
from tests.backup.backup_support import ENV, set_passphrase
from tests.helpers import run_sctk

CALM = {
    "SCTK_HEALTH__DISK_WARNING_FREE_PERCENT": "0.002",
    "SCTK_HEALTH__DISK_CRITICAL_FREE_PERCENT": "0.001",
    "SCTK_MONITOR__LOAD_WARNING_PER_CORE": "999",
}


def _backup_check(home, env: dict[str, str]) -> dict:
    done = run_sctk("health", "--json", "--check", "backup", home=home, env={**CALM, **env})
    return next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "backup")


def test_a_fresh_home_with_a_passphrase_passes_the_daily_maintenance(tmp_path, monkeypatch):
    home = tmp_path / "home"
    made = run_sctk("init", str(home), env=ENV)
    assert made.returncode == 0, made.stderr
    assert f"created  backup repository at {home / 'backups'}" in made.stdout
    assert "not configured" not in made.stderr
    first = _backup_check(home, ENV)
    assert first["status"] == "OK" and "no backup has been taken yet" in first["message"]

    daily = run_sctk("maintenance", "daily", "--json", home=home, env={**ENV, **CALM})
    assert daily.returncode == 0, daily.stdout + daily.stderr
    tasks = {r["task"]: r for r in json.loads(daily.stdout)}
    assert tasks["backup"]["status"] == "ok", tasks["backup"]["summary"]
    set_passphrase(monkeypatch)
    snaps = open_repo(config.load(home).settings).snapshots()
    assert [s.label for s in snaps] == ["daily"]
    after = _backup_check(home, ENV)
    assert after["status"] == "OK" and snaps[0].id[:8] in after["message"]

    again = run_sctk("init", str(home), env=ENV)
    assert "nothing changed" in again.stdout


def test_the_first_daily_backup_makes_a_missing_repository(settings, monkeypatch):
    from tests.helpers import run_task

    set_passphrase(monkeypatch)
    record = run_task(settings, "backup")
    assert record.status == "ok", record.summary
    assert record.summary.startswith(f"created the repository at {settings.home / 'backups'}")
    assert len(open_repo(settings).snapshots()) == 1


def test_without_a_passphrase_health_says_backups_are_not_configured(tmp_path):
    home = tmp_path / "home"
    made = run_sctk("init", str(home))
    assert made.returncode == 0, made.stderr
    assert "Backups are not configured" in made.stderr
    assert not (home / "backups" / "config").exists()
    health = run_sctk("health", home=home, env=CALM)
    assert health.returncode == 1, health.stdout  # WARNING
    assert "Backups are not configured" in health.stdout
    check = _backup_check(home, {})
    assert check["status"] == "WARNING" and "SCTK_BACKUP_PASSPHRASE" in check["message"]


def _add_run(settings, kind: str, status: str, hours_ago: float, label: str = "daily") -> None:
    at = datetime.now(UTC) - timedelta(hours=hours_ago)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            s.add(
                BackupRun(
                    kind=kind,
                    status=status,
                    started_at=at,
                    finished_at=at,
                    snapshot_id="ab" * 32 if status == "succeeded" else None,
                    message=f"{kind} {status}.",
                    details={"label": label},
                )
            )
    finally:
        engine.dispose()


def _status(settings) -> tuple[Status, str]:
    (outcome,) = run_checks(Runtime(settings), ["database", "backup"]).outcomes[1:]
    return outcome.status, outcome.message


def test_backup_check_warns_at_26_hours_and_is_critical_at_72_or_after_a_failed_verify(
    settings, monkeypatch
):
    set_passphrase(monkeypatch)
    assert _status(settings)[0] is Status.OK  # a new installation has not missed a night
    _add_run(settings, "create", "failed", 30)  # an installation older than a day, no backup
    status, message = _status(settings)
    assert status is Status.WARNING and "no backup has been taken yet" in message

    _add_run(settings, "create", "succeeded", 27)
    _add_run(settings, "create", "succeeded", 1, label="pre-update")  # a safety snapshot
    status, message = _status(settings)
    assert status is Status.WARNING and "27." in message and "over 26 h" in message

    narrow = config.load(settings.home, {"backup": {"max_age_critical_hours": 20}}).settings
    assert _status(narrow)[0] is Status.CRITICAL

    _add_run(settings, "create", "succeeded", 1)
    assert _status(settings) == (Status.OK, f"the last backup (snapshot {'ab' * 4}) is 1.0 h old")

    _add_run(settings, "verify", "failed", 0.5)
    status, message = _status(settings)
    assert status is Status.CRITICAL and "verification" in message and "failed" in message
    _add_run(settings, "verify", "succeeded", 0.1)
    assert _status(settings)[0] is Status.OK


def test_backup_check_is_critical_past_72_hours(settings, monkeypatch):
    set_passphrase(monkeypatch)
    _add_run(settings, "create", "succeeded", 80)
    status, message = _status(settings)
    assert status is Status.CRITICAL and "over 72 h" in message


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_successful_backup_is_announced_when_asked(settings, monkeypatch):
    from sctk.backup.create import create_backup
    from sctk.backup.location import init_repo
    from sctk.monitoring.notifiers import set_webhook
    from sctk.security.keyring import Keyring
    from tests.monitoring.test_notifiers import Webhook

    set_passphrase(monkeypatch)
    init_repo(settings)
    hook = Webhook()
    try:
        engine = make_engine(settings)
        try:
            with session_scope(engine) as s:
                set_webhook(s, Keyring.load(settings.home), hook.url, actor="tests")
        finally:
            engine.dispose()
        quiet = config.load(settings.home, {"alerts": {"channels": ["log", "webhook"]}}).settings
        with Runtime(quiet) as rt:
            create_backup(rt, "daily")
        assert hook.bodies == [], "off by default"
        loud = config.load(
            settings.home,
            {"alerts": {"channels": ["log", "webhook"]}, "backup": {"announce_success": True}},
        ).settings
        with Runtime(loud) as rt:
            snap = create_backup(rt, "daily")
            create_backup(rt, "pre-update")  # a safety snapshot is not news
    finally:
        hook.close()
    assert len(hook.bodies) == 1
    assert snap["short_id"] in json.dumps(hook.bodies[0])
