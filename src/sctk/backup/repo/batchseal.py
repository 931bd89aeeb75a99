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

import hashlib
import os
from collections.abc import Callable

from pyfastcdc import FastCDC

from sctk.backup.repo import workerloop
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


# -- worker processes (workerloop.py) --------------------------------------------------------


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


def _setup(init: tuple) -> tuple:
    master, algorithm, chunker = init
    keys = Keys(master, algorithm)
    cdc = FastCDC(
        chunker["avg"], min_size=chunker["min"], max_size=chunker["max"], seed=keys.chunker_seed
    )
    return keys, cdc, Compressors()


def _work(state: tuple, batch: tuple) -> tuple:
    sources, limit = batch
    return _seal_batch(*state, sources, limit)


def serve() -> None:
    """A worker process: the keys and chunker first (init()), then batches of small files,
    each (sources, limit) as read_batch takes them; each answer is _seal_batch's."""
    workerloop.serve(_setup, _work)


ENTRY = (__name__, "serve")


def init(keys: Keys, chunker: dict) -> tuple:
    """What a worker sealing batches of small files for one writer is given."""
    return keys.master, keys.chunk_id_algorithm, dict(chunker)
