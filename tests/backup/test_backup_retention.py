"""`sctk backup prune` (dry run first) and `sctk backup copy --to` an off-site repository."""

from __future__ import annotations

import json

from sctk.backup.create import create_backup
from sctk.backup.location import init_repo, open_repo
from sctk.security import audit_log
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import BackupSnapshot
from tests.backup.backup_support import ENV, set_passphrase
from tests.helpers import run_sctk
from tests.security.conftest import assert_cli_error, sqlite_only


def _cached_ids(settings) -> set[str]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return {r.id for r in s.query(BackupSnapshot)}
    finally:
        engine.dispose()


def _audited(settings, event: str) -> list[str]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return [
                e.outcome for e in sorted(audit_log.entries(s, event=event), key=lambda e: e.seq)
            ]
    finally:
        engine.dispose()


@sqlite_only
def test_prune_dry_run_then_prune(settings, home, monkeypatch, runtime):
    set_passphrase(monkeypatch)
    init_repo(settings)
    ids = [create_backup(runtime, "daily", actor="tests")["id"] for _ in range(3)]
    (home / "data" / "later.bin").write_bytes(b"x" * 200_000)  # data only the last one holds
    ids.append(create_backup(runtime, "daily", actor="tests")["id"])

    dry = run_sctk("backup", "prune", "--keep-last", "2", "--dry-run", "--json", home=home, env=ENV)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True
    assert [k["id"] for k in planned["kept"]] and all(k["reason"] for k in planned["kept"])
    assert {k["id"] for k in planned["kept"]} == set(ids[2:])
    assert {r["id"] for r in planned["removed"]} == set(ids[:2])
    assert [s.id for s in open_repo(settings).snapshots()] == ids, "a dry run changes nothing"

    shown = run_sctk("backup", "prune", "--keep-last", "2", "--dry-run", home=home, env=ENV)
    assert shown.returncode == 0 and "would remove 2 snapshot(s)" in shown.stdout

    done = run_sctk("backup", "prune", "--keep-last", "2", "--json", home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {r["id"] for r in report["removed"]} == set(ids[:2]) and report["dry_run"] is False
    assert [s.id for s in open_repo(settings).snapshots()] == ids[2:]
    assert _cached_ids(settings) == set(ids[2:]), "prune refreshed the cache"
    assert open_repo(settings).check(read_data=True).ok
    assert _audited(settings, "backup.prune") == ["ok", "ok", "ok"]  # two dry runs, one prune


@sqlite_only
def test_copy_to_another_repository(settings, home, tmp_path, monkeypatch, runtime):
    set_passphrase(monkeypatch)
    init_repo(settings)
    first = create_backup(runtime, "manual", actor="tests")["id"]
    dest = tmp_path / "offsite"
    copied = run_sctk("backup", "copy", "--to", str(dest), "--json", home=home, env=ENV)
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert report["ok"] and report["snapshots"] == 1 and report["copy"]["files_copied"] > 0

    listed = run_sctk("backup", "list", "--repo", str(dest), "--json", home=home, env=ENV)
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [first]

    # a second copy sends only what is new
    second = create_backup(runtime, "manual", actor="tests")["id"]
    again = run_sctk("backup", "copy", "--to", str(dest), "--json", home=home, env=ENV)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["copy"]["files_skipped"] > 0
    listed = run_sctk("backup", "list", "--repo", str(dest), "--json", home=home, env=ENV)
    assert [s["id"] for s in json.loads(listed.stdout)] == [first, second]

    # the destination cannot be the repository itself, nor a wrong passphrase open the copy
    assert_cli_error(
        run_sctk("backup", "copy", "--to", str(home / "backups"), home=home, env=ENV), "itself"
    )
    wrong = run_sctk(
        "backup", "list", "--repo", str(dest), home=home, env={"SCTK_BACKUP_PASSPHRASE": "nope"}
    )
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert _audited(settings, "backup.copy") == ["ok", "ok", "failed"]
