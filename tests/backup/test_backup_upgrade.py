"""`sctk backup upgrade` on a data directory whose repository an earlier sctk made (format
version 1), and the phases `sctk backup prune` and `sctk backup verify` report as they go."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sctk.backup import create
from sctk.backup.location import repo_url
from sctk.backup.repo import Repository
from sctk.cli import main
from sctk.cli import progress as progress_mod
from sctk.ops.init_home import init_home
from sctk.runtime import Runtime
from tests.backup.backup_support import PASSPHRASE, set_passphrase


@pytest.fixture
def old_home(tmp_path, monkeypatch):
    """A SQLite data directory backed up twice into a version-1 repository."""
    set_passphrase(monkeypatch)
    home, settings = tmp_path / "home", init_home(tmp_path / "home")[1]
    for i in range(6):
        (home / f"data/raw/f{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (home / f"data/raw/f{i}.bin").write_bytes(os.urandom(50_000 + i))
    repo = Repository.init(repo_url(settings), PASSPHRASE, version=1)
    with Runtime(settings) as rt:
        first = create.take(rt, repo, "manual")
        (home / "data/raw/f0.bin").write_bytes(os.urandom(70_000))
        second = create.take(rt, repo, "manual")
    return home, settings, [first, second]


def _run(capsys, monkeypatch, home: Path, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("SCTK_HOME", str(home))
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    got = capsys.readouterr()
    return code, got.out, got.err


def test_upgrade_of_an_earlier_repository_then_backups_and_restores_go_on(
    old_home, capsys, monkeypatch, tmp_path
):
    home, settings, before = old_home
    code, out, err = _run(capsys, monkeypatch, home, "backup", "upgrade", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["from_version"], result["to_version"]) == (1, 2)
    assert sorted(result["converted"]) == sorted(s.id for s in before)
    repo = Repository.open(repo_url(settings), PASSPHRASE)
    after = repo.snapshots()
    assert [(s.time, s.files, s.manifest) for s in after] == [
        (s.time, s.files, s.manifest) for s in before
    ]
    assert all(repo.snapshot_header(s.id)["format"] == 2 for s in after)
    with Runtime(settings) as rt:
        again = create.take(rt, repo, "manual")  # a backup on the upgraded repository
    assert repo.snapshot_header(again.id)["format"] == 2
    code, out, err = _run(capsys, monkeypatch, home, "backup", "upgrade")
    assert code == 0 and "already has format version 2; nothing to do" in out, (out, err)
    target = tmp_path / "restored"
    code, out, err = _run(
        capsys, monkeypatch, home, "restore", after[-1].id[:12], "--target", str(target)
    )
    assert code == 0, err
    raw = sorted(p.name for p in (target / "data/raw").iterdir())
    assert raw == [f"f{i}.bin" for i in range(6)]


def test_prune_and_verify_report_their_phases_off_a_terminal(old_home, capsys, monkeypatch):
    home, _settings, _ = old_home
    monkeypatch.setattr(progress_mod, "EVERY_SECONDS", 0.0)  # a line at every report
    code, _out, err = _run(capsys, monkeypatch, home, "backup", "verify", "--read-data")
    assert code == 0, err
    phases = [line.split()[2] for line in err.splitlines() if line.startswith("verifying: ")]
    assert list(dict.fromkeys(phases)) == ["index", "snapshots", "reading", "leftovers"], err
    code, _out, err = _run(
        capsys, monkeypatch, home, "backup", "prune", "--keep-last", "1", "--keep-daily", "0",
        "--keep-weekly", "0", "--keep-monthly", "0",
    )  # fmt: skip
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("pruning: ")]
    phases = list(dict.fromkeys(line.split()[2] for line in lines))
    assert phases[:3] == ["checking", "marking", "planning"], err
    assert "forgetting" in phases and phases[-1] == "deleting", err
    assert any(line.endswith("files") and "marking" in line for line in lines), err
