"""Writing a snapshot: read -> cut (FastCDC) -> hash -> compress -> encrypt -> pack, pipelined.

The calling thread walks the tree. It reads larger files in large blocks, cuts them into
chunks and computes each file's SHA-256; a small thread pool computes chunk ids, compresses
(zstd, at a level learnt per file: see compression.py) and encrypts (AES-256-GCM) — all of
which release the GIL on large buffers. Small files go out in batches, each read, hashed
and sealed whole (READ_IN_WORKER): by the pool's threads, and once there are many of them
(PROCESSES_AFTER) by worker processes (batchseal.py), whose sealed chunks the writer appends
to the pack. One more thread finishes packs.
A window bounded in bytes limits the chunks in flight, so memory stays bounded whatever the
size of the data.

Chunks are views of the read blocks, never copies; a block is reused once every chunk cut
from it has been processed (so its pages are not faulted in again for every block).
pyfastcdc's own stream chunker shifts its buffer (up to the maximum chunk size) after every
chunk while holding the GIL, which cost more than all the hashing.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pyfastcdc import FastCDC

from sctk.backup.repo import batchseal, leftovers
from sctk.backup.repo.batchseal import Grown, read_batch, read_whole, seal
from sctk.backup.repo.compression import SMALL_FILES, Compressors, FilePolicy
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.filelist import FileListSink, SortedLookup, StoredList
from sctk.backup.repo.formats import AAD_SNAPSHOT, content_id, pack_name, seal_json
from sctk.backup.repo.index import write_index
from sctk.backup.repo.models import FileEntry, SnapshotInfo
from sctk.backup.repo.packs import PackWriter, WrittenPacks
from sctk.backup.repo.storedids import StoredIds
from sctk.backup.repo.threads import process_count, worker_count
from sctk.backup.repo.trim import release_free_memory
from sctk.backup.repo.workerloop import WorkerFailed
from sctk.backup.repo.workerprocs import OnDemand, Processes, WorkerDied

# Chunks in flight: enough to keep every worker busy (more bought no speed, 8 MiB cost 10 MiB
# of peak memory more on two data sets).
WINDOW_BYTES = 4 * 1024 * 1024
# and at most this many: tiny files made ~10,000 chunks of 4 MiB in flight, each with its
# future, file and entry objects (~1.5 KiB a chunk)
WINDOW_CHUNKS = 512
READ_BLOCK = 4 * 1024 * 1024  # bytes read at once from a large file (or stream)
# Files up to this size are read by the workers, whole, in batches of up to BATCH_BYTES
# or BATCH_FILES. On 10^5 files of a few KB the walking thread was the bottleneck, its
# system calls each a wait for the GIL, and one pool task per chunk cost a queue hand-off
# and a future each: a third of the CPU went to switching threads (RESULTS.md, "Backup of
# small files").
# Larger files go the reading thread's way: their chunks are sealed into each worker's
# reusable buffer, where a batch seals into fresh ones (on the reference data set at scale
# 4, reading files up to 1 MiB in batches cost up to 10 MiB more peak memory and no speed).
READ_IN_WORKER = 64 * 1024
BATCH_BYTES = 256 * 1024
BATCH_FILES = 64
# Batches for worker processes (batchseal.py) are larger: each costs a round trip through
# a pipe. A file of theirs is in flight only as its path here (its bytes are in a worker),
# so only the files are bounded: up to four batches a worker. On 10^5 files of a few KB,
# 128 files and 1,024 in flight took 10-15% less time than 64 and 512 (256 and 2,048: no
# less again).
PROCESS_BATCH_BYTES = 512 * 1024
PROCESS_BATCH_FILES = 128
PROCESS_WINDOW_FILES = 1024
FREE_BLOCKS = 3  # read blocks kept for reuse
# Small files a writer meets before worker processes read its batches (batchseal.py): a
# process pool takes a fraction of a second to start, about what threads take to read a
# few thousand small files.
PROCESSES_AFTER = 2048


def check_path(path: str) -> str:
    """A snapshot path: relative, posix, without '..' or empty parts."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise RepoError(
            f"Snapshot path {path!r} is not a plain relative path; "
            "use forward slashes without '..' or a leading '/'."
        )
    return str(p)


def _worker_died() -> RepoError:
    return RepoError(
        "A backup worker process stopped before it finished (killed, or out of memory); "
        "nothing was committed: run the backup again."
    )


def _file_doc(e: FileEntry, st: list | None) -> dict:
    doc = {"path": e.path, "mode": e.mode, "size": e.size, "sha256": e.sha256, "chunks": e.chunks}
    if st is not None:
        doc["st"] = st  # size, mtime_ns, ctime_ns, inode: lets the next backup skip the file
    return doc


# The keys _file_doc writes for a file with a stat: a parent's entry with exactly these is
# put in the new snapshot as it is (no new dict per unchanged file).
_DOC_KEYS = frozenset(("path", "mode", "size", "sha256", "chunks", "st"))


def index_state(names) -> str:
    """A digest of a set of index file names (immutable files named by their content): a
    snapshot's header records the set its chunks are all listed in (see _chunks_known)."""
    return hashlib.sha256("\n".join(sorted(set(names))).encode()).hexdigest()


