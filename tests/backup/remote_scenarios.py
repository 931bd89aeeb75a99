"""What every remote backend must do, written once and run against each real server (S3 API,
SFTP): the whole life of a repository there, and backups and copies whose link drops."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit

from sctk import config
from sctk.backup.create import create_backup
from sctk.backup.location import init_repo, open_repo, remote_options
from sctk.backup.offsite_copy import copy_backups
from sctk.backup.prune_run import prune_backups
from sctk.backup.repo import leftovers
from sctk.backup.repo.backend import open_backend
from sctk.backup.restore_run import restore
from sctk.backup.verify import verify_backup
from sctk.config import Settings
from sctk.errors import SctkError
from sctk.runtime import Runtime
from tests.backup.backup_support import ENV
from tests.helpers import run_sctk

BIG = 17 * 1024 * 1024  # two packs: a 16 MiB one (a multipart upload on S3) and the rest


def configure(
    home: Path,
    repository: str,
    storage_options: dict | None = None,
    attempts: int = 3,
    backoff: float = 0.05,
) -> Settings:
    """Point the data directory's sctk.toml at REPOSITORY, with quick retries for the tests."""
    path = home / "sctk.toml"
    doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    backup = {
        "repository": repository,
        "remote_attempts": attempts,
        "remote_backoff_seconds": backoff,
    }
    if storage_options:
        backup["storage_options"] = storage_options
    doc["backup"] = backup
    path.write_text(tomlkit.dumps(doc))
    return config.load(home).settings


def lifecycle(home: Path, settings: Settings, copy_url: str, tmp_path: Path) -> None:
    """init, create, list, verify --read-data, prune, full restore and copy --to on the
    configured remote repository (the domain functions the commands call; `backup list` as
    a user runs it, reading the driver's settings from the environment and sctk.toml)."""
    with Runtime(settings) as runtime:
        created = init_repo(settings)
        assert created.url == settings.backup.repository
        (home / "data" / "notes.bin").write_bytes(os.urandom(300_000))
        first = create_backup(runtime, "daily", actor="tests")
        (home / "data" / "notes.bin").write_bytes(os.urandom(200_000))
        second = create_backup(runtime, "daily", actor="tests")

        listed = run_sctk("backup", "list", "--json", home=home, env=ENV)
        assert listed.returncode == 0, listed.stderr
        assert [s["id"] for s in json.loads(listed.stdout)] == [first["id"], second["id"]]
        report = verify_backup(runtime, read_data=True, actor="tests")
        assert report["ok"] and report["check"]["bytes_read"] > 500_000, report

        pruned = prune_backups(
            runtime, actor="tests", keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0
        )
        assert [r["id"] for r in pruned["removed"]] == [first["id"]]
        assert [s.id for s in open_repo(settings).snapshots()] == [second["id"]]
        assert verify_backup(runtime, read_data=True, actor="tests")["ok"]

        fresh = tmp_path / "fresh"
        restore(runtime, open_repo(settings), "latest", target=fresh, actor="tests")
        assert (fresh / "data" / "notes.bin").read_bytes() == (
            home / "data" / "notes.bin"
        ).read_bytes()

        copied = copy_backups(runtime, copy_url, actor="tests")
        assert copied["ok"] and copied["snapshots"] == 1 and copied["copy"]["files_copied"] > 2
        mirror = open_repo(settings, copy_url)
        assert [s.id for s in mirror.snapshots()] == [second["id"]]
        assert mirror.check(read_data=True).ok


def _same_files(settings: Settings, src_url: str, dest_url: str) -> None:
    """DEST holds exactly the finished files of SRC (nothing partial, nothing twice) and no
    temporary file."""
    src = open_backend(src_url, remote_options(settings))
    dest = open_backend(dest_url, remote_options(settings))
    for folder in ("data", "index", "snapshots"):
        assert dest.list(folder) == src.list(folder), folder
    assert dest.temporaries() == []


def interrupted_copy(
    settings: Settings, dest_url: str, cut: Callable[[], None], restore: Callable[[], None]
) -> None:
    """A copy whose server goes away once its first pack has landed (the other being sent):
    one sentence; the next copy sends only the rest, and the mirror verifies with every byte
    read."""
    with Runtime(settings) as runtime:
        local = str(settings.home / "local-repo")
        init_repo(settings, local)
        (settings.home / "data" / "big.bin").write_bytes(os.urandom(BIG))
        snap = create_backup(runtime, "daily", actor="tests", url=local)

        state = {"cut": False}

        def drop_after_first(done: int) -> None:
            if done > 1024 * 1024 and not state["cut"]:  # config is small: a pack has landed
                state["cut"] = True
                cut()

        try:
            with pytest.raises(SctkError, match="Cannot reach repository") as failed:
                copy_backups(runtime, dest_url, actor="tests", url=local, progress=drop_after_first)
        finally:
            restore()
        assert state["cut"] and "\n" not in failed.value.message
        again = copy_backups(runtime, dest_url, actor="tests", url=local)
        assert again["ok"] and again["copy"]["files_skipped"] >= 2, again  # config and a pack
        mirror = open_repo(settings, dest_url)
        assert [s.id for s in mirror.snapshots()] == [snap["id"]]
        assert mirror.check(read_data=True).ok
        _same_files(settings, local, dest_url)


def interrupted_backup(
    settings: Settings, cut: Callable[[], None], restore: Callable[[], None]
) -> None:
    """A backup whose server goes away after its first pack is read: it fails in one sentence
    and leaves no snapshot; the next one completes, verifies with every byte read, and leaves
    no partial or unreferenced file."""
    with Runtime(settings) as runtime:
        (settings.home / "data" / "big.bin").write_bytes(os.urandom(BIG))
        before = [s.id for s in open_repo(settings).snapshots()]
        state = {"cut": False}

        def drop_midway(done: int, total: int | None) -> None:
            if done > BIG * 0.85 and not state["cut"]:
                state["cut"] = True
                cut()

        try:
            with pytest.raises(SctkError, match="Cannot reach repository") as failed:
                create_backup(runtime, "daily", actor="tests", progress=drop_midway)
        finally:
            restore()
        assert state["cut"] and "\n" not in failed.value.message
        assert [s.id for s in open_repo(settings).snapshots()] == before
        snap = create_backup(runtime, "daily", actor="tests")
        report = verify_backup(runtime, read_data=True, actor="tests")
        assert report["ok"] and report["check"]["leftover_files"] == 0, report
        repo = open_repo(settings)
        assert [s.id for s in repo.snapshots()] == [*before, snap["id"]]
        with repo.lock(exclusive=True):
            found = leftovers.scan(repo)
        assert found.files == 0, (found.packs.keys(), found.junk)
        assert repo.backend.temporaries() == []
        assert repo.backend.list("locks") == {}
