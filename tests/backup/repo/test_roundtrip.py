"""Round trips: a tree in and out byte for byte, dedup, one-file restore, streams, URLs."""

from __future__ import annotations

import hashlib
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sctk.backup.repo import RepoError, Repository
from tests.backup.repo.conftest import PASSPHRASE, backup, make_tree, tree_bytes


def test_tree_round_trip_keeps_bytes_and_modes(repo, tree, tmp_path):
    info = backup(repo, tree)
    assert len(info.id) == 64 and info.files == 5
    assert info.time.tzinfo is not None and info.manifest == {"label": "manual"}
    assert info.size == sum(len(d) for d, _ in tree_bytes(tree).values())
    # A fresh open reads everything from the repository alone.
    again = Repository.open(repo.url, PASSPHRASE)
    assert [s.id for s in again.snapshots()] == [info.id]
    stats = again.restore(info.id, tmp_path / "out")
    assert stats.files == 5 and stats.bytes == info.size
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)
    # nothing else (no staging directory) is left in the target
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deep",
        "keys",
        "random.bin",
        "text",
    ]
    entries = {e.path: e for e in again.files(info.id[:8])}
    data = (tree / "text/table.csv").read_bytes()
    assert entries["text/table.csv"].sha256 == hashlib.sha256(data).hexdigest()
    assert entries["text/table.csv"].mode == 0o640
    assert entries["text/empty.txt"].chunks == []
    assert again.check(read_data=True).ok


def test_second_backup_of_same_data_adds_almost_nothing(repo, tree):
    first = backup(repo, tree)
    second = backup(repo, tree)
    assert first.added_bytes > 1_000_000
    assert second.added_bytes == 0
    assert len(repo.backend.list("data")) == len(repo.index.pack_sizes)


def test_five_percent_change_adds_about_five_percent(repo, tmp_path):
    rnd = random.Random(7)
    root = tmp_path / "big"
    root.mkdir()
    for i in range(20):
        (root / f"f{i:02d}.bin").write_bytes(rnd.randbytes(1_000_000))
    first = backup(repo, root)
    (root / "f03.bin").write_bytes(rnd.randbytes(1_000_000))  # 1 of 20 files: 5%
    second = backup(repo, root)
    ratio = second.added_bytes / first.added_bytes
    assert 0.03 < ratio < 0.10, ratio
    # an edit in the middle of one large file re-stores only the chunks around it
    big = tmp_path / "large"
    big.mkdir()
    blob = bytearray(rnd.randbytes(40_000_000))
    (big / "data.bin").write_bytes(blob)
    base = backup(repo, big)
    blob[20_000_000:20_000_100] = b"\0" * 100
    (big / "data.bin").write_bytes(blob)
    edit = backup(repo, big)
    assert edit.added_bytes < base.added_bytes * 0.25


def test_one_file_restore_and_read_file(repo, tree, tmp_path):
    info = backup(repo, tree)
    stats = repo.restore(info.id, tmp_path / "one", include=lambda p: p == "text/table.csv")
    assert stats.files == 1
    assert [
        p.relative_to(tmp_path / "one").as_posix()
        for p in (tmp_path / "one").rglob("*")
        if p.is_file()
    ] == ["text/table.csv"]
    assert b"".join(repo.read_file("latest", "random.bin")) == (tree / "random.bin").read_bytes()
    with pytest.raises(RepoError, match="nope.txt is not in snapshot"):
        repo.read_file(info.id, "nope.txt")


def test_add_stream_and_add_file(repo, tmp_path):
    rnd = random.Random(3)
    pieces = [rnd.randbytes(rnd.randrange(1, 300_000)) for _ in range(60)]
    src = tmp_path / "one.bin"
    src.write_bytes(b"abc" * 1000)
    with repo.writer() as w:
        entry = w.add_stream("dump/postgres.sql", iter(pieces), mode=0o600)
        assert entry.size == sum(map(len, pieces))
        fe = w.add_file("config/sctk.toml", src)
        assert fe.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest()
        with pytest.raises(RepoError, match="added twice"):
            w.add_file("config/sctk.toml", src)
        with pytest.raises(RepoError, match="plain relative path"):
            w.add_file("../escape", src)
        info = w.commit("manual", {"parts": ["db"]})
    assert b"".join(repo.read_file(info.id, "dump/postgres.sql")) == b"".join(pieces)