def pack_state(stored: dict[str, int]) -> str:
    """A digest of the packs stored (name -> size): a snapshot's header records the packs
    that were there, every one indexed and sound (see _quiet)."""
    return hashlib.sha256(
        "\n".join(f"{n} {size}" for n, size in sorted(stored.items())).encode()
    ).hexdigest()


class _Vanished(RepoError):
    """A file deleted between the walk's listing and its reading: left out of a walk."""


def _unreadable(source: str | Path, exc: OSError) -> RepoError:
    """The error to tell for a file that could not be read."""
    if isinstance(exc, FileNotFoundError):
        return _Vanished(f"File {source} vanished while it was being backed up.")
    if isinstance(exc, PermissionError):
        return RepoError(
            f"Cannot read {source}: permission denied; run the backup as a user who can read it."
        )
    if isinstance(exc, IsADirectoryError):
        return RepoError(f"{source} is a directory; use add_tree for directories.")
    return RepoError(f"Cannot read {source}: {exc.strerror or exc}.")


def _drop_block(block: _Block) -> None:
    """A block not kept for reuse (see _stream_grown)."""


class _IterReader:
    """A readinto() view of an iterable of byte strings, for the stream chunker."""

    def __init__(self, chunks: Iterable[bytes]):
        self.it = iter(chunks)
        self.pending = memoryview(b"")

    def readinto(self, buf) -> int:
        while not self.pending:
            try:
                nxt = next(self.it)
            except StopIteration:
                return 0
            self.pending = memoryview(nxt).cast("B")
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


class _Block:
    """A read buffer whose chunks are in flight; reused when none is (and it is cut)."""

    __slots__ = ("buf", "pending", "cut")

    def __init__(self, size: int):
        self.buf = bytearray(size)
        self.pending = 0
        self.cut = False


class _File:
    """A file of the snapshot being written. SHA (the running SHA-256) exists only while its
    bytes are read; ST is its stat key for the next backup; DOC is the parent's entry when
    the file is unchanged (written into the new snapshot as it is)."""

    __slots__ = (
        *("entry", "pending", "reading", "sha", "policy", "st", "doc", "origin"),
        *("dropped", "side"),
    )

    def __init__(self, path: str, mode: int):
        self.entry = FileEntry(path=path, mode=mode, size=0, sha256="", chunks=[])
        self.pending = 0
        self.reading = True
        self.sha = None
        self.policy = SMALL_FILES  # how its chunks are compressed (see compression.py)
        self.st: list | None = None
        self.doc: dict | None = None
        self.origin: tuple[int, int, int] | None = None  # DOC's place in the parent's list
        self.dropped = False  # vanished while it was read: not part of the snapshot
        self.side = False  # added on its own (add_file, add_stream), not by a walk


