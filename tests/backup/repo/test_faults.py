"""Corruption and faults: flipped byte, truncated/missing pack, lost index, killed writer,
full disk, locks. Each is detected with a sentence naming the file, nothing is restored from
damaged data, and the repository stays usable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sctk.backup.repo import RepoError, Repository
from tests.backup.repo.conftest import PASSPHRASE, backup, make_tree, tree_bytes
from tests.helpers import wait_until


def _packs(repo) -> list[Path]:
    return sorted(Path(repo.url, n) for n in repo.backend.list("data"))


def _pack_of(repo, info, path) -> Path:
    entry = next(e for e in repo.files(info.id) if e.path == path)
    pack = repo.index.entries[entry.chunks[0]][0]
    return Path(repo.url, "data", pack[:2], pack)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_is_named_and_never_restored(repo, tree, tmp_path):
    info = backup(repo, tree)
    pack = _pack_of(repo, info, "random.bin")
    entry = next(e for e in repo.files(info.id) if e.path == "random.bin")
    _pid, off, _len, _raw, _flags = repo.index.entries[entry.chunks[0]]
    _flip(pack, off + 100)

    assert repo.check().ok  # same size: only reading the data can tell
    report = repo.check(read_data=True)
    assert not report.ok
    assert any(pack.name in e and "damaged" in e for e in report.errors), report.errors
    assert any("random.bin" in e for e in report.errors)

    with pytest.raises(RepoError, match=f"Cannot read random.bin.*{pack.name}"):
        b"".join(repo.read_file(info.id, "random.bin"))
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("previous")
    with pytest.raises(RepoError, match="nothing was restored"):
        repo.restore(info.id, target)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]  # nothing partial
    # the other files are still readable
    table = b"".join(repo.read_file(info.id, "text/table.csv"))
    assert table == (tree / "text/table.csv").read_bytes()

    # repair: drop the damaged chunks from the index; a new backup stores them again
    repo.repair_index(verify=True)
    fresh = backup(repo, tree)
    assert repo.check(read_data=True, snapshot_id=fresh.id).ok
    repo.restore(fresh.id, tmp_path / "fresh")
    assert tree_bytes(tmp_path / "fresh") == tree_bytes(tree)
    # the chunk stored again has the same id: the old snapshot is whole again too
    assert repo.check(read_data=True).ok
    repo.restore(info.id, tmp_path / "old")
    assert tree_bytes(tmp_path / "old") == tree_bytes(tree)
    repo.prune(None)
    assert repo.check(read_data=True).ok


def test_lost_pack_prune_refuses_until_damaged_snapshot_forgotten(repo, tree, tmp_path):
    info = backup(repo, tree)
    pack = _pack_of(repo, info, "random.bin")
    pack.unlink()
    assert not repo.check().ok
    with pytest.raises(RepoError, match="damaged.*prune refuses"):
        repo.prune(None)
    repo.forget([info.id])
    # the lost pack is still listed by the index, but nothing needs it: prune drops it
    assert [e for e in repo.check().errors if "missing" in e]
    report = repo.prune(None)
    assert report.deleted_packs >= 1
    assert repo.check(read_data=True).ok


def test_flipped_byte_in_pack_header(repo, tree):
    backup(repo, tree)
    pack = _packs(repo)[0]
    _flip(pack, pack.stat().st_size - 10)
    report = repo.check(read_data=True)
    assert not report.ok and any(pack.name in e for e in report.errors), report.errors


def test_truncated_pack_is_caught_by_structure_check(repo, tree, tmp_path):
    info = backup(repo, tree)
    pack = _pack_of(repo, info, "random.bin")
    with open(pack, "r+b") as fh:
        fh.truncate(pack.stat().st_size // 2)
    report = repo.check()
    assert not report.ok
    assert any(
        f"Pack data/{pack.name[:2]}/{pack.name} has" in e and "truncated" in e
        for e in report.errors
    ), report.errors
    assert any(f"Snapshot {info.id[:12]}: file random.bin is damaged" in e for e in report.errors)
    with pytest.raises(RepoError, match="truncated"):
        repo.restore(info.id, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # a new backup stores the lost chunks again and is whole
    fresh = backup(repo, tree)
    assert fresh.added_bytes > 0
    assert repo.check(read_data=True, snapshot_id=fresh.id).ok
    repo.restore(fresh.id, tmp_path / "fresh")
    assert tree_bytes(tmp_path / "fresh") == tree_bytes(tree)


def test_missing_pack(repo, tree, tmp_path):
    info = backup(repo, tree)
    pack = _pack_of(repo, info, "random.bin")
    pack.unlink()
    report = repo.check()
    assert not report.ok
    assert any(pack.name in e and "missing" in e for e in report.errors), report.errors
    with pytest.raises(RepoError, match="missing"):
        repo.restore(info.id, tmp_path / "out")
    with pytest.raises(RepoError, match="damaged"):
        repo.prune(None)
    fresh = backup(repo, tree)
    assert repo.check(read_data=True, snapshot_id=fresh.id).ok
    # the chunks stored again heal the old snapshot too; prune drops the lost pack
    repo.prune(None)
    assert repo.check(read_data=True).ok
    repo.restore(info.id, tmp_path / "old")
    assert tree_bytes(tmp_path / "old") == tree_bytes(tree)


def test_missing_index_and_repair(repo, tree, tmp_path):
    info = backup(repo, tree)
    for name in repo.backend.list("index"):
        repo.backend.delete(name)
    again = Repository.open(repo.url, PASSPHRASE)
    report = again.check()
    assert not report.ok
    assert any("is in no index" in e for e in report.errors), report.errors
    assert again.repair_index() >= 1
    assert again.check(read_data=True).ok
    again.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)


def test_damaged_index_file_is_named(repo, tree):
    backup(repo, tree)
    name = next(iter(repo.backend.list("index")))
    path = Path(repo.url, name)
    _flip(path, 20)
    report = Repository.open(repo.url, PASSPHRASE).check()
    assert not report.ok and any(name in e for e in report.errors), report.errors


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sctk.backup.repo import Repository
    repo = Repository.open(sys.argv[1], sys.argv[2])
    said = False
    def progress(n):
        global said
        if n > 40_000_000 and not said:
            said = True
            print("halfway", flush=True)
            sys.stdin.readline()  # wait here until killed
    with repo.writer(progress=progress) as w:
        w.add_tree(Path(sys.argv[3]))
        w.commit("manual", {})
    """
)


