"""The sorted chunk index file: the same answers as a dict, in memory that does not grow with
the number of ids, and a clear error for a file that is not one."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sctk.backup.repo.sortedindex import Builder, SortedIndex, SortedIndexError, build, opened


def _packs(n_packs: int, per_pack: int, rnd: random.Random, dup_every: int = 0):
    """Synthetic packs of random chunk ids; every DUP_EVERY-th chunk repeats an earlier id
    (the same chunk stored twice, as after a repack or a crash)."""
    seen: list[str] = []
    packs = []
    for _ in range(n_packs):
        pack = rnd.randbytes(32).hex()
        blobs = []
        for j in range(per_pack):
            if dup_every and seen and j % dup_every == 0:
                cid = rnd.choice(seen)
            else:
                cid = rnd.randbytes(32).hex()
                seen.append(cid)
            blobs.append((cid, j * 4096, 1000 + j, 2000 + j, j & 1))
        packs.append((pack, blobs))
    return packs


def _as_dict(packs) -> dict:
    """What Index.add_pack keeps: the first location given for an id wins."""
    entries: dict = {}
    for pack, blobs in packs:
        for cid, off, length, raw, flags in blobs:
            entries.setdefault(cid, (pack, off, length, raw, flags))
    return entries


def test_lookups_equal_the_dicts_on_random_ids(tmp_path):
    rnd = random.Random(26)
    packs = _packs(400, 50, rnd, dup_every=7)
    entries = _as_dict(packs)
    path = tmp_path / "chunks.idx"
    assert build(path, packs) == len(entries)
    with SortedIndex(path) as index:
        assert len(index) == len(entries)
        for cid in rnd.sample(sorted(entries), 5000):
            assert index.get(cid) == entries[cid] and cid in index
            assert index[cid] == entries[cid]
        for _ in range(5000):
            cid = rnd.randbytes(32).hex()
            assert index.get(cid) is None and cid not in index
        # an id that shares its first bytes with a stored one is still absent
        near = next(iter(entries))[:-2] + "00"
        assert (near in index) == (near in entries)
        with pytest.raises(KeyError):
            index[rnd.randbytes(32).hex()]
        # not a chunk id at all: absent, not an exception
        assert index.get("not hex") is None and "abcd" not in index


def test_an_empty_index_answers_nothing(tmp_path):
    path = tmp_path / "empty.idx"
    assert build(path, []) == 0
    with SortedIndex(path) as index:
        assert len(index) == 0 and index.get("00" * 32) is None


@pytest.mark.parametrize(
    "spoil, why",
    [
        (lambda b: b"NOTANIDX" + b[8:], "is not a sorted chunk index"),
        (lambda b: b[:-5], "has the wrong size"),
        (lambda b: b[:10], "is truncated"),
    ],
)
def test_a_file_that_is_not_a_whole_index_is_refused(tmp_path, spoil, why):
    path = tmp_path / "chunks.idx"
    build(path, _packs(3, 4, random.Random(1)))
    path.write_bytes(spoil(path.read_bytes()))
    with pytest.raises(SortedIndexError, match=why):
        SortedIndex(path)


PROBE = textwrap.dedent(
    """
    import hashlib, json, random, sys
    from pathlib import Path
    from sctk.backup.repo.sortedindex import SortedIndex

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024

    n = int(sys.argv[2])
    ids = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
           for i in random.Random(3).sample(range(n), 100_000)]
    base = hwm()
    index = SortedIndex(Path(sys.argv[1]))
    found = sum(index.get(cid) is not None for cid in ids)
    print(json.dumps({"found": found, "grew": hwm() - base}))
    """
)


def test_opening_a_million_id_index_and_looking_ids_up_takes_little_memory(tmp_path):
    """Measured in a fresh process (its own VmHWM): the table and a bucket, not the file."""
    n = 1_000_000

    def packs():
        for p in range(n // 50):
            yield (
                hashlib.sha256(b"p" + p.to_bytes(8, "little")).hexdigest(),
                [
                    (hashlib.sha256(i.to_bytes(8, "little")).hexdigest(), 0, 1, 1, 0)
                    for i in range(p * 50, p * 50 + 50)
                ],
            )

    path = tmp_path / "million.idx"
    assert build(path, packs()) == n
    assert path.stat().st_size > 45 * n  # the index is on disk, ~49 bytes an id
    src = Path(__file__).resolve().parents[3] / "src"
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(n)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src)},
    ).stdout
    import json

    got = json.loads(out)
    assert got["found"] == 100_000
    # a dict of the same ids holds ~300 MB; the file's table is 128 KiB
    assert got["grew"] < 4 * 1024 * 1024, got


def test_an_index_sorted_through_partition_files_equals_the_dict(tmp_path, monkeypatch):
    """More records than IN_MEMORY go through the partition files: same answers, the first
    location of an id stored twice still wins, and the file equals the one sorted in memory."""
    from sctk.backup.repo import sortedindex

    rnd = random.Random(7)
    packs = _packs(300, 40, rnd, dup_every=5)
    entries = _as_dict(packs)
    small = tmp_path / "small.idx"
    assert build(small, packs) == len(entries)
    monkeypatch.setattr(sortedindex, "IN_MEMORY", 1000)
    spilled = tmp_path / "spilled.idx"
    assert build(spilled, packs) == len(entries)
    assert spilled.read_bytes() == small.read_bytes()
    with SortedIndex(spilled) as index:
        for cid in rnd.sample(sorted(entries), 3000):
            assert index.get(cid) == entries[cid]


NO_NUMPY = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from sctk.backup.repo import sortedindex

    sortedindex.IN_MEMORY = 100
    packs = [("ab" * 32, [(hashlib.sha256(bytes([i, j])).hexdigest(), 0, 1, 1, 0)
                          for j in range(50)]) for i in range(20)]
    assert sortedindex.build(Path(sys.argv[1]), packs) == 1000
    print("numpy" in sys.modules)
    """
)


