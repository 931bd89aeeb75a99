"""Pack files: many sealed chunks in one file of ~16 MiB, written by a background thread."""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import tempfile
import threading
from collections.abc import Iterator

from sctk.backup.repo.backend_contract import Backend, PackFile
from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import (
    ROW,
    decode_pack_header,
    encode_pack_tail,
    pack_name,
    pack_rows,
    unpack_rows,
)

PACK_SIZE = 16 * 1024 * 1024
# Chunks a pack holds at most: its rows wait in memory until it is written (~250 bytes each),
# and tiny chunks would put ~100,000 in one pack of PACK_SIZE.
PACK_CHUNKS = 16_384
# Packs uploading at once to remote storage: a network link is used well only with several
# requests in flight; each costs one pack of memory.
UPLOADERS = 3
# Sealed chunks under GATHER_BELOW are gathered and written to the pack file WRITE_BUFFER at
# a time (see PackWriter._write); larger ones, most of the bytes, are written as they come,
# with no copy.
GATHER_BELOW = 64 * 1024
WRITE_BUFFER = 1 << 20


class PackWriter:
    """Collects sealed chunks into packs of ~16 MiB; background threads finish them.

    Each pack is one of the backend's pack files (backend_contract.PackFile), filled as
    chunks arrive and hashed as it is filled (SHA-256, its name: no reading it back). On a
    local repository the pack goes to a temporary file (so packs cost no memory) and one
    background thread fsyncs and renames it; a few may wait for their fsync without
    stalling the writers. Where packs are held in memory until written (remote storage),
    UPLOADERS threads write them and at most one finished pack waits while the others
    upload, so memory stays bounded. `on_written(pack_id, size, blobs)` runs in a
    background thread once a pack is durable.
    """

    def __init__(self, backend: Backend, keys: Keys, on_written, pack_size: int = PACK_SIZE):
        self.backend = backend
        self.keys = keys
        self.on_written = on_written
        self.pack_size = pack_size
        in_memory = backend.packs_in_memory
        self._new_pack()
        self.queue: queue.Queue = queue.Queue(maxsize=1 if in_memory else 4)
        self.error: BaseException | None = None
        self.stored_bytes = 0
        self.threads = [
            threading.Thread(target=self._run, name="sctk-pack-upload", daemon=True)
            for _ in range(UPLOADERS if in_memory else 1)
        ]
        for thread in self.threads:
            thread.start()

    def _new_pack(self) -> None:
        """Start filling the next pack."""
        self.file: PackFile = self.backend.new_pack("data")
        self.size = 0  # bytes of the pack so far, those still in PENDING included
        self.sha = hashlib.sha256()
        self.blobs: list[list] = []
        self.pending = bytearray()  # appended, not yet written to the pack file

    def _write(self, parts) -> None:
        """Append PARTS to the pack being filled. Small ones are gathered and written (and
        hashed) WRITE_BUFFER at a time: the writers hold their pack lock around each add, and
        a write and a hash update per chunk there kept the storing threads waiting on one
        another for 40% of their time on 10^5 files of a few KB."""
        n = sum(len(p) for p in parts)
        if n < GATHER_BELOW:
            for part in parts:
                self.pending += part
            self.size += n
            if len(self.pending) >= WRITE_BUFFER:
                self._write_pending()
            return
        self._write_pending()
        self._append(parts)
        self.size += n

    def _write_pending(self) -> None:
        if self.pending:
            data, self.pending = self.pending, bytearray()
            self._append([data])

    def _append(self, parts) -> None:
        try:
            self.file.append(parts)
        except BaseException as exc:
            # The pack being filled is lost: drop it, and fail every later add at once
            # (the snapshot cannot be committed any more).
            self.file.discard()
            self._new_pack()
            self.error = exc
            raise
        for part in parts:
            self.sha.update(part)

    def add(self, cid: str, flags: int, raw_len: int, sealed_parts: tuple) -> None:
        """Append one sealed chunk (given as parts, e.g. nonce and ciphertext)."""
        self.add_run([(cid, raw_len, flags, sum(len(p) for p in sealed_parts))], sealed_parts)

    def add_run(self, rows: list, sealed_parts) -> None:
        """Append chunks sealed end to end in SEALED_PARTS, with one write when they are
        large; ROWS: (id, length, flags, sealed length) of each, in order (one chunk, or a
        worker process's batch: batchseal.py). A run may take a pack a batch past its size
        or chunk count."""
        if self.error is not None:
            self._raise()
        start = off = self.size
        self._write(sealed_parts)
        for cid, raw_len, flags, n in rows:
            self.blobs.append([cid, off, n, raw_len, flags])
            off += n
        self.stored_bytes += self.size - start
        if self.size >= self.pack_size or len(self.blobs) >= PACK_CHUNKS:
            self._finish_pack()

    def _finish_pack(self) -> None:
        if not self.blobs:
            return
        self._write([encode_pack_tail(self.keys, self.blobs)])
        self._write_pending()
        item = (self.file, self.sha.hexdigest(), self.blobs, self.size)
        self._new_pack()
        while True:
            if self.error is not None:
                item[0].discard()
                self._raise()
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            pack, pack_id, blobs, size = item
            if self.error is not None:  # something failed: drop the rest
                pack.discard()
                continue
            try:
                pack.commit(pack_name(pack_id))  # leaves nothing behind if it fails
                self.on_written(pack_id, size, blobs)
            except BaseException as exc:  # handed to the producing thread
                self.error = exc

    def _raise(self):
        err = self.error
        if isinstance(err, RepoError):
            raise err
        raise RepoError(f"Writing a pack to repository {self.backend.url} failed: {err}.") from err

    def flush(self) -> None:
        """Write the pack being filled and wait until every pack is durable."""
        self._finish_pack()
        self.close()
        if self.error is not None:
            self._raise()

    def close(self) -> None:
        """Stop the background threads after the queued packs; drop a pack being filled."""
        alive = [t for t in self.threads if t.is_alive()]
        for _ in alive:
            self.queue.put(None)
        for thread in alive:
            thread.join()
        self.file.discard()


