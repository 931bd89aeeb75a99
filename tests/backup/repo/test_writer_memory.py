"""The writer's memory does not grow with the number of chunks it stores: the rows of the
packs it wrote wait on local disk for the index files, the ids it stored are kept in about
33 bytes each, and the index learns the new packs as a sorted file; and what grows with the
size of the chunks seen (a thread's sealing buffer) stops at the largest chunk."""

from __future__ import annotations

import os
import random
import tracemalloc
from pathlib import Path

import pytest

from sctk.backup.repo import Repository, filelist, index, packs, sortedindex, storedids
from sctk.backup.repo.compression import FilePolicy
from tests.backup.repo.conftest import PASSPHRASE, tree_bytes


def _files(root: Path, n: int) -> None:
    """N small files of distinct random bytes: a chunk each."""
    for i in range(n):
        p = root / f"d{i // 500:03d}" / f"f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(64 + i % 200))


def test_chunk_set_finds_every_id_before_and_after_folding(monkeypatch):
    monkeypatch.setattr(storedids.StoredIds, "RECENT", 4)
    ids = [os.urandom(32).hex() for _ in range(23)]
    found = storedids.StoredIds()
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
    monkeypatch.setattr(storedids.StoredIds, "RECENT", 1)  # every id folded as it is added
    x = "abcd" + "00" * 28 + "abcd"
    y = "abcd" * 15 + "0000"
    found = storedids.StoredIds()
    found.add(x)
    found.add(y)
    assert found.slots[0xABC] == bytes.fromhex(x + y)
    across = "abcd" * 16  # x's last two bytes and y's first 30: slot 0xabc, offset 30
    assert bytes.fromhex(x + y).find(bytes.fromhex(across)) == 30
    assert across not in found
    found.add(across)
    assert all(c in found for c in (x, y, across))


def test_a_full_slot_is_split_and_every_id_is_still_found(monkeypatch):
    """A slot past SLOT_IDS becomes 16 strings by the fourth hex digit; ids added after
    go to theirs, and an id that matches across two neighbours is still no id."""
    monkeypatch.setattr(storedids.StoredIds, "RECENT", 3)
    monkeypatch.setattr(storedids.StoredIds, "SLOT_IDS", 4)
    rnd = random.Random(5)
    ids = ["abc" + "".join(rnd.choice("0123456789abcdef") for _ in range(61)) for _ in range(40)]
    ids += ["abc1" + "00" * 28 + "abc1", "abc1" * 15 + "0000"]  # neighbours in sub-string 1
    found = storedids.StoredIds()
    for cid in ids:
        found.add(cid)
    slot = found.slots[0xABC]
    assert isinstance(slot, list) and len(slot) == 16
    assert all(len(part) % 32 == 0 for part in slot) and sum(map(len, slot)) == 32 * len(ids)
    assert all(c in found for c in ids)
    assert "abc1" * 16 not in found and ("abc" + "0" * 61) not in found
    assert found.slots[0x123] == b""  # the other slots are untouched
    for cid in ("abc1" * 16, "abc" + "0" * 61, "abd" + "0" * 61):
        found.add(cid)
    found._fold()
    assert all(c in found for c in [*ids, "abc1" * 16, "abc" + "0" * 61, "abd" + "0" * 61])


def test_stored_ids_take_under_40_bytes_an_id_at_50_000_ids():
    """One byte string per four hex digits took ~66 bytes an id here (most held one id and
    its ~40 bytes of object header and list slot); slots by three digits hold ~12 each."""
    ids = [os.urandom(32).hex() for _ in range(50_000)]
    tracemalloc.start()
    try:
        found = storedids.StoredIds()
        for cid in ids:
            found.add(cid)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 40 * len(ids), held / len(ids)
    assert all(c in found for c in ids[::101])


def test_a_sealing_buffer_stops_at_the_largest_chunk(tmp_path):
    """A thread's sealing buffer grows by doubling, capped at the largest chunk (plus the
    tag): doubling from 2.1 MiB for a chunk of 4 MiB would make it 4.2 MiB."""
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE)
    most = repo.config["chunker"]["max"]
    raw = FilePolicy(trials=False)  # level 3, stored raw: random bytes do not compress
    with repo.writer() as w:
        for size in (most // 2 + 100_000, most):
            w._process(os.urandom(size), raw, False)  # on this thread: its buffer is ours
            assert len(w._local.sealed) <= most + 16
        assert len(w._local.sealed) == most + 16
        w.commit("sealed", {})
    assert len(repo.index.entries) == 2


def test_chunk_set_readers_find_every_added_id_while_it_folds(monkeypatch):
    """Worker threads ask while the adding thread folds and splits slots: an id once added
    is never missed (a miss would store the chunk twice or, worse, race a fold that empties
    the set first)."""
    import threading

    monkeypatch.setattr(storedids.StoredIds, "RECENT", 64)
    monkeypatch.setattr(storedids.StoredIds, "SLOT_IDS", 2)  # slots split as readers search
    found = storedids.StoredIds()
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
    monkeypatch.setattr(storedids.StoredIds, "RECENT", 256)
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
            # threads for both: past 2,048 small files the automatic choice starts worker
            # processes, whose answers in flight (up to PROCESS_WINDOW_FILES files' sealed
            # bytes, as many as arrive while the pack is written) are no chunk's row or id
            with repo.writer(processes=False) as w:
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