def test_writer_killed_leaves_no_snapshot_and_prune_collects(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(os.urandom(10_000_000))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, repo.url, PASSPHRASE, str(src)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "halfway"
        wait_until(lambda: len(repo.backend.list("data")) >= 1, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert repo.backend.list("locks")  # the dead writer's lock is still there
    again = Repository.open(repo.url, PASSPHRASE)
    assert again.snapshots() == []
    assert again.check(read_data=True).ok
    orphans = again.backend.list("data")
    assert orphans and not again.index.pack_sizes
    report = again.prune(None)  # clears the stale lock, deletes the orphan packs
    assert report.deleted_packs == len(orphans)
    assert again.backend.list("data") == {} and again.backend.list("locks") == {}
    assert again.backend.temporaries() == []
    info = backup(again, src)
    assert again.check(read_data=True).ok and info.files == 6


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize(
    "shape,processes",
    [("one large file", None), ("many small files", False), ("many small files", True)],
    ids=["one large file", "many small files", "many small files, worker processes"],
)
def test_full_disk(small_disk, tmp_path, shape, processes):
    """A disk that fills during a backup: one sentence, nothing left behind, the repository
    sound and usable. Small files' chunks are gathered before they are written (packs.py
    WRITE_BUFFER), so there the failure comes from a later write than the chunk's own."""
    repo = Repository.init(str(small_disk / "repo"), PASSPHRASE)
    src = tmp_path / "src"
    src.mkdir()
    if shape == "one large file":
        (src / "big.bin").write_bytes(os.urandom(20_000_000))
    else:
        for i in range(5000):
            (src / f"f{i:05d}.bin").write_bytes(os.urandom(4000))
    with pytest.raises(RepoError, match="No space left on the device holding repository"):
        backup(repo, src, processes=processes)
    assert repo.snapshots() == []
    assert repo.check(read_data=True).ok
    assert repo.backend.temporaries() == []
    small = tmp_path / "small"
    make_tree(small, big=1_000_000)
    info = backup(repo, small)  # still usable
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(small)


def test_disk_full_in_the_commit_after_the_sealing_workers_stopped(
    small_disk, tmp_path, monkeypatch
):
    """The workers stop when the commit begins; the disk then fills as the index is written:
    one sentence, no worker left, no snapshot, and the repository still takes a backup."""
    import psutil

    from sctk.backup.repo import writer as writer_module

    repo = Repository.init(str(small_disk / "repo"), PASSPHRASE)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"f{i:05d}.bin").write_bytes(os.urandom(300))
    real = writer_module.write_index
    seen: list[int] = []
    others = {p.pid for p in psutil.Process().children()}  # earlier tests' in this process

    def ours() -> list:
        return [p for p in psutil.Process().children() if p.pid not in others]

    def fill_then_write(*args, **kwargs):
        seen.append(len(ours()))
        with open(small_disk / "filler", "wb") as f:  # every byte left on the device
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        return real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_index", fill_then_write)
    with pytest.raises(RepoError, match="No space left on the device holding repository"):
        backup(repo, src, processes=True)
    assert seen == [0]  # the workers had exited before the index was written
    assert ours() == []
    assert repo.snapshots() == []
    (small_disk / "filler").unlink()
    monkeypatch.setattr(writer_module, "write_index", real)
    assert repo.check(read_data=True).ok
    small = tmp_path / "small"
    make_tree(small, big=1_000_000)
    info = backup(repo, small)
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(small)


def test_stale_lock_is_cleared(repo, tree):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    repo.backend.write(
        "locks/" + "ab" * 16,
        f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}", "time": "t", '
        f'"exclusive": true, "started": {time.time() - 5}}}'.encode(),
    )
    info = backup(repo, tree)
    assert info.files == 5
    assert repo.backend.list("locks") == {}


