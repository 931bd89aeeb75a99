"""Off-site copies: mirror into another directory or memory://, verified, never deleting."""

from __future__ import annotations

import os

import pytest

from sctk.backup.repo import RepoError, Repository
from tests.backup.repo.conftest import PASSPHRASE, backup, make_tree, tree_bytes


@pytest.mark.parametrize("kind", ["dir", "memory"])
def test_copy_then_open_check_restore(repo, tree, tmp_path, kind):
    info = backup(repo, tree)
    repo.mark_verified(info.id, {"ok": True})
    dest = str(tmp_path / "offsite") if kind == "dir" else f"memory://offsite-{os.getpid()}-{kind}"
    report = repo.copy_to(dest)
    total = sum(len(repo.backend.list(f)) for f in ("data", "index", "snapshots", "verified"))
    assert report.files_copied == total + 1  # + config
    copy = Repository.open(dest, PASSPHRASE)
    assert [s.id for s in copy.snapshots()] == [info.id]
    assert set(copy.verified()) == {info.id}
    assert copy.check(read_data=True).ok
    copy.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)

    # incremental: only what is new travels; nothing is deleted in the destination
    make_tree(tree / "more", seed=9)
    second = backup(repo, tree)
    repo.forget([info.id])
    again = repo.copy_to(dest)
    # new: one pack, one index file, one snapshot; already there: config, old pack and index
    assert (again.files_copied, again.files_skipped) == (3, 3)
    copy = Repository.open(dest, PASSPHRASE)
    assert {s.id for s in copy.snapshots()} == {info.id, second.id}
    assert copy.check(read_data=True).ok
    assert repo.copy_to(dest).files_copied == 0


def test_copy_refuses_foreign_destinations(repo, tree, tmp_path):
    backup(repo, tree)
    other = Repository.init(str(tmp_path / "other"), PASSPHRASE)
    with pytest.raises(RepoError, match="different backup repository"):
        repo.copy_to(other.url)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(RepoError, match="not a backup repository"):
        repo.copy_to(str(tmp_path / "junk"))
    assert [p.name for p in (tmp_path / "junk").iterdir()] == ["x"]


def test_copy_refuses_damaged_source_file(repo, tree, tmp_path):
    backup(repo, tree)
    name = next(iter(repo.backend.list("data")))
    path = tmp_path / "repo" / name
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(RepoError, match=f"{name} in .* is damaged"):
        repo.copy_to(str(tmp_path / "offsite"))


def test_a_large_file_is_copied_into_a_directory_a_block_at_a_time(repo, tmp_path):
    """A pack of ~12 MB goes through a block at a time, each block hashed (before it shows
    under its name) and read back: the whole file read, then read back, was 24 MB."""
    import tracemalloc

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12_000_000))
    info = backup(repo, src)
    dest = tmp_path / "offsite"
    tracemalloc.start()
    try:
        report = repo.copy_to(str(dest))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.bytes_copied > 12_000_000
    assert peak < 8 * 1024 * 1024, peak
    copy = Repository.open(str(dest), PASSPHRASE)
    assert copy.check(read_data=True).ok
    copy.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)
    assert not copy.backend.temporaries()


def test_a_large_damaged_file_is_refused_and_nothing_shows_under_its_name(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(6_000_000))
    backup(repo, src)
    name = next(iter(repo.backend.list("data")))
    path = tmp_path / "repo" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(RepoError, match=f"{name} in .* is damaged"):
        repo.copy_to(str(tmp_path / "offsite"))
    assert not (tmp_path / "offsite" / name).exists()
