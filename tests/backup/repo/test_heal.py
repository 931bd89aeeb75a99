"""No lasting garbage, damage that heals forward, restores of what is intact (engine level):
a killed writer's packs taken over by the next backup, unreferenced bytes reported, a damaged
chunk stored again by the next backup, the index repaired, a damaged snapshot file named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sctk.backup.repo import RepoError, Repository
from tests.backup.repo.conftest import PASSPHRASE, backup, damage_chunk, tree_bytes

# Kills itself (SIGKILL, no cleanup) from inside the writer once N packs are durable and the
# next one is being filled: what a crash mid-backup leaves behind, without any timer.
KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from sctk.backup.repo import Repository
    from sctk.backup.repo.writer import SnapshotWriter
    repo = Repository.open(sys.argv[1], sys.argv[2])
    packs = int(sys.argv[4])
    durable = SnapshotWriter._on_pack_written
    def on_pack_written(self, pack_id, size, blobs):
        durable(self, pack_id, size, blobs)
        if len(self._written) >= packs:
            deadline = time.monotonic() + 30
            while not repo.backend.temporaries() and time.monotonic() < deadline:
                time.sleep(0.01)  # the reader is filling the next pack: wait for its file
            os.kill(os.getpid(), signal.SIGKILL)
    SnapshotWriter._on_pack_written = on_pack_written
    with repo.writer() as w:
        w.add_tree(Path(sys.argv[3]))
        w.commit("manual", {})
    """
)


def _repo_bytes(url: str) -> int:
    return sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file())


def _kill_a_backup(repo: Repository, src: Path, packs: int = 2) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, repo.url, PASSPHRASE, str(src), str(packs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(repo.backend.list("data")) >= packs and repo.backend.temporaries()


@pytest.fixture
def big_tree(tmp_path) -> Path:
    src = tmp_path / "big"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(os.urandom(12_000_000))
    return src


@pytest.fixture
def small_tree(tmp_path) -> Path:
    """Files the writer's workers read in batches (writer.READ_IN_WORKER): 48 MB of 8 KB
    files, enough for two packs and a third being filled when the writer is killed."""
    src = tmp_path / "small"
    for i in range(6000):
        sub = src / f"d{i // 500}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.bin").write_bytes(os.urandom(8_000))
    return src


@pytest.mark.parametrize("shape", ["big_tree", "small_tree"])
def test_killed_backup_then_backup_is_the_size_of_a_clean_one(repo, request, tmp_path, shape):
    tree = request.getfixturevalue(shape)
    _kill_a_backup(repo, tree)
    left = Repository.open(repo.url, PASSPHRASE)
    info = backup(left, tree)
    clean = Repository.init(str(tmp_path / "clean"), PASSPHRASE)
    backup(clean, tree)
    size, clean_size = _repo_bytes(repo.url), _repo_bytes(clean.url)
    assert abs(size - clean_size) <= 0.10 * clean_size, (size, clean_size)
    assert left.backend.temporaries() == [] and left.backend.list("locks") == {}
    after = left.check(read_data=True)
    assert after.ok and after.unreferenced_bytes == 0 and after.leftover_files == 0
    left.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)


def test_check_reports_what_a_killed_backup_left(repo, big_tree):
    _kill_a_backup(repo, big_tree)
    report = Repository.open(repo.url, PASSPHRASE).check()
    # not an error (no snapshot is damaged), but never silent: packs in no index and the
    # pack that was being filled
    assert report.ok and report.leftover_files >= 3
    assert report.unreferenced_bytes >= 2 * 16 * 1024 * 1024


