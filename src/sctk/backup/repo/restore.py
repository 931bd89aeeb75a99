"""Restoring a snapshot: all or nothing, or (partial) every intact file.

Files are written into a staging directory inside the target, each checked against its
SHA-256, and only when every file is whole are they moved (renamed) into place. Damaged data
therefore never reaches the target, not even as a partial file. With partial=True (a restore
into a fresh directory, as restic does), a damaged file is left out and named, and every
other file is moved into place.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import itertools
import os
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sctk.backup.repo.chunkread import chunk_reader
from sctk.backup.repo.errors import ChunkError, RepoError
from sctk.backup.repo.models import FileEntry, RestoreStats
from sctk.backup.repo.threads import worker_count

LARGE_FILE = 8 * 1024 * 1024  # restored first, largest first
# at most this many of them, the largest; the others go in list order. Their paths are kept,
# and each entry is looked up when its turn comes: the entries held from the first pass
# (each with its chunk ids) grew with the files, 1.8 MiB at scale 16 of the reference data
# set, where the largest file alone lists 8,000 chunks.
LARGE_KEPT = 32


def _target_error(target: Path, exc: OSError) -> RepoError:
    if exc.errno == errno.ENOSPC:
        return RepoError(
            f"No space left on the device holding {target}; free space and restore again."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RepoError(
            f"Cannot write to the restore target {target}: {exc.strerror}; "
            "choose a writable directory."
        )
    return RepoError(f"Restoring into {target} failed: {exc.strerror or exc}.")


def _checked(rel: str) -> str:
    if rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")):
        raise RepoError(f"Snapshot path {rel!r} would escape the restore target; not restored.")
    return rel


class _Dirs:
    """makedirs with a memory, so thousands of files in one folder cost one syscall."""

    def __init__(self):
        self.made: set[str] = set()

    def ensure(self, path: str) -> None:
        if path not in self.made:
            os.makedirs(path, exist_ok=True)
            self.made.add(path)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def restore(
    repo,
    snapshot_id: str,
    target: Path,
    include: Callable[[str], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    partial: bool = False,
) -> RestoreStats:
    """Write the files of SNAPSHOT_ID accepted by INCLUDE under TARGET, verified; with
    PARTIAL, damaged files are left out (named in the stats) instead of failing it all."""
    started = time.perf_counter()
    info = repo.find_snapshot(snapshot_id)
    run = _Restore(repo, info.id, target, include, progress, partial)
    run.stage()
    with repo.lock(exclusive=False):
        try:
            run.write_files()
            run.move_into_place()
        except OSError as exc:
            raise _target_error(target, exc) from None
        finally:
            run.close()
    lost = sum(e.size for e in run.entries() if e.path in run.damaged) if run.damaged else 0
    return RestoreStats(
        files=run.count - len(run.damaged),
        bytes=run.total - lost,
        seconds=round(time.perf_counter() - started, 3),
        damaged=sorted(run.damaged.items()),
    )


class _Restore:
    """One restore's steps: stage (a staging folder in the target, every folder made and
    every path checked before any file is written), write the files into it in parallel,
    each checked against its SHA-256, then move them into place."""

    def __init__(self, repo, snap_id, target: Path, include, progress, partial: bool):
        self.repo = repo
        self.snap_id = snap_id
        self.target = target
        self.include = include
        self.progress = progress
        self.partial = partial
        self.written = 0
        self.damaged: dict[str, str] = {}  # path -> why it was left out (partial restores)
        self.lock = threading.Lock()
        self.local = threading.local()
        self.readers: list = []
        self.large: list[tuple[int, int, str]] = []  # a heap: (size, -place, path)
        self.count = self.total = 0
        self.staging: Path | None = None

    def entries(self) -> Iterator[FileEntry]:
        # The file list is streamed (a piece at a time) in each pass, never held whole.
        return self.repo.iter_files(self.snap_id, self.include)

    def stage(self) -> None:
        """The staging folder and every folder in it; the large files kept aside to start
        first, so that none starts last and leaves a core idle."""
        target = self.target
        try:
            target.mkdir(parents=True, exist_ok=True)
            if not target.is_dir():
                raise RepoError(f"The restore target {target} is not a directory.")
            self.staging = target / f".sctk-restore-{secrets.token_hex(6)}"
            self.staging.mkdir()
        except FileExistsError:
            raise RepoError(f"The restore target {target} is not a directory.") from None
        except OSError as exc:
            raise _target_error(target, exc) from None
        stage, dirs = str(self.staging), _Dirs()
        try:
            for e in self.entries():
                dirs.ensure(os.path.dirname(os.path.join(stage, _checked(e.path))))
                self.count += 1
                self.total += e.size
                if e.size >= LARGE_FILE:
                    heapq.heappush(self.large, (e.size, -self.count, e.path))
                    if len(self.large) > LARGE_KEPT:
                        heapq.heappop(self.large)  # the smallest of them waits its turn
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        self.large.sort(reverse=True)

    def restore_file(self, e: FileEntry) -> str | ChunkError:
        """Write one file into the staging folder, hashing as it goes; its SHA-256, or the
        ChunkError that stopped it. Each worker reads with its own reader (for a local
        repository: open packs and reused buffers), a file's chunks in order; files are
        restored in parallel."""
        reader = getattr(self.local, "reader", None)
        if reader is None:
            reader = self.local.reader = chunk_reader(self.repo)
            with self.lock:
                self.readers.append(reader)
        dest = os.path.join(str(self.staging), e.path)
        sha = hashlib.sha256()
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

        def write(data) -> None:
            sha.update(data)
            _write_all(fd, data)
            if self.progress is not None:
                with self.lock:
                    self.written += len(data)
                    self.progress(self.written)

        try:
            # written within the read: a large chunk is let go before another thread
            # decodes one (chunkread.LARGE_DECODE)
            err = reader.each(e.chunks, write)
            if err is not None:
                return err
            os.fchmod(fd, e.mode)
        finally:
            os.close(fd)
        return sha.hexdigest()

    def settle(self, e: FileEntry, got: str | ChunkError) -> None:
        """Accept a written file, or name why not: refused outright unless partial."""
        snap = self.snap_id[:12]
        if isinstance(got, ChunkError):
            why = got.reason
            if not self.partial:
                raise RepoError(
                    f"Cannot restore {e.path} from snapshot {snap}: {why}; nothing was "
                    f"restored into {self.target}."
                )
        elif got != e.sha256:
            why = "it does not match its SHA-256"
            if not self.partial:
                raise RepoError(
                    f"{e.path} in snapshot {snap} does not match its SHA-256; the repository "
                    f"is damaged and nothing was restored into {self.target}."
                )
        else:
            return
        self.damaged[e.path] = why

    def write_files(self) -> None:
        """One task per file, largest first so that no big file starts last and leaves a core
        idle; files are read, decrypted, written and hashed in parallel, a window of them in
        flight."""
        workers = worker_count()
        with ThreadPoolExecutor(workers, thread_name_prefix="sctk-restore-file") as ex:
            pending: deque = deque()
            try:
                first = {path for _size, _seen, path in self.large}
                rest = (e for e in self.entries() if e.path not in first)
                for e in itertools.chain(self._large_entries(), rest):
                    pending.append((e, ex.submit(self.restore_file, e)))
                    if len(pending) >= 2 * workers:
                        e, fut = pending.popleft()
                        self.settle(e, fut.result())
                while pending:
                    e, fut = pending.popleft()
                    self.settle(e, fut.result())
            except BaseException:
                for _e, fut in pending:
                    fut.cancel()
                raise

    def _large_entries(self) -> Iterator[FileEntry]:
        """The entries of the large files kept aside, largest first, each looked up in the
        list as it is needed (the piece holding it read again)."""
        lookup = self.repo.snapshot_lookup(self.snap_id)
        for _size, _seen, path in self.large:
            f = lookup.get(path)
            if f is None:  # the list is named by its hash: only a damaged piece reads otherwise
                raise RepoError(f"Snapshot {self.snap_id[:12]} no longer lists {path}.")
            yield FileEntry.of(f)

    def move_into_place(self) -> None:
        """Every file is whole (or, partial, left out): rename them into the target."""
        root, stage, final_dirs = str(self.target), str(self.staging), _Dirs()
        for e in self.entries():
            if e.path in self.damaged:
                continue
            final = os.path.join(root, e.path)
            final_dirs.ensure(os.path.dirname(final))
            os.replace(os.path.join(stage, e.path), final)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
