"""Reading chunks for a whole-repository pass (verify, restore): one reader per thread.

A local repository is read with open packs and three buffers per reader of 1 MiB each, reused
for every chunk that fits them (read, decrypted and decompressed in place), so a pass over
gigabytes costs few allocations and page faults: that was a third of a restore's CPU when
every chunk was three fresh byte strings. The rare larger chunk gets buffers of its own, let
go after it (see _room, _decompress): a buffer grown to the largest chunk met is kept by its
thread to the end, and one sized for the largest chunk possible (4 MiB) on every thread was
measured at 63-67 MiB peak for a restore at scale 1 of the reference data set (56-60 when
decompressing into fresh objects, 54-55 now). Such a chunk is decoded, used (hashed, written)
and let go by one thread of the process at a time (LARGE_DECODE, LocalReader.read), never
ahead by idle threads (PlannedReads): several threads holding one at once made the peak grow
with the data (the more chunks a pass reads, the more often they meet). A remote repository
goes through the backend, its chunks fetched ahead.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import deque
from typing import TYPE_CHECKING

import zstandard
from cryptography.exceptions import InvalidTag

from sctk.backup.repo.errors import ChunkError
from sctk.backup.repo.formats import FLAG_ZSTD, pack_name

if TYPE_CHECKING:  # a verify's worker process runs LocalReader alone (checkprocs.py)
    from collections.abc import Iterable
    from concurrent.futures import Future
    from pathlib import Path

MiB = 1 << 20
OPEN_PACKS = 8  # packs each reader keeps open
READ_AHEAD = 6  # chunks of one file fetched ahead from a remote repository
BUFFER = MiB  # each reader's reused buffers: a sealed chunk, its plaintext (see _room)

# Held while one chunk that does not fit the reused buffers is decoded (LocalReader.plain)
# and, through read(), used (hashed, written) and let go, so at most one such chunk's fresh
# buffers (up to ~4 MiB each) are alive at a time: decoding one at a time alone left each
# thread holding its chunk while it hashed or wrote it, and the peaks of verify and restore
# at scale 16 of the reference data set unchanged (benchmarks/RESULTS.md, "Backup large
# chunks one at a time (branch big27)"). Module-wide, not per repository: it bounds the
# process's memory, and a process may verify one repository while it restores another (or
# the same one through two objects). The cost is parallelism on those chunks only (405 of
# 86,774 at scale 16, 8% of the bytes: no CPU or wall time lost measurably). Held only
# inside one call, never from one call to the next: a thread holding it between calls
# could wait (on a Helpers future, on its pool) for a thread that waits for it.
LARGE_DECODE = threading.Lock()


def large(loc: tuple) -> bool:
    """Whether the chunk at LOC gets buffers of its own: sealed or raw over BUFFER (the
    plaintext is smaller than the sealed chunk, and raw when uncompressed)."""
    return loc[2] > BUFFER or loc[3] > BUFFER


def _buffer() -> mmap.mmap:
    """BUFFER bytes whose pages are resident once written, not before: a bytearray of that
    size is filled with zeros at once, so every reader held 3 MiB from its start whatever it
    read; a verify worker reading files of a few KB used a page or two of each."""
    return mmap.mmap(-1, BUFFER)


def chunk_reader(repo):
    """A reader for one thread: plain(cid, loc) gives a chunk's plaintext (a view valid until
    the next call, for a local repository) or its ChunkError; read(cid, loc, use) and
    each(cids, use) hand plaintexts to USE instead (see LocalReader.read); close() when
    done."""
    if repo.backend.local:
        return LocalReader(repo.backend.root, repo.keys.aead, repo)
    return BackendReader(repo)


def _used(data, use) -> ChunkError | None:
    """USE(DATA) unless DATA is a ChunkError, which is returned."""
    if isinstance(data, ChunkError):
        return data
    use(data)
    return None


class BackendReader:
    """Chunks through the repository's backend (remote repositories)."""

    def __init__(self, repo):
        self.repo = repo

    def plain(self, cid: str, loc: tuple):
        return self.repo.safe_load(cid)

    def read(self, cid: str, loc: tuple, use) -> ChunkError | None:
        return _used(self.plain(cid, loc), use)

    def chunks(self, cids: list[str]):
        """A file's chunks in order, fetched ahead in the repository's pool (each fetch waits
        on the network: several in flight hide the latency)."""
        return self.repo.iter_chunks(cids, window=READ_AHEAD)

    def each(self, cids: list[str], use) -> ChunkError | None:
        datas = self.chunks(cids)
        try:
            for data in datas:
                if (err := _used(data, use)) is not None:
                    return err
            return None
        finally:
            datas.close()

    def close(self) -> None:
        pass


