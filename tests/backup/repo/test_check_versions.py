"""check(read_data=True) reads the versions of a file together: a chunk they share is read,
decrypted and decompressed once, while every version is still hashed whole against its
SHA-256, and damage to a shared chunk is named for every version that holds it."""

from __future__ import annotations

import random
from pathlib import Path

from tests.backup.repo.conftest import backup, damage_chunk

MiB = 1 << 20


def _pack_bytes(repo) -> int:
    """Bytes of every pack: each chunk once, and each pack's header."""
    return sum(repo.index.pack_sizes.values())


def _two_versions(repo, tmp_path: Path):
    rnd = random.Random(11)
    src = tmp_path / "src"
    src.mkdir()
    pages = [rnd.randbytes(64 * 1024) for _ in range(200)]  # a 12.5 MiB "database"
    (src / "db.sqlite").write_bytes(b"".join(pages))
    first = backup(repo, src)
    pages[150] = rnd.randbytes(64 * 1024)  # one page changed near the end
    (src / "db.sqlite").write_bytes(b"".join(pages))
    second = backup(repo, src)
    return first, second


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

    report = repo.check(read_data=True)
    assert not report.ok
    for snap in (first, second):
        assert any(
            f"Snapshot {snap.id[:12]}: file db.sqlite cannot be restored" in e
            for e in report.errors
        ), report.errors


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
