"""Chunks larger than a reader's reused buffers (chunkread.BUFFER): decoded and used by one
thread of the process at a time and never ahead by idle threads, so their fresh buffers do
not pile up at the peak of a verify or restore however many of them a pass meets; and still
read right, damage to them still found."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from concurrent.futures import Future

import pytest

from sctk.backup.repo import RepoError, chunkread
from sctk.backup.repo import check as check_mod
from sctk.backup.repo import restore as restore_mod
from sctk.backup.repo.chunkread import BUFFER, LocalReader, PlannedReads, chunk_reader
from sctk.backup.repo.formats import FLAG_ZSTD
from tests.backup.repo.conftest import backup, damage_chunk, tree_bytes

MiB = 1 << 20


def _large_tree(repo, root):
    """Files cut into 1 to 4 MiB chunks (this repository object's cuts only) of three kinds:
    compressed to under BUFFER (text), compressed to over it (mostly noise), stored raw
    (noise); and small compressed files (chunks that fit)."""
    repo.config["chunker"] = {"min": 1 << 20, "avg": 2 << 20, "max": 4 << 20}
    rnd = random.Random(27)
    root.mkdir()
    text = "\n".join(f"{i},{rnd.randrange(16)},name{rnd.randrange(4)}" for i in range(800_000))
    (root / "table.csv").write_bytes(text.encode())
    (root / "part.bin").write_bytes(  # compressed to about 3/4
        b"".join(rnd.randbytes(96) + bytes(32) for _ in range(16 * MiB // 128))
    )
    (root / "noise.bin").write_bytes(rnd.randbytes(8 * MiB))
    for i in range(12):
        (root / f"small{i}.csv").write_bytes(f"{i},".encode() * 40_000 + rnd.randbytes(64))
    return root


def _chunks(repo, info):
    """Every chunk of the snapshot INFO, once: [(cid, loc)]."""
    cids = dict.fromkeys(c for f in repo.files(info.id) for c in f.chunks)
    return [(cid, repo.index.entries[cid]) for cid in cids]


@pytest.fixture
def large_repo(repo, tmp_path):
    info = backup(repo, _large_tree(repo, tmp_path / "src"))
    locs = [loc for _cid, loc in _chunks(repo, info)]
    # every kind is there: large compressed under and over BUFFER sealed, large raw, small
    assert any(loc[4] & FLAG_ZSTD and loc[3] > BUFFER and loc[2] <= BUFFER for loc in locs)
    assert any(loc[4] & FLAG_ZSTD and loc[2] > BUFFER for loc in locs)
    assert any(not loc[4] & FLAG_ZSTD and loc[2] > BUFFER for loc in locs)
    assert sum(loc[4] & FLAG_ZSTD and loc[3] <= BUFFER for loc in locs) >= 4
    return repo, info


class _Concurrency:
    """How many calls of a kind (large or small) run at once at most, and how many large
    decompressed chunks are alive at once at most; each call lasts a while, so that calls
    free to overlap do."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = {"large": 0, "small": 0, "alive": 0}
        self.most = {"large": 0, "small": 0, "alive": 0}

    def add(self, kind: str, n: int) -> None:
        with self.lock:
            self.now[kind] += n
            self.most[kind] = max(self.most[kind], self.now[kind])

    def run(self, kind: str, fn, *args, **kw):
        self.add(kind, 1)
        try:
            time.sleep(0.02)
            return fn(*args, **kw)
        finally:
            self.add(kind, -1)


def _watch(monkeypatch) -> _Concurrency:
    """Record the concurrency of decompressions (large: over BUFFER raw) and decryptions
    (large: a sealed chunk over BUFFER) of every LocalReader made from now on, and how many
    large decompressed chunks are alive at once (each stays a while after it is made, as
    a chunk being hashed or written by a thread that let go of the lock would)."""
    seen = _Concurrency()
    decompress = LocalReader._decompress

    class Plain(bytes):
        def __del__(self):
            seen.add("alive", -1)

    def watched_decompress(self, frame, raw_len):
        if raw_len <= BUFFER:
            return seen.run("small", decompress, self, frame, raw_len)
        out = Plain(seen.run("large", decompress, self, frame, raw_len))
        seen.add("alive", 1)
        time.sleep(0.02)
        return out

    class Aead:
        def __init__(self, aead):
            self.aead = aead

        def decrypt_into(self, nonce, data, aad, out):
            kind = "large" if len(nonce) + len(data) > BUFFER else "small"
            return seen.run(kind, self.aead.decrypt_into, nonce, data, aad, out)

    init = LocalReader.__init__

    def watched_init(self, *args, **kw):
        init(self, *args, **kw)
        self.aead = Aead(self.aead)

    monkeypatch.setattr(LocalReader, "_decompress", watched_decompress)
    monkeypatch.setattr(LocalReader, "__init__", watched_init)
    return seen


def _slow(fn):
    """FN, taking a while over a large chunk (as hashing or writing 4 MiB may): time for
    another thread to make its own meanwhile, unless it waits."""

    def slow(*args):
        if len(args[-1]) > BUFFER:
            time.sleep(0.05)
        return fn(*args)

    return slow


class _Reader:
    def __init__(self):
        self.done: list[str] = []

    def read(self, cid, loc, use):
        self.done.append(cid)
        use(cid.encode() * 2)


class _Helpers:
    def __init__(self):
        self.sent: list[str] = []

    def idle(self) -> bool:
        return True

    def decode(self, cid, loc) -> Future:
        self.sent.append(cid)
        fut: Future = Future()
        fut.set_result(cid.encode() * 2)
        return fut


def test_helpers_do_not_decode_large_chunks_ahead_and_go_on_past_them():
    """A large chunk (sealed or raw over BUFFER) of a plan is left to the task's own thread;
    the small ones after it are still decoded ahead."""
    plan = [
        ("a", ("p", 0, 1000, 5000, FLAG_ZSTD)),
        ("big", ("p", 1000, 900_000, 3 * MiB, FLAG_ZSTD)),  # compressed under BUFFER
        ("sealed", ("p", 0, BUFFER + 100, BUFFER + 72, 0)),  # raw 1 MiB + 72 bytes
        ("b", ("p", 0, 1000, 972, 0)),
        ("c", ("p", 0, 2000, 1972, 0)),
    ]
    reader, helpers = _Reader(), _Helpers()
    reads = PlannedReads(plan, reader, helpers)
    got: list[bytes] = []
    assert [reads.read(cid, loc, got.append) for cid, loc in plan] == [None] * len(plan)
    assert got == [cid.encode() * 2 for cid, _ in plan]
    assert helpers.sent == ["b", "c"]
    assert reader.done == ["a", "big", "sealed"]
    assert reads.ahead_bytes == 0


def test_large_chunks_are_decoded_and_used_one_at_a_time_and_right(large_repo, monkeypatch):
    """Threads reading large chunks at once with readers of their own: no two large chunks
    are decompressed or decrypted at the same time, nor alive at once while they are used
    (each fresh buffer up to 4 MiB), small ones still are decoded together, and every
    plaintext is right."""
    repo, info = large_repo
    chunks = _chunks(repo, info)
    reader = chunk_reader(repo)
    try:
        want = {cid: hashlib.sha256(reader.plain(cid, loc)).hexdigest() for cid, loc in chunks}
    finally:
        reader.close()
    seen = _watch(monkeypatch)
    threads = 4
    start = threading.Barrier(threads)
    got: list[dict] = [{} for _ in range(threads)]

    def read(k: int) -> None:
        reader = chunk_reader(repo)
        order = chunks[k:] + chunks[:k]  # each thread starts somewhere else
        start.wait()
        try:
            for cid, loc in order:
                sha = hashlib.sha256()
                assert reader.read(cid, loc, _slow(sha.update)) is None
                got[k][cid] = sha.hexdigest()
        finally:
            reader.close()

    workers = [threading.Thread(target=read, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert all(g == want for g in got)
    assert seen.most["large"] == 1 and seen.most["alive"] == 1
    assert seen.most["small"] > 1  # the lock is for large chunks only


def test_verify_and_restore_of_large_chunks(large_repo, tmp_path, monkeypatch):
    """Verify (its idle threads reading ahead) and restore decode, hash and write one large
    chunk at a time, and both are still right."""
    repo, info = large_repo
    seen = _watch(monkeypatch)
    monkeypatch.setattr(check_mod, "_hash_into", _slow(check_mod._hash_into))
    monkeypatch.setattr(restore_mod, "_write_all", _slow(restore_mod._write_all))
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "src")
    assert seen.most["large"] == 1 and seen.most["alive"] == 1
    assert chunkread.LARGE_DECODE.acquire(blocking=False)  # nothing kept it
    chunkread.LARGE_DECODE.release()


@pytest.mark.parametrize("kind", ["compressed", "raw"])
def test_damage_to_a_large_chunk_is_found(large_repo, tmp_path, kind):
    repo, info = large_repo
    compressed = kind == "compressed"
    cid = next(
        cid
        for cid, loc in _chunks(repo, info)
        if loc[3] > BUFFER and bool(loc[4] & FLAG_ZSTD) == compressed
    )
    name = next(f.path for f in repo.files(info.id) if cid in f.chunks)
    damage_chunk(repo, cid)
    report = repo.check(read_data=True)
    assert not report.ok
    assert any(f"file {name} " in e for e in report.errors), report.errors
    with pytest.raises(RepoError, match="damaged"):
        repo.restore(info.id, tmp_path / "out")


def test_a_large_chunk_s_sealed_buffer_is_let_go_before_it_is_decompressed(large_repo):
    """A compressed chunk whose sealed bytes and plaintext both need buffers of their own:
    the sealed one is freed before the plaintext is decompressed, so the decode holds two
    large buffers at a time, not three."""
    import tracemalloc

    repo, info = large_repo
    cid, loc = max(
        ((cid, loc) for cid, loc in _chunks(repo, info) if loc[4] & FLAG_ZSTD),
        key=lambda c: c[1][2],
    )
    length, raw = loc[2], loc[3]
    assert length > BUFFER and raw > length
    reader = chunk_reader(repo)
    try:
        tracemalloc.start()
        try:
            data = reader.plain(cid, loc)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(data) == raw
    finally:
        reader.close()
    # sealed + plaintext, then plaintext + output: under length + raw; all three at once
    # would be 2 * length + raw
    assert peak < 1.5 * length + raw, (peak, length, raw)
