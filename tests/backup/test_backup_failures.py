"""Backups that fail, and input a user can get wrong: one sentence, a non-zero exit, the
failure recorded (run, audit, bus event), and no snapshot."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest
from sqlalchemy import select

from sctk import config
from sctk.backup import events
from sctk.backup.create import create_backup
from sctk.backup.location import init_repo, open_repo
from sctk.bus import get_bus
from sctk.errors import SctkError
from sctk.runtime import Runtime
from sctk.security import audit_log
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import BackupRun
from tests.backup.backup_support import ENV, PASSPHRASE, set_passphrase
from tests.helpers import run_sctk, wait_until
from tests.security.conftest import assert_cli_error, sqlite_only


def _runs(settings) -> list[BackupRun]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return list(s.scalars(select(BackupRun).order_by(BackupRun.id)))
    finally:
        engine.dispose()


def _failing_pg_dump(tmp_path) -> str:
    """The real pg_dump, pointed at a port nothing listens on: it fails after starting."""
    script = tmp_path / "pg_dump_bad_port"
    script.write_text('#!/bin/sh\nPGHOST=127.0.0.1 PGPORT=1 exec /usr/bin/pg_dump "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_a_failing_part_leaves_no_snapshot_and_is_recorded(
    settings, home, backend, tmp_path, monkeypatch, runtime
):
    set_passphrase(monkeypatch)
    init_repo(settings)
    if backend == "sqlite":
        # <home>/tmp (where the consistent copy is taken) cannot be a directory
        (home / "tmp").rmdir()
        (home / "tmp").write_text("in the way\n")
        fragment = "Cannot create a temporary directory"
        env = ENV
    else:
        fragment = "pg_dump failed"
        env = {**ENV, "SCTK_BACKUP__PG_DUMP": _failing_pg_dump(tmp_path)}

    heard: list = []
    bus = get_bus(settings)
    bus.subscribe("backup.", heard.append, "tests.backup.failures")

    result = run_sctk("backup", "create", home=home, env=env)
    assert_cli_error(result, fragment)
    assert open_repo(settings).snapshots() == []
    [run] = _runs(settings)
    assert (run.kind, run.status, run.snapshot_id) == ("create", "failed", None)
    assert fragment in run.message and run.finished_at is not None

    # in-process too: the failure reaches the audit log and the bus
    overrides = {} if backend == "sqlite" else {"backup": {"pg_dump": _failing_pg_dump(tmp_path)}}
    s = config.load(home, overrides).settings
    with Runtime(s) as rt, pytest.raises(SctkError) as info:
        create_backup(rt, "daily", actor="tests")
    assert fragment in info.value.message
    wait_until(lambda: any(e.type == events.FAILED for e in heard), what="backup.failed")
    failed = [e for e in heard if e.type == events.FAILED][-1]
    assert failed.payload["operation"] == "create"
    assert fragment in failed.payload["reason"] and failed.payload["snapshot_id"] is None
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            entries = audit_log.entries(session, event="backup.create")
            assert entries and {e.outcome for e in entries} == {"failed"}
    finally:
        engine.dispose()
    assert open_repo(settings).snapshots() == []

    # once the cause is gone the same repository takes a backup
    if backend == "sqlite":
        (home / "tmp").unlink()
        (home / "tmp").mkdir()
    good = create_backup(runtime, "manual", actor="tests")
    assert [x.id for x in open_repo(settings).snapshots()] == [good["id"]]
    wait_until(lambda: any(e.type == events.SUCCEEDED for e in heard), what="backup.succeeded")
    ok = [e for e in heard if e.type == events.SUCCEEDED][-1]
    assert ok.payload["snapshot_id"] == good["id"] and ok.payload["operation"] == "create"


@sqlite_only
def test_bad_input_is_one_sentence_and_changes_nothing(settings, home, tmp_path, monkeypatch):
    set_passphrase(monkeypatch)  # for this process; run_sctk passes none unless told
    # no passphrase anywhere
    assert_cli_error(run_sctk("backup", "init", home=home), "SCTK_BACKUP_PASSPHRASE")
    assert not any((home / "backups").iterdir())

    # a repository path that cannot be created (its parent is a file)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_sctk("backup", "init", str(blocker / "repo"), home=home, env=ENV)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1

    # not initialised yet
    result = run_sctk("backup", "create", home=home, env=ENV)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    listed = run_sctk("backup", "list", home=home, env=ENV)
    assert listed.returncode != 0 and "Traceback" not in listed.stderr

    assert run_sctk("backup", "init", home=home, env=ENV).returncode == 0
    again = run_sctk("backup", "init", home=home, env=ENV)
    assert again.returncode != 0 and "Traceback" not in again.stderr

    # a passphrase file that is not there, then a wrong passphrase
    missing = run_sctk(
        "backup", "list", home=home, env={"SCTK_BACKUP__PASSPHRASE_FILE": str(tmp_path / "nope")}
    )
    assert_cli_error(missing, "passphrase file")
    wrong = run_sctk("backup", "list", home=home, env={"SCTK_BACKUP_PASSPHRASE": "not-it"})
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "passphrase" in wrong.stderr.lower()

    # the file's first line is the passphrase
    keyfile = tmp_path / "pass.txt"
    keyfile.write_text(PASSPHRASE + "\nignored\n")
    by_file = run_sctk(
        "backup", "list", "--json", home=home, env={"SCTK_BACKUP__PASSPHRASE_FILE": str(keyfile)}
    )
    assert by_file.returncode == 0, by_file.stderr
    assert json.loads(by_file.stdout) == []

    # unknown label, unknown snapshot, a malformed id
    assert_cli_error(
        run_sctk("backup", "create", "--label", "hourly", home=home, env=ENV), "hourly"
    )
    unknown = run_sctk("backup", "verify", "deadbeef", home=home, env=ENV)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "deadbeef" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    assert_cli_error(run_sctk("backup", "verify", "--latest", "x", home=home, env=ENV), "not both")
    # a policy keeping nothing is refused before anything is touched
    nothing = run_sctk(
        "backup",
        "prune",
        "--keep-last",
        "0",
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
        home=home,
        env=ENV,
    )
    assert_cli_error(nothing, "keeps nothing")

    assert open_repo(settings).snapshots() == []
    kinds = [(r.kind, r.status) for r in _runs(settings)]
    assert ("create", "succeeded") not in kinds


@sqlite_only
def test_concurrent_creates_both_succeed_or_one_fails_cleanly(settings, home, monkeypatch, runtime):
    """Two backups at once: the repository lock serialises or refuses; none is half-written."""
    set_passphrase(monkeypatch)
    init_repo(settings)
    outcomes: list = []

    def one() -> None:
        try:
            outcomes.append(create_backup(runtime, "manual", actor="tests")["id"])
        except SctkError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ids = [o for o in outcomes if isinstance(o, str)]
    assert ids, outcomes
    assert sorted(s.id for s in open_repo(settings).snapshots()) == sorted(ids)
    statuses = sorted(r.status for r in _runs(settings))
    assert statuses.count("succeeded") == len(ids)


@sqlite_only
def test_a_damaged_repository_fails_verification_and_is_recorded(
    settings, home, monkeypatch, runtime
):
    set_passphrase(monkeypatch)
    init_repo(settings)
    snap = create_backup(runtime, "manual", actor="tests")
    heard: list = []
    get_bus(settings).subscribe("backup.", heard.append, "tests.backup.damaged")

    packs = sorted((home / "backups" / "data").rglob("*"), key=lambda p: p.stat().st_size)
    biggest = [p for p in packs if p.is_file()][-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0x01
    biggest.write_bytes(bytes(data))

    result = run_sctk(
        "backup", "verify", snap["id"][:8], "--read-data", "--json", home=home, env=ENV
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["check"]["errors"], report
    assert report["marked"] == [] and snap["id"] not in open_repo(settings).verified()
    [run] = [r for r in _runs(settings) if r.kind == "verify"]
    assert run.status == "failed" and "error" in run.message

    # in-process: the failure is audited and published
    from sctk.backup.verify import verify_backup

    again = verify_backup(runtime, "latest", read_data=True, actor="tests")
    assert again["ok"] is False
    wait_until(lambda: any(e.type == events.FAILED for e in heard), what="backup.failed")
    failed = [e for e in heard if e.type == events.FAILED][-1]
    assert failed.payload["operation"] == "verify" and failed.payload["snapshot_id"] == snap["id"]
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            outcomes = {e.outcome for e in audit_log.entries(session, event="backup.verify")}
            assert outcomes == {"failed"}
    finally:
        engine.dispose()


@sqlite_only
def test_a_killed_backup_leaves_no_snapshot_and_its_run_is_closed(
    settings, home, monkeypatch, runtime
):
    import signal
    import subprocess
    import sys

    set_passphrase(monkeypatch)
    init_repo(settings)
    (home / "data" / "big.bin").write_bytes(os.urandom(64 * 1024 * 1024))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update(ENV, SCTK_HOME=str(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sctk", "backup", "create"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: any(r.status == "running" for r in _runs(settings)), what="the run to start"
        )
        wait_until(lambda: any((home / "backups" / "data").iterdir()), what="a pack written")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert open_repo(settings).snapshots() == []

    good = create_backup(runtime, "manual", actor="tests")
    runs = _runs(settings)
    assert [(r.status, r.snapshot_id) for r in runs] == [
        ("failed", None),
        ("succeeded", good["id"]),
    ]
    assert f"process {proc.pid} ended" in runs[0].message
    assert open_repo(settings).check(read_data=True).ok
