"""A restore killed with SIGKILL leaves the previous data directory intact, and a rerun
completes; the journal's recovery rolls an interrupted swap back or forward."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from sctk.backup import create
from sctk.backup.location import init_repo
from sctk.backup.restore_run import JOURNAL, WORK_DIR, recover
from sctk.backup.scratch_restore import table_counts
from sctk.storage.engine import normalise_url
from tests.backup.backup_support import ENV, set_passphrase
from tests.backup.test_restore import tree
from tests.helpers import wait_until


def _bulk_rows(settings, n: int) -> None:
    """Many rows, cheaply: a database dump that takes psql a while to load."""
    engine = create_engine(normalise_url(settings.db_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO check_results (name, status, message, "values", checked_at) '
                    "SELECT 'bulk', 'OK', repeat('x', 200), '{}', now() "
                    "FROM generate_series(1, :n)"
                ),
                {"n": n},
            )
    finally:
        engine.dispose()


def _journal_has_xid(path) -> bool:
    try:
        return bool(json.loads(path.read_text())["database"]["xid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def test_kill_9_during_restore_leaves_the_directory_intact(
    settings, home, monkeypatch, backend, runtime
):
    """SQLite: killed while staging the files. PostgreSQL: killed while psql loads the dump
    (the journal already holds the transaction id): the database keeps its rows too."""
    set_passphrase(monkeypatch)
    raw = home / "data" / "raw"
    raw.mkdir(parents=True)
    for i in range(24):  # ~100 MB of incompressible data: staging takes a while
        (raw / f"block{i:02}.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    if backend == "postgres":
        _bulk_rows(settings, 400_000)
    repo = init_repo(settings)
    info = create.take(runtime, repo, "manual")
    # the directory moves on after the backup; the killed restore must not disturb it
    for i in range(0, 24, 3):
        (raw / f"block{i:02}.bin").write_bytes(os.urandom(1024))
    (home / "data" / "after.txt").write_text("written after the backup")
    if backend == "postgres":
        _bulk_rows(settings, 10)
    before, rows_before = tree(home), table_counts(settings.db_url)[0]

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update(ENV, SCTK_HOME=str(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sctk", "restore", info.id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    work = home / WORK_DIR
    if backend == "sqlite":
        ready = (work / "staging").exists
    else:
        journal = work / JOURNAL

        def ready() -> bool:
            return _journal_has_xid(journal)

    try:
        wait_until(
            lambda: ready() or proc.poll() is not None,
            timeout=180,
            interval=0.002,
            what="the restore to be under way",
        )
        assert proc.poll() is None, "the restore finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert tree(home) == before  # byte for byte
    if backend == "postgres":
        from sctk.backup import dbload

        xid = json.loads(journal.read_text())["database"]["xid"]
        # psql, orphaned, reads end of input without a COMMIT: the server rolls back
        wait_until(
            lambda: dbload.xact_status(settings.db_url, xid) == "aborted",
            timeout=60,
            what="the interrupted load to be rolled back",
        )
        assert table_counts(settings.db_url)[0] == rows_before

    rerun = subprocess.run(
        [sys.executable, "-m", "sctk", "restore", info.id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    assert result["recovered"] == "rolled back"
    assert result["tables"] == info.manifest["tables"]
    restored = tree(home)
    for entry in repo.files(info.id):
        if entry.path not in ("sctk.db", "postgres.sql"):
            assert restored[entry.path] == entry.sha256, entry.path
    assert "data/after.txt" not in restored
    assert not work.exists()


def _journal(target, state, items, database=None):
    work = target / WORK_DIR
    (work / "staging").mkdir(parents=True, exist_ok=True)
    (work / "old").mkdir(exist_ok=True)
    data = {"snapshot": "0" * 64, "parts": ["data"], "items": items, "state": state}
    if database:
        data["database"] = database
    (work / JOURNAL).write_text(json.dumps(data))
    return work


ITEMS = [{"name": n, "staged": True} for n in ("a.txt", "b", "c.txt", "d.txt")] + [
    {"name": "side.txt", "staged": False}
]


def _half_swapped(tmp_path):
    """a.txt swapped, b being swapped (old aside, new not in), c.txt and side.txt untouched,
    d.txt new (the target never had it) and not yet in."""
    target = tmp_path / "t"
    target.mkdir()
    work = _journal(target, "swapping", ITEMS)
    (work / "old" / "a.txt").write_text("old a")
    (target / "a.txt").write_text("new a")
    (work / "old" / "b").mkdir()
    (work / "old" / "b" / "x").write_text("old b")
    (work / "staging" / "b").mkdir()
    (work / "staging" / "b" / "x").write_text("new b")
    (target / "c.txt").write_text("old c")
    (work / "staging" / "c.txt").write_text("new c")
    (work / "staging" / "d.txt").write_text("new d")
    (target / "side.txt").write_text("stale")
    return target


def test_interrupted_swap_is_rolled_forward(tmp_path):
    target = _half_swapped(tmp_path)
    assert recover(target) == "rolled forward"
    assert (target / "a.txt").read_text() == "new a"
    assert (target / "b" / "x").read_text() == "new b"
    assert (target / "c.txt").read_text() == "new c"
    assert (target / "d.txt").read_text() == "new d"
    assert not (target / "side.txt").exists()
    assert not (target / WORK_DIR).exists()
    assert recover(target) is None


def test_interrupted_staging_is_rolled_back(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "a.txt").write_text("old a")
    work = _journal(target, "staging", ITEMS)
    (work / "staging" / "a.txt").write_text("half-written")
    assert recover(target) == "rolled back"
    assert (target / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "tmp"]
    assert not (target / WORK_DIR).exists()


def _xid(url: str, commit: bool) -> str:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            xid = conn.execute(text("SELECT pg_current_xact_id()::text")).scalar()
            conn.commit() if commit else conn.rollback()
        return xid
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("committed", [True, False])
def test_interrupted_postgres_load_decides_by_its_transaction(tmp_path, pg_url, committed):
    """The journal keeps the load's transaction id: a committed load means the files roll
    forward to match it, an aborted one (kill -9 before COMMIT) means they roll back."""
    target = _half_swapped(tmp_path)
    work = target / WORK_DIR
    (work / JOURNAL).write_text(
        json.dumps(
            {
                "state": "swapping",
                "items": ITEMS,
                "database": {"url": pg_url, "xid": _xid(pg_url, committed)},
            }
        )
    )
    outcome = recover(target)
    if committed:
        assert outcome == "rolled forward"
        assert (target / "c.txt").read_text() == "new c"
    else:
        assert outcome == "rolled back"
        assert (target / "a.txt").read_text() == "old a"
        assert (target / "b" / "x").read_text() == "old b"
        assert (target / "c.txt").read_text() == "old c"
        assert (target / "side.txt").read_text() == "stale"
        assert not (target / "d.txt").exists()
    assert not work.exists()


@pytest.mark.postgres
def test_interrupted_postgres_load_is_rolled_back(pg_url):
    """psql killed mid-script (as by kill -9 of sctk): nothing of the load stays."""
    from sctk.backup import dbload

    engine = create_engine(normalise_url(pg_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE keep_me (id int)"))
        conn.execute(text("INSERT INTO keep_me VALUES (1), (2)"))
    xids: list[str] = []

    def script():
        yield b"CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\n"
        raise KeyboardInterrupt  # the writer dies before COMMIT

    with pytest.raises(KeyboardInterrupt):
        dbload.load_postgres(pg_url, script(), on_xid=xids.append)
    assert dbload.xact_status(pg_url, xids[0]) == "aborted"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM keep_me")).scalar() == 2
        assert conn.execute(text("SELECT to_regclass('public.half')")).scalar() is None
    engine.dispose()