class SnapshotWriter:
    """Adds files to a new snapshot; leaving the `with` block without commit() leaves none."""

    def __init__(
        self,
        repo,
        progress: Callable[[int], None] | None = None,
        threads: int | None = None,
        processes: bool | None = None,
    ):
        self.repo = repo
        self.keys = repo.keys
        self.progress = progress
        self.threads = threads or worker_count()
        self.read_bytes = 0
        self.skipped_files = 0  # unchanged since the parent snapshot, not read again
        self.committed = False
        # Files in the order they were added; each goes to the file list (written in pieces
        # as it fills) once its chunks are stored, so no snapshot-wide list is held.
        self._order: deque[_File] = deque()
        self._sink: FileListSink | None = None
        self._explicit: set[str] = set()  # paths given to add_file/add_stream
        self._last: _File | None = None  # the file _start made last
        self._parent: SortedLookup | None = None  # the parent's entries, a piece in memory
        self._stored: StoredList | None = None  # the parent's list as stored (v2 parent)
        # Every chunk the parent refers to is indexed (see _chunks_known): an unchanged file
        # is taken without looking its chunks up one by one.
        self._parent_known = False
        self._parent_header: dict | None = None
        self._index_clean = False  # the index loaded whole, every pack sound, nothing damaged
        self._index_names: list[str] = []
        self._packs_stored: dict[str, int] = {}  # at the start, every one indexed and sound
        self._added = StoredIds()
        self._written: WrittenPacks | None = None
        self._pack_lock = threading.Lock()
        # (future, file or files, bytes, block or None): a batch's future gives a list of ids
        self._inflight: deque = deque()
        self._inflight_bytes = 0
        self._inflight_chunks = 0
        self._batch: list[tuple[str, int]] = []  # small files (source, size) for a worker
        self._batch_files: list[_File] = []
        self._batch_bytes = 0
        self._late_drops = 0  # files of a walk a worker found deleted
        self._small_files = 0  # files sent in batches so far
        self._batch_limits = (BATCH_BYTES, BATCH_FILES)
        self._window_chunks = WINDOW_CHUNKS
        # worker processes sealing batches: None once PROCESSES_AFTER small files are met,
        # True from the first batch
        self._procs = OnDemand(
            lambda: Processes(
                batchseal.ENTRY, batchseal.init(self.keys, repo.config["chunker"]), process_count()
            ),
            processes,
            PROCESSES_AFTER,
        )
        self._free_blocks: list[_Block] = []
        self._local = threading.local()
        cfg = repo.config["chunker"]
        self._cdc = FastCDC(
            cfg["avg"], min_size=cfg["min"], max_size=cfg["max"], seed=self.keys.chunker_seed
        )
        self._max_chunk = cfg["max"]
        self._pool: ThreadPoolExecutor | None = None
        self._packs: PackWriter | None = None
        # packs a dead writer left in no index, taken over (see leftovers.py)
        self._adopted: dict[str, tuple[int, list]] = {}
        self._adopted_chunks: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SnapshotWriter:
        self.repo.locks.acquire(True)
        try:
            self._parent = self._parent_files()
            if not self._quiet():
                self._fresh_index()
                index = self.repo.index
                self._index_clean = not (
                    index.errors or index.unsound or index.damaged or index.recovered
                )
                self._index_names = list(index.files)
                self._take_over_leftovers()
                self._packs_stored = self.repo.backend.list("data")
                self._parent_known = self._index_clean and self._chunks_known()
            self._sink = FileListSink(self.repo.backend, self.keys, self._stored)
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sctk-backup")
            self._written = WrittenPacks()
            self._packs = PackWriter(self.repo.backend, self.keys, self._on_pack_written)
        except BaseException:
            self.repo.locks.release()
            raise
        return self

    def _quiet(self) -> bool:
        """Whether the repository is as the parent's writer left it: the same index files
        and the same packs at the same sizes, all of which it knew indexed and sound. Then
        the index is not loaded (until a changed file needs it), no pack is an orphan to
        adopt (only partial files are looked for), and the parent's chunks are all known."""
        header = self._parent_header
        if header is None or not header.get("pack_state"):
            return False
        backend = self.repo.backend
        names = backend.list("index")
        stored = backend.list("data")
        if header.get("index_state") != index_state(names):
            return False
        if header["pack_state"] != pack_state(stored):
            return False
        if self.repo.index_loaded:
            self.repo.refresh_index()  # loaded before: again if its files are not these
        found = leftovers.scan(self.repo, packs=False)
        leftovers.remove_junk(self.repo, found)
        self._index_clean = self._parent_known = True
        self._index_names = list(names)
        self._packs_stored = stored
        return True

    def _fresh_index(self) -> None:
        """The index as the repository is now: loaded again when index files were added or
        removed, or when a pack went missing or changed size since it was loaded (so a lost
        pack's chunks are stored again); else the one loaded at open is used as it is
        (loading it again cost seconds at a million chunks)."""
        repo = self.repo
        repo.refresh_index()
        index = repo.index
        stored = repo.backend.list("data")
        unsound = {p for p, size in index.pack_sizes.items() if stored.get(pack_name(p)) != size}
        if unsound != index.unsound:
            repo.refresh_index(force=True)

    def _take_over_leftovers(self) -> None:
        """Delete the partial files of a dead writer and adopt its finished packs (we hold
        the exclusive lock: no live writer owns them)."""
        found = leftovers.scan(self.repo)
        leftovers.remove_junk(self.repo, found)
        self._adopted = found.packs
        self._adopted_chunks = {b[0] for _, blobs in found.packs.values() for b in blobs}

    def _parent_files(self) -> SortedLookup | None:
        """The newest snapshot's (the parent's) entries by path, for skipping unchanged files;
        None when it cannot be read (everything is then read again). The walk goes in path
        order, as the list is stored: each piece of it is read once."""
        try:
            snaps = self.repo.snapshots()
            if not snaps:
                return None
            snap_id = snaps[-1].id
            lookup = self.repo.snapshot_lookup(snap_id)
            header = self.repo.snapshot_header(snap_id)
        except RepoError:
            return None
        self._parent_header = header
        if header["format"] == 2 and self.repo.version >= 2:
            self._stored = StoredList(self.repo.backend, f"snapshots/{snap_id}", header)
        return lookup

    def _chunks_known(self) -> bool:
        """Whether every chunk the parent refers to is surely indexed and sound, without
        looking each up: its writer recorded the index files (immutable, named by their
        content) that listed all its chunks, the same files are the whole index now, and
        the index is clean (every file read, every pack present at its size, nothing marked
        damaged). A prune, a repair or a lost file changes the set: then each is looked up."""
        header = self._parent_header
        state = header.get("index_state") if header is not None else None
        return bool(state) and self._index_clean and state == index_state(self._index_names)

    def _parent_entry(self, path: str) -> dict | None:
        """The parent's entry for PATH (with a stat), or None."""
        assert self._parent is not None
        try:
            prev = self._parent.get(path)
        except RepoError:  # a damaged piece: those files are read again
            self._parent = None
            return None
        return prev if prev is not None and "st" in prev else None

    def __exit__(self, *exc) -> None:
        try:
            self._procs.close()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if self._packs is not None:
                self._packs.close()
            if self._sink is not None:
                self._sink.discard()  # committed already, or the snapshot is abandoned
            if self._written is not None:
                self._written.close()
        finally:
            self.repo.locks.release()

    def _on_pack_written(self, pack_id: str, size: int, blobs: list) -> None:
        assert self._written is not None
        self._written.add(pack_id, size, blobs)
        # A pack is ~16 MiB of chunks read, compressed and sealed in fresh buffers since the
        # last one: what they left free in the arenas goes back to the system. Without it
        # the first backup's peak rose with the data (88-97 MiB at scale 1, 96-100 at
        # scale 16); with it 88-94 and 86-91 (RESULTS.md, "Backup first-run growth").
        release_free_memory()

    # -- the pipeline --------------------------------------------------------------------------

    def _known(self, cid: str) -> bool:
        """Stored already (in a sound pack) or by this writer: no need to store it again."""
        if cid in self._added or cid in self._adopted_chunks:
            return True
        index = self.repo.index
        loc = index.entries.get(cid)
        # A chunk whose pack was lost or truncated, or that a check found damaged, is stored
        # again, so new backups are whole (and older ones that share it heal).
        return (
            loc is not None
            and loc[0] not in index.unsound
            and (cid, loc[0], loc[1]) not in index.damaged
        )

    def _all_known(self, cids: list[str]) -> bool:
        """_known() of every chunk of an unchanged file. With no unsound pack and no damaged
        chunk in the index (the usual case), an indexed chunk is known: one dict lookup."""
        index = self.repo.index
        if index.unsound or index.damaged:
            return all(self._known(c) for c in cids)
        entries = index.entries
        for c in cids:
            if c not in entries and c not in self._added and c not in self._adopted_chunks:
                return False
        return True

    def _process(self, data, policy: FilePolicy, trial: bool) -> str:
        """Worker: chunk id, then (unless known) compress, encrypt and append to the pack.

        Chunks go into packs in the order they finish: their order in a pack does not matter,
        and appending here keeps the pack writes off the reading thread."""
        try:
            cid = self.keys.chunk_id(data)
            # A trial runs even on a chunk stored already: the file's other chunks wait for it.
            if self._known(cid) and not trial:
                return cid
            payload, flags = self._compressors().compress(data, policy, trial)
        finally:
            if trial:
                policy.trial_done()
        if not self._known(cid):
            self._store(cid, len(data), payload, flags)
        return cid

    def _compressors(self) -> Compressors:
        """This thread's compressors (and its buffer to seal into, see _store)."""
        local = self._local
        comp = getattr(local, "comp", None)
        if comp is None:
            comp = local.comp = Compressors()
            local.sealed = bytearray()
        return comp

    def _store(self, cid: str, raw_len: int, payload, flags: int) -> None:
        local = self._local
        nonce = os.urandom(12)
        # Sealed into this thread's reusable buffer: the pack writer copies it (appends it to
        # the pack file) before add() returns, so no fresh 0.5 MiB buffer per chunk.
        # Grown by doubling, but never past the largest chunk sealed (a payload is never
        # longer than its chunk: see compression.py): doubling from 2.1 MiB for a chunk of
        # 4 MiB made buffers of up to 8 MiB a thread, the more often the more large chunks.
        need = len(payload) + 16
        if len(local.sealed) < need:
            grown = min(2 * len(local.sealed), self._max_chunk + 16)
            local.sealed = bytearray(max(need, grown))
        sealed = memoryview(local.sealed)[:need]
        self.keys.aead.encrypt_into(nonce, payload, cid.encode(), sealed)
        self._add_new(((cid, raw_len, flags, nonce, sealed),))

    def _add_new(self, sealed: Iterable[tuple[str, int, int, bytes, Any]]) -> None:
        """Append SEALED chunks ((id, length, flags, nonce, ciphertext)) to the pack under
        the pack lock, each unless stored by now: another worker (or file) may have stored
        the same chunk since it was looked up."""
        assert self._packs is not None
        with self._pack_lock:
            for cid, raw_len, flags, nonce, ciphertext in sealed:
                if not self._known(cid):
                    self._packs.add(cid, flags, raw_len, (nonce, ciphertext))
                    self._added.add(cid)

    def _store_sealed(self, out: list, rows: list, sealed: bytearray) -> list:
        """A worker process's batch as it arrives (see batchseal._seal_batch): its sealed
        chunks (ROWS: (id, length, flags, sealed length), laid end to end in SEALED) into the
        pack, each run of those not stored already with one write (on a first backup, the
        whole batch); OUT, the per-file part, for _take_read."""
        view = memoryview(sealed)
        with self._pack_lock:
            run: list = []
            start = off = 0
            for row in rows:
                if self._known(row[0]):
                    self._add_run(run, view[start:off])
                    run = []
                    start = off + row[3]
                else:
                    run.append(row)
                off += row[3]
            self._add_run(run, view[start:off])
        return out

    def _add_run(self, run: list, sealed: memoryview) -> None:
        if run:
            assert self._packs is not None
            self._packs.add_run(run, (sealed,))
            for row in run:
                self._added.add(row[0])

    def _cut_blocks(
        self,
        readinto: Callable,
        take: Callable[[], _Block] | None = None,
        done: Callable[[_Block], None] | None = None,
    ) -> Iterator[tuple[memoryview, _Block]]:
        """The chunks of a stream (READINTO(view) -> bytes read, 0 at the end) as views of
        large blocks, cut exactly where pyfastcdc's stream chunker cuts: a cut is taken only
        with at least max_size bytes after the chunk's start in the buffer (or at the end),
        so what follows the block cannot move it; the rest is carried to the next block.
        Each chunk comes with its block, which is reused once its chunks are processed.
        TAKE and DONE: where blocks come from and go once cut (by default the walking
        thread's pool of them)."""
        take = take or self._take_block
        done = done or self._cut_done
        max_size = self._max_chunk
        carry = memoryview(b"")
        prev: _Block | None = None
        eof = False
        while not eof:
            block = take()
            view = memoryview(block.buf)
            view[: len(carry)] = carry
            filled = len(carry)
            carry = memoryview(b"")
            if prev is not None:
                done(prev)
            size = min(len(view), filled + READ_BLOCK)
            while filled < size:
                n = readinto(view[filled:size])
                if not n:
                    eof = True
                    break
                filled += n
            data = view[:filled]
            for c in self._cdc.cut_buf(data):
                if not eof and filled - c.offset < max_size:
                    carry = data[c.offset :]
                    break
                yield c.data, block
            prev = block
        if prev is not None:
            done(prev)

    def _take_block(self) -> _Block:
        if self._free_blocks:
            block = self._free_blocks.pop()
            block.pending, block.cut = 0, False
            return block
        return _Block(READ_BLOCK + self._max_chunk)

    def _cut_done(self, block: _Block) -> None:
        block.cut = True
        if block.pending == 0:
            self._recycle(block)

    def _recycle(self, block: _Block) -> None:
        if len(self._free_blocks) < FREE_BLOCKS:
            self._free_blocks.append(block)

    def _submit(self, data, f: _File, block: _Block | None = None) -> None:
        assert self._pool is not None
        n = len(data)
        f.pending += 1
        f.entry.size += n
        self.read_bytes += n
        if block is not None:
            block.pending += 1
        fut = self._pool.submit(self._process, data, f.policy, f.policy.next_is_trial())
        self._add_in_flight(fut, f, n, 1, block)

    def _read_later(self, source: str | Path, f: _File) -> None:
        """A small file (F.st: its stat) into the batch a worker will read (_read_batch)."""
        assert f.st is not None
        f.pending += 1
        f.reading = False
        self._small_files += 1
        self._batch.append((str(source), f.st[0]))
        self._batch_files.append(f)
        self._batch_bytes += f.st[0]
        most_bytes, most_files = self._batch_limits
        if self._batch_bytes >= most_bytes or len(self._batch) >= most_files:
            self._send_batch()

    def _send_batch(self) -> None:
        if not self._batch:
            return
        assert self._pool is not None
        sources, files, n = self._batch, self._batch_files, self._batch_bytes
        self._batch, self._batch_files, self._batch_bytes = [], [], 0
        procs = self._seal_processes()
        if procs is not None:
            try:
                # the sealed chunks go into the pack in a thread of workerprocs' as they
                # arrive, not on the thread that walks
                fut = procs.submit(
                    (sources, READ_IN_WORKER), lambda got, sealed: self._store_sealed(*got, sealed)
                )
            except WorkerDied:
                raise _worker_died() from None
            n = 0  # its bytes are read in the worker, not here
        else:
            fut = self._pool.submit(self._read_batch, sources)
        self._add_in_flight(fut, files, n, len(sources), None)

    def _seal_processes(self) -> Processes | None:
        """The worker processes for small-file batches once they are up; None while threads
        read them. Automatically (processes=None) they are started once this writer has met
        PROCESSES_AFTER small files, and threads read the batches while they start."""
        procs = self._procs.get(self._small_files)
        if procs is not None:
            self._batch_limits = (PROCESS_BATCH_BYTES, PROCESS_BATCH_FILES)
            self._window_chunks = PROCESS_WINDOW_FILES
        return procs

    def _read_batch(self, sources: list[tuple[str, int]]) -> list:
        """Worker thread: each file read whole and hashed, its new chunks compressed, then
        sealed and stored all together; per file as read_batch gives it."""
        known = self._known
        out, new = read_batch(
            sources,
            READ_IN_WORKER,
            self._cdc,
            self.keys.chunk_id,
            lambda cid: not known(cid),
            self._compressors().compress,
        )
        if new:
            # Sealed with one draw of nonces and added under one hold of the pack lock: per
            # chunk, the lock kept the storing threads waiting on one another and each
            # os.urandom call was a wait for the GIL.
            self._add_new(seal(self.keys, new))
        return out

    def _stream_grown(self, source: str) -> tuple:
        """A small file that grew since its stat past what a batch reads whole, read and
        stored chunk by chunk, as read_batch gives a file; in blocks of its own, since the
        walking thread may drain a batch amid a large file of its own blocks."""
        policy = FilePolicy(trials=True)
        sha = hashlib.sha256()
        ids: list[str] = []
        size = 0
        own = self._max_chunk + READ_BLOCK
        with open(source, "rb", buffering=0) as fh:
            # each block dropped once cut: its chunks are stored before the next is taken
            for piece, _ in self._cut_blocks(fh.readinto, lambda: _Block(own), _drop_block):
                sha.update(piece)
                size += len(piece)
                ids.append(self._process(piece, policy, policy.next_is_trial()))
        return size, sha.hexdigest(), ids

    def _take_read(self, f: _File, got) -> None:
        """What a batch read of F (see read_batch) into its entry."""
        f.pending -= 1
        if isinstance(got, Grown):
            try:
                got = self._stream_grown(got.args[0])
            except OSError as exc:
                exc.filename = exc.filename or got.args[0]
                got = exc
        if isinstance(got, OSError):
            err = _unreadable(got.filename, got)
            if isinstance(err, _Vanished) and not f.side:
                f.dropped = True  # deleted while we walked: not part of this snapshot
                self._late_drops += 1
                return
            raise err
        f.entry.size, f.entry.sha256, f.entry.chunks = got
        self.read_bytes += f.entry.size
        if self.progress is not None:
            self.progress(self.read_bytes)

    def _add_in_flight(self, fut, owner, n: int, chunks: int, block: _Block | None) -> None:
        inflight = self._inflight
        inflight.append((fut, owner, n, block))
        self._inflight_bytes += n
        self._inflight_chunks += chunks
        while (
            self._inflight_bytes > WINDOW_BYTES or self._inflight_chunks > self._window_chunks
        ) and len(inflight) > 1:
            self._drain_one()
        if self.progress is not None:
            self.progress(self.read_bytes)

    def _drain_one(self) -> None:
        fut, owner, n, block = self._inflight.popleft()
        self._inflight_bytes -= n
        if block is not None:
            block.pending -= 1
            if block.pending == 0 and block.cut:
                self._recycle(block)
        if type(owner) is list:  # a batch of small files, read by a worker
            self._inflight_chunks -= len(owner)
            try:
                got = fut.result()
            except WorkerDied:
                raise _worker_died() from None
            except WorkerFailed as exc:
                raise RepoError(
                    f"A backup worker process failed ({exc}); nothing was committed."
                ) from None
            for f, one in zip(owner, got, strict=True):
                self._take_read(f, one)
        else:
            self._inflight_chunks -= 1
            owner.entry.chunks.append(fut.result())
            owner.pending -= 1

    def _drain_until(self, f: _File) -> None:
        self._send_batch()
        while f.pending:
            self._drain_one()

    def _drain_all(self) -> None:
        self._send_batch()
        while self._inflight:
            self._drain_one()
        self._emit()

    def _emit(self) -> None:
        """Hand the files whose chunks are all stored, in the order added, to the list."""
        order, sink = self._order, self._sink
        assert sink is not None
        while order:
            f = order[0]
            if f.reading or f.pending:
                return
            order.popleft()
            if f.dropped:
                continue
            doc = f.doc if f.doc is not None else _file_doc(f.entry, f.st)
            if f.side:
                sink.add_side(doc)
            elif f.doc is not None:
                sink.add(doc, f.origin)
            else:
                sink.add(doc)

    def _check_open(self) -> None:
        if self._pool is None:
            raise RepoError("Use the snapshot writer inside a `with repo.writer() as w:` block.")
        if self.committed:
            raise RepoError("This snapshot is already committed; start a new writer.")

    def _start(self, path: str, mode: int, checked: bool = False, explicit: bool = False) -> _File:
        """A new file at PATH (CHECKED: a plain relative path already, as the walk makes)."""
        self._check_open()
        if not checked:
            path = check_path(path)
        if explicit:  # a path the walk also makes shows as a duplicate at the commit
            if path in self._explicit:
                raise RepoError(f"Snapshot path {path} was added twice; add each path once.")
            self._explicit.add(path)
        f = _File(path, mode & 0o7777)
        f.side = explicit
        self._order.append(f)
        self._last = f
        return f

    def _finish(self, f: _File) -> None:
        f.entry.sha256 = f.sha.hexdigest()
        f.sha = None  # a hash object per file kept to the commit weighed more than the entry
        f.reading = False

    def _feed_file(self, source: str | Path, f: _File) -> None:
        """Read SOURCE (F.st: its stat before reading) into chunks: a small file by a worker
        (see READ_IN_WORKER), one up to the largest chunk at once, a larger one in blocks."""
        assert f.st is not None
        size = f.st[0]
        if size <= READ_IN_WORKER:
            self._read_later(source, f)
            return
        f.sha = hashlib.sha256()
        try:
            # up to the largest chunk at once: its chunks are views of the one read
            data = read_whole(source, size, self._max_chunk) if size <= self._max_chunk else None
        except Grown:  # past the largest chunk since its stat: streamed
            data = None
        if data is not None:
            f.sha.update(data)
            for c in self._cdc.cut_buf(data):
                self._submit(c.data, f)
        else:
            f.policy = FilePolicy(trials=True)
            with open(source, "rb", buffering=0) as fh:
                for piece, block in self._cut_blocks(fh.readinto):
                    f.sha.update(piece)
                    self._submit(piece, f, block)
        self._finish(f)

    def _origin(self) -> tuple[int, int, int] | None:
        """Where the entry the parent lookup gave last lies in the parent's stored list."""
        parent = self._parent
        if self._stored is None or parent is None:
            return None
        return (parent.piece, parent.at - 1, len(parent.docs))

    def _unchanged(self, prev: dict, st: os.stat_result) -> bool:
        """The file of stat ST is the parent's entry PREV unchanged (same size, mtime, ctime,
        inode and mode) and all its chunks are still stored."""
        pst = prev["st"]
        return (
            pst[0] == st.st_size
            and pst[1] == st.st_mtime_ns
            and pst[2] == st.st_ctime_ns
            and pst[3] == st.st_ino
            and prev["mode"] == st.st_mode & 0o7777
            and (self._parent_known or self._all_known(prev["chunks"]))
        )

    def _take_unchanged(self, path: str, st: os.stat_result) -> bool:
        """The walk's fast path: when PATH (checked) is unchanged since the parent and no
        file before it is still in flight, put the parent's entry straight into the list
        (no per-file object); False when the file must go the whole way (_queue_file)."""
        if self._order:  # files before it are in flight: the list takes files in order
            self._send_batch()  # (an unchanged file after a changed one: no waiting batch)
            inflight = self._inflight
            while inflight and inflight[0][0].done():
                self._drain_one()
            self._emit()
            if self._order:
                return False
        prev = self._parent_entry(path)
        if prev is None:
            return False
        if prev.keys() != _DOC_KEYS or not self._unchanged(prev, st):
            return False
        assert self._sink is not None
        self._sink.add(prev, self._origin())
        self.skipped_files += 1
        self.read_bytes += prev["size"]
        if self.progress is not None:
            self.progress(self.read_bytes)
        return True

    def _queue_file(
        self,
        path: str,
        source: str | Path,
        st: os.stat_result | None = None,
        explicit: bool = False,
    ) -> _File | None:
        """Add SOURCE at PATH: reused from the parent when unchanged, else read. ST: its
        lstat from the walk (a regular file, PATH checked already), saving a stat call."""
        if st is None:
            try:
                st = os.stat(source)
            except FileNotFoundError:
                raise _Vanished(f"File {source} does not exist; check the path.") from None
            if not stat.S_ISREG(st.st_mode):
                raise RepoError(
                    f"{source} is not a regular file; only regular files are backed up."
                )
            f = self._start(path, st.st_mode, explicit=explicit)
        else:
            f = self._start(path, st.st_mode, checked=True)
        prev = self._parent_entry(f.entry.path) if self._parent else None
        if prev is not None and self._unchanged(prev, st):
            # Unchanged since the parent snapshot (same size, mtime, ctime and inode) and
            # all its chunks still stored: reuse the entry without reading the file, as
            # restic does; its lists and strings are the parent's (never modified).
            f.entry.size, f.entry.sha256 = prev["size"], prev["sha256"]
            f.entry.chunks = prev["chunks"]
            f.st = prev["st"]
            if prev.keys() == _DOC_KEYS:
                f.doc = prev
                f.origin = self._origin()
            f.reading = False
            self.skipped_files += 1
            self.read_bytes += f.entry.size
            if self.progress is not None:
                self.progress(self.read_bytes)
            return f
        # Stat taken before reading: a change while we read shows as a new stat next time.
        f.st = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        try:
            self._feed_file(source, f)
        except OSError as exc:
            raise _unreadable(source, exc) from None
        return f

    # -- public API ----------------------------------------------------------------------------

    def add_file(self, path: str, source: Path) -> FileEntry:
        """Add the file SOURCE under the snapshot path PATH (streamed, bounded memory)."""
        f = self._queue_file(path, Path(source), explicit=True)
        assert f is not None
        self._drain_until(f)
        self._emit()
        return f.entry

    def add_stream(self, path: str, chunks: Iterable[bytes], mode: int = 0o600) -> FileEntry:
        """Add a file whose bytes come from an iterable (e.g. a dump's stdout)."""
        f = self._start(path, mode, explicit=True)
        f.policy = FilePolicy(trials=True)
        f.sha = hashlib.sha256()
        for piece, block in self._cut_blocks(_IterReader(chunks).readinto):
            f.sha.update(piece)
            self._submit(piece, f, block)
        self._finish(f)
        self._drain_until(f)
        self._emit()
        return f.entry

    def add_tree(
        self,
        root: Path,
        prefix: str = "",
        exclude: Callable[[str], bool] | None = None,
        collect: bool = True,
    ) -> list[FileEntry] | int:
        """Every regular file under ROOT as PREFIX + its relative posix path (symlinks and
        special files skipped; EXCLUDE gets each directory and file path and may skip it):
        their entries, or with COLLECT=False only their number (a million entries held
        for the caller would weigh more than the whole backup)."""
        root = Path(root)
        if not root.is_dir():
            raise RepoError(f"{root} is not a directory; give the directory to back up.")
        self._check_open()
        files: list[_File] = []
        count = 0
        fast = not collect  # the caller wants no entries: unchanged files take the fast path
        # Names from scandir are never empty, '.', '..' or hold a '/': with a plain prefix
        # every path the walk makes is plain, so it is not checked again file by file.
        checked = not prefix or (prefix.endswith("/") and check_path(prefix[:-1]) == prefix[:-1])

        def order(item: os.DirEntry) -> str:
            # A directory sorts as 'name/': the walk then yields paths in sorted order (the
            # parent snapshot's order), so most parent lookups hit the next entry.
            return item.name + "/" if item.is_dir(follow_symlinks=False) else item.name

        def walk(dirpath: str, rel: str) -> None:
            nonlocal count
            try:
                with os.scandir(dirpath) as it:
                    items = sorted(it, key=order)
            except FileNotFoundError:
                return
            except PermissionError:
                raise RepoError(f"Cannot list {dirpath}: permission denied.") from None
            for item in items:
                sub = f"{rel}{item.name}"
                snap_path = prefix + sub
                if exclude is not None and exclude(snap_path):
                    continue
                if item.is_symlink():
                    continue
                if item.is_dir(follow_symlinks=False):
                    walk(item.path, sub + "/")
                elif item.is_file(follow_symlinks=False):
                    try:
                        # the entry's own lstat: a regular file that is not a link
                        st = item.stat(follow_symlinks=False)
                        if not stat.S_ISREG(st.st_mode):
                            continue  # replaced by something else since the listing
                        if checked:
                            if fast and self._parent and self._take_unchanged(snap_path, st):
                                count += 1
                                continue
                            f = self._queue_file(snap_path, item.path, st)
                        else:
                            f = self._queue_file(snap_path, item.path)
                    except (FileNotFoundError, _Vanished):
                        self._drop(snap_path)
                        continue  # deleted while we walked: not part of this snapshot
                    if f is not None:
                        count += 1
                        if collect:
                            files.append(f)
                        if len(self._order) > 64:
                            self._emit()

        drops = self._late_drops
        walk(str(root), "")
        self._drain_all()
        if collect:
            return [f.entry for f in files if not f.dropped]
        return count - (self._late_drops - drops)

    def _drop(self, snap_path: str) -> None:
        """Leave out the file the walk started last if it is SNAP_PATH (it vanished)."""
        f = self._last
        if f is not None and f.entry.path in (snap_path, str(PurePosixPath(snap_path))):
            f.dropped = True
            f.reading = False

    def _sort_adopted(self) -> tuple[dict, list[str]]:
        """(adopted packs some snapshot uses: indexed now, ids of the others: deleted)."""
        if not self._adopted:
            return {}, []
        assert self._sink is not None
        used = {c for d in self._sink.docs() for c in d["chunks"]}
        keep = {p: v for p, v in self._adopted.items() if any(b[0] in used for b in v[1])}
        rest = [p for p in self._adopted if p not in keep]
        if rest and self.repo.index.errors:
            # an index file is damaged: an "orphan" may hold indexed data; keep it all
            keep.update((p, self._adopted[p]) for p in rest)
            rest = []
        if rest:
            older = leftovers.referenced_chunks(self.repo)
            for p in list(rest):
                if any(b[0] in older for b in self._adopted[p][1]):
                    keep[p] = self._adopted[p]
                    rest.remove(p)
        return keep, rest

    def commit(
        self,
        label: str,
        manifest: dict,
        host: str | None = None,
        time: datetime | None = None,
    ) -> SnapshotInfo:
        """Make the snapshot durable: packs, then their index, then the snapshot file."""
        if self._packs is None:
            raise RepoError("Use the snapshot writer inside a `with repo.writer() as w:` block.")
        if self.committed:
            raise RepoError("This snapshot is already committed; start a new writer.")
        import socket

        self._drain_all()
        # Nothing is left for the sealing workers: stopped now, not at __exit__, so that the
        # index and the snapshot are written without them (their memory beside the writer's
        # made the first backup's peak at scale 16 of the reference data set, 115 MiB against
        # 106 at scale 1, in this phase).
        self._procs.close()
        self._packs.flush()
        assert self._sink is not None
        sink = self._sink
        pieces = sink.finish()  # sorted, duplicates refused, before anything is written
        assert self._written is not None
        adopted, unused = self._sort_adopted()

        def written():  # the packs to index, one at a time (their rows are on local disk)
            return itertools.chain(self._written.items(), adopted.items())

        file_of: dict[str, str] = {}
        names = []
        if self._written or adopted:
            names = write_index(self.repo.backend, self.keys, written(), file_of=file_of)
        when = (time or datetime.now(UTC)).astimezone(UTC)
        header = {
            "time": when.isoformat(),
            "label": label,
            "host": host or socket.gethostname(),
            "manifest": manifest,
            "size": sink.size,
            "added_bytes": self._written.bytes() + sum(size for size, _ in adopted.values()),
        }
        if self.repo.version >= 2:
            if self._index_clean:  # every chunk it refers to is listed in these files
                header["index_state"] = index_state([*self._index_names, *names])
                # and these packs (all indexed) are stored: those there at the start, ours
                stored = dict(self._packs_stored)
                stored.update((pack_name(p), size) for p, size, _, _ in self._written.packs)
                stored.update((pack_name(p), size) for p, (size, _) in adopted.items())
                for p in unused:
                    stored.pop(pack_name(p), None)
                header["pack_state"] = pack_state(stored)
            snap_id = pieces.commit({**header, "files": sink.count})
            doc = {**header, "files": sink.count}
        else:  # a version-1 repository: the list whole, as older sctk wrote it and reads it
            doc = {"version": 1, **header, "files": list(sink.docs())}
            try:
                blob = seal_json(self.keys, doc, AAD_SNAPSHOT)
            except TypeError as exc:
                raise RepoError(f"The snapshot manifest is not JSON data: {exc}.") from None
            snap_id = content_id(blob)
            self.repo.backend.write(f"snapshots/{snap_id}", blob)
        if file_of and self.repo.index_loaded:  # else loaded from the files when first used
            self.repo.index.add_written(
                self.repo.backend,
                self.keys,
                ((pack, size, rows) for pack, (size, rows) in written()),
                file_of,
            )
        for pack_id in unused:  # a dead writer's pack that no snapshot needs: garbage
            self.repo.backend.delete(pack_name(pack_id))
        self.committed = True
        return self.repo.committed(snap_id, doc)
