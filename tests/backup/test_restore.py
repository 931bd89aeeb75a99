"""`sctk restore`: round trips into fresh data directories (SQLite and PostgreSQL), partial
restores, --list / --file / --dry-run, a running service, damaged data and bad input."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from sctk import config, runstate
from sctk.backup import create, dbload
from sctk.backup.location import init_repo
from sctk.backup.restore_run import restore
from sctk.backup.scratch_restore import table_counts
from sctk.runtime import Runtime
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import AuditEntry
from tests.backup.backup_support import ENV, populate, set_passphrase
from tests.helpers import run_sctk

# tables a restore itself writes into, after measuring: its run, audit entry, bus message and
# the refreshed catalog cache
RESTORE_WRITES = {"backup_runs", "audit_log", "bus_messages", "backup_snapshots"}
NOT_SNAPSHOTTED = ("backups", "logs", "tmp")


def tree(root: Path, skip: tuple[str, ...] = NOT_SNAPSHOTTED) -> dict[str, str]:
    """Relative path -> SHA-256 (files) or 'dir' / 'link', for comparing directories."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in skip:
            dirs[:] = []
            continue
        for d in dirs:
            if not (rel_dir == Path(".") and d in skip):
                out[(rel_dir / d).as_posix()] = "dir"
        for name in files:
            p = Path(dirpath) / name
            out[(rel_dir / name).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_data(home: Path, n: int = 5, size: int = 50_000) -> None:
    (home / "data" / "raw").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (home / "data" / "raw" / f"f{i}.bin").write_bytes(os.urandom(size))
    (home / "reports" / "r.txt").write_text("report\n")


def snapshot(settings, repo=None, label: str = "manual"):
    with Runtime(settings) as runtime:
        repo = repo or init_repo(settings)
        return repo, create.take(runtime, repo, label)


def db_counts(settings) -> dict[str, int]:
    return table_counts(settings.db_url)[0]


@pytest.fixture
def populated(settings, home, monkeypatch):
    set_passphrase(monkeypatch)
    populate(settings, model=False)
    write_data(home)
    repo, info = snapshot(settings)
    return repo, info


# ------------------------------------------------------------------------------ round trips


def test_full_round_trip_into_a_fresh_directory(
    settings, home, backend, tmp_path, populated, request
):
    repo, info = populated
    fresh = tmp_path / "fresh"
    args = ["restore", info.id[:12], "--target", str(fresh), "--json"]
    new_db = None
    if backend == "postgres":
        unnamed = run_sctk(*args, home=home, env=ENV)
        assert unnamed.returncode != 0 and "--database-url" in unnamed.stderr
        assert not fresh.exists()
        new_db = dbload.scratch_url(request.getfixturevalue("pg_url"), "t_restore")
        args += ["--database-url", new_db]
    try:
        done = run_sctk(*args, home=home, env=ENV)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        # every table's rows, measured right after the load, match the manifest
        assert result["tables"] == info.manifest["tables"]
        # every file's bytes match the snapshot (and so the source directory)
        restored, source = tree(fresh), tree(home)
        for entry in repo.files(info.id):
            if entry.path in ("sctk.db", "postgres.sql"):
                continue
            if entry.path == "sctk.toml" and backend == "postgres":
                continue  # names the new database; checked below
            assert restored[entry.path] == entry.sha256 == source[entry.path], entry.path
        for sub in ("logs", "backups", "tmp", "archive"):
            assert (fresh / sub).is_dir()
        assert not (fresh / "tmp" / "restore").exists()
        after = config.load(fresh).settings
        if backend == "postgres":
            assert after.db_url == new_db  # the restored configuration names the new database
            old_lines = (home / "sctk.toml").read_text().splitlines()
            new_lines = (fresh / "sctk.toml").read_text().splitlines()
            assert [ln for ln in old_lines if not ln.startswith("database_url")] == [
                ln for ln in new_lines if not ln.startswith("database_url")
            ]
            assert not (fresh / "sctk.db").exists()
        else:
            assert (fresh / "sctk.db").stat().st_mode & 0o777 == 0o600
        now = db_counts(after)
        expected = info.manifest["tables"]
        assert {k: v for k, v in now.items() if k not in RESTORE_WRITES} == {
            k: v for k, v in expected.items() if k not in RESTORE_WRITES
        }
        assert now["audit_log"] == expected["audit_log"] + 1
        # the health checks ran on the restored directory (cpu load and the like depend on
        # the machine, not on the restore)
        checks = {c["name"]: c["status"] for c in result["health"]["checks"]}
        for name in ("database", "migrations", "keyring", "data_dir", "logs_dir"):
            assert checks[name] == "OK", (name, result["health"])
        engine = make_engine(after)
        try:
            with session_scope(engine) as s:
                last = s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
                assert last.event == "restore.completed" and last.outcome == "ok"
        finally:
            engine.dispose()
        assert result["safety_snapshot"] is None  # a fresh target has nothing to save
        # the source directory is untouched
        assert db_counts(settings) == expected or backend == "postgres"
    finally:
        if new_db:
            dbload.drop_database(new_db)


def test_in_place_restore_takes_a_safety_backup_and_reverts(settings, home, populated, runtime):
    repo, info = populated
    before = tree(home)
    (home / "data" / "raw" / "f0.bin").write_bytes(b"changed")
    (home / "data" / "raw" / "new.bin").write_bytes(b"new")
    populate_more(settings)
    result = restore(runtime, repo, info.id, actor="tests")
    assert result.safety_snapshot is not None
    safety = repo.find_snapshot(result.safety_snapshot)
    assert safety.label == "pre-update"
    assert {f.path for f in repo.files(safety.id)} >= {"data/raw/new.bin"}
    after = tree(home)
    for path, sha in before.items():
        if path != "sctk.db":
            assert after[path] == sha, path
    assert "data/raw/new.bin" not in after
    assert result.tables == info.manifest["tables"]
    assert db_counts(settings)["users"] == info.manifest["tables"]["users"]  # late user gone


def populate_more(settings) -> None:
    from sctk.security import users

    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            users.create(s, "late.user", "Granite-Willow-Comet-553", "viewer", actor="tests")
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ partial


def test_only_config_leaves_the_other_parts_untouched(settings, home, populated):
    repo, info = populated
    original_toml = (home / "sctk.toml").read_bytes()
    (home / "sctk.toml").write_bytes(original_toml + b"\n# edited after the backup\n")
    (home / "data" / "raw" / "f1.bin").write_bytes(b"edited data")
    populate_more(settings)
    rows_before = db_counts(settings)
    keys_before = tree(home / "keys")
    done = run_sctk("restore", info.id, "--only", "config", home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    assert (home / "sctk.toml").read_bytes() == original_toml
    assert (home / "data" / "raw" / "f1.bin").read_bytes() == b"edited data"
    assert tree(home / "keys") == keys_before
    rows = db_counts(settings)
    assert rows["users"] == rows_before["users"]  # the late user is still there


def test_only_data_leaves_the_other_parts_untouched(settings, home, populated):
    repo, info = populated
    source = tree(home)
    edited_toml = (home / "sctk.toml").read_bytes() + b"\n# edited after the backup\n"
    (home / "sctk.toml").write_bytes(edited_toml)
    (home / "data" / "raw" / "f1.bin").write_bytes(b"edited data")
    (home / "results" / "extra.txt").write_text("made after the backup")
    populate_more(settings)
    users_before = db_counts(settings)["users"]
    done = run_sctk("restore", info.id, "--only", "data", "--json", home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parts"] == ["data"]
    after = tree(home)
    for path, sha in source.items():
        if path.split("/")[0] in ("data", "results", "archive", "reports"):
            assert after[path] == sha, path
    assert "results/extra.txt" not in after
    assert (home / "sctk.toml").read_bytes() == edited_toml
    assert db_counts(settings)["users"] == users_before


# ------------------------------------------------------------------------------ list, file, dry run


def test_list_and_file(settings, home, tmp_path, populated):
    repo, info = populated
    listed = run_sctk("restore", info.id[:10], "--list", "--json", home=home, env=ENV)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["files"]
    by_path = {r["path"]: r for r in rows}
    assert by_path["data/raw/f2.bin"]["part"] == "data"
    assert by_path["data/raw/f2.bin"]["size"] == 50_000
    assert by_path["sctk.toml"]["part"] == "config"
    assert any(r["part"] == "keys" for r in rows)
    table = run_sctk("restore", "--latest", "--list", home=home, env=ENV)
    assert table.returncode == 0 and "data/raw/f2.bin" in table.stdout

    out = tmp_path / "out"
    got = run_sctk(
        "restore", "--latest", "--file", "data/raw/f2.bin", "--target", str(out), home=home, env=ENV
    )
    assert got.returncode == 0, got.stderr
    assert (out / "f2.bin").read_bytes() == (home / "data" / "raw" / "f2.bin").read_bytes()
    again = run_sctk(
        "restore", "--latest", "--file", "data/raw/f2.bin", "--target", str(out), home=home, env=ENV
    )
    assert again.returncode != 0 and "already exists" in again.stderr
    forced = run_sctk(
        "restore",
        "--latest",
        "--file",
        "data/raw/f2.bin",
        "--target",
        str(out),
        "--force",
        home=home,
        env=ENV,
    )
    assert forced.returncode == 0, forced.stderr


def test_dry_run_changes_nothing(settings, home, populated):
    repo, info = populated
    (home / "data" / "raw" / "f0.bin").write_bytes(b"changed")
    before = tree(home, skip=())
    snapshots = len(repo.snapshots())
    done = run_sctk("restore", info.id, "--dry-run", "--json", home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["dry_run"] is True and plan["safety_backup"] is True
    actions = {i["name"]: i["action"] for i in plan["items"]}
    assert actions["data"] == "replace" and actions["sctk.toml"] == "replace"
    text = run_sctk("restore", info.id, "--dry-run", home=home, env=ENV)
    assert text.returncode == 0 and "nothing was changed" in text.stdout
    assert tree(home, skip=()) == before
    assert len(repo.snapshots()) == snapshots


# ------------------------------------------------------------------------------ running service


def test_refuses_while_a_service_runs_unless_forced(settings, home, populated):
    repo, info = populated
    (home / "data" / "raw" / "f0.bin").write_bytes(b"changed")
    runstate.write_pid(home)  # this test process plays the running service
    try:
        assert runstate.running_pid(home) == os.getpid()
        before = tree(home)
        refused = run_sctk("restore", info.id, home=home, env=ENV)
        assert refused.returncode != 0
        assert f"pid {os.getpid()}" in refused.stderr and "--force" in refused.stderr
        assert tree(home) == before
        forced = run_sctk("restore", info.id, "--force", home=home, env=ENV)
        assert forced.returncode == 0, forced.stderr
        assert (home / "data" / "raw" / "f0.bin").read_bytes() != b"changed"
    finally:
        runstate.clear_pid(home)
    assert runstate.running_pid(home) is None


# ------------------------------------------------------------------------------ damage, bad input


def _packs(repo_dir: Path) -> list[Path]:
    return sorted(p for p in (repo_dir / "data").rglob("*") if p.is_file())


def test_damaged_pack_refuses_and_leaves_the_target_intact(settings, home, populated):
    repo, info = populated
    (home / "data" / "raw" / "f0.bin").write_bytes(b"changed since the backup")
    pack = max(_packs(home / "backups"), key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    os.chmod(pack, 0o600)
    pack.write_bytes(bytes(raw))
    before, rows = tree(home), db_counts(settings)
    done = run_sctk("restore", info.id, home=home, env=ENV)
    assert done.returncode != 0
    assert "damaged" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # the database only gained the record of the failed restore
    after = tree(home)
    assert {k: v for k, v in after.items() if k != "sctk.db"} == {
        k: v for k, v in before.items() if k != "sctk.db"
    }
    now = db_counts(settings)
    assert {k: v for k, v in now.items() if k not in RESTORE_WRITES} == {
        k: v for k, v in rows.items() if k not in RESTORE_WRITES
    }
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            last = s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
            assert last.event == "restore.failed" and last.outcome == "failed"
    finally:
        engine.dispose()
    assert not (home / "tmp" / "restore").exists()


@pytest.fixture
def sqlite_home(tmp_path, monkeypatch):
    """A populated SQLite data directory with one snapshot (input checks need no other)."""
    from sctk.ops.init_home import init_home

    set_passphrase(monkeypatch)
    home, settings = tmp_path / "home", init_home(tmp_path / "home")[1]
    write_data(home)
    snapshot(settings)
    return home


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["ffffffffffff"], "snapshot"),
        (["--latest", "--only", "everything"], "Unknown part 'everything'"),
        (["--latest", "--file", "data/nope.bin"], "data/nope.bin"),
        ([], "--latest"),
    ],
)
def test_bad_input_is_one_sentence_and_changes_nothing(sqlite_home, args, phrase):
    home = sqlite_home
    before = tree(home, skip=())
    done = run_sctk("restore", *args, home=home, env=ENV)
    assert done.returncode != 0
    assert phrase in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2
    assert tree(home, skip=()) == before


def test_target_that_cannot_be_written(sqlite_home, tmp_path):
    home = sqlite_home
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = run_sctk("restore", "--latest", "--target", str(blocker / "sub"), home=home, env=ENV)
    assert done.returncode != 0 and "is not a directory" in done.stderr
    assert not (blocker / "sub").exists()
    stranger = tmp_path / "someone-elses"
    (stranger / "data").mkdir(parents=True)
    (stranger / "data" / "precious.txt").write_text("not sctk's")
    done = run_sctk("restore", "--latest", "--target", str(stranger), home=home, env=ENV)
    assert done.returncode != 0 and "is not empty" in done.stderr and "--force" in done.stderr
    assert (stranger / "data" / "precious.txt").read_text() == "not sctk's"
    assert sorted(p.name for p in stranger.iterdir()) == ["data"]
    # /proc refuses new files even to root (who passes every permission check)
    done = run_sctk("restore", "--latest", "--target", "/proc/sctk-nope", home=home, env=ENV)
    assert done.returncode != 0 and "not writable" in done.stderr, done.stderr


def test_wrong_passphrase_is_refused(sqlite_home):
    home = sqlite_home
    before = tree(home, skip=())
    done = run_sctk("restore", "--latest", home=home, env={"SCTK_BACKUP_PASSPHRASE": "wrong-one"})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert tree(home, skip=()) == before


# ------------------------------------------------------------------------------ older schema


def test_snapshot_of_an_older_schema_is_migrated(
    settings, home, tmp_path, backend, monkeypatch, runtime
):
    from sctk.storage import migrate

    set_passphrase(monkeypatch)
    head = migrate.head()
    older = migrate.history()[1].revision
    engine = make_engine(settings)
    try:
        migrate.downgrade(engine, older)
        repo = init_repo(settings)
        info = create.take(runtime, repo, "manual")
        migrate.upgrade(engine, "head")
    finally:
        engine.dispose()
    assert info.manifest["schema_revision"] == older
    args = {}
    if backend == "postgres":
        args["database_url"] = dbload.scratch_url(settings.db_url, "t_migrate")
    try:
        result = restore(runtime, repo, info.id, target=tmp_path / "fresh", **args)
        assert (result.revision_before, result.revision_after) == (older, head)
        checks = {c["name"]: c["status"] for c in result.health["checks"]}
        assert checks["migrations"] == "OK"
    finally:
        if args:
            dbload.drop_database(args["database_url"])


def test_a_plan_streams_the_file_list(settings, home, monkeypatch):
    """make_plan counts a snapshot's files as its list streams by: its figures are the
    listing's, in memory that does not hold every entry (6,000 entries held were ~4 MB)."""
    import tracemalloc

    from sctk.backup.restore_run import PARTS, list_files, make_plan

    set_passphrase(monkeypatch)
    populate(settings, model=False)
    write_data(home, n=6000, size=10)
    repo, info = snapshot(settings)
    tracemalloc.start()
    try:
        plan = make_plan(settings, repo, info.id, list(PARTS))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _, rows = list_files(repo, info.id)
    assert plan.files == len(rows) > 6000
    assert plan.bytes == sum(r["size"] for r in rows)
    items = {i.name: (i.files, i.bytes) for i in plan.items}
    data = [r for r in rows if r["path"].startswith("data/")]
    assert items["data"] == (len(data), sum(r["size"] for r in data))
    db = "sctk.db" if plan.backend == "sqlite" else "database"  # a dump loaded by psql
    assert items[db] == (1, next(r["size"] for r in rows if r["part"] == "db"))
    assert peak < 2_500_000, peak
