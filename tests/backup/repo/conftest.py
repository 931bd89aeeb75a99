"""Fixtures for the engine tests: a repository on a temporary directory and seeded trees."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from sctk.backup.repo import Repository

PASSPHRASE = "correct horse battery staple"


def make_tree(root: Path, seed: int = 1, big: int = 3_000_000) -> dict[str, bytes]:
    """A small tree: random and compressible files, an empty file, nested dirs, odd modes."""
    rnd = random.Random(seed)
    files = {
        "random.bin": rnd.randbytes(big),
        "text/table.csv": "\n".join(
            f"{i},{rnd.random():.6f},name{rnd.randrange(100)}" for i in range(60_000)
        ).encode(),
        "text/empty.txt": b"",
        "deep/a/b/c/small.dat": rnd.randbytes(100) + b"x" * 5000,
        "keys/secret.key": rnd.randbytes(64),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.chmod(root / "keys/secret.key", 0o600)
    os.chmod(root / "text/table.csv", 0o640)
    os.chmod(root / "random.bin", 0o755)
    return files


def small_files(root: Path, n: int, seed: int, dirs: int = 17, most: int = 6000) -> None:
    """N seeded files of 0 to MOST random bytes under ROOT, spread over DIRS directories
    (fNNNNN.dat in dNN/, the walk meeting them directory after directory)."""
    rnd = random.Random(seed)
    for i in range(n):
        path = root / f"d{i % dirs:02d}" / f"f{i:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rnd.randbytes(rnd.randrange(0, most)))


def tree_bytes(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file under ROOT: relative path -> (bytes, permission bits)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            out[rel] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    return out


def backup(
    repo: Repository, root: Path, label: str = "manual", processes: bool | None = None, **commit_kw
):
    with repo.writer(processes=processes) as w:
        w.add_tree(root)
        return w.commit(label, {"label": label}, **commit_kw)


def damage_chunk(repo: Repository, chunk_id, mask: int = 0x01) -> Path:
    """Flip bits (MASK) of one byte in the middle of CHUNK_ID's stored bytes; its pack."""
    pack, offset, length, _raw, _flags = repo.index.entries[chunk_id]
    path = Path(repo.url, "data", pack[:2], pack)
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= mask
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(str(tmp_path / "repo"), PASSPHRASE)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    make_tree(root)
    return root
