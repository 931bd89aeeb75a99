"""Pack files: many sealed chunks in one file of ~16 MiB, written by a background thread."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import struct
import threading

from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import decode_pack_header, encode_pack_tail, pack_name

PACK_SIZE = 16 * 1024 * 1024
# Packs uploading at once to remote storage: a network link is used well only with several
# requests in flight; each costs one pack of memory.
UPLOADERS = 3


class PackWriter:
    """Collects sealed chunks into packs of ~16 MiB; one background thread finishes them.

    On a local repository a pack is appended to a temporary file as chunks arrive (so packs
    cost no memory) and hashed as it is appended (SHA-256, its name: no reading it back); the
    background thread fsyncs and renames it. On a remote one the pack is built in memory and
    uploaded by one of UPLOADERS threads. At most one finished remote pack waits while the
    others upload, so memory stays bounded; local
    packs cost no memory, so a few may wait for their fsync without stalling the writers.
    `on_written(pack_id, size, blobs)` runs in a background thread once a pack is durable.
    """

    def __init__(self, backend, keys: Keys, on_written, pack_size: int = PACK_SIZE):
        self.backend = backend
        self.keys = keys
        self.on_written = on_written
        self.pack_size = pack_size
        self.local = bool(getattr(backend, "local", False))
        self._new_pack()
        self.queue: queue.Queue = queue.Queue(maxsize=4 if self.local else 1)
        self.error: BaseException | None = None
        self.stored_bytes = 0
        self.threads = [
            threading.Thread(target=self._run, name="sctk-pack-upload", daemon=True)
            for _ in range(1 if self.local else UPLOADERS)
        ]
        for thread in self.threads:
            thread.start()

    def _new_pack(self) -> None:
        """Start filling the next pack (the temporary file is created at its first chunk)."""
        self.buf = bytearray()
        self.tmp: tuple[int, str] | None = None
        self.size = 0
        self.sha = hashlib.sha256()
        self.blobs: list[list] = []

    def _write(self, parts) -> None:
        if self.local:
            if self.tmp is None:
                self.tmp = self.backend.create_temp("data")
            try:
                self.backend.append(*self.tmp, parts)
            except BaseException as exc:
                # The pack being filled is lost: drop it, and fail every later add at once
                # (the snapshot cannot be committed any more).
                self.backend.discard_temp(*self.tmp)
                self._new_pack()
                self.error = exc
                raise
        else:
            for part in parts:
                self.buf += part
        for part in parts:
            self.sha.update(part)
            self.size += len(part)

    def add(self, cid: str, flags: int, raw_len: int, sealed_parts: tuple) -> None:
        """Append one sealed chunk (given as parts, e.g. nonce and ciphertext)."""
        if self.error is not None:
            self._raise()
        off = self.size
        self._write(sealed_parts)
        length = self.size - off
        self.blobs.append([cid, off, length, raw_len, flags])
        self.stored_bytes += length
        if self.size >= self.pack_size:
            self._finish_pack()

    def _finish_pack(self) -> None:
        if not self.blobs:
            return
        self._write([encode_pack_tail(self.keys, self.blobs)])
        item = (self.tmp if self.local else self.buf, self.sha.hexdigest(), self.blobs, self.size)
        self._new_pack()
        while True:
            if self.error is not None:
                if self.local and item[0] is not None:
                    self.backend.discard_temp(*item[0])
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
            data, pack_id, blobs, size = item
            if self.error is not None:  # something failed: drop the rest
                if self.local:
                    self.backend.discard_temp(*data)
                continue
            try:
                if self.local:
                    self._commit_local(*data, pack_id)
                else:
                    self.backend.write(pack_name(pack_id), data)
                self.on_written(pack_id, size, blobs)
            except BaseException as exc:  # handed to the producing thread
                self.error = exc

    def _commit_local(self, fd: int, tmp: str, pack_id: str) -> None:
        """fsync and rename a finished local pack; the temporary file is closed and, on
        failure, removed, whatever happens."""
        try:
            self.backend.commit_temp(fd, tmp, pack_name(pack_id))  # closes fd in every case
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

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
        """Stop the background thread after the queued packs; drop a pack still being filled."""
        alive = [t for t in self.threads if t.is_alive()]
        for _ in alive:
            self.queue.put(None)
        for thread in alive:
            thread.join()
        if self.tmp is not None:
            self.backend.discard_temp(*self.tmp)
            self.tmp = None


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
