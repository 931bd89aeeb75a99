"""check(read_data=True) reads the versions of a file together: a chunk they share is read,
decrypted and decompressed once, while every version is still hashed whole against its
SHA-256, and damage to a shared chunk is named for every version that holds it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.backup.repo.conftest import backup, damage_chunk

MiB = 1 << 20


def _pack_bytes(repo) -> int:
    """Bytes of every pack: each chunk once, and each pack's header."""
    return sum(repo.index.pack_sizes.values())


def _change_one_page(pages: list[bytes], rnd: random.Random) -> None:
    pages[150] = rnd.randbytes(64 * 1024)  # one page changed near the end


def _two_versions(repo, tmp_path: Path, edit=_change_one_page, seed: int = 11):
    """Two snapshots of a 12.5 MiB "database" of 64 KiB pages, EDIT(pages, rnd) between."""
    rnd = random.Random(seed)
    src = tmp_path / "src"
    src.mkdir()
    pages = [rnd.randbytes(64 * 1024) for _ in range(200)]
    (src / "db.sqlite").write_bytes(b"".join(pages))
    first = backup(repo, src)
    edit(pages, rnd)
    (src / "db.sqlite").write_bytes(b"".join(pages))
    second = backup(repo, src)
    return first, second


def _assert_named_in_each(report, snaps, name: str) -> None:
    """REPORT failed, naming file NAME as damaged in each of SNAPS."""
    assert not report.ok
    for snap in snaps:
        assert any(
            f"Snapshot {snap.id[:12]}: file {name} cannot be restored" in e for e in report.errors
        ), report.errors


def test_shared_chunks_are_read_once_and_every_version_is_hashed(repo, tmp_path):
    first, second = _two_versions(repo, tmp_path)
    old = repo.files(first.id)[0].chunks
    new = repo.files(second.id)[0].chunks
    # they share all but the chunks around the change: usually 1 to 3, now and then 4 or
    # more (the cuts depend on the repository's random chunker seed)
    assert len(set(old) & set(new)) >= 0.75 * len(old)
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    assert report.bytes_read == _pack_bytes(repo)  # every byte once, none twice


def test_damaged_shared_chunk_is_named_for_every_version(repo, tmp_path):
    first, second = _two_versions(repo, tmp_path)
    shared = next(c for c in repo.files(first.id)[0].chunks if c in repo.files(second.id)[0].chunks)
    damage_chunk(repo, shared)
    _assert_named_in_each(repo.check(read_data=True), (first, second), "db.sqlite")


def test_repeated_chunk_in_one_file_is_read_once(repo, tmp_path):
    rnd = random.Random(12)
    src = tmp_path / "src"
    src.mkdir()
    block = rnd.randbytes(2 * MiB)
    (src / "image.raw").write_bytes(block * 4 + rnd.randbytes(MiB))
    info = backup(repo, src)
    chunks = repo.files(info.id)[0].chunks
    assert len(set(chunks)) < len(chunks)  # the repeated block gives repeated chunks
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    assert report.bytes_read == _pack_bytes(repo)


def test_versions_an_insertion_put_out_of_step_share_their_chunks_without_a_copy(
    repo, tmp_path, monkeypatch
):
    """A block inserted near the start of the newer version shifts its chunk numbers: each
    version goes through its own chunks until they meet again, so the chunks after the
    insertion are read once for both, and no plaintext is copied to be kept."""
    from sctk.backup.repo import check as check_mod

    def insert(pages: list[bytes], rnd: random.Random) -> None:
        pages[5:5] = [rnd.randbytes(64 * 1024) for _ in range(12)]  # 768 KiB inserted

    first, second = _two_versions(repo, tmp_path, insert, seed=13)
    old, new = repo.files(first.id)[0].chunks, repo.files(second.id)[0].chunks
    assert len(set(old) & set(new)) >= 0.75 * len(old)
    shift = new.index(old[-1]) - (len(old) - 1)
    assert shift != 0  # out of step by chunk number after the insertion

    copies = []
    put = check_mod._SharedPlain.put
    monkeypatch.setattr(
        check_mod._SharedPlain,
        "put",
        lambda self, cid, data: copies.append(cid) or put(self, cid, data),
    )
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    assert report.bytes_read == _pack_bytes(repo)  # every byte once, none twice
    assert copies == []


class _Index:
    def __init__(self, sizes: dict[str, int]):
        self.entries = {cid: ("p", 0, n, n, 0) for cid, n in sizes.items()}


