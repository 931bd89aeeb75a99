"""Checking a repository, in the manner of `restic check [--read-data]`.

Structure: every index file and snapshot file authenticates, every pack the index lists is
present with its recorded size, every chunk a snapshot references is in the index and in a
sound pack. With read_data: every file of the checked snapshots is read back (each chunk
decrypted and authenticated) and compared with its SHA-256, then every chunk no file used
(orphans, duplicates) is authenticated from its pack, and each pack's own header is checked
against the index, so every byte of every pack has been verified.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import (
    AAD_SNAPSHOT,
    content_id,
    decode_pack_header,
    open_json,
    pack_name,
)
from sctk.backup.repo.models import CheckReport
from sctk.backup.repo.packs import read_pack_header
from sctk.backup.repo.repository import ChunkError, worker_count

MAX_ERRORS_PER_SNAPSHOT = 20
SMALL_FILE_CHUNKS = 4  # files of up to this many chunks are checked whole by one worker


def blocking_problems(repo) -> list[str]:
    """Structure problems that damage a snapshot or the index (what makes prune refuse);
    a lost pack holding only garbage is not one: prune itself drops it from the index."""
    errors: list[str] = []
    with repo.lock(exclusive=False):
        repo._refresh_index(force=True)
        _structure(repo, repo._snapshot_ids(), errors, blocking_only=True)
    return errors


def _structure(
    repo, snap_ids: list[str], errors: list[str], blocking_only: bool = False, whole: bool = True
):
    index = repo.index
    errors.extend(index.errors)
    docs: dict[str, dict] = {}
    for sid in snap_ids:
        name = f"snapshots/{sid}"
        try:
            blob = repo.backend.read(name)
        except FileNotFoundError:
            errors.append(f"Snapshot file {name} disappeared during the check.")
            continue
        if content_id(blob) != sid:
            errors.append(f"Snapshot file {name} is damaged (its content does not match its name).")
            continue
        try:
            docs[sid] = open_json(repo.keys, blob, AAD_SNAPSHOT, f"snapshot file {name}")
        except RepoError as exc:
            errors.append(str(exc))
    stored = repo.backend.list("data")
    bad: dict[str, str] = {}
    pack_errors: dict[str, str] = {}
    for pack, size in sorted(index.pack_sizes.items()):
        name = pack_name(pack)
        got = stored.get(name)
        if got is None:
            bad[pack] = f"pack {name} is missing"
            pack_errors[pack] = (
                f"Pack {name} is missing (the index lists {len(index.pack_blobs[pack])} "
                "chunks in it)."
            )
        elif got != size:
            bad[pack] = f"pack {name} is truncated or damaged"
            pack_errors[pack] = (
                f"Pack {name} has {got} bytes but the index records {size} (truncated or damaged)."
            )
    if not blocking_only:
        if whole:
            errors.extend(pack_errors.values())
        else:  # checking one snapshot: only the packs it uses
            used = {
                index.entries[c][0]
                for d in docs.values()
                for f in d["files"]
                for c in f["chunks"]
                if c in index.entries
            }
            errors.extend(msg for pack, msg in pack_errors.items() if pack in used)
    referenced: set[str] = set()
    for sid, doc in docs.items():
        problems = 0
        for f in doc["files"]:
            referenced.update(f["chunks"])
            for cid in f["chunks"]:
                loc = index.entries.get(cid)
                why = None
                if loc is None:
                    why = f"its chunk {cid[:12]} is in no index (an index file or pack was lost)"
                elif loc[0] in bad:
                    why = f"it needs {bad[loc[0]]}"
                if why:
                    problems += 1
                    if problems <= MAX_ERRORS_PER_SNAPSHOT:
                        errors.append(f"Snapshot {sid[:12]}: file {f['path']} is damaged: {why}.")
                    break
        if problems > MAX_ERRORS_PER_SNAPSHOT:
            errors.append(
                f"Snapshot {sid[:12]}: {problems - MAX_ERRORS_PER_SNAPSHOT} more damaged files."
            )
    return docs, bad, referenced


def check(
    repo,
    read_data: bool = False,
    snapshot_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    started = time.perf_counter()
    errors: list[str] = []
    bytes_read = 0
    with repo.lock(exclusive=False):
        repo._refresh_index(force=True)
        index = repo.index
        snap_ids = [repo.find_snapshot(snapshot_id).id] if snapshot_id else repo._snapshot_ids()
        docs, bad, referenced = _structure(repo, snap_ids, errors, whole=snapshot_id is None)
        if read_data:
            bytes_read = _read_data(repo, docs, bad, errors, progress, whole=snapshot_id is None)
    return CheckReport(
        ok=not errors,
        errors=errors,
        snapshots=len(snap_ids),
        packs=len(index.pack_sizes),
        chunks=len(referenced) if snapshot_id else len(index.entries),
        bytes_read=bytes_read,
        seconds=round(time.perf_counter() - started, 3),
        read_data=read_data,
    )


def _read_data(repo, docs: dict, bad: dict, errors: list[str], progress, whole: bool) -> int:
    index = repo.index
    # Each distinct file content is read once, however many snapshots hold it.
    todo: list[tuple[str, dict]] = []
    seen: set[tuple] = set()
    for sid, doc in docs.items():
        for f in doc["files"]:
            key = (f["sha256"], tuple(f["chunks"]))
            if key in seen:
                continue
            seen.add(key)
            if all(c in index.entries and index.entries[c][0] not in bad for c in f["chunks"]):
                todo.append((sid, f))
    verified: set[tuple[str, int]] = set()
    read = 0

    def record(sid: str, f: dict, digest: str | None, failed, done: list, nbytes: int) -> None:
        nonlocal read
        read += nbytes
        verified.update(done)
        if progress is not None:
            progress(read)
        if failed is not None:
            errors.append(
                f"Snapshot {sid[:12]}: file {f['path']} cannot be restored: {failed.reason}."
            )
        elif digest != f["sha256"]:
            errors.append(f"Snapshot {sid[:12]}: file {f['path']} does not match its SHA-256.")

    # One task per file in a pool of verifiers, so files are hashed in parallel; a large
    # file's chunks are fetched and decrypted ahead by the chunk pool while it is hashed.
    def verify_file(f: dict):
        sha = hashlib.sha256()
        done, nbytes = [], 0
        cids = f["chunks"]
        if len(cids) > SMALL_FILE_CHUNKS:
            datas = repo.iter_chunks(cids, window=6)
        else:
            datas = (repo._safe_load(c) for c in cids)
        try:
            for cid, data in zip(cids, datas, strict=True):
                loc = index.entries[cid]
                nbytes += loc[2]
                if isinstance(data, ChunkError):
                    return None, data, done, nbytes
                done.append((loc[0], loc[1]))
                sha.update(data)
        finally:
            datas.close()
        return sha.hexdigest(), None, done, nbytes

    with ThreadPoolExecutor(worker_count(), thread_name_prefix="sctk-check") as verifiers:
        pending: deque = deque()
        for sid, f in todo:
            pending.append((sid, f, verifiers.submit(verify_file, f)))
            if len(pending) >= 2 * worker_count():
                sid0, f0, fut = pending.popleft()
                record(sid0, f0, *fut.result())
        while pending:
            sid0, f0, fut = pending.popleft()
            record(sid0, f0, *fut.result())

    # Then every pack (or, for one snapshot, the packs it uses): header, and unread chunks.
    if whole:
        packs = [p for p in index.pack_sizes if p not in bad]
    else:
        packs = sorted({index.entries[c][0] for _, f in todo for c in f["chunks"]})

    def verify_pack(pack: str) -> tuple[list[str], int]:
        name = pack_name(pack)
        size = index.pack_sizes[pack]
        blobs = index.pack_blobs[pack]
        todo_blobs = [b for b in blobs if (pack, b[1]) not in verified]
        problems: list[str] = []
        try:
            if todo_blobs:
                data = repo.backend.read(name)
                entries, hstart = decode_pack_header(repo.keys, data, name)
                n = len(data)
            else:
                entries, hstart = read_pack_header(repo.backend, repo.keys, name, size)
                data, n = None, size - hstart
        except (RepoError, FileNotFoundError) as exc:
            return [f"Pack {name}: {exc}".rstrip(".") + "."], 0
        # The index may leave chunks out (repair_index drops damaged ones), never add any.
        if not set(map(tuple, blobs)) <= set(map(tuple, entries)):
            problems.append(f"Pack {name}: its header does not match the index.")
        # The chunks must tile the pack up to its header, so no byte goes unchecked.
        end = 0
        for _cid, off, length, _raw, _flags in sorted(entries, key=lambda e: e[1]):
            if off != end:
                problems.append(f"Pack {name}: unaccounted bytes at offset {end}.")
                break
            end = off + length
        if end != hstart and not problems:
            problems.append(f"Pack {name}: unaccounted bytes before its header.")
        if data is not None:
            view = memoryview(data)
            for cid, off, length, raw, flags in todo_blobs:
                try:
                    repo._open_chunk(cid, pack, view[off : off + length], raw, flags)
                except ChunkError as exc:
                    problems.append(
                        f"Pack {name} is damaged: chunk {cid[:12]} at offset {off} "
                        f"fails authentication ({exc.reason})."
                    )
                    break
        return problems, n

    pool = repo.pool()
    for problems, n in pool.map(verify_pack, packs):
        errors.extend(problems)
        read += n
        if progress is not None:
            progress(read)
    return read