def test_progress_reports_bytes_read(repo, tree):
    seen = []
    with repo.writer(progress=seen.append) as w:
        w.add_tree(tree)
        info = w.commit("manual", {})
    assert seen == sorted(seen) and seen[-1] == info.size


def test_leaving_writer_without_commit_leaves_no_snapshot(repo, tree):
    with pytest.raises(ZeroDivisionError), repo.writer() as w:
        w.add_tree(tree)
        1 / 0  # noqa: B018 - the failure inside the block is the point
    assert repo.snapshots() == []
    assert repo.check().ok
    assert repo.backend.list("locks") == {}


def test_add_tree_skips_symlinks_and_excluded(repo, tree):
    (tree / "link").symlink_to(tree / "random.bin")
    with repo.writer() as w:
        entries = w.add_tree(tree, prefix="data/", exclude=lambda p: p.startswith("data/deep"))
        w.commit("manual", {})
    paths = sorted(e.path for e in entries)
    assert paths == [
        "data/keys/secret.key",
        "data/random.bin",
        "data/text/empty.txt",
        "data/text/table.csv",
    ]


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_urls(tmp_path, tree, scheme):
    url = f"file://{tmp_path}/r" if scheme == "file" else f"memory://rt-{os.getpid()}-{id(tree)}"
    repo = Repository.init(url, PASSPHRASE)
    info = backup(repo, tree, time=datetime(2026, 1, 2, tzinfo=UTC))
    again = Repository.open(url, PASSPHRASE)
    assert again.find_snapshot("latest").time == datetime(2026, 1, 2, tzinfo=UTC)
    again.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)
    assert again.check(read_data=True).ok


def test_verified_markers(repo, tree):
    a = backup(repo, tree)
    assert repo.verified() == {}
    repo.mark_verified(a.id, {"read_data": True})
    repo.mark_verified(a.id, {"read_data": True})
    assert set(repo.verified()) == {a.id}
    assert repo.verified()[a.id].tzinfo is not None


def test_make_tree_is_seeded(tmp_path):
    assert make_tree(tmp_path / "a") == make_tree(tmp_path / "b")
    assert isinstance(tmp_path / "a", Path)


def test_unchanged_files_are_not_read_again(repo, tree, tmp_path):
    backup(repo, tree)
    with repo.writer() as w:
        w.add_tree(tree)
        assert w.skipped_files == 5  # same size, mtime, ctime and inode as in the parent
        w.commit("manual", {})
    # same size and the old mtime put back: the ctime still tells the file changed
    path = tree / "text/table.csv"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[10:20] = b"0123456789"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with repo.writer() as w:
        w.add_tree(tree)
        assert w.skipped_files == 4
        info = w.commit("manual", {})
    assert b"".join(repo.read_file(info.id, "text/table.csv")) == bytes(data)
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)
    assert datetime.now(UTC) >= info.time


