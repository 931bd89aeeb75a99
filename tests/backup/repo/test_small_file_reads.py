"""Small files are read by the writer's workers, whole, in batches (writer.py,
READ_IN_WORKER): each file keeps its own bytes and place, and what happens to a file between
the walk's listing and a worker's read is handled as when the walk read it itself. Each test
runs with the batches read by threads and by worker processes (batchseal.py)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tracemalloc

import pytest

from sctk.backup.repo import RepoError
from sctk.backup.repo import writer as writer_mod
from tests.backup.repo.conftest import backup, tree_bytes


def _tree_across_batches(root, seed: int = 3) -> None:
    """Sizes on both sides of every boundary the writer draws: empty, one byte, batches
    filled by count and by bytes, the worker-read limit and the largest chunk."""
    rnd = random.Random(seed)
    limit = writer_mod.READ_IN_WORKER
    sizes = [0, 1, 4096, limit - 1, limit, limit + 1, 4 * 1024 * 1024 + 17]
    sizes += [rnd.randrange(0, 20_000) for _ in range(3 * writer_mod.BATCH_FILES)]
    sizes += [rnd.randrange(200_000, 600_000) for _ in range(6)]
    rnd.shuffle(sizes)
    for i, size in enumerate(sizes):
        path = root / f"d{i % 5}" / f"f{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        # half compressible, so both stored forms are in the batches
        data = rnd.randbytes(size) if i % 2 else (b"row %d\n" % i) * (size // 7 + 1)
        path.write_bytes(data[:size])


@pytest.fixture(params=[False, True], ids=["threads", "processes"])
def procs(request) -> bool:
    """Whether worker processes (True) or threads (False) read the batches."""
    return request.param


def test_files_of_every_size_across_batches_restore_byte_for_byte(repo, tmp_path, procs):
    src = tmp_path / "src"
    _tree_across_batches(src)
    info = backup(repo, src, processes=procs)
    want = tree_bytes(src)
    assert info.files == len(want)
    for entry in repo.files(info.id):
        assert entry.sha256 == hashlib.sha256(want[entry.path][0]).hexdigest(), entry.path
        assert entry.size == len(want[entry.path][0])
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == want
    assert repo.check(read_data=True).ok


def test_add_file_of_a_small_file_returns_its_entry_complete(repo, tmp_path, procs):
    src = tmp_path / "one.txt"
    src.write_bytes(b"a few bytes")
    with repo.writer(processes=procs) as w:
        entry = w.add_file("one.txt", src)
        # read by a worker, yet whole when add_file returns
        assert entry.size == 11 and entry.sha256 == hashlib.sha256(b"a few bytes").hexdigest()
        assert len(entry.chunks) == 1
        w.commit("manual", {})


def _deleting(victim):
    """An exclude hook that deletes VICTIM when the walk reaches the next file: by then the
    walk has listed VICTIM and put it in a batch no worker has read yet."""

    def exclude(path: str) -> bool:
        if path == "b.txt" and victim.exists():
            victim.unlink()
        return False

    return exclude


@pytest.mark.parametrize("collect", [True, False])
def test_a_file_deleted_after_the_walk_listed_it_is_left_out(repo, tmp_path, collect, procs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"gone before it was read")
    (src / "b.txt").write_bytes(b"stays")
    with repo.writer(processes=procs) as w:
        got = w.add_tree(src, exclude=_deleting(src / "a.txt"), collect=collect)
        info = w.commit("manual", {})
    if collect:
        assert [e.path for e in got] == ["b.txt"]
    else:
        assert got == 1
    assert info.files == 1
    assert [e.path for e in repo.files(info.id)] == ["b.txt"]
    assert repo.check(read_data=True).ok


def test_a_file_replaced_by_a_directory_before_its_read_fails_the_backup_naming_it(
    repo, tmp_path, procs
):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"becomes a directory")
    (src / "b.txt").write_bytes(b"stays")

    def exclude(path: str) -> bool:
        if path == "b.txt" and (src / "a.txt").is_file():
            (src / "a.txt").unlink()
            (src / "a.txt").mkdir()
        return False

    with (
        pytest.raises(RepoError, match=r"a\.txt is a directory"),
        repo.writer(processes=procs) as w,
    ):
        w.add_tree(src, exclude=exclude)
        w.commit("manual", {})
    assert repo.snapshots() == []
    shutil.rmtree(src / "a.txt")
    (src / "a.txt").write_bytes(b"a file again")
    info = backup(repo, src)  # the failed run left nothing in the way
    assert sorted(e.path for e in repo.files(info.id)) == ["a.txt", "b.txt"]
    assert repo.check(read_data=True).ok


@pytest.mark.parametrize("size_at_stat", [10, 100_000], ids=["worker", "walking-thread"])
def test_a_small_file_grown_huge_since_its_stat_is_streamed_not_read_whole(
    repo, tmp_path, size_at_stat, procs
):
    """A file of a few bytes (read by a worker) or of a few hundred KB (read at once by the
    walking thread) at its stat may be tens of MB by its read: it is stored whole and right,
    and never held whole in memory (the reads up to its stat's size grew to its end)."""
    src = tmp_path / "src"
    src.mkdir()
    grows = src / "grows.bin"
    grows.write_bytes(random.Random(1).randbytes(size_at_stat))
    st = os.stat(grows)  # the walk's stat, taken before the file grew
    grown = 48 * 1024 * 1024
    with open(grows, "ab") as fh:
        fh.write(random.Random(2).randbytes(grown - size_at_stat))
    tracemalloc.start()
    try:
        with repo.writer(processes=procs) as w:
            f = w._queue_file("grows.bin", str(grows), st)
            w._drain_all()
            info = w.commit("manual", {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.entry.size == grown and len(f.entry.chunks) > 1
    # the old reads held the file whole and copied it once more as it grew: twice its size
    assert peak < grown // 2, f"peak {peak >> 20} MiB for a {grown >> 20} MiB file"
    repo.restore(info.id, tmp_path / "out")
    assert (tmp_path / "out" / "grows.bin").read_bytes() == grows.read_bytes()
    assert repo.check(read_data=True).ok
