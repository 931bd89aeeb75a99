"""Worker processes of the engine's own, answering batches of a pass (sealing small files in a
backup: batchseal.py; reading and hashing them in a verify: checkprocs.py).

Why processes: in one process every system call of a thread (an open, a read, a decrypt of
a few KB) lets the interpreter lock go, and with other threads waiting for it each release
is a hand-off through the kernel; on many small files the hand-offs, not the work, set the
pace (benchmarks/RESULTS.md, "Backup of small files: worker processes"). A worker process
has no other thread waiting for its lock.

Each worker is a fresh interpreter (`python -I -c _BOOT`, with the caller's sys.path) talking
over its stdin and stdout in frames: two lengths, a pickle, then raw bytes. Not
multiprocessing's: its spawn and fork server run the caller's main script again in every
worker (a script without a main guard would back up, or prune, once more in each), and
forking the caller's process copies locks its other threads may hold. What a worker needs
(keys, a repository's path) reaches it through its stdin, never a file, the environment or
the command line. This module is the starting side; a worker runs workerloop.py's loop and
imports nothing of this one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from sctk.backup.repo.workerloop import receive, send

ANSWER_PIPE = 1 << 20  # bytes of a worker's stdout pipe (Linux's default most, pipe-max-size)
_BOOT = (
    "import importlib, json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "getattr(importlib.import_module(sys.argv[2]), sys.argv[3])()"
)


class WorkerDied(Exception):
    """A worker process ended (killed, out of memory) with batches of it unanswered."""


class _Worker:
    """One worker process, its batches answered in the order sent."""

    def __init__(self, entry: tuple[str, str], init):
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, json.dumps(sys.path), *entry],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        # Room in the pipe for a whole answer (a backup's batch of sealed chunks is up to
        # ~0.7 MiB): through the default 64 KiB, a worker sat in its write while the reading
        # thread took the answer a piece at a time, waiting for the interpreter lock before
        # each piece (1.9 s of a worker's 4 s on 10^5 small files; RESULTS.md).
        resize = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
        if resize is not None:
            with contextlib.suppress(OSError):  # past the system's limit: the default
                fcntl.fcntl(self.proc.stdout.fileno(), resize, ANSWER_PIPE)
        self.waiting: deque[tuple[Future, Callable]] = deque()
        self.lock = threading.Lock()
        self.dead = False
        self.up: Future = Future()
        self.reader = threading.Thread(target=self._read, name="sctk-worker-reader", daemon=True)
        with contextlib.suppress(OSError):  # it died at once: the reader fails UP
            send(self.proc.stdin, init)
        self.reader.start()

    def submit(self, batch, then: Callable) -> Future:
        fut: Future = Future()
        with self.lock:  # a batch's place in WAITING is its place in the pipe
            if self.dead:
                raise WorkerDied
            self.waiting.append((fut, then))
            try:
                send(self.proc.stdin, batch)
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
        first = receive(out)
        if first is None or first[0] != "ready":
            return
        self.up.set_result(True)
        while (frame := receive(out)) is not None:
            got, raw = frame
            fut, then = self.waiting.popleft()
            if isinstance(got, Exception):
                fut.set_exception(got)
                continue
            try:
                fut.set_result(then(got, raw))
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


class Processes:
    """COUNT worker processes running ENTRY ((module, function): a function calling
    workerloop.serve()) and set up with INIT."""

    def __init__(self, entry: tuple[str, str], init, count: int):
        self._entry = entry
        self._init = init
        self._count = count
        self._workers: list[_Worker] = []

    def start(self, wait: bool) -> None:
        """Start the workers (raises if processes cannot be made here); WAIT: until they
        are up, else see ready()."""
        for _ in range(self._count):
            self._workers.append(_Worker(self._entry, self._init))
        if wait:
            for w in self._workers:
                w.up.exception()

    def ready(self) -> bool | None:
        """True once every worker is up, None while they start, False if one failed to."""
        if not all(w.up.done() for w in self._workers):
            return None
        return all(w.up.exception() is None for w in self._workers)

    def submit(self, batch, then: Callable) -> Future:
        """BATCH to the worker with the fewest waiting. THEN(object, raw bytes) gets its
        answer in a thread of this module's as it arrives; the future gives what THEN
        returns, or raises what it raised, a WorkerFailed, or WorkerDied."""
        worker = min(self._workers, key=lambda w: len(w.waiting))
        return worker.submit(batch, then)

    def close(self) -> None:
        for w in self._workers:
            w.close()


class OnDemand:
    """Worker processes a pass starts when it wants them: WANTED None once it has met AFTER
    items fit for them (a pass of a few files costs no process start), True at its first
    (and waits for them), False never. MAKE() gives them, not started."""

    def __init__(self, make: Callable[[], Processes], wanted: bool | None, after: int):
        self._make = make
        self._wanted = wanted
        self._after = after
        self.procs: Processes | None = None

    def get(self, met: int) -> Processes | None:
        """The processes once they are up, having met MET items; None while they start (the
        pass's threads do the work meanwhile), and for good if they cannot start here (e.g.
        in a daemon process, or with no interpreter to run)."""
        procs = self.procs
        if procs is None:
            wanted = self._wanted
            if wanted is False or (wanted is None and met < self._after):
                return None
            self._wanted = False  # one try
            procs = self._make()
            try:
                procs.start(wait=wanted is True)
            except Exception:
                procs.close()
                return None
            self.procs = procs
        ready = procs.ready()
        if ready is False:
            self.close()
            return None
        return procs if ready else None

    def close(self) -> None:
        """The processes stopped (if any): the pass goes on without them."""
        if self.procs is not None:
            self.procs.close()
            self.procs = None