def test_a_restore_holds_one_decompressed_chunk_per_file_at_a_time(repo, tmp_path):
    """A file of 4 MiB chunks (zeros: no content-defined cut before the maximum) restored
    while tracing: each chunk is let go once written, before the next one is decompressed
    (two were held at a time: 8 MiB more on one thread)."""
    import tracemalloc

    src = tmp_path / "src"
    src.mkdir()
    (src / "zeros.bin").write_bytes(bytes(40 * 1024 * 1024))
    info = backup(repo, src)
    assert max(r[3] for p in repo.index.pack_blobs for r in repo.index.pack_blobs[p]) == 4 << 20
    tracemalloc.start()
    try:
        repo.restore(info.id, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out" / "zeros.bin").read_bytes() == bytes(40 * 1024 * 1024)
    # the reader's three 1 MiB buffers and one 4 MiB chunk; two chunks held: 11 MiB
    assert peak < 8 * 1024 * 1024, peak


def test_a_rare_large_chunk_is_read_without_growing_the_readers_buffers(repo, tmp_path):
    """Sealed chunks larger than a reader's reused buffers are read into buffers of their own,
    let go afterwards. Buffers grown to the largest chunk met and kept by every thread made a
    restore's peak memory grow with the data: the more chunks, the larger the largest."""
    from sctk.backup.repo import chunkread
    from sctk.backup.repo import restore as restore_mod

    # this repository object's cuts only (the config file keeps the default): 1 to 4 MiB
    repo.config["chunker"] = {"min": 1 << 20, "avg": 2 << 20, "max": 4 << 20}
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(9)
    for i in range(6):  # random bytes: stored uncompressed, every chunk over the buffers
        (src / f"r{i}.bin").write_bytes(rnd.randbytes(3 << 20))
    (src / "z.csv").write_bytes(b"1,2,3\n" * 100_000)  # and compressed ones
    info = backup(repo, src)
    stored = [r[2] for p in repo.index.pack_blobs for r in repo.index.pack_blobs[p]]
    assert min(stored) < chunkread.BUFFER < max(stored)
    run = restore_mod._Restore(repo, info.id, tmp_path / "out", None, None, False)
    try:
        run.stage()
        run.write_files()
        assert run.readers
        assert {(len(r.sealed), len(r.plainbuf)) for r in run.readers} == {
            (chunkread.BUFFER, chunkread.BUFFER)
        }
        run.move_into_place()
    finally:
        run.close()
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)
    assert repo.check(read_data=True).ok


def test_a_restore_keeps_aside_only_the_largest_large_files(repo, tmp_path, monkeypatch):
    """The large files start first, largest first, but only LARGE_KEPT of them are kept
    aside from the listing pass, as paths (an entry with its chunk ids is looked up when its
    turn comes); the others follow in list order, and every file is restored."""
    from sctk.backup.repo import restore as restore_mod

    monkeypatch.setattr(restore_mod, "LARGE_FILE", 1000)
    monkeypatch.setattr(restore_mod, "LARGE_KEPT", 3)
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(4)
    sizes = rnd.sample(range(2000, 60_000), 10)
    for i, size in enumerate(sizes):
        (src / f"f{i:02d}.bin").write_bytes(rnd.randbytes(size))
    (src / "tiny.txt").write_text("tiny")
    info = backup(repo, src)
    started: list[int] = []
    restore_file = restore_mod._Restore.restore_file
    monkeypatch.setattr(
        restore_mod._Restore,
        "restore_file",
        lambda self, e: started.append(e.size) or restore_file(self, e),
    )
    monkeypatch.setattr(restore_mod, "worker_count", lambda: 1)  # started in submission order
    run = restore_mod._Restore(repo, info.id, tmp_path / "out", None, None, False)
    try:
        run.stage()
        largest = sorted(sizes, reverse=True)[:3]
        assert [size for size, _, _ in run.large] == largest
        assert all(isinstance(path, str) for _, _, path in run.large)
        run.write_files()
        run.move_into_place()
    finally:
        run.close()
    assert started[:3] == largest and sorted(started) == sorted([*sizes, 4])
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)


@pytest.mark.parametrize("now", [0, 700, 5000, 3 * 1024 * 1024 + 5])
def test_a_file_that_changed_size_since_the_walk_stat_it_is_stored_as_read(repo, tmp_path, now):
    """A small file is read with one read of its stat's size and a byte more: one that grew
    since (even past the largest chunk) is read to its end, one that shrank as it is."""
    rnd = random.Random(now)
    src = tmp_path / "grows.bin"
    src.write_bytes(rnd.randbytes(1_000))
    st = os.lstat(src)  # what the walk saw
    data = rnd.randbytes(now)
    src.write_bytes(data)
    with repo.writer() as w:
        f = w._queue_file("grows.bin", src, st)
        info = w.commit("manual", {})
    assert f.entry.size == now and f.entry.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(repo.read_file(info.id, "grows.bin")) == data
    assert repo.check(read_data=True).ok
