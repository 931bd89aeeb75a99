"""The chunk index served from a local SQLite cache: kept between runs, true to the
repository's own index files (new files added, a replaced index rebuilt, a damaged index file
still named by check), and usable after a kill -9 or a torn cache file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sctk.backup.repo import Repository
from sctk.backup.repo.formats import AAD_INDEX, content_id, seal_json
from sctk.backup.repo.index import cache_file

from .conftest import PASSPHRASE, backup, make_tree, tree_bytes


def _cache_path(repo: Repository, cache: Path) -> Path:
    return cache_file(cache, repo.config["id"], repo.url)


def _cached_files(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {n for (n,) in db.execute("SELECT name FROM files")}


def _locations(repo: Repository, snap: str) -> dict[str, tuple]:
    return {c: repo.index.entries[c] for f in repo.files(snap) for c in f.chunks}


def _repo_with_two_snapshots(tmp_path: Path, cache: Path):
    src = tmp_path / "src"
    make_tree(src, big=600_000)
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE, cache_dir=cache)
    first = backup(repo, src, "one")
    (src / "more.bin").write_bytes(os.urandom(300_000))
    second = backup(repo, src, "two")
    return repo, src, first, second


def test_cache_is_kept_between_runs_and_agrees_with_the_index_files(tmp_path):
    cache = tmp_path / "cache"
    repo, src, first, second = _repo_with_two_snapshots(tmp_path, cache)
    path = _cache_path(repo, cache)
    # the writer recorded its own index files: the cache holds exactly the repository's
    assert _cached_files(path) == set(repo.backend.list("index"))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    cached = Repository.open(repo.url, PASSPHRASE, cache_dir=cache)
    fresh = Repository.open(repo.url, PASSPHRASE)  # private temporary index, read from files
    for snap in (first.id, second.id):
        assert _locations(cached, snap) == _locations(fresh, snap)
    assert len(cached.index.entries) == len(fresh.index.entries) > 0
    assert dict(cached.index.pack_sizes.items()) == dict(fresh.index.pack_sizes.items())
    out = tmp_path / "out"
    cached.restore(second.id, out)
    assert tree_bytes(out) == tree_bytes(src)
    assert cached.check(read_data=True).ok


def test_another_process_backup_is_added_and_a_prune_rebuilds_the_cache(tmp_path):
    cache = tmp_path / "cache"
    repo, src, first, second = _repo_with_two_snapshots(tmp_path, cache)
    reader = Repository.open(repo.url, PASSPHRASE, cache_dir=cache)
    before = _cached_files(_cache_path(repo, cache))
    (src / "third.bin").write_bytes(os.urandom(400_000))
    third = backup(repo, src, "three")
    reader._refresh_index()
    added = _cached_files(_cache_path(repo, cache))
    assert before < added == set(repo.backend.list("index"))
    assert reader.index.entries.get(third.id) is None  # a snapshot id is no chunk
    assert all(c in reader.index.entries for f in reader.files(third.id) for c in f.chunks)
    repo.forget([first.id])
    report = repo.prune(None)
    assert not report.dry_run
    # prune replaced the index files: the other process's view is rebuilt from the new ones
    reader._refresh_index()
    assert _cached_files(_cache_path(repo, cache)) == set(repo.backend.list("index"))
    fresh = Repository.open(repo.url, PASSPHRASE)
    assert _locations(reader, third.id) == _locations(fresh, third.id)
    out = tmp_path / "out"
    reader.restore(third.id, out)
    assert tree_bytes(out) == tree_bytes(src)


def test_torn_or_foreign_cache_file_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    repo, src, _first, second = _repo_with_two_snapshots(tmp_path, cache)
    path = _cache_path(repo, cache)
    repo.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * (len(data) - 100))  # its header, then garbage
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    again = Repository.open(repo.url, PASSPHRASE, cache_dir=cache)
    out = tmp_path / "out"
    again.restore(second.id, out)
    assert tree_bytes(out) == tree_bytes(src)
    again.close()
    # a cache file of another repository under this name: not trusted, rebuilt
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'someone-else' WHERE key = 'repository'")
    third = Repository.open(repo.url, PASSPHRASE, cache_dir=cache)
    assert _cached_files(path) == set(repo.backend.list("index"))
    assert third.check(read_data=False).ok


def test_index_file_damaged_after_it_was_cached_is_named_by_check(tmp_path):
    cache = tmp_path / "cache"
    repo, src, _first, second = _repo_with_two_snapshots(tmp_path, cache)
    name = sorted(repo.backend.list("index"))[0]
    path = Path(repo.url, name)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    again = Repository.open(repo.url, PASSPHRASE, cache_dir=cache)
    report = again.check(read_data=False)
    assert not report.ok
    assert any(name in e and "damaged" in e for e in report.errors), report.errors
    # the chunks it listed are found from the packs' own headers: nothing is lost
    out = tmp_path / "out"
    again.restore(second.id, out)
    assert tree_bytes(out) == tree_bytes(src)


def _synthetic_index(repo: Repository, files: int, per_file: int) -> list[tuple[str, str]]:
    """FILES index files of PER_FILE made-up chunks each (in packs that do not exist: the
    cache only reads index files); some (chunk id, pack) pairs to look up."""
    sample = []
    for i in range(files):
        packs = []
        for p in range(per_file // 100):
            pack = content_id(f"pack {i} {p}".encode())
            blobs = [
                [content_id(f"chunk {i} {p} {k}".encode()), k * 1000, 1000, 2000, 1]
                for k in range(100)
            ]
            packs.append({"id": pack, "size": 100_000, "blobs": blobs})
        sample.append((packs[0]["blobs"][7][0], packs[0]["id"]))
        blob = seal_json(repo.keys, {"packs": packs}, AAD_INDEX)
        repo.backend.write(f"index/{content_id(blob)}", blob, durable=False)
    return sample


def test_kill_9_while_the_cache_is_written_leaves_it_usable(tmp_path):
    cache = tmp_path / "cache"
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE, cache_dir=cache)
    sample = _synthetic_index(repo, files=40, per_file=1500)
    path = _cache_path(repo, cache)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                from sctk.backup.repo import Repository
                Repository.open({repo.url!r}, {PASSPHRASE!r}, cache_dir={str(cache)!r})
                """
            ),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and child.poll() is None:
            try:
                done = len(_cached_files(path))
            except sqlite3.Error:
                done = 0  # not created yet, or busy
            if done >= 3:
                break
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    assert 3 <= done < 40
    # the next open finishes the cache from where the killed one stopped
    again = Repository.open(repo.url, PASSPHRASE, cache_dir=cache)
    assert _cached_files(path) == set(repo.backend.list("index"))
    assert len(again.index.entries) == 40 * 1500
    for cid, pack in sample:
        assert again.index.entries[cid][0] == pack
