"""`sctk backup init|create|list|verify` end to end, on SQLite and PostgreSQL: a consistent
database snapshot taken while a writer keeps inserting rows, and the catalog it leaves."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sqlalchemy import func, select

from sctk.backup.location import open_repo, repo_url
from sctk.security import audit_log
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import BackupRun, BackupSnapshot, CheckResult
from tests.backup.backup_support import (
    ENV,
    PG_URL_ENV,
    RowWriter,
    populate,
    postgres_rows,
    set_passphrase,
    snapshot_file,
    sqlite_rows,
)
from tests.helpers import run_sctk, wait_until


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _writer_rows(settings) -> int:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return s.scalar(select(func.count()).select_from(CheckResult))
    finally:
        engine.dispose()


def test_round_trip_while_a_writer_inserts(settings, home, backend, tmp_path, monkeypatch):
    set_passphrase(monkeypatch)
    populate(settings)
    init = run_sctk("backup", "init", home=home, env=ENV)
    assert init.returncode == 0, init.stderr
    assert "Created the backup repository" in init.stdout

    with RowWriter(settings) as writer:
        wait_until(lambda: writer.inserted >= 20, what="the writer to insert rows")
        before = _writer_rows(settings)
        made = run_sctk("backup", "create", "--label", "daily", "--json", home=home, env=ENV)
        wait_until(lambda: _writer_rows(settings) > before + 5, what="more rows after")
    assert not writer.errors, writer.errors
    assert made.returncode == 0, made.stderr
    snap = json.loads(made.stdout)
    manifest = snap["manifest"]
    assert snap["label"] == "daily" and len(snap["id"]) == 64
    assert manifest["backend"] == ("sqlite" if backend == "sqlite" else "postgresql")
    assert manifest["schema_revision"] and manifest["label"] == "daily"
    assert manifest["files"]["db"] == 1 and manifest["files"]["config"] == 1
    assert manifest["files"]["keys"] >= 1 and manifest["files"]["data"] >= 2

    # the counts in the manifest are the rows of the snapshot's own database, table by table
    repo = open_repo(settings)
    if backend == "sqlite":
        restored = sqlite_rows(snapshot_file(repo, snap["id"], "sctk.db", tmp_path / "copy.db"))
    else:
        dump = snapshot_file(repo, snap["id"], "postgres.sql", tmp_path / "dump.sql")
        restored = postgres_rows(dump, os.environ[PG_URL_ENV])
    assert restored == manifest["tables"]
    writer_rows = manifest["tables"]["check_results"]
    assert before <= writer_rows < _writer_rows(settings), "the copy is one point in time"
    assert manifest["tables"]["users"] >= 1 and manifest["tables"]["datasets"] == 1
    assert manifest["tables"]["jobs"] == 3 and manifest["tables"]["uq_models"] == 1

    # files: the data directory's bytes, and never backups/, logs/ or tmp/
    files = {f.path: f for f in repo.files(snap["id"])}
    assert "sctk.toml" in files and "keys/keyring.json" in files
    assert not any(p.startswith(("backups/", "logs/", "tmp/")) for p in files)
    data_files = [p for p in files if p.startswith(("data/", "results/"))]
    assert any(p.startswith("results/models/") for p in data_files), data_files
    for path in [*data_files, "keys/keyring.json", "sctk.toml"]:
        assert files[path].sha256 == _sha256(home / path), path

    listed = run_sctk("backup", "list", "--json", home=home, env=ENV)
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [snap["id"]]

    checked = run_sctk(
        "backup", "verify", "--latest", "--read-data", "--restore-test", "--json",
        home=home, env=ENV,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr + checked.stdout
    result = json.loads(checked.stdout)
    assert result["ok"] and result["snapshot_id"] == snap["id"] and result["check"]["read_data"]
    assert result["restore_test"]["ok"] and result["check"]["bytes_read"] > 0
    assert snap["id"] in repo.verified()

    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            cached = s.get(BackupSnapshot, snap["id"])
            assert cached is not None and cached.verified_at is not None
            assert cached.manifest["tables"] == manifest["tables"]
            runs = {(r.kind, r.status, r.snapshot_id) for r in s.scalars(select(BackupRun))}
            assert ("create", "succeeded", snap["id"]) in runs
            assert ("verify", "succeeded", snap["id"]) in runs
            assert all(r.seconds is not None for r in s.scalars(select(BackupRun)))
            created = audit_log.entries(s, event="backup.create")
            assert [(e.outcome, e.target) for e in created] == [("ok", snap["id"])]
            assert audit_log.entries(s, event="backup.verify")[0].outcome == "ok"
    finally:
        engine.dispose()


def test_list_reads_the_repository_when_the_database_is_gone(settings, home, backend, monkeypatch):
    set_passphrase(monkeypatch)
    assert run_sctk("backup", "init", home=home, env=ENV).returncode == 0
    made = run_sctk("backup", "create", "--json", home=home, env=ENV)
    assert made.returncode == 0, made.stderr
    snap_id = json.loads(made.stdout)["id"]
    if backend == "sqlite":
        (home / "sctk.db").unlink()
        for extra in ("sctk.db-wal", "sctk.db-shm"):
            (home / extra).unlink(missing_ok=True)
    else:
        # the server is unreachable: the repository still answers
        (home / "sctk.toml").write_text(
            (home / "sctk.toml")
            .read_text()
            .replace(settings.db_url.split("@", 1)[1].split("/", 1)[0], "127.0.0.1:1", 1)
        )
    listed = run_sctk("backup", "list", "--json", home=home, env=ENV)
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [snap_id]
    assert not (home / "sctk.db").exists() or backend != "sqlite", "list made no database"

    # and without any data directory at all, naming the repository
    elsewhere = run_sctk(
        "backup",
        "list",
        "--repo",
        repo_url(settings),
        "--json",
        home=home.parent / "nowhere",
        env=ENV,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert [s["id"] for s in json.loads(elsewhere.stdout)] == [snap_id]
    assert not (home.parent / "nowhere").exists()