class LocalReader:
    """One thread's reads of a local repository: open packs, and buffers reused for every
    chunk (read and decrypted in place). plain() returns a view valid until its next call;
    read() and each() hand it to a function. Packs under ROOT, sealed with AEAD; REPO (for
    each(): its index) may be None in a process holding no repository (checkprocs.py)."""

    def __init__(self, root: str | Path, aead, repo=None):
        self.repo = repo
        self.root = root
        self.aead = aead
        self.dctx = zstandard.ZstdDecompressor()
        self.fds: dict[str, int] = {}
        self.sealed = _buffer()
        self.plainbuf = _buffer()
        self.rawbuf = _buffer()  # a compressed chunk decompressed (see _decompress)

    def _fd(self, pack: str) -> int:
        fd = self.fds.pop(pack, None)
        if fd is None:
            if len(self.fds) >= OPEN_PACKS:
                os.close(self.fds.pop(next(iter(self.fds))))
            fd = os.open(os.path.join(self.root, pack_name(pack)), os.O_RDONLY)
        self.fds[pack] = fd  # most recently used last
        return fd

    @staticmethod
    def _room(buf: bytearray, need: int) -> memoryview:
        """NEED bytes of BUF, or of a buffer for this one chunk when BUF is too small.

        The reused buffers are never grown: a sealed chunk over BUFFER is rare (content-
        defined cuts average 0.5 MiB; 4 of 5,488 chunks at scale 1 of the reference data set,
        4 of 21,821 at scale 4), and a thread that met one kept 2 MiB buffers for the rest of
        the pass (two or three threads did, which ones varying from run to run); the more
        chunks a pass reads, the larger the largest it meets."""
        return memoryview(buf if len(buf) >= need else bytearray(need))[:need]

    def plain(self, cid: str, loc: tuple):
        if large(loc):
            with LARGE_DECODE:
                return self._plain(cid, loc)
        return self._plain(cid, loc)

    def read(self, cid: str, loc: tuple, use) -> ChunkError | None:
        """USE(plaintext) for the chunk at LOC (a view valid during the call), or its
        ChunkError. A large chunk's is used under LARGE_DECODE and let go before it is
        released, so USE must not wait for another thread (hashing and writing do not)."""
        if large(loc):
            with LARGE_DECODE:
                return _used(self._plain(cid, loc), use)
        return _used(self._plain(cid, loc), use)

    def _plain(self, cid: str, loc: tuple):
        pack, off, length, raw_len, flags = loc
        name = pack_name(pack)
        try:
            fd = self._fd(pack)
        except FileNotFoundError:
            return ChunkError(cid, pack, f"pack {name} is missing")
        except OSError as exc:
            return ChunkError(cid, pack, f"pack {name} cannot be read ({exc.strerror})")
        sealed = self._room(self.sealed, length)
        if length < 28 or os.preadv(fd, [sealed], off) != length:
            return ChunkError(cid, pack, f"pack {name} is truncated")
        plain = self._room(self.plainbuf, length - 28)
        try:
            self.aead.decrypt_into(sealed[:12], sealed[12:], cid.encode(), plain)
        except (InvalidTag, ValueError):
            return ChunkError(
                cid, pack, f"pack {name} is damaged (chunk {cid[:12]} fails authentication)"
            )
        # a fresh sealed buffer is let go before decompressing: one large chunk's decode holds
        # two large buffers at most (the plaintext and its decompressed output)
        sealed = None
        if flags & FLAG_ZSTD:
            try:
                plain = self._decompress(plain, raw_len)
            except zstandard.ZstdError:
                return ChunkError(cid, pack, f"pack {name} holds an undecodable chunk {cid[:12]}")
        if len(plain) != raw_len:
            return ChunkError(cid, pack, f"chunk {cid[:12]} in {name} has a wrong size")
        return plain

    def _decompress(self, frame, raw_len: int):
        """FRAME decompressed: into this reader's own buffer when it fits (most chunks) and
        the frame's header gives RAW_LEN as its size (every frame the engine writes does).

        The buffer holds the whole chunk, so zstd decodes it in one pass straight into it;
        no window kept by the streaming reader showed in the peak (a one-shot decode through
        libzstd in its place peaked the same: benchmarks/RESULTS.md, "Backup memory growth
        left at scale 16"). A fresh object for every chunk, freed at the top of
        the thread's arena, was given back to the system each time (heap.py) and its pages
        faulted in again for the next chunk: 10^5 page faults at scale 1 of the reference data
        set. Larger chunks (a few in a thousand) still get a fresh object each: a buffer
        grown to them would be kept on every thread."""
        if raw_len > len(self.rawbuf) or zstandard.frame_content_size(frame) != raw_len:
            # a size not written or not the one indexed is decoded as before, checked by size
            return self.dctx.decompress(frame, max_output_size=raw_len)
        out = memoryview(self.rawbuf)[:raw_len]
        got = 0
        with self.dctx.stream_reader(frame) as src:
            while got < raw_len and (n := src.readinto(out[got:])):
                got += n
        return out[:got]

    def each(self, cids: list[str], use) -> ChunkError | None:
        """USE(plaintext) for a file's chunks in order (read()), or the ChunkError of the first
        that cannot be read (none after it is read)."""
        entries = self.repo.index.entries
        for cid in cids:
            loc = entries.get(cid)
            if loc is None:
                return ChunkError(cid, None, f"chunk {cid[:12]} is in no index")
            if (err := self.read(cid, loc, use)) is not None:
                return err
        return None

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


