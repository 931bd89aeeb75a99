"""Bad input: one clear sentence each, nothing changed."""

from __future__ import annotations

import pytest

from sctk.backup.repo import RepoError, Repository
from tests.backup.repo.conftest import PASSPHRASE, backup


def test_wrong_passphrase(repo):
    with pytest.raises(RepoError, match="Wrong passphrase for repository"):
        Repository.open(repo.url, "not it")


def test_uninitialised_and_missing(tmp_path):
    with pytest.raises(RepoError, match="No backup repository at"):
        Repository.open(str(tmp_path / "missing"), PASSPHRASE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepoError, match="not an initialised backup repository"):
        Repository.open(str(tmp_path / "empty"), PASSPHRASE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepoError, match="is a file, not a directory"):
        Repository.open(str(tmp_path / "file"), PASSPHRASE)


def test_init_refuses_existing_and_non_empty(repo, tmp_path):
    with pytest.raises(RepoError, match="already exists"):
        Repository.init(repo.url, PASSPHRASE)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RepoError, match="non-empty directory that is not a backup repository"):
        Repository.init(str(tmp_path / "full"), PASSPHRASE)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]
    with pytest.raises(RepoError, match="passphrase is empty"):
        Repository.init(str(tmp_path / "new"), "")


def test_unknown_snapshot(repo, tree):
    with pytest.raises(RepoError, match="no snapshots yet"):
        repo.find_snapshot("latest")
    info = backup(repo, tree)
    with pytest.raises(RepoError, match="No snapshot 0000"):
        repo.find_snapshot("0000" if not info.id.startswith("0000") else "ffff")
    with pytest.raises(RepoError, match="not valid"):
        repo.find_snapshot("xyz!")
    with pytest.raises(RepoError, match="not valid"):
        repo.find_snapshot(info.id[:3])
    assert repo.find_snapshot(info.id[:4].upper()).id == info.id


def test_ambiguous_prefix(repo, tree):
    info = backup(repo, tree)
    # a second snapshot file whose name shares the first 8 digits
    twin = info.id[:8] + ("0" if info.id[8] != "0" else "1") + info.id[9:]
    data = repo.backend.read(f"snapshots/{info.id}")
    repo.backend.write(f"snapshots/{twin}", data)
    with pytest.raises(RepoError, match="matches 2 snapshots; give more digits"):
        repo.find_snapshot(info.id[:8])
    assert repo.find_snapshot(info.id[:9]).id == info.id


def test_unreachable_url():
    with pytest.raises(RepoError):
        Repository.open("nosuchscheme://x/y", PASSPHRASE)


def test_restore_target_not_writable(repo, tree, tmp_path):
    info = backup(repo, tree)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RepoError, match="not a directory"):
        repo.restore(info.id, tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"