def test_a_large_index_is_built_without_importing_numpy(tmp_path):
    """numpy's import alone is 12 MiB of resident memory: a repository past IN_MEMORY chunks
    would need that much more in every pass than a smaller one."""
    src = Path(__file__).resolve().parents[3] / "src"
    out = subprocess.run(
        [sys.executable, "-c", NO_NUMPY, str(tmp_path / "x.idx")],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src)},
    ).stdout
    assert out.strip() == "False"


def test_builder_takes_records_one_at_a_time_and_the_first_given_wins(tmp_path):
    """check fills two sorted files as one pass streams by (Builder, then opened())."""
    rnd = random.Random(7)
    keys = [rnd.randbytes(32) for _ in range(70_000)]  # more than IN_MEMORY: spilled
    b = Builder(tmp_path / "b.idx")
    num = b.pack("ab" * 32)
    for i, k in enumerate(keys):
        b.add(k, num, i, 1, 2, 0)
    b.add(keys[5], num, 99, 1, 2, 0)  # a second record of a key: the first one stays
    found = opened(b)
    assert not (tmp_path / "b.idx").exists()  # read through its descriptor only
    assert len(found) == len(keys)
    assert found.get(keys[5].hex()) == ("ab" * 32, 5, 1, 2, 0)
    assert found.get(keys[69_999].hex())[1] == 69_999


def test_lacks_counts_the_keys_of_another_file_missing_here(tmp_path):
    rnd = random.Random(8)
    keys = [rnd.randbytes(32).hex() for _ in range(40_000)]
    build(tmp_path / "all.idx", [("11" * 32, [(k, 0, 1, 1, 0) for k in keys])])
    edge = ["00" * 32, "ff" * 32, "ab" + "00" * 31]  # first and last buckets, trailing NULs
    some = rnd.sample(keys, 20_000) + [rnd.randbytes(32).hex() for _ in range(3)] + edge
    build(tmp_path / "some.idx", [("00" * 32, [(k, 0, 0, 0, 0) for k in some])])
    build(tmp_path / "none.idx", [("00" * 32, [])])
    every, part, empty = (SortedIndex(tmp_path / n) for n in ("all.idx", "some.idx", "none.idx"))
    assert every.lacks(part, block=1000) == 3 + len(edge)
    assert part.lacks(every) == 40_000 - 20_000
    assert every.lacks(every) == 0
    assert every.lacks(empty) == 0 and empty.lacks(part) == len(part)