AHEAD_BYTES = 4 * MiB  # plaintext decoded ahead for one task by idle threads (at most)
AHEAD_READS = 8
LOOK_AHEAD = 64  # reads of a plan looked at ahead for those (large chunks are passed over)


class Helpers:
    """The threads of a pool of tasks that each read chunks in order (verify: a file's, or a
    few versions'), lent to decode chunks ahead for the tasks in progress whenever no task
    is waiting for a thread. Without it, one large file read near the end of a pass (the
    lists are merged by path, so the order is the paths') kept one core busy alone: a
    quarter of verify's wall time on the reference set, where one file is a fifth of it."""

    def __init__(self, executor, reader_of):
        self.executor = executor
        self.reader_of = reader_of  # this thread's chunk reader
        self.waiting = 0  # tasks submitted and not started
        self.lock = threading.Lock()

    def submit(self, fn, *args) -> Future:
        """A task, counted as waiting until a thread takes it."""
        with self.lock:
            self.waiting += 1

        def started():
            with self.lock:
                self.waiting -= 1
            return fn(*args)

        return self.executor.submit(started)

    def idle(self) -> bool:
        return self.waiting == 0

    def decode(self, cid: str, loc: tuple) -> Future:
        return self.executor.submit(self._decode, cid, loc)

    def _decode(self, cid: str, loc: tuple):
        data = self.reader_of().plain(cid, loc)
        # a copy of a view of the reader's buffer (its next chunk overwrites it)
        return data if isinstance(data, bytes | ChunkError) else bytes(data)


class PlannedReads:
    """read(cid, loc, use) for a task whose reads are known in advance (PLAN: (cid, loc) in
    order, an iterable taken as it is needed: a plan of a whole file held as a list grew
    with the file, 4 MiB for the 3.4 GB database at scale 16 of the reference data set):
    each is decoded here, or by an idle thread of HELPERS ahead of time (at most
    AHEAD_BYTES of plaintext, AHEAD_READS reads, LOOK_AHEAD reads of the plan). A large
    chunk (see large()) is never decoded ahead: its fresh plaintext would wait in a future,
    several on each task in flight at the peak; the task's own thread decodes it when it
    gets there, and the chunks after it are still sent ahead. A read off the plan (the task
    stopped a file at a damaged chunk, so its later chunks are not read) ends the reading
    ahead: what was decoded ahead and not asked for is dropped, never counted."""

    def __init__(self, plan: Iterable[tuple[str, tuple]], reader, helpers: Helpers | None):
        self.plan = iter(plan)
        self.reader = reader
        self.helpers = helpers
        self.at = 0  # position in the plan of the next read
        self.upcoming: deque[tuple[str, tuple]] = deque()  # taken from the plan, from AT on
        self.sent = 0  # reads of the plan handed to helpers (or passed over) so far
        self.ahead: dict[int, Future] = {}
        self.ahead_bytes = 0

    def _take(self) -> bool:
        """One more read of the plan into UPCOMING; whether there was one."""
        item = next(self.plan, None)
        if item is None:
            return False
        self.upcoming.append(item)
        return True

    def read(self, cid: str, loc: tuple, use) -> ChunkError | None:
        """USE(plaintext) of the next read, or its ChunkError (the reader's read())."""
        if (not self.upcoming and not self._take()) or self.upcoming[0] != (cid, loc):
            self.stop()
            return self.reader.read(cid, loc, use)
        self.upcoming.popleft()
        at = self.at
        self.at = at + 1
        self._send()
        fut = self.ahead.pop(at, None)
        if fut is not None:
            self.ahead_bytes -= loc[3]
            if not fut.cancel():  # running or done: a thread that would wait is never idle
                return _used(fut.result(), use)
        return self.reader.read(cid, loc, use)

    def _send(self) -> None:
        helpers = self.helpers
        if helpers is None or not helpers.idle():
            return
        upcoming, ahead = self.upcoming, self.ahead
        self.sent = max(self.sent, self.at)
        while len(ahead) < AHEAD_READS and self.sent - self.at < LOOK_AHEAD:
            k = self.sent - self.at
            if k >= len(upcoming) and not self._take():
                break
            cid, loc = upcoming[k]
            if large(loc):
                self.sent += 1  # left to the task's thread (read finds no future for it)
                continue
            # (one chunk that fits BUFFER is always under the budget: none ahead, none counted)
            if self.ahead_bytes + loc[3] > AHEAD_BYTES:
                break
            ahead[self.sent] = helpers.decode(cid, loc)
            self.ahead_bytes += loc[3]
            self.sent += 1

    def stop(self) -> None:
        """No more reading ahead (off the plan, or done): the rest of the plan let go."""
        for fut in self.ahead.values():
            fut.cancel()
        self.ahead.clear()
        self.ahead_bytes = 0
        self.plan = iter(())
        self.upcoming.clear()