@pytest.mark.parametrize("budget", [1 << 30, 3])
def test_the_schedule_hands_each_version_its_chunks_in_order(monkeypatch, budget):
    """Random versions (shared chunks in other orders, repeats, insertions, deletions):
    each version's hash gets exactly its chunks in order, a chunk not read is one kept, and
    with room to keep everything each distinct chunk is read once. With room for one chunk
    only, chunks are read again, and the order still holds."""
    from sctk.backup.repo import check as check_mod

    monkeypatch.setattr(check_mod, "SHARED_CACHE_BYTES", budget)
    rnd = random.Random(14)
    for _ in range(300):
        alphabet = [f"c{k}" for k in range(rnd.randint(1, 12))]
        base = [rnd.choice(alphabet) for _ in range(rnd.randint(0, 15))]
        files = []
        for _v in range(rnd.randint(1, 4)):
            chunks = list(base)
            for _edit in range(rnd.randint(0, 3)):
                k = rnd.randint(0, len(chunks))
                if rnd.random() < 0.5 or not chunks:
                    chunks[k:k] = rnd.choices(alphabet, k=rnd.randint(1, 3))
                else:
                    del chunks[k : k + rnd.randint(1, 3)]
            files.append(
                check_mod._Checked({"path": "f", "size": 0, "sha256": "", "chunks": chunks})
            )
        index = _Index({c: 2 for c in alphabet})
        steps = list(check_mod._schedule(index, files))

        got: list[list[str]] = [[] for _ in files]
        kept: set[str] = set()
        for s in steps:
            assert s.read or s.cid in kept
            for j in s.holders:
                got[j].append(s.cid)
            if s.keep:
                kept = kept | {s.cid} if budget > 3 else {s.cid}  # room for one chunk only
            if s.last:
                kept.discard(s.cid)
        assert got == [list(f.chunks) for f in files]
        if budget > 3:
            assert sum(s.read for s in steps) == len({c for f in files for c in f.chunks})


def test_a_damaged_chunk_kept_for_later_fails_every_version_that_needs_it(repo, tmp_path):
    """A chunk repeated in a file is kept after its first read for the later places; when
    it is damaged, what is kept is its failure, and every version holding it is named."""
    rnd = random.Random(15)
    src = tmp_path / "src"
    src.mkdir()
    block = rnd.randbytes(2 * MiB)
    (src / "image.raw").write_bytes(rnd.randbytes(MiB) + block * 3)
    first = backup(repo, src)
    (src / "image.raw").write_bytes(rnd.randbytes(MiB) + block * 3 + rnd.randbytes(MiB))
    second = backup(repo, src)
    old, new = repo.files(first.id)[0].chunks, repo.files(second.id)[0].chunks
    repeated = next(c for c in old if old.count(c) > 1 and c in new)
    damage_chunk(repo, repeated)
    _assert_named_in_each(repo.check(read_data=True), (first, second), "image.raw")


class _Reader:
    """Every chunk reads as a few bytes."""

    def read(self, cid: str, loc: tuple, use):
        use(b"chunk")
        return None


def _plan_peak(chunks: int) -> int:
    """The traced peak of verifying one file of CHUNKS distinct chunks (its entry made
    before), beyond what is traced when it starts."""
    import tracemalloc

    from sctk.backup.repo import check as check_mod

    cids = [f"{k:064x}" for k in range(chunks)]
    index = _Index(dict.fromkeys(cids, 5))
    f = check_mod._Checked({"path": "f", "size": 0, "sha256": "", "chunks": cids})
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        outcomes, done, nbytes = check_mod._verify_versions(_Reader(), index, [f])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert outcomes[0][1] is None and nbytes == 5 * chunks
    assert sorted(off for offs in done.values() for off in offs) == [0] * chunks
    return peak


def test_verifying_a_file_holds_no_plan_of_all_its_chunks():
    """The steps are made as they are taken: a list of them for a whole file (a step, a
    list of holders and a planned read a chunk, ~230 bytes) grew with the file, 4 MiB for
    the 3.4 GB database at scale 16 of the reference data set. What grows now is a count
    per distinct chunk (to know which are needed again) and 4 bytes an offset read."""
    small, large = _plan_peak(1_000), _plan_peak(8_000)
    per_chunk = (large - small) / 7_000
    assert per_chunk < 100, f"{per_chunk:.0f} bytes a chunk"