def read_pack_header(backend, keys: Keys, name: str, size: int) -> tuple[list[list], int]:
    """A pack's chunk list read from its tail (two small reads): (entries, header offset)."""
    if size < 4:
        raise RepoError(f"Pack {name} is truncated (no header).")
    (hlen,) = struct.unpack("<I", backend.read_range(name, size - 4, 4))
    if hlen + 4 > size:
        raise RepoError(f"Pack {name} is truncated (its header is cut off).")
    tail = backend.read_range(name, size - 4 - hlen, hlen + 4)
    entries, _ = decode_pack_header(keys, tail, name)
    return entries, size - 4 - hlen


class WrittenPacks:
    """The packs a writer has made durable and their chunk rows, the rows kept in a local
    temporary file (45 bytes a chunk) until the index files are written, rather than in
    memory as lists (~300 bytes a chunk: 300 MiB for a first backup of a million small
    files). Added to from the pack threads; read back pack by pack."""

    def __init__(self):
        self.file = tempfile.TemporaryFile(prefix="sctk-written-")  # noqa: SIM115
        self.packs: list[tuple[str, int, int, int]] = []  # (pack id, size, offset, rows)
        self.lock = threading.Lock()
        self.end = 0

    def add(self, pack_id: str, size: int, blobs: list) -> None:
        data = pack_rows(blobs)
        with self.lock:
            os.pwrite(self.file.fileno(), data, self.end)
            self.packs.append((pack_id, size, self.end, len(blobs)))
            self.end += len(data)

    def __len__(self) -> int:
        return len(self.packs)

    def bytes(self) -> int:
        """The packs' total size."""
        return sum(p[1] for p in self.packs)

    def items(self) -> Iterator[tuple[str, tuple[int, list[list]]]]:
        """(pack id, (size, rows)) one pack at a time, rows as the index files list them."""
        fd = self.file.fileno()
        for pack_id, size, off, n in list(self.packs):
            yield pack_id, (size, unpack_rows(os.pread(fd, n * ROW.size, off)))

    def close(self) -> None:
        self.file.close()
