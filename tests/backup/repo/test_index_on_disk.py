"""The chunk index is not held whole in memory: a repository with many chunks is opened and
looked up in a child process whose peak memory (VmHWM) must stay far below what the index
would cost as Python objects, and its per-pack rows are read again from the index files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from sctk.backup.repo import Repository
from sctk.backup.repo.index import write_index

from .conftest import PASSPHRASE, backup, make_tree

PACKS = 200
PER_PACK = 1000  # 200,000 chunks: ~100 MB as the dicts the index used to be


def _cid(i: int) -> str:
    return hashlib.sha256(b"c" + i.to_bytes(8, "little")).hexdigest()


def _pack(p: int) -> str:
    return hashlib.sha256(b"p" + p.to_bytes(8, "little")).hexdigest()


def _many_chunks(root: Path) -> Repository:
    """A repository whose index lists PACKS x PER_PACK chunks; its packs are sparse files of
    the recorded size (so they count as present), their contents never read."""
    repo = Repository.init(str(root), PASSPHRASE)
    size = PER_PACK * 4096 + 100

    def packs():
        for p in range(PACKS):
            pack = _pack(p)
            path = root / "data" / pack[:2] / pack
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(size)
            rows = [
                (_cid(i), (i % PER_PACK) * 4096, 4096, 5000, 1)
                for i in range(p * PER_PACK, (p + 1) * PER_PACK)
            ]
            yield pack, (size, rows)

    write_index(repo.backend, repo.keys, packs())
    return repo


PROBE = textwrap.dedent(
    """
    import json, hashlib, sys

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024

    import numpy  # what building a large index imports, before the baseline
    from sctk.backup.repo import Repository
    cids = [hashlib.sha256(b"c" + i.to_bytes(8, "little")).hexdigest()
            for i in range(0, int(sys.argv[2]), 97)]
    base = hwm()
    repo = Repository.open(sys.argv[1], sys.argv[3])
    index = repo.index
    found = sum(index.entries.get(c) is not None for c in cids)
    loc = index.entries[cids[5]]
    rows = sum(len(index.pack_blobs[p]) for p in index.pack_blobs)
    print(json.dumps({
        "found": found, "asked": len(cids), "loc": list(loc), "rows": rows,
        "held": len(index.entries.extra) + len(index.pack_blobs.held),
        "chunks": len(index.entries), "grew": hwm() - base,
    }))
    """
)


def test_a_large_index_is_looked_up_from_disk_in_bounded_memory(tmp_path):
    root = tmp_path / "repo"
    _many_chunks(root)
    src = Path(__file__).resolve().parents[3] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), TMPDIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(root), str(PACKS * PER_PACK), PASSPHRASE],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    got = json.loads(out)
    n = PACKS * PER_PACK
    assert got["chunks"] == n and got["rows"] == n
    assert got["found"] == got["asked"] > 2000
    assert got["loc"] == [_pack(0), 5 * 97 * 4096, 4096, 5000, 1]
    assert got["held"] == 0  # no chunk held as a Python object after opening
    # The dicts of 200,000 chunks grew the process by ~100 MB; what is left is constant: the
    # records sorted in memory before spilling (5 MiB), two decoded index files, buffers
    # (20 MiB measured).
    assert got["grew"] < 40 * 1024 * 1024, got
    assert not list(tmp_path.glob("sctk-index-*"))  # the local file goes with the process


def test_lookups_and_pack_rows_match_what_a_backup_wrote(tmp_path):
    make_tree(tmp_path / "src")
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE)
    info = backup(repo, tmp_path / "src")
    again = Repository.open(str(tmp_path / "repo"), PASSPHRASE)
    assert not again.index.entries.extra and not again.index.pack_blobs.held
    chunks = {c for f in again.files(info.id) for c in f.chunks}
    assert chunks and all(again.index.entries[c] == repo.index.entries[c] for c in chunks)
    for pack in again.index.pack_sizes:
        assert again.index.pack_blobs[pack] == repo.index.pack_blobs[pack]
        assert all(
            again.index.entries[row[0]][:2] == (pack, row[1])
            for row in again.index.pack_blobs[pack]
        )
    path = again.index.entries.base.path
    assert path.exists()
    again.close()
    assert not path.exists()


def test_the_local_file_of_a_killed_process_is_removed_by_the_next_load(tmp_path, monkeypatch):
    make_tree(tmp_path / "src")
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE)
    backup(repo, tmp_path / "src")
    local = tmp_path / "local"
    local.mkdir()
    src = Path(__file__).resolve().parents[3] / "src"
    script = (
        "import sys, time\n"
        "from sctk.backup.repo import Repository\n"
        "Repository.open(sys.argv[1], sys.argv[2]).index  # loaded at its first use\n"
        "print('open', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(src), TMPDIR=str(local))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "repo"), PASSPHRASE],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "open"
        left = list(local.glob(f"sctk-index-{child.pid}-*"))
        assert len(left) == 1 and (left[0] / "chunks.idx").exists()
    finally:
        child.kill()  # SIGKILL: no clean-up runs
        child.wait()
    assert left[0].exists()
    monkeypatch.setattr(tempfile, "tempdir", str(local))  # what TMPDIR sets at start-up
    again = Repository.open(str(tmp_path / "repo"), PASSPHRASE)
    assert again.index.entries.base is not None and not left[0].exists()
    assert [p.name for p in local.iterdir()] == [again.index.entries.base.path.parent.name]
    again.close()
    assert not list(local.iterdir())