@pytest.mark.parametrize("n", [500, 40_000])  # in memory, and spilled past IN_MEMORY
def test_a_builder_hears_each_record_dropped_with_the_one_kept(tmp_path, n):
    """check's firsts file learns which contents were noted twice (Builder's on_repeat)."""
    rnd = random.Random(n)
    keys = [rnd.randbytes(32) for _ in range(n)]
    heard: list[tuple[bytes, bytes]] = []
    b = Builder(tmp_path / "b.idx", on_repeat=lambda kept, dropped: heard.append((kept, dropped)))
    num = b.pack("cd" * 32)
    for i, k in enumerate(keys):
        b.add(k, num, i, 7, 0, 0)
    again = rnd.sample(range(n), 50)
    for i in again:  # a second record of a key, and of one of them a third
        b.add(keys[i], num, n + i, 8, 0, 0)
    b.add(keys[again[0]], num, 2 * n, 9, 0, 0)
    found = opened(b)
    assert len(found) == n
    expected = [(keys[i], n + i, 8) for i in again] + [(keys[again[0]], 2 * n, 9)]
    got = [
        (d[:32], int.from_bytes(d[36:40], "little"), int.from_bytes(d[40:44], "little"))
        for _k, d in heard
    ]
    assert sorted(got) == sorted(expected)
    # the record kept is the first given, whole
    assert all(k[:32] == d[:32] and int.from_bytes(k[36:40], "little") < n for k, d in heard)


def test_held_length_sums_the_lengths_of_the_keys_another_file_holds(tmp_path):
    rnd = random.Random(9)
    packs = _packs(3, 15_000, rnd, dup_every=7)
    build(tmp_path / "all.idx", packs)
    every = SortedIndex(tmp_path / "all.idx")
    ids = list(_as_dict(packs))
    some = rnd.sample(ids, 12_000) + [rnd.randbytes(32).hex() for _ in range(5)]
    build(tmp_path / "some.idx", [("00" * 32, [(k, 0, 0, 0, 0) for k in some])])
    build(tmp_path / "none.idx", [("00" * 32, [])])
    part, empty = SortedIndex(tmp_path / "some.idx"), SortedIndex(tmp_path / "none.idx")
    assert every.held_length(part, block=1000) == sum(every.get(k, (0, 0, 0))[2] for k in some)
    assert every.held_length(every) == sum(every[k][2] for k in ids)
    assert every.held_length(empty) == 0 and empty.held_length(part) == 0


def test_comparing_a_small_file_with_a_large_one_holds_a_block_not_the_large_file(tmp_path):
    """A verify compares the chunks its snapshots reference (a small file) with the whole
    repository's: a block of the small file's keys spans every bucket of the large file,
    which lacks() and held_length() once held whole (~80 bytes a chunk of the repository)."""
    import tracemalloc

    rnd = random.Random(10)
    keys = [rnd.randbytes(32).hex() for _ in range(150_000)]
    build(tmp_path / "all.idx", [("11" * 32, [(k, 0, 1, 3, 0) for k in keys])])
    some = rnd.sample(keys, 2_000) + [rnd.randbytes(32).hex() for _ in range(4)]
    build(tmp_path / "some.idx", [("00" * 32, [(k, 0, 0, 0, 0) for k in some])])
    every, part = SortedIndex(tmp_path / "all.idx"), SortedIndex(tmp_path / "some.idx")
    del keys
    tracemalloc.start()
    try:
        assert every.lacks(part) == 4
        assert every.held_length(part) == 2_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # held whole, the large file's keys alone are 150,000 x ~80 bytes = 11 MiB
    assert peak < 3 * (1 << 20), f"peak {peak / (1 << 20):.1f} MiB"
