"""`sctk upgrade` rolls back by itself when a migration fails midway; `sctk rollback`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect, select, text

from sctk.backup.location import init_repo
from sctk.runtime import Runtime
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import AuditEntry
from tests.backup.backup_support import ENV, populate
from tests.helpers import run_sctk
from tests.security.conftest import sqlite_only

HERE = Path(__file__).parent
# tables an upgrade attempt itself writes to: the audit log grows, the backup bookkeeping
# records the pre-update snapshot, the restore records its health checks
BOOKKEEPING = {"audit_log", "backup_runs", "backup_snapshots", "check_results", "bus_messages"}


def tables(settings) -> dict[str, list]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            names = sorted(set(inspect(conn).get_table_names()) - BOOKKEEPING)
            return {
                n: sorted(map(repr, conn.execute(text(f'SELECT * FROM "{n}"')).all()))
                for n in names
            }
    finally:
        engine.dispose()


def files(home: Path) -> dict[str, bytes]:
    kept = [home / "sctk.toml", *(home / d for d in ("data", "results", "keys"))]
    out = {}
    for top in kept:
        for p in [top] if top.is_file() else sorted(top.rglob("*")):
            if p.is_file():
                out[p.relative_to(home).as_posix()] = p.read_bytes()
    return out


def events(settings) -> list[tuple[str, str]]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            rows = s.scalars(select(AuditEntry).order_by(AuditEntry.seq))
            return [(e.event, e.outcome) for e in rows]
    finally:
        engine.dispose()


def test_a_migration_failing_midway_is_rolled_back_to_the_exact_prior_state(settings, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    populate(settings)
    init_repo(settings)
    before_tables, before_files = tables(settings), files(settings.home)
    before_events = events(settings)
    assert before_tables["jobs"] and any(b"PAR1" in v[:4] for v in before_files.values())

    env = {**ENV, "SCTK_EXTRA_MIGRATIONS": str(HERE / "failing_migrations")}
    if settings.database_url is not None:
        env["SCTK_DATABASE_URL"] = settings.database_url.get_secret_value()
    r = run_sctk("upgrade", "--json", home=settings.home, env=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["rolled_back"] and "failed midway" in result["message"]
    assert result["before"] == result["after"] == "0010"

    after_tables = tables(settings)
    for name in before_tables:
        assert after_tables[name] == before_tables[name], name
    assert set(after_tables) == set(before_tables)  # no upgrade_scratch left behind
    assert files(settings.home) == before_files
    after_events = events(settings)
    assert after_events[: len(before_events)] == before_events
    new = after_events[len(before_events) :]
    assert ("upgrade.attempt", "failure") in new and ("upgrade.rollback", "ok") in new


@sqlite_only
def test_a_good_upgrade_validates_and_rollback_undoes_it(settings, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    populate(settings)
    init_repo(settings)
    env = {**ENV, "SCTK_EXTRA_MIGRATIONS": str(HERE / "good_migrations")}
    r = run_sctk("upgrade", "--json", home=settings.home, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] and result["after"] == "0098"
    assert result["validation"]["prediction"]["made"]
    assert "upgrade_extra" in tables(settings)

    again = run_sctk("upgrade", home=settings.home, env=env)
    assert again.returncode == 0 and "Already at 0098; nothing to do." in again.stdout

    declined = subprocess.run(
        [sys.executable, "-m", "sctk", "rollback"],
        input="n\n",
        capture_output=True,
        text=True,
        env={**clean_env(), **env, "SCTK_HOME": str(settings.home)},
        timeout=300,
    )
    assert declined.returncode != 0 and "Whatever changed since is lost." in declined.stdout
    assert "Rollback not confirmed; nothing was changed" in declined.stderr
    assert "upgrade_extra" in tables(settings)

    back = run_sctk("rollback", "--yes", home=settings.home, env=env, timeout=300)
    assert back.returncode == 0, back.stderr
    assert "upgrade_extra" not in tables(settings)


@sqlite_only
def test_rollback_without_a_pre_update_snapshot_and_unknown_revision_are_refused(
    settings, monkeypatch
):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    init_repo(settings)
    r = run_sctk("rollback", home=settings.home, env=ENV)
    assert r.returncode != 0
    assert "There is no pre-update snapshot to roll back to" in r.stderr
    r = run_sctk("upgrade", "--to", "9999", home=settings.home, env=ENV)
    assert r.returncode != 0 and "Unknown revision '9999'" in r.stderr
    r = run_sctk("upgrade", "--to", "0007", home=settings.home, env=ENV)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "Revision '0007' is older than the database's '0010'; use 'sctk rollback'." in r.stderr


@sqlite_only
def test_a_major_upgrade_asks_for_the_checklist_first(settings, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    init_repo(settings)
    env = {**ENV, "SCTK_EXTRA_MIGRATIONS": str(HERE / "major_migrations")}
    declined = subprocess.run(
        [sys.executable, "-m", "sctk", "upgrade"],
        input="n\n",
        capture_output=True,
        text=True,
        env={**clean_env(), **env, "SCTK_HOME": str(settings.home)},
        timeout=300,
    )
    assert declined.returncode != 0
    assert "cannot be downgraded (a major upgrade)" in declined.stderr
    assert "the release notes of this version have been read" in declined.stdout
    assert "upgrade_major" not in tables(settings)
    assert (
        "Upgraded" in run_sctk("upgrade", "--yes", home=settings.home, env=env, timeout=300).stdout
    )
    assert "upgrade_major" in tables(settings)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}


@sqlite_only
def test_a_renamed_setting_loads_under_its_new_name_and_the_upgrade_rewrites_the_file(
    settings, monkeypatch
):
    from sctk import config
    from sctk.ops.upgrade import upgrade

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(
        config.RENAMED_SETTINGS, "maintenance.log_keep_days", "maintenance.log_retention_days"
    )
    monkeypatch.setenv("SCTK_EXTRA_MIGRATIONS", str(HERE / "good_migrations"))
    toml = settings.home / "sctk.toml"
    toml.write_text(
        toml.read_text().replace("[maintenance]\n", "[maintenance]\nlog_keep_days = 45\n")
    )
    loaded = config.load(settings.home).settings  # an older release's file still loads
    assert loaded.maintenance.log_retention_days == 45
    init_repo(loaded)

    with Runtime(loaded) as rt:
        result = upgrade(rt)
    assert result.ok and result.renamed == [
        "maintenance.log_keep_days -> maintenance.log_retention_days"
    ]
    text = toml.read_text()
    assert "log_keep_days" not in text and "log_retention_days = 45" in text
    monkeypatch.delitem(config.RENAMED_SETTINGS, "maintenance.log_keep_days")
    assert config.load(settings.home).settings.maintenance.log_retention_days == 45
