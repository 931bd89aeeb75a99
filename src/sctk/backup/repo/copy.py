"""Off-site copies: mirror the repository's files into another location.

The copy is the same repository (same config, same key: the same passphrase opens it). Files
the destination lacks are copied config first, then packs, index files, snapshots and
verification markers, each folder finished before the next starts, so an interrupted copy is
still a valid repository (at worst with unindexed packs) and the next run copies only what is
missing (and removes the temporary files the interrupted one left: it holds the destination's
exclusive lock, as a backup writing there would). Files go up a few at a time (bounded: each
in flight holds one file in memory; into a local directory, a file larger than STREAM_ABOVE
goes a block at a time instead, so a snapshot file of a million entries or a full pack costs a
block, not the file twice over: read, then read back to check).
Each copied file is checked after transfer: its ETag (an MD5 of what S3 stored) where the
store gives one that matches, else read back and its size and SHA-256 compared. No finished
file is ever deleted in the destination; prune it separately.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from sctk.backup.repo.backend import open_backend
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.filelist import stream_sha256
from sctk.backup.repo.leftovers import WRITER_FOLDERS
from sctk.backup.repo.locks import LockManager
from sctk.backup.repo.models import CopyReport
from sctk.backup.repo.remote import RemoteOptions, s3_etag

COPY_THREADS = 4  # files in flight at once
STREAM_ABOVE = 1 << 20  # bytes: larger files go a block at a time (local destinations)
BLOCK = 1 << 20
REMOTE_BLOCK = 8 << 20  # read from remote storage: a request per block, so fewer and larger


def _landed_whole(dest, name: str, data: bytes) -> bool:
    """Whether DEST holds exactly DATA under NAME."""
    etag = getattr(dest, "etag", None)
    if etag is not None:
        tag = etag(name)
        if tag is not None and tag == s3_etag(data):
            return True  # else a store whose ETag is not an MD5: read it back
    try:
        back = dest.read(name)
    except FileNotFoundError:
        return False
    return len(back) == len(data) and hashlib.sha256(back).digest() == hashlib.sha256(data).digest()


def copy_to(
    repo,
    dest_url: str,
    progress: Callable[[int], None] | None = None,
    options: RemoteOptions | None = None,
) -> CopyReport:
    started = time.perf_counter()
    if dest_url == repo.url:
        raise RepoError("The copy destination is the repository itself; give another location.")
    copier = _Copier(repo, dest_url, open_backend(dest_url, options), progress)
    copier.claim_destination()
    # The copy writes the destination as a backup would: under its exclusive lock, so the
    # temporary files found there have no live owner (an interrupted copy or backup left them).
    with (
        repo.lock(exclusive=False),
        LockManager(copier.dest).lock(exclusive=True),
        ThreadPoolExecutor(COPY_THREADS) as pool,
    ):
        copier.remove_leftovers()
        for folder in ("data", "index", "snapshots", "verified"):
            copier.copy_folder(folder, pool)
    return CopyReport(
        files_copied=copier.copied,
        bytes_copied=copier.nbytes,
        files_skipped=copier.skipped,
        seconds=round(time.perf_counter() - started, 3),
    )


class _Copier:
    """One copy of REPO into DEST: what it does per file, and its counts (files copied and
    skipped, bytes), which the transfer threads add to under a lock."""

    def __init__(self, repo, dest_url: str, dest, progress: Callable[[int], None] | None):
        self.repo, self.dest_url, self.dest, self.progress = repo, dest_url, dest, progress
        self.copied = self.skipped = self.nbytes = 0
        self.counted = threading.Lock()

    def claim_destination(self) -> None:
        """A copy of this repository (its config skipped), or an empty location made one
        (its config copied first); anything else refused."""
        dest, dest_url = self.dest, self.dest_url
        state = dest.probe()
        if state == "present" and dest.size("config") is not None:
            try:
                theirs = json.loads(dest.read("config"))
            except ValueError:
                theirs = {}
            if theirs.get("id") != self.repo.config["id"]:
                raise RepoError(
                    f"{dest_url} holds a different backup repository; copy into an empty "
                    "location or a copy of this repository."
                )
            self.skipped += 1
        elif state == "present":
            raise RepoError(
                f"{dest_url} is a non-empty location that is not a backup repository; "
                "choose an empty or new location."
            )
        else:
            dest.mkdir_root()
            self.put("config", self.repo.backend.read("config"))

    def remove_leftovers(self) -> None:
        for name in self.dest.temporaries():
            if name.partition("/")[0] in (*WRITER_FOLDERS, "verified"):
                self.dest.delete(name)

    def copy_folder(self, folder: str, pool: ThreadPoolExecutor) -> None:
        """The files of FOLDER the destination lacks (or holds at another size), at most
        COPY_THREADS in flight; the first failure stops the folder and is raised."""
        theirs = self.dest.list(folder)
        todo = []
        for name, size in sorted(self.repo.backend.list(folder).items()):
            if theirs.get(name) == size:
                self.skipped += 1
            else:
                todo.append((name, size))
        running: set = set()
        try:
            for name, size in todo:
                if len(running) >= COPY_THREADS:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        fut.result()
                running.add(pool.submit(self.transfer, name, size))
            for fut in running:
                fut.result()
        finally:
            for fut in running:
                fut.cancel()
            wait(running)

    def landed(self, name: str, size: int, whole: bool) -> None:
        """Count a copied file of SIZE bytes, or refuse one that did not arrive WHOLE."""
        if not whole:
            raise RepoError(
                f"Copying {name} to {self.dest_url} did not verify (size or hash differ after "
                "transfer); check the destination storage and copy again."
            )
        with self.counted:
            self.copied += 1
            self.nbytes += size
            if self.progress is not None:
                self.progress(self.nbytes)

    def put(self, name: str, data: bytes) -> None:
        self.dest.write(name, data)
        self.landed(name, len(data), _landed_whole(self.dest, name, data))

    def damaged(self, name: str) -> RepoError:
        return RepoError(
            f"{name} in {self.repo.url} is damaged (content does not match its name); "
            "run check before copying."
        )

    def transfer(self, name: str, size: int) -> None:
        if size > STREAM_ABOVE and not self.dest.packs_in_memory:
            self.stream(name, size)
            return
        try:
            data = self.repo.backend.read(name)
        except FileNotFoundError:
            return  # removed by a prune since we listed
        # Content-named files must match their name before they are spread further.
        if hashlib.sha256(data).hexdigest() != name.rpartition("/")[2]:
            raise self.damaged(name)
        self.put(name, data)

    def stream(self, name: str, size: int) -> None:
        """transfer() a block at a time: appended to a temporary file in the destination,
        which shows under NAME only once the whole content matched its name; then read back
        and hashed a block at a time."""
        source, dest = self.repo.backend, self.dest
        out = dest.new_pack(name.partition("/")[0])
        block = BLOCK if source.local else REMOTE_BLOCK
        try:
            sha = hashlib.sha256()
            off = 0
            while off < size:
                try:
                    data = source.read_range(name, off, min(block, size - off))
                except FileNotFoundError:
                    out.discard()
                    return  # removed by a prune since we listed
                if not data:
                    break
                sha.update(data)
                out.append([data])
                off += len(data)
            if off != size or sha.hexdigest() != name.rpartition("/")[2]:
                raise self.damaged(name)
            out.commit(name)
        except BaseException:
            out.discard()
            raise
        try:
            whole = stream_sha256(dest, name, size, BLOCK) == sha.hexdigest()
        except FileNotFoundError:
            whole = False
        self.landed(name, size, whole)
