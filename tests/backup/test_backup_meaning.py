"""A verified snapshot is a usable one (its database and its files agree), and a restore
leaves run records that agree with the repository."""

from __future__ import annotations

from sqlalchemy import select

from sctk.backup import catalog, kinds
from sctk.backup.create import create_backup
from sctk.backup.location import init_repo, open_repo
from sctk.backup.restore_run import restore
from sctk.backup.verify import verify_backup
from sctk.ops.emergency import latest_usable
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import BackupRun, Dataset
from tests.backup.backup_support import populate, set_passphrase
from tests.helpers import run_task


def _dataset_path(settings) -> str:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return s.scalars(select(Dataset.path)).one()
    finally:
        engine.dispose()


def test_a_snapshot_whose_dataset_differs_is_inconsistent_and_the_drill_skips_it(
    settings, home, monkeypatch, runtime
):
    set_passphrase(monkeypatch)
    populate(settings, model=False)
    init_repo(settings)
    good = create_backup(runtime, "daily")["id"]
    # the dataset's file changes under its row: the next snapshot holds bytes the database
    # does not vouch for (the bytes themselves are stored and read back perfectly)
    rel = _dataset_path(settings)
    original = (home / rel).read_bytes()
    (home / rel).write_bytes(original + b"\0")
    bad = create_backup(runtime, "daily")["id"]

    result = verify_backup(runtime, bad, read_data=True)
    assert result["ok"] is False and result["check"]["ok"] is True
    assert result["inconsistent"] == [bad]
    problems = result["consistency"][bad]["problems"]
    assert len(problems) == 1 and rel in problems[0] and "SHA-256" in problems[0]
    assert f"Snapshot {bad[:8]} is inconsistent" in result["message"]
    listed = {s["id"]: s for s in catalog.list_snapshots(open_repo(settings))}
    assert listed[bad]["status"] == kinds.INCONSISTENT and listed[bad]["problems"] == problems
    assert listed[good]["status"] == kinds.UNVERIFIED
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            cached = {r["id"]: r for r in map(catalog.cached_dict, catalog.cached(s))}
    finally:
        engine.dispose()
    assert cached[bad]["status"] == "inconsistent" and "_verdict" not in cached[bad]["manifest"]

    drill = run_task(settings, "restore_drill")
    assert drill.status == "warn", drill.summary
    assert drill.summary.startswith(f"Skipped snapshot {bad[:8]}")
    assert "inconsistent" in drill.summary and rel in drill.summary
    assert drill.details["snapshot_id"] == good and drill.details["ok"] is True
    assert drill.details["consistency"][good]["files_checked"] == 1
    assert drill.details["consistency"][good]["audit_entries"] > 0

    # emergency restores the newest verified, consistent regular backup, saying what it
    # passed; a newer verified safety snapshot is not a backup to fall back on
    (home / rel).write_bytes(original)
    safety = create_backup(runtime, "pre-update")["id"]
    assert verify_backup(runtime, safety)["ok"]
    snap, skipped = latest_usable(open_repo(settings))
    assert snap.id == good
    assert len(skipped) == 1 and skipped[0].startswith(f"Skipped snapshot {bad[:8]}")


def test_a_restore_reconciles_the_run_records_with_the_repository(
    settings, home, monkeypatch, runtime
):
    set_passphrase(monkeypatch)
    init_repo(settings)
    first = create_backup(runtime, "daily")["id"]  # its database copy shows this run running
    second = create_backup(runtime, "daily")["id"]
    restore(runtime, open_repo(settings), first)

    def runs() -> list[BackupRun]:
        engine = make_engine(settings)
        try:
            with session_scope(engine) as s:
                rows = list(s.scalars(select(BackupRun).order_by(BackupRun.id)))
                s.expunge_all()
                return rows
        finally:
            engine.dispose()

    after = runs()
    assert [r for r in after if r.status == "running"] == []
    creates = {r.snapshot_id: r for r in after if r.kind == "create"}
    assert creates[first].status == "succeeded" and creates[first].details["reconciled"]
    assert creates[second].status == "succeeded", "the run lost with the old database is back"
    assert creates[second].details["label"] == "daily"
    assert [r.kind for r in after if r.kind == "restore"] == ["restore"]

    # the next run's sweep of dead processes' runs no longer rewrites a success as a failure
    third = create_backup(runtime, "daily")["id"]
    again = {r.snapshot_id: r.status for r in runs() if r.kind == "create"}
    assert again == {first: "succeeded", second: "succeeded", third: "succeeded"}