def test_a_dead_writers_pack_nothing_uses_is_removed(repo, big_tree, tmp_path):
    _kill_a_backup(repo, big_tree, packs=1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.txt").write_text("unrelated data\n")
    again = Repository.open(repo.url, PASSPHRASE)
    backup(again, other)
    report = again.check(read_data=True)
    assert report.ok and report.unreferenced_bytes == 0, report
    clean = Repository.init(str(tmp_path / "clean"), PASSPHRASE)
    backup(clean, other)
    assert _repo_bytes(repo.url) <= 1.10 * _repo_bytes(clean.url)


def test_garbage_of_a_forgotten_snapshot_is_reported(repo, tree):
    first = backup(repo, tree)
    (tree / "random.bin").write_bytes(os.urandom(2_000_000))
    backup(repo, tree)
    assert repo.check().unreferenced_bytes == 0
    repo.forget([first.id])
    report = repo.check()
    assert report.ok and report.unreferenced_bytes >= 2_000_000 and report.leftover_files == 0
    repo.prune(None)
    assert repo.check().unreferenced_bytes < report.unreferenced_bytes


def test_damage_found_by_verify_is_stored_again_by_the_next_backup(repo, tree, tmp_path):
    old = backup(repo, tree)
    entry = next(e for e in repo.files(old.id) if e.path == "random.bin")
    damage_chunk(repo, entry.chunks[0])
    assert not repo.check(read_data=True).ok

    # another process: the record of the damage is in the repository, not in memory
    again = Repository.open(repo.url, PASSPHRASE)
    new = backup(again, tree)
    assert new.added_bytes > 0
    assert again.check(read_data=True, snapshot_id=new.id).ok
    again.restore(new.id, tmp_path / "new")
    assert tree_bytes(tmp_path / "new") == tree_bytes(tree)
    # the old snapshot shares the chunk: it reads the new copy and is whole again too
    third = Repository.open(repo.url, PASSPHRASE)
    assert third.check(read_data=True, snapshot_id=old.id).ok
    # the damaged copy is garbage now: prune removes it and the whole repository is clean
    third.prune(None)
    final = Repository.open(repo.url, PASSPHRASE).check(read_data=True)
    assert final.ok and final.unreferenced_bytes == 0, final


def test_damage_marks_survive_a_prune_that_keeps_the_pack(repo, tree):
    info = backup(repo, tree)
    entry = next(e for e in repo.files(info.id) if e.path == "random.bin")
    damage_chunk(repo, entry.chunks[-1])
    repo.check(read_data=True)
    (tree / "extra.bin").write_bytes(os.urandom(300_000))
    repo.forget([info.id])  # its other chunks are still used by nothing: prune rewrites
    backup(repo, tree)  # stores the damaged chunk again
    repo.prune(None)
    again = Repository.open(repo.url, PASSPHRASE)
    assert again.check(read_data=True).ok


def test_repair_after_a_flipped_index_byte(repo, tree, tmp_path):
    info = backup(repo, tree)
    [name] = repo.backend.list("index")
    path = Path(repo.url, name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    broken = Repository.open(repo.url, PASSPHRASE)
    report = broken.check()
    assert not report.ok and all(name in e for e in report.errors), report.errors
    # the packs' own headers stand in for the damaged index: everything still restores
    broken.restore(info.id, tmp_path / "before")
    assert tree_bytes(tmp_path / "before") == tree_bytes(tree)
    report = broken.repair()
    assert report.packs >= 1 and report.lost == [] and report.damaged_files == []
    fixed = Repository.open(repo.url, PASSPHRASE)
    assert fixed.check(read_data=True).ok
    fixed.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)


def test_repair_drops_damaged_chunks_and_names_what_is_lost(repo, tree, tmp_path):
    info = backup(repo, tree)
    entry = next(e for e in repo.files(info.id) if e.path == "random.bin")
    damage_chunk(repo, entry.chunks[0])
    report = repo.repair(read_data=True)
    assert report.dropped_chunks == 1
    assert report.damaged_files == [{"snapshot": info.id, "path": "random.bin"}]
    assert [(d["path"], d["snapshots"]) for d in report.lost] == [("random.bin", [info.id])]
    # a backup of the same data stores the chunk again: nothing is lost any more
    backup(repo, tree)
    again = repo.repair()
    assert again.lost == [] and again.damaged_files == []
    assert Repository.open(repo.url, PASSPHRASE).check(read_data=True).ok


def test_damaged_snapshot_file_is_named(repo, tree):
    info = backup(repo, tree)
    path = Path(repo.url, "snapshots", info.id)
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x01  # in its header, which a listing reads (a damaged piece: test_faults)
    path.write_bytes(bytes(data))
    again = Repository.open(repo.url, PASSPHRASE)
    assert again.snapshots() == []
    unreadable = again.unreadable_snapshots()
    assert list(unreadable) == [info.id] and "damaged" in unreadable[info.id]
    with pytest.raises(RepoError, match=f"no readable snapshot.*snapshots/{info.id}"):
        again.find_snapshot("latest")
    assert again.repair().damaged_snapshots == unreadable
    again.forget([info.id[:8]])  # a damaged snapshot can be forgotten
    assert again.unreadable_snapshots() == {}


def test_partial_restore_restores_every_intact_file(repo, tree, tmp_path):
    info = backup(repo, tree)
    entry = next(e for e in repo.files(info.id) if e.path == "random.bin")
    damage_chunk(repo, entry.chunks[0])
    whole = tmp_path / "whole"
    with pytest.raises(RepoError, match="Cannot restore random.bin.*nothing was restored"):
        repo.restore(info.id, whole)
    assert not whole.exists() or not any(whole.iterdir())
    out = tmp_path / "out"
    stats = repo.restore(info.id, out, partial=True)
    assert [p for p, _ in stats.damaged] == ["random.bin"]
    assert "fails authentication" in stats.damaged[0][1]
    expected = {k: v for k, v in tree_bytes(tree).items() if k != "random.bin"}
    assert tree_bytes(out) == expected and stats.files == len(expected)
