"""Small files read, hashed, compressed and sealed in batches, by the writer's threads or
by worker processes.

Why processes: in one process every system call of a thread (the open, read and close of
each file, the walk's stat) lets the interpreter lock go, and with the walking thread and
the pool's threads waiting for it, each release is a hand-off through the kernel: about 6.5
context switches a file, half the CPU spent in the kernel, 0.7x restic's speed on 10^6 files
of a few KB (RESULTS.md, "Backup of small files: growth from 10^5 to 4 x 10^5 files"). A
worker process has no other thread waiting for its lock.

A worker process knows nothing of the repository but its keys and chunker: it seals every
chunk of its batch (once each), and the writer appends those not stored already. What
needs the repository's state (which chunks are stored, the pack, the entries and their
order) stays in the writer's process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from pyfastcdc import FastCDC

from sctk.backup.repo.compression import SMALL_FILES, Compressors
from sctk.backup.repo.crypto import NONCE, Keys


class Grown(Exception):
    """A file found longer than its reader may hold whole: it is read again as a stream.
    Its one argument is the file's path."""


def read_whole(source: str, size: int, limit: int) -> bytes:
    """The bytes of a file of SIZE at its stat, in three system calls (open, read, close):
    builtin open() with read() made seven (two fstat calls, reads to the end and one
    more), and on the thread that walks each call is a wait for the GIL. One byte more
    than SIZE is asked for: a file that grew since its stat is read to its end, unless it
    is now longer than LIMIT (Grown): a few bytes at the stat may be gigabytes at the read."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, size + 1)
        while len(data) > size:
            if len(data) > limit:
                raise Grown(source)
            more = os.read(fd, min(1 << 20, limit + 1 - len(data)))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def read_batch(
    sources: list[tuple[str, int]],
    limit: int,
    cdc: FastCDC,
    chunk_id: Callable[[object], str],
    keep: Callable[[str], bool],
    compress: Callable,
) -> tuple[list, list]:
    """Read each (path, size at its stat) of SOURCES whole (up to LIMIT bytes) and cut it.

    Returns (per file, new chunks). Per file: (size, sha256, chunk ids), or a Grown (the
    file is now past LIMIT: the caller streams it), or the OSError reading it met (its
    filename set). New chunks: (id, length, payload, flags) of each chunk KEEP says to
    store, compressed with COMPRESS(data, policy, trial)."""
    out: list = []
    new: list = []
    for source, size in sources:
        try:
            data = read_whole(source, size, limit)
        except Grown as grown:
            out.append(grown)
            continue
        except OSError as exc:
            if exc.filename is None:  # a failed read (not open) names no file
                exc.filename = source
            out.append(exc)
            continue
        ids = []
        for c in cdc.cut_buf(data):
            cid = chunk_id(c.data)
            ids.append(cid)
            if keep(cid):
                new.append((cid, len(c.data), *compress(c.data, SMALL_FILES, False)))
        out.append((len(data), hashlib.sha256(data).hexdigest(), ids))
    return out, new


def seal(keys: Keys, new: list) -> list:
    """NEW chunks ((id, length, payload, flags)) sealed: (id, length, flags, nonce,
    ciphertext) each, with one draw of nonces (each os.urandom call is a system call)."""
    nonces = os.urandom(NONCE * len(new))
    encrypt = keys.aead.encrypt
    sealed = []
    for k, (cid, raw_len, payload, flags) in enumerate(new):
        nonce = nonces[NONCE * k : NONCE * k + NONCE]
        sealed.append((cid, raw_len, flags, nonce, encrypt(nonce, payload, cid.encode())))
    return sealed


# -- worker processes ------------------------------------------------------------------------
#
# Each worker is a fresh interpreter (`python -I -c _BOOT`) talking over its stdin and stdout
# in frames (a 4-byte length, then a pickle). Not multiprocessing's: its spawn and fork
# server run the caller's main script again in every worker (a script without a main guard
# would back up, or prune, once more in each), and forking the writer's process copies
# locks its other threads may hold.

_FRAME = struct.Struct("<II")  # the lengths of a frame's pickle and of its raw bytes
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from sctk.backup.repo.batchseal import serve; serve()"
)


class WorkerDied(Exception):
    """A worker process ended (killed, out of memory) with batches of it unanswered."""


class WorkerFailed(Exception):
    """A worker process met an error it could not answer a batch with (not a file's own:
    those are answers)."""


def _send(out, obj, raw: bytes = b"") -> None:
    """A frame: OBJ pickled, then RAW as it is (a batch's sealed chunks are most of the
    bytes a worker sends: they are not copied into the pickle and out again)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data), len(raw)))
    out.write(data)
    if raw:
        out.write(raw)
    out.flush()


def _receive(inp) -> tuple | None:
    """The next frame's (object, raw bytes), or None at the end of the stream."""
    head = inp.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    n, m = _FRAME.unpack(head)
    data = inp.read(n)
    raw = bytearray(m)
    got = inp.readinto(raw) if m else 0
    if len(data) < n or got < m:
        return None
    return pickle.loads(data), raw