def test_live_lock_is_refused(repo, tree):
    other = Repository.open(repo.url, PASSPHRASE)
    with other.writer() as w:
        with pytest.raises(RepoError, match=f"locked exclusively by pid {os.getpid()} on host"):
            backup(repo, tree)
        with pytest.raises(RepoError, match="locked exclusively"):
            repo.check()
        w.add_tree(tree)
        w.commit("manual", {})
    # readers share
    third = Repository.open(repo.url, PASSPHRASE)
    with other.lock(exclusive=False), repo.lock(exclusive=False):
        assert repo.check().ok
        with pytest.raises(RepoError, match="locked for reading"):
            third.forget([])
        with pytest.raises(RepoError, match="held for reading by this process"):
            repo.forget([])
    # a lock from another host is never taken for stale
    repo.backend.write(
        "locks/" + "cd" * 16,
        b'{"pid": 1, "host": "elsewhere.example", "time": "t", "exclusive": true}',
    )
    with pytest.raises(RepoError, match="on host elsewhere.example"):
        backup(repo, tree)


def test_damaged_snapshot_file_is_named_and_others_stay_usable(repo, tree, tmp_path):
    good = backup(repo, tree, label="good")
    (tree / "new.txt").write_text("new")
    bad = backup(repo, tree, label="bad")
    _flip(Path(repo.url, "snapshots", bad.id), -30)  # in the header: a listing reads it
    again = Repository.open(repo.url, PASSPHRASE)
    assert [s.id for s in again.snapshots()] == [good.id]
    with pytest.raises(RepoError, match=f"snapshot file snapshots/{bad.id} is damaged"):
        again.find_snapshot(bad.id[:8])
    report = again.check()
    assert not report.ok and any(bad.id in e for e in report.errors), report.errors
    again.restore(good.id, tmp_path / "out")
    assert (tmp_path / "out" / "random.bin").read_bytes() == (tree / "random.bin").read_bytes()


def test_damaged_piece_of_a_file_list_is_named_when_read(repo, tree, tmp_path):
    """A listing reads headers only, so a snapshot whose file list is damaged is listed; its
    files cannot be read (restore, check and the next backup's parent say so) and the other
    snapshots stay usable."""
    good = backup(repo, tree, label="good")
    (tree / "new.txt").write_text("new")
    bad = backup(repo, tree, label="bad")
    _flip(Path(repo.url, "snapshots", bad.id), 30)  # in the first piece of its file list
    again = Repository.open(repo.url, PASSPHRASE)
    assert [s.id for s in again.snapshots()] == [good.id, bad.id]
    with pytest.raises(RepoError, match=f"snapshot file snapshots/{bad.id} is damaged"):
        again.restore(bad.id, tmp_path / "bad")
    report = again.check()
    assert not report.ok and any(bad.id in e for e in report.errors), report.errors
    again.restore(good.id, tmp_path / "out")
    assert (tmp_path / "out" / "new.txt").exists() is False
    assert (tmp_path / "out" / "random.bin").read_bytes() == (tree / "random.bin").read_bytes()
    third = backup(again, tree, label="third")  # the damaged parent: everything read again
    assert third.files == bad.files and again.check().errors == report.errors
