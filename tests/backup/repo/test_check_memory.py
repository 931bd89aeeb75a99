"""check(read_data=True) at scale: memory that does not grow with the files, and each file
content read once, where it is first found (snapshot after snapshot, path after path).

Verify used to build a to-do list of every distinct file of every snapshot, and a set of
the contents seen, before reading anything: about 650 bytes a file (1.3 GB at 10^6 files).
It now merges the snapshots' sorted lists by path as it reads, and keeps where each content
is first found in a sorted file on disk."""

from __future__ import annotations

import random
import tracemalloc

from sctk.backup.repo import Repository
from tests.backup.repo.conftest import PASSPHRASE, damage_chunk

MiB = 1 << 20


def _many_files(path, files: int, snapshots: int) -> Repository:
    """SNAPSHOTS snapshots of FILES small files, every file changed in each: distinct
    contents, so that nothing is shared and each file is read."""
    repo = Repository.init(str(path), PASSPHRASE)
    for k in range(snapshots):
        with repo.writer() as w:
            for i in range(files):
                w.add_stream(f"d{i // 500:03d}/file-{i:06d}.txt", [f"snapshot {k}, {i}\n".encode()])
            w.commit(f"s{k}", {})
    return repo


def _check_peak(repo: Repository) -> tuple[object, float]:
    tracemalloc.start()
    try:
        report = repo.check(read_data=True)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report, peak / MiB


def test_verify_memory_does_not_grow_with_the_files(tmp_path):
    small = _many_files(tmp_path / "small", 2000, 1)  # enough to start every verifier
    big = _many_files(tmp_path / "big", 8000, 3)  # 24,000 distinct files
    report_small, peak_small = _check_peak(small)
    report_big, peak_big = _check_peak(big)
    assert report_small.ok and report_big.ok, report_big.errors
    # every file read, every byte once (no content is shared)
    assert report_big.bytes_read == sum(big.index.pack_sizes.values())
    # Measured: +11 to +13.4 MiB, none of it per file: the chunks here sit in few packs, so
    # the pack pass's offsets of one pack (a set of up to 16,384, packs.PACK_CHUNKS) and one
    # index file decoded are at their largest at 24,000 files and not larger beyond (+1.4
    # and -1.3 MiB from 24,000 to 48,000 files). (+6 to +9 before the readers' buffers were
    # mapped pages, which tracemalloc does not see: 9 MiB of them counted in the smaller
    # repository's peak only.) The to-do list and the set of contents seen cost ~650 bytes
    # a file, +14 MiB more here, and fail this.
    growth = peak_big - peak_small
    assert growth < 18, f"verify's peak grew by {growth:.1f} MiB from 2,000 to 24,000 files"


def _pack_bytes(repo) -> int:
    return sum(repo.index.pack_sizes.values())


def test_a_content_at_two_paths_is_read_once_and_named_where_first_found(repo):
    data = random.Random(5).randbytes(300_000)
    with repo.writer() as w:
        w.add_stream("z/copy.bin", [data])
        w.add_stream("a/original.bin", [data])
        w.add_stream("m/other.bin", [b"something else"])
        snap = w.commit("one", {})
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    assert report.bytes_read == _pack_bytes(repo)  # the shared content read once

    chunks = next(f for f in repo.files(snap.id) if f.path == "a/original.bin").chunks
    damage_chunk(repo, chunks[0])  # (one chunk or two: the cut points follow the key)
    report = repo.check(read_data=True)
    restored = [e for e in report.errors if "cannot be restored" in e]
    # named once, at its first path (the lists are sorted by path)
    assert restored == [
        f"Snapshot {snap.id[:12]}: file a/original.bin cannot be restored: pack "
        f"{restored[0].split(': pack ')[1]}"
    ], report.errors


def test_a_content_first_found_in_an_earlier_snapshot_at_a_later_path(repo):
    """The first copy is the first in snapshot order, then path order: a content that moved
    from z/late.bin to a/early.bin is named where the first snapshot checked holds it."""
    data = random.Random(6).randbytes(200_000)
    with repo.writer() as w:
        w.add_stream("z/late.bin", [data])
        first = w.commit("one", {})
    with repo.writer() as w:
        w.add_stream("a/early.bin", [data])
        second = w.commit("two", {})
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    assert report.bytes_read == _pack_bytes(repo)

    damage_chunk(repo, repo.files(first.id)[0].chunks[0])
    report = repo.check(read_data=True)
    restored = [e for e in report.errors if "cannot be restored" in e]
    snap, path = min((first.id, "z/late.bin"), (second.id, "a/early.bin"))  # checked by id
    assert len(restored) == 1, report.errors
    assert restored[0].startswith(f"Snapshot {snap[:12]}: file {path} cannot be restored")