def _seal_batch(keys: Keys, cdc: FastCDC, comp: Compressors, sources, limit: int) -> tuple:
    """A worker's batch: ((per file as read_batch gives, rows), sealed). Every chunk of the
    batch is sealed once, its nonce and ciphertext laid end to end in SEALED (one buffer, so
    the writer appends a batch's new chunks with one write); ROWS: (id, length, flags,
    sealed length) of each, in that order."""
    seen: set[str] = set()

    def keep(cid: str) -> bool:
        if cid in seen:
            return False
        seen.add(cid)
        return True

    out, new = read_batch(sources, limit, cdc, keys.chunk_id, keep, comp.compress)
    rows = []
    parts = []
    for cid, raw_len, flags, nonce, ciphertext in seal(keys, new):
        rows.append((cid, raw_len, flags, len(nonce) + len(ciphertext)))
        parts += (nonce, ciphertext)
    return (out, rows), b"".join(parts)


def serve() -> None:
    """A worker process: the keys and chunker first, then batches until the writer closes
    its stdin (or dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the writer's process handles Ctrl-C
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing printed may reach the writer's channel
    (master, algorithm, chunker), _ = _receive(inp)
    keys = Keys(master, algorithm)
    cdc = FastCDC(
        chunker["avg"], min_size=chunker["min"], max_size=chunker["max"], seed=keys.chunker_seed
    )
    comp = Compressors()
    _send(out, "ready")
    while (batch := _receive(inp)) is not None:
        (sources, limit), _ = batch
        try:
            got, sealed = _seal_batch(keys, cdc, comp, sources, limit)
        except Exception as exc:  # e.g. MemoryError: the writer fails the backup with it
            got, sealed = WorkerFailed(f"{type(exc).__name__}: {exc}"), b""
        _send(out, got, sealed)


class _Worker:
    """One worker process, its batches answered in the order sent."""

    def __init__(self, init: tuple):
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.waiting: deque[tuple[Future, Callable]] = deque()
        self.lock = threading.Lock()
        self.dead = False
        self.up: Future = Future()
        self.reader = threading.Thread(target=self._read, name="sctk-seal-reader", daemon=True)
        with contextlib.suppress(OSError):  # it died at once: the reader fails UP
            _send(self.proc.stdin, init)
        self.reader.start()

    def submit(self, batch: tuple, then: Callable) -> Future:
        fut: Future = Future()
        with self.lock:  # a batch's place in WAITING is its place in the pipe
            if self.dead:
                raise WorkerDied
            self.waiting.append((fut, then))
            try:
                _send(self.proc.stdin, batch)
            except OSError:
                self.waiting.pop()
                raise WorkerDied from None
        return fut

    def _read(self) -> None:
        try:
            self._answers()
        except Exception:  # the stream is not what a worker sends: it is ended
            self.proc.kill()
        finally:
            with self.lock:
                self.dead = True
                left = list(self.waiting)
                self.waiting.clear()
            if not self.up.done():
                self.up.set_exception(WorkerDied())
            for fut, _ in left:
                fut.set_exception(WorkerDied())

    def _answers(self) -> None:
        """Hand each answer to its batch's future, until the worker's stdout ends."""
        out = self.proc.stdout
        first = _receive(out)
        if first is None or first[0] != "ready":
            return
        self.up.set_result(True)
        while (frame := _receive(out)) is not None:
            got, sealed = frame
            fut, then = self.waiting.popleft()
            if isinstance(got, Exception):
                fut.set_exception(got)
                continue
            try:
                fut.set_result(then(*got, sealed))
            except BaseException as exc:  # e.g. the pack could not be written
                fut.set_exception(exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # its end of batches: it exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join()
        self.proc.stdout.close()


class SealProcesses:
    """Worker processes sealing batches of small files for one writer. The keys reach them
    through their stdin, never a file, the environment or the command line."""

    def __init__(self, keys: Keys, chunker: dict, processes: int):
        self._init = (keys.master, keys.chunk_id_algorithm, dict(chunker))
        self._count = processes
        self._workers: list[_Worker] = []

    def start(self, wait: bool) -> None:
        """Start the workers (raises if processes cannot be made here); WAIT: until they
        are up, else see ready()."""
        for _ in range(self._count):
            self._workers.append(_Worker(self._init))
        if wait:
            for w in self._workers:
                w.up.exception()

    def ready(self) -> bool | None:
        """True once every worker is up, None while they start, False if one failed to."""
        if not all(w.up.done() for w in self._workers):
            return None
        return all(w.up.exception() is None for w in self._workers)

    def submit(self, sources: list[tuple[str, int]], limit: int, then: Callable) -> Future:
        """A batch to seal, to the worker with the fewest waiting. THEN gets the per-file
        results, rows and sealed chunks of _seal_batch, in a thread of this module's as
        they arrive (the chunks go into the pack there, not on the thread that walks); the
        future gives what it returns, or raises what it raised, or WorkerDied."""
        worker = min(self._workers, key=lambda w: len(w.waiting))
        return worker.submit((sources, limit), then)

    def close(self) -> None:
        for w in self._workers:
            w.close()
