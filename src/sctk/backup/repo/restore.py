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

LARGE_FILE = 8 * 1024 * 1024  # restored first, largest first (kept in memory: few)


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

    def entries() -> Iterator[FileEntry]:
        # The file list is streamed (a piece at a time) in each pass, never held whole.
        return repo.iter_files(info.id, include)

    try:
        target.mkdir(parents=True, exist_ok=True)
        if not target.is_dir():
            raise RepoError(f"The restore target {target} is not a directory.")
        staging = target / f".sctk-restore-{secrets.token_hex(6)}"
        staging.mkdir()
    except FileExistsError:
        raise RepoError(f"The restore target {target} is not a directory.") from None
    except OSError as exc:
        raise _target_error(target, exc) from None
    written = 0
    damaged: dict[str, str] = {}  # path -> why it was left out (partial restores)
    lock = threading.Lock()
    stage, dirs = str(staging), _Dirs()
    # Folders first (and every path checked) before any file is written; the large files
    # are kept aside to start first, so that none starts last and leaves a core idle.
    large: list[FileEntry] = []
    count = total = 0
    try:
        for e in entries():
            dirs.ensure(os.path.dirname(os.path.join(stage, _checked(e.path))))
            count += 1
            total += e.size
            if e.size >= LARGE_FILE:
                large.append(e)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    large.sort(key=lambda e: -e.size)

    local = threading.local()
    readers: list = []

    def restore_file(e: FileEntry) -> str | ChunkError:
        """Write one file into the staging folder, hashing as it goes; its SHA-256, or the
        ChunkError that stopped it. Each worker reads with its own reader (for a local
        repository: open packs and reused buffers), a file's chunks in order; files are
        restored in parallel."""
        nonlocal written
        reader = getattr(local, "reader", None)
        if reader is None:
            reader = local.reader = chunk_reader(repo)
            with lock:
                readers.append(reader)
        dest = os.path.join(stage, e.path)
        sha = hashlib.sha256()
        datas = reader.chunks(e.chunks)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for data in datas:
                if isinstance(data, ChunkError):
                    return data
                sha.update(data)
                _write_all(fd, data)
                if progress is not None:
                    with lock:
                        written += len(data)
                        progress(written)
            os.fchmod(fd, e.mode)
        finally:
            os.close(fd)
            datas.close()
        return sha.hexdigest()

    with repo.lock(exclusive=False):
        try:
            # One task per file, largest first so that no big file starts last and leaves a
            # core idle; files are read, decrypted, written and hashed in parallel.
            with ThreadPoolExecutor(worker_count(), thread_name_prefix="sctk-restore-file") as ex:
                pending: deque = deque()

                def settle() -> None:
                    e, fut = pending.popleft()
                    got = fut.result()
                    if isinstance(got, ChunkError):
                        why = got.reason
                        if not partial:
                            raise RepoError(
                                f"Cannot restore {e.path} from snapshot {info.id[:12]}: "
                                f"{why}; nothing was restored into {target}."
                            )
                    elif got != e.sha256:
                        why = "it does not match its SHA-256"
                        if not partial:
                            raise RepoError(
                                f"{e.path} in snapshot {info.id[:12]} does not match its "
                                f"SHA-256; the repository is damaged and nothing was restored "
                                f"into {target}."
                            )
                    else:
                        return
                    damaged[e.path] = why

                try:
                    small = (e for e in entries() if e.size < LARGE_FILE)
                    for e in itertools.chain(large, small):
                        pending.append((e, ex.submit(restore_file, e)))
                        if len(pending) >= 2 * worker_count():
                            settle()
                    while pending:
                        settle()
                except BaseException:
                    for _e, fut in pending:
                        fut.cancel()
                    raise
            # Every file is whole (or, partial, left out): move them into place.
            root, final_dirs = str(target), _Dirs()
            for e in entries():
                if e.path in damaged:
                    continue
                final = os.path.join(root, e.path)
                final_dirs.ensure(os.path.dirname(final))
                os.replace(os.path.join(stage, e.path), final)
        except OSError as exc:
            raise _target_error(target, exc) from None
        finally:
            for reader in readers:
                reader.close()
            shutil.rmtree(staging, ignore_errors=True)
    lost = sum(e.size for e in entries() if e.path in damaged) if damaged else 0
    return RestoreStats(
        files=count - len(damaged),
        bytes=total - lost,
        seconds=round(time.perf_counter() - started, 3),
        damaged=sorted(damaged.items()),
    )
