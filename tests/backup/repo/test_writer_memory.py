"""The writer's memory does not grow with the number of chunks it stores: the rows of the
packs it wrote wait on local disk for the index files, the ids it stored are kept in 32
bytes each, and the index learns the new packs as a sorted file."""

from __future__ import annotations

import os
import random
import tracemalloc
from pathlib import Path

import pytest

from sctk.backup.repo import Repository, filelist, index, packs, sortedindex, writer
from tests.backup.repo.conftest import PASSPHRASE, tree_bytes


def _files(root: Path, n: int) -> None:
    """N small files of distinct random bytes: a chunk each."""
    for i in range(n):
        p = root / f"d{i // 500:03d}" / f"f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(64 + i % 200))


def test_chunk_set_finds_every_id_before_and_after_folding(monkeypatch):
    monkeypatch.setattr(writer._ChunkSet, "RECENT", 4)
    ids = [os.urandom(32).hex() for _ in range(23)]
    found = writer._ChunkSet()
    for i, cid in enumerate(ids):
        found.add(cid)
        assert all(c in found for c in ids[: i + 1])
        assert not any(c in found for c in ids[i + 1 :])
    assert len(found) == 23 and found.folded == 20 and len(found.recent) == 3
    # ids ending in zero bytes are kept whole (fixed-length keys)
    zero = "ab" + "00" * 31
    assert zero not in found and ("ab" + "00" * 30 + "01") not in found
    for c in (zero, "00" * 32, "ff" * 32, "00" * 31 + "01"):
        found.add(c)
    assert all(c in found for c in (zero, "00" * 32, "ff" * 32, "00" * 31 + "01"))


def test_chunk_set_counts_a_match_only_on_an_id_boundary(monkeypatch):
    """Ids side by side in a bucket hold, across their boundary, 32 bytes that are no id:
    a search that takes them for one would skip storing a new chunk."""
    monkeypatch.setattr(writer._ChunkSet, "RECENT", 1)  # every id folded as it is added
    x = "abcd" + "00" * 28 + "abcd"
    y = "abcd" * 15 + "0000"
    found = writer._ChunkSet()
    found.add(x)
    found.add(y)
    assert found.buckets[0xABCD] == bytes.fromhex(x + y)
    across = "abcd" * 16  # x's last two bytes and y's first 30: bucket 0xabcd, offset 30
    assert bytes.fromhex(x + y).find(bytes.fromhex(across)) == 30
    assert across not in found
    found.add(across)
    assert all(c in found for c in (x, y, across))


def test_chunk_set_readers_find_every_added_id_while_it_folds(monkeypatch):
    """Worker threads ask while the adding thread folds: an id once added is never missed
    (a miss would store the chunk twice or, worse, race a fold that empties the set first)."""
    import threading

    monkeypatch.setattr(writer._ChunkSet, "RECENT", 64)
    found = writer._ChunkSet()
    ids = [os.urandom(32).hex() for _ in range(20_000)]
    added = 0  # ids[:added] are in the set
    misses: list[str] = []
    done = threading.Event()

    def ask() -> None:
        rnd = random.Random()
        while not done.is_set():
            n = added
            if n:
                cid = ids[rnd.randrange(n)]
                if cid not in found:
                    misses.append(cid)

    readers = [threading.Thread(target=ask) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i, cid in enumerate(ids):
            found.add(cid)
            added = i + 1
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not misses, misses[:3]
    assert len(found) == len(ids) and all(c in found for c in ids[::97])


@pytest.fixture
def small_bounds(monkeypatch):
    """Every bounded buffer small, so what is left to grow is what grows per chunk."""
    monkeypatch.setattr(writer._ChunkSet, "RECENT", 256)
    monkeypatch.setattr(filelist, "PIECE_ENTRIES", 100)
    monkeypatch.setattr(index, "ENTRIES_PER_FILE", 500)
    monkeypatch.setattr(sortedindex, "IN_MEMORY", 1000)
    monkeypatch.setattr(packs, "PACK_CHUNKS", 500)


def test_first_backup_memory_does_not_grow_with_the_chunks(tmp_path, small_bounds):
    def peak(n: int) -> tuple[int, Repository, Path]:
        root = tmp_path / f"src{n}"
        _files(root, n)
        repo = Repository.init(str(tmp_path / f"repo{n}"), PASSPHRASE)
        tracemalloc.start()
        try:
            with repo.writer() as w:
                w.add_tree(root, collect=False)
                info = w.commit("first", {})
            return tracemalloc.get_traced_memory()[1], repo, root, info
        finally:
            tracemalloc.stop()

    few, _, _, _ = peak(1000)
    many, repo, root, info = peak(5000)
    # 4000 chunks more: ~13 MiB more before (their rows and ids held as Python objects, and
    # ~10,000 tiny chunks in flight at once)
    assert many - few < 1 << 20, (few, many)
    assert info.files == 5000
    repo.restore(info.id, tmp_path / "out")  # the new packs found through the sorted file
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)
    again = Repository.open(repo.url, PASSPHRASE)
    chunks = {c for f in again.iter_files(info.id) for c in f.chunks}
    assert len(chunks) == 5000
    assert all(again.index.entries[c] == repo.index.entries[c] for c in chunks)
    for pack in again.index.pack_sizes:
        assert again.index.pack_blobs[pack] == repo.index.pack_blobs[pack]
