"""Checking a repository, in the manner of `restic check [--read-data]`.

Structure: every index file and snapshot file authenticates, every pack the index lists is
present with its recorded size, every chunk a snapshot references is in the index and in a
sound pack. With read_data: every file of the checked snapshots is read back (each chunk
decrypted and authenticated) and compared with its SHA-256, then every chunk no file used
(orphans, duplicates) is authenticated from its pack, and each pack's own header is checked
against the index, so every byte of every pack has been verified. The versions of one file
in several snapshots are read together, so a chunk they share is decrypted and decompressed
once (each version is still hashed whole): every byte of every pack is read once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait

from sctk.backup.repo import leftovers
from sctk.backup.repo.chunkread import chunk_reader
from sctk.backup.repo.errors import ChunkError, RepoError
from sctk.backup.repo.filelist import stream_sha256
from sctk.backup.repo.formats import (
    decode_pack_header,
    pack_name,
)
from sctk.backup.repo.index import write_index
from sctk.backup.repo.models import CheckReport
from sctk.backup.repo.packs import read_pack_header
from sctk.backup.repo.phases import PhaseReport, Phases
from sctk.backup.repo.threads import worker_count

MAX_ERRORS_PER_SNAPSHOT = 20
GROUP_VERSIONS = 4  # versions of one path verified together (they share most chunks)
SHARED_CACHE_BYTES = 8 * 1024 * 1024  # plaintext kept per group for chunks versions share


def blocking_problems(repo, phases: Phases | None = None) -> list[str]:
    """Structure problems that damage a snapshot or the index (what makes prune refuse);
    a lost pack holding only garbage is not one: prune itself drops it from the index.
    PHASES: progress of the "checking" phase, in files."""
    errors: list[str] = []
    phases = phases or Phases(None)
    with repo.lock(exclusive=False):
        repo.refresh_index(force=True)
        snap_ids = repo.snapshot_ids()
        phases.start("checking", _file_count(repo, snap_ids))
        _structure(repo, snap_ids, errors, blocking_only=True, phases=phases)
    return errors


def _file_count(repo, snap_ids) -> int | None:
    """The files of SNAP_IDS from their headers (None if one cannot be read)."""
    try:
        return sum(repo.snapshot_header(s)["files"] for s in snap_ids)
    except RepoError:
        return None


def _structure(
    repo,
    snap_ids: list[str],
    errors: list[str],
    blocking_only: bool = False,
    whole: bool = True,
    phases: Phases | None = None,
):
    """Structure problems appended to ERRORS; (headers of the snapshots read, packs that
    are missing or damaged, chunk ids referenced). Each snapshot's file list is checked as
    it is streamed, a piece at a time (a version-1 file: one whole list at a time)."""
    index = repo.index
    errors.extend(index.errors)
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
    docs: dict[str, dict] = {}
    read_errors: list[str] = []
    file_errors: list[str] = []
    referenced: set[str] = set()
    sizes = repo.snapshot_sizes()
    phases = phases or Phases(None)
    for sid in snap_ids:
        name = f"snapshots/{sid}"
        try:
            size = sizes.get(sid) or repo.backend.size(name)
            if size is None:
                raise FileNotFoundError(name)
            digest = stream_sha256(repo.backend, name, size)  # a piece at a time
        except FileNotFoundError:
            read_errors.append(f"Snapshot file {name} disappeared during the check.")
            continue
        if digest != sid:
            read_errors.append(
                f"Snapshot file {name} is damaged (its content does not match its name)."
            )
            continue
        try:
            header = repo.snapshot_header(sid, size)
            # the list streamed a piece at a time (as a file is read, a damaged piece fails)
            files = repo.snapshot_files(sid)
            _check_files(index, sid, files, bad, referenced, file_errors, phases)
        except RepoError as exc:
            read_errors.append(str(exc))
            continue
        if not blocking_only:
            docs[sid] = header
    errors.extend(read_errors)
    if not blocking_only:
        if whole:
            errors.extend(pack_errors.values())
        else:  # checking one snapshot: only the packs it uses
            used = {
                index.entries[c][0]
                for sid in docs
                for f in repo.snapshot_files(sid)
                for c in f["chunks"]
                if c in index.entries
            }
            errors.extend(msg for pack, msg in pack_errors.items() if pack in used)
    errors.extend(file_errors)
    return docs, bad, referenced


class _Checked:
    """What verifying needs of one file entry, without the rest of its decoded entry (stat
    fields, mode...): about a third of the memory, for every distinct file verify reads.
    Read as the entry is (f["path"])."""

    __slots__ = ("path", "size", "sha256", "chunks")

    def __init__(self, f: dict):
        self.path = f["path"]
        self.size = f["size"]
        self.sha256 = f["sha256"]
        self.chunks = tuple(f["chunks"])

    def __getitem__(self, key: str):
        return getattr(self, key)


def _check_files(
    index, sid: str, files, bad: dict, referenced: set, errors: list, phases: Phases
) -> None:
    """Every file of one snapshot: its chunks indexed, in sound packs (ERRORS appended)."""
    problems = 0
    for f in files:
        phases.step()
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


def check(
    repo,
    read_data: bool = False,
    snapshot_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    phase: PhaseReport | None = None,
) -> CheckReport:
    """See Repository.check; PHASE(name, done, total) hears each phase: index, snapshots
    (files checked), reading (bytes read and verified), leftovers."""
    started = time.perf_counter()
    phases = Phases(phase)
    errors: list[str] = []
    bytes_read = 0
    garbage = None
    unreferenced = 0
    with repo.lock(exclusive=False):
        phases.start("index")
        repo.refresh_index(force=True)
        index = repo.index
        snap_ids = [repo.find_snapshot(snapshot_id).id] if snapshot_id else repo.snapshot_ids()
        phases.start("snapshots", _file_count(repo, snap_ids))
        docs, bad, referenced = _structure(
            repo, snap_ids, errors, whole=snapshot_id is None, phases=phases
        )
        if read_data:
            damaged: list[tuple[str, str, int]] = []
            phases.start("reading")

            def reading(n: int) -> None:
                phases.at(n)
                if progress is not None:
                    progress(n)

            bytes_read = _read_data(
                repo, docs, bad, errors, reading, whole=snapshot_id is None, damaged=damaged
            )
            _remember_damage(repo, damaged)
        if snapshot_id is None:
            phases.start("leftovers")
            garbage = leftovers.scan(repo, recovered=False)
            unreferenced = garbage.bytes + leftovers.unreferenced_index_bytes(index, referenced)
        phases.end()
    return CheckReport(
        ok=not errors,
        errors=errors,
        snapshots=len(snap_ids),
        packs=len(index.pack_sizes),
        chunks=len(referenced) if snapshot_id else len(index.entries),
        bytes_read=bytes_read,
        seconds=round(time.perf_counter() - started, 3),
        read_data=read_data,
        unreferenced_bytes=unreferenced,
        leftover_files=garbage.files if garbage is not None else 0,
    )


def _remember_damage(repo, damaged: list[tuple[str, str, int]]) -> None:
    """Record chunk locations found damaged in the index (a small index file of their own),
    so the next backup stores those chunks again instead of referencing them, and the copy
    it stores becomes the one every snapshot sharing the chunk reads."""
    new = sorted(set(damaged) - repo.index.damaged)
    if not new:
        return
    try:
        names = write_index(repo.backend, repo.keys, {}, damaged=new)
    except RepoError:
        return  # a read-only copy: the check's report still names the damage
    repo.index.mark_damaged(new)
    repo.index_files = repo.index_files | frozenset(names)


def _version_groups(todo: list[tuple[str, dict]], docs: dict) -> list[list[int]]:
    """Indexes into TODO: the versions of one path together (in snapshot time order, at most
    GROUP_VERSIONS a group, so one path with many versions still spreads over the verifiers);
    every other file alone."""
    by_path: dict[str, list[int]] = {}
    for i, (_sid, f) in enumerate(todo):
        by_path.setdefault(f["path"], []).append(i)
    groups = []
    for idx in by_path.values():
        idx.sort(key=lambda i: docs[todo[i][0]]["time"])
        groups.extend(idx[k : k + GROUP_VERSIONS] for k in range(0, len(idx), GROUP_VERSIONS))
    return groups


class _SharedPlain:
    """Plaintexts of chunks that more than one version of a file holds, kept while the
    versions are read in step (the oldest dropped beyond MAX_BYTES); a chunk that failed is
    kept as its ChunkError."""

    def __init__(self, max_bytes: int = SHARED_CACHE_BYTES):
        self.items: OrderedDict[str, object] = OrderedDict()
        self.bytes = 0
        self.max_bytes = max_bytes

    def get(self, cid: str):
        return self.items.get(cid)

    def put(self, cid: str, data):
        """Keep DATA (a copy: the reader reuses its buffers) and return what is kept."""
        if not isinstance(data, ChunkError):
            data = bytes(data)
            self.bytes += len(data)
        self.items[cid] = data
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _cid, old = self.items.popitem(last=False)
            if not isinstance(old, ChunkError):
                self.bytes -= len(old)
        return data


def _verify_versions(reader, index, files: list[dict]) -> tuple[list, list, int]:
    """Read FILES (versions of one path, or one file) chunk by chunk in step, so that a chunk
    they share at about the same place (or one repeated close by) is decrypted and
    decompressed once, and hash each:
    ([(SHA-256 or None, ChunkError or None)] per file, (pack, offset) of every chunk read,
    stored bytes read). Every version is still hashed whole: that is what its SHA-256 checks."""
    counts = Counter(cid for f in files for cid in f["chunks"])
    shared = {cid for cid, n in counts.items() if n > 1}  # also a chunk repeated in one file
    cache = _SharedPlain()
    shas = [hashlib.sha256() for _ in files]
    failed: list[ChunkError | None] = [None] * len(files)
    done: list[tuple[str, int]] = []
    nbytes = 0
    for step in range(max(len(f["chunks"]) for f in files)):
        for j, f in enumerate(files):
            if failed[j] is not None or step >= len(f["chunks"]):
                continue
            cid = f["chunks"][step]
            data = cache.get(cid)
            if data is None:
                loc = index.entries[cid]
                nbytes += loc[2]
                data = reader.plain(cid, loc)
                if not isinstance(data, ChunkError):
                    done.append((loc[0], loc[1]))
                if cid in shared:
                    data = cache.put(cid, data)
            if isinstance(data, ChunkError):
                failed[j] = data
            else:
                shas[j].update(data)
    outcomes = [
        (None, err) if err is not None else (sha.hexdigest(), None)
        for sha, err in zip(shas, failed, strict=True)
    ]
    return outcomes, done, nbytes


def _sound(loc, bad: dict) -> bool:
    """An indexed chunk location in a pack not known missing or damaged."""
    return loc is not None and loc[0] not in bad


def _read_data(
    repo, docs: dict, bad: dict, errors: list[str], progress, whole: bool, damaged: list
) -> int:
    """Read and verify every file of DOCS, then the rest of every pack; the stored bytes read.
    Each chunk location that fails is appended to DAMAGED as (chunk id, pack, offset)."""
    index = repo.index
    todo = _distinct_files(repo, docs, bad)
    results, verified, read = _verify_files(repo, todo, docs, progress)
    for i, (sid, f) in enumerate(todo):  # errors in snapshot and file order
        digest, failed = results[i]
        if failed is not None:
            loc = index.entries.get(failed.cid)
            if loc is not None and failed.pack == loc[0]:
                damaged.append((failed.cid, loc[0], loc[1]))
            errors.append(
                f"Snapshot {sid[:12]}: file {f['path']} cannot be restored: {failed.reason}."
            )
        elif digest != f["sha256"]:
            errors.append(f"Snapshot {sid[:12]}: file {f['path']} does not match its SHA-256.")

    # Then every pack (or, for one snapshot, the packs it uses): header, and unread chunks.
    if whole:
        packs = [p for p in index.pack_sizes if p not in bad]
    else:
        packs = sorted({index.entries[c][0] for _, f in todo for c in f["chunks"]})
    found: list[tuple[str, str, int]] = []  # list.append is atomic: the pool threads share it
    for problems, n in repo.pool().map(lambda p: _verify_pack(repo, p, verified, found), packs):
        errors.extend(problems)
        read += n
        if progress is not None:
            progress(read)
    damaged.extend(found)
    return read


def _distinct_files(repo, docs: dict, bad: dict) -> list[tuple[str, _Checked]]:
    """(snapshot id, file) for each distinct file content of DOCS whose chunks all lie in
    sound packs: each is read once, however many snapshots hold it."""
    index = repo.index
    todo: list[tuple[str, _Checked]] = []
    seen: set[tuple] = set()
    for sid in docs:
        for f in repo.snapshot_files(sid):
            key = (f["sha256"], tuple(f["chunks"]))
            if key in seen:
                continue
            seen.add(key)
            if all(_sound(index.entries.get(c), bad) for c in f["chunks"]):
                todo.append((sid, _Checked(f)))
    return todo


def _verify_files(repo, todo: list, docs: dict, progress) -> tuple[dict, set, int]:
    """Read and hash every file of TODO: ({position in TODO: (SHA-256 or None, ChunkError
    or None)}, (pack, offset) of every chunk read, stored bytes read).

    One task per file (or per few versions of one file) in a pool of verifiers, so files
    are decrypted, decompressed and hashed in parallel (all three release the GIL). Each
    verifier reads its chunks with its own open packs and buffers: no per-chunk allocation,
    open or close."""
    index = repo.index
    verified: set[tuple[str, int]] = set()
    results: dict[int, tuple] = {}
    read = 0

    def record(group: list[int], outcomes: list, done: list, nbytes: int) -> None:
        nonlocal read
        read += nbytes
        verified.update(done)
        if progress is not None:
            progress(read)
        results.update(zip(group, outcomes, strict=True))

    local = threading.local()
    readers: list = []
    lock = threading.Lock()

    def verify_group(group: list[int]):
        reader = getattr(local, "reader", None)
        if reader is None:
            reader = local.reader = chunk_reader(repo)
            with lock:
                readers.append(reader)
        return _verify_versions(reader, index, [todo[i][1] for i in group])

    workers = worker_count()
    groups = _version_groups(todo, docs)
    # Largest first, so that no big file starts last and leaves a core idle.
    groups.sort(key=lambda g: -sum(todo[i][1]["size"] for i in g))
    try:
        # Results are taken as they finish, not in order: the first group is the largest
        # file, and waiting on it while the window is full left the other verifiers idle
        # (a verify used 1.45 of 2 cores, the biggest file being a fifth of the data).
        with ThreadPoolExecutor(workers, thread_name_prefix="sctk-check") as verifiers:
            running: dict = {}
            for group in groups:
                running[verifiers.submit(verify_group, group)] = group
                if len(running) >= 2 * workers:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        record(running.pop(fut), *fut.result())
            for fut in as_completed(running):
                record(running[fut], *fut.result())
    finally:
        for reader in readers:
            reader.close()
    return results, verified, read


def _verify_pack(repo, pack: str, verified: set, found: list) -> tuple[list[str], int]:
    """Check PACK's header against the index and authenticate every chunk the files did
    not read (VERIFIED holds those they did); a damaged chunk's location is appended to
    FOUND. (problems, stored bytes read)."""
    index = repo.index
    name = pack_name(pack)
    size = index.pack_sizes[pack]
    blobs = index.pack_blobs[pack]
    # a copy known damaged that another copy replaced is garbage (counted as such)
    todo_blobs = [
        b
        for b in blobs
        if (pack, b[1]) not in verified
        and not ((b[0], pack, b[1]) in index.damaged and index.entries[b[0]][:2] != (pack, b[1]))
    ]
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
                repo.open_chunk(cid, pack, view[off : off + length], raw, flags)
            except ChunkError as exc:
                found.append((cid, pack, off))
                problems.append(
                    f"Pack {name} is damaged: chunk {cid[:12]} at offset {off} "
                    f"fails authentication ({exc.reason})."
                )
                break
    return problems, n
