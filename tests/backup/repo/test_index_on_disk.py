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
import tracemalloc
from pathlib import Path

from sctk.backup.repo import Repository
from sctk.backup.repo.index import ENTRIES_PER_FILE, write_index

from .conftest import PASSPHRASE, backup, make_tree, tree_bytes

PACKS = 200
PER_PACK = 1000  # 200,000 chunks: ~100 MB as the dicts the index used to be


def _cid(i: int) -> str:
    return hashlib.sha256(b"c" + i.to_bytes(8, "little")).hexdigest()


def _pack(p: int) -> str:
    return hashlib.sha256(b"p" + p.to_bytes(8, "little")).hexdigest()


def _many_chunks(root: Path, packs_made: int = PACKS) -> Repository:
    """A repository whose index lists PACKS_MADE x PER_PACK chunks; its packs are sparse
    files of the recorded size (so they count as present), their contents never read."""
    repo = Repository.init(str(root), PASSPHRASE)
    size = PER_PACK * 4096 + 100

    def packs():
        for p in range(packs_made):
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
    # records sorted in memory before spilling (5 MiB), two index files' rows, buffers
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


def _traced(fn) -> tuple[object, int, int]:
    """FN()'s result, the traced memory it left behind and its traced peak (bytes)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        got = fn()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return got, now - base, peak - base


def test_index_files_are_decoded_a_pack_at_a_time_and_their_rows_kept_packed(tmp_path):
    """An index file (10,000 rows here: 10 packs of 1,000) decoded whole was ~4 MiB of
    objects, and the allocator's pages under them stayed with the process; each pack's rows
    are packed (49 bytes a row) as the pack is decoded. Opening holds one pack's rows as
    objects at a time beside the records being sorted, and a pass over the packs' rows
    keeps two files' rows packed, not decoded (~300 bytes a row)."""
    packs = 4 * ENTRIES_PER_FILE // PER_PACK
    _many_chunks(tmp_path / "repo", packs)
    repo = Repository.open(str(tmp_path / "repo"), PASSPHRASE)
    index, left, load_peak = _traced(lambda: repo.index)  # loaded when first asked for
    assert len(index.files) == 4 and len(index.pack_sizes) == packs
    # the records sorted in memory (~1.7 MiB), one file's text (~2 MiB as bytes and as a
    # string) and its rows packed, one pack's rows: 5.2 MiB, where it was 9.9
    assert load_peak < 7.5 * (1 << 20), load_peak
    assert left < 1 << 20, left  # pack sizes and where each is listed: no row

    def one_pass():
        return sum(len(index.pack_blobs[p]) for p in index.pack_blobs)

    rows, kept, pass_peak = _traced(one_pass)
    assert rows == packs * PER_PACK
    assert kept < 2 * ENTRIES_PER_FILE * 60, kept  # two files' rows packed; was 5.5 MiB
    assert pass_peak < 5 << 20, pass_peak  # and one more file being read: 3.3 MiB, was 10.1
    assert index.pack_blobs[_pack(7)][3] == (_cid(7 * PER_PACK + 3), 3 * 4096, 4096, 5000, 1)
    repo.close()


def test_an_authentic_index_file_of_the_wrong_shape_is_named_damaged(tmp_path):
    """An index file sealed with the repository's key whose rows are not what a writer
    writes (an offset as text, a row cut short), as a buggy or hostile writer holding the
    key could leave: opening the index names it damaged, one sentence, instead of failing
    in the middle of the load; check reports it and the data still restores."""
    from sctk.backup.repo.formats import AAD_INDEX, content_id, seal_json

    make_tree(tmp_path / "src")
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE)
    info = backup(repo, tmp_path / "src")
    pack = next(iter(repo.index.pack_sizes))
    size = repo.index.pack_sizes[pack]
    for bad_row in (["ab" * 32, "12", 5, 5, 0], ["ab" * 32, 12]):
        doc = {"packs": [{"id": pack, "size": size, "blobs": [bad_row]}]}
        blob = seal_json(repo.keys, doc, AAD_INDEX)
        name = f"index/{content_id(blob)}"
        repo.backend.write(name, blob)
        again = Repository.open(str(tmp_path / "repo"), PASSPHRASE)
        assert again.index.errors == [
            f"The index file {name} is damaged (it is not what sctk writes)."
        ]
        report = again.check()
        assert not report.ok and any(name in e for e in report.errors)
        again.restore(info.id, tmp_path / f"out-{len(bad_row)}")
        assert tree_bytes(tmp_path / f"out-{len(bad_row)}") == tree_bytes(tmp_path / "src")
        repo.backend.delete(name)
