"""Checking a repository, in the manner of `restic check [--read-data]`.

Structure: every index file and snapshot file authenticates, every pack the index lists is
present with its recorded size, every chunk a snapshot references is in the index and in a
sound pack. With read_data: every file of the checked snapshots is read back (each chunk
decrypted and authenticated) and compared with its SHA-256, then every chunk no file used
(orphans, duplicates) is authenticated from its pack, and each pack's own header is checked
against the index, so every byte of every pack has been verified. The versions of one file
in several snapshots are read together, so a chunk they share is decrypted and decompressed
once (each version is still hashed whole): every byte of every pack is read once. A piece
of a list that repeats an earlier snapshot's (an unchanged backup copies its parent's) is
decoded and merged once, in that snapshot (samepieces.py).

Memory does not grow with the files or chunks: the files to read come from a merge of the
snapshots' lists (sorted by path) as they are read, and what must be known of every chunk
or file (the chunks referenced, where each content is first found) is kept in sorted files
on local disk, filled as the structure pass streams the lists.
"""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
import zlib
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby, tee
from operator import itemgetter

from sctk.backup.repo import checkprocs, leftovers
from sctk.backup.repo.chunkread import Helpers, PlannedReads, chunk_reader
from sctk.backup.repo.errors import ChunkError, RepoError
from sctk.backup.repo.filelist import stream_sha256
from sctk.backup.repo.formats import (
    decode_pack_header,
    pack_name,
)
from sctk.backup.repo.index import NO_PACK, write_index
from sctk.backup.repo.keyfilter import KeyFilter
from sctk.backup.repo.models import CheckReport
from sctk.backup.repo.packs import read_pack_header
from sctk.backup.repo.phases import PhaseReport, Phases
from sctk.backup.repo.samepieces import SamePieces
from sctk.backup.repo.sortedindex import SortedIndex, opened
from sctk.backup.repo.threads import process_count, worker_count
from sctk.backup.repo.workerloop import WorkerFailed
from sctk.backup.repo.workerprocs import OnDemand, Processes, WorkerDied

MAX_ERRORS_PER_SNAPSHOT = 20
GROUP_VERSIONS = 4  # versions of one path verified together (they share most chunks)
SHARED_CACHE_BYTES = 8 * 1024 * 1024  # plaintext kept per group for chunks versions share
BATCH_BYTES = 1 << 20  # small files verified in one task up to this size together...
BATCH_GROUPS = 256  # ...or this many groups
BIG_FIRST = 4  # the largest paths, verified before the rest (no core idle at the end)
# Worker processes read files of one chunk (checkprocs.py), one per core, started with the
# check when the snapshots hold PROCESSES_AFTER files or more averaging SMALL_MEAN bytes at
# most (mostly small files: there the files' Python is the work, and the workers take it
# off the threads). Where larger files hold the bytes, none: the threads' decoding and
# hashing run in C with no lock held, and a worker bought 0-5% of the time for 8-13 MiB
# (benchmarks/RESULTS.md, "Backup at scale", the twenty-second session's notes): on the lab
# data set at scale 2 6.65-7.03 s against 6.88-7.25 s and 61-63 MiB against 48-49; on the
# reference data set at scale 16 60-61 MiB against 51-53 and, on two machines,
# 22.0-23.0 s against 23.3-24.4 s and 12.2-12.9 s against 12.3-12.8 s; there its memory
# was the verify's growth past the 10 MiB issue 26 allows from scale 1 to scale 16.
# Decided from the snapshots' headers, not from how many files a check has met so far, so
# that a repository ten times larger of the same kind gets the same workers.
PROCESSES_AFTER = 2048
SMALL_MEAN = 64 << 10


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


class _Hashers(OnDemand):
    """Worker processes reading files of one chunk (checkprocs.py) for a check of a local
    repository: PROCESSES as Repository.check says (True: one per core; None: only if the
    check starts them, start_now, however many such files it meets)."""

    NEVER_MET = 1 << 62  # the files of one chunk a check would have to meet to start them

    def __init__(self, repo, processes: bool | None):
        self._count = process_count()
        super().__init__(
            lambda: Processes(checkprocs.ENTRY, checkprocs.init(repo), self._count),
            processes if repo.backend.local else False,
            self.NEVER_MET,
        )

    def start_now(self, count: int) -> None:
        """Start COUNT of them before any file is met (unless told not to): they boot while
        the lists are walked, and the threads verify the files meanwhile."""
        if self._wanted is None:
            self._count = count
        self.get(self.NEVER_MET)


@contextmanager
def _hashers(repo, processes: bool | None) -> Iterator[_Hashers]:
    """The check's worker processes (_Hashers), stopped when the check ends."""
    hashers = _Hashers(repo, processes)
    try:
        yield hashers
    finally:
        hashers.close()


def _mostly_small(repo, snap_ids) -> bool:
    """Whether the files of SNAP_IDS average SMALL_MEAN bytes at most (from their headers):
    then most are of one chunk, and a worker process per core starts with the check."""
    try:
        heads = [repo.snapshot_header(s) for s in snap_ids]
    except RepoError:
        return False
    return sum(h.get("size", 0) for h in heads) <= SMALL_MEAN * sum(h["files"] for h in heads)


def _file_count(repo, snap_ids) -> int | None:
    """The files of SNAP_IDS from their headers (None if one cannot be read)."""
    try:
        return sum(repo.snapshot_header(s)["files"] for s in snap_ids)
    except RepoError:
        return None


@dataclass
class _Walk:
    """What the structure pass found: the headers of the snapshots read (DOCS, in the order
    they were read), packs missing or damaged (BAD), every chunk id referenced (REFERENCED,
    a sorted file on disk: a set of them in memory grew by ~130 bytes a chunk), where each
    file content is first found (FIRSTS, for read_data) and whether any file was found
    damaged (then read_data checks each file's chunks again before reading it)."""

    docs: dict[str, dict]
    bad: dict[str, str]
    referenced: SortedIndex | None = None
    firsts: SortedIndex | None = None
    # the contents found at more than one place (perhaps a few more): only their firsts are
    # looked up (see _FirstCopies)
    elsewhere: KeyFilter | None = None
    damaged_files: bool = False
    big: list[str] = field(default_factory=list)  # the largest paths, largest first
    # the pieces of the lists read that repeat an earlier snapshot's (read_data skips them)
    same: SamePieces = field(default_factory=SamePieces)

    def close(self) -> None:
        for found in (self.referenced, self.firsts):
            if found is not None:
                found.close()


def _structure(
    repo,
    snap_ids: list[str],
    errors: list[str],
    blocking_only: bool = False,
    whole: bool = True,
    phases: Phases | None = None,
    contents: bool = False,
) -> _Walk:
    """Structure problems appended to ERRORS; what was found (see _Walk: REFERENCED unless
    BLOCKING_ONLY, FIRSTS with CONTENTS). Each snapshot's file list is checked as it is
    streamed, a piece at a time (a version-1 file: one whole list at a time)."""
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
    sizes = repo.snapshot_sizes()
    phases = phases or Phases(None)
    # Filled as the lists stream by, on disk (sortedindex.Builder): memory stays bounded
    # whatever the number of chunks and files.
    referenced = None if blocking_only else index.sorted_builder("referenced-")
    if referenced is not None:
        referenced.pack(NO_PACK)  # pack 0: the rows of a set name no pack
    firsts = _FirstCopies(index) if contents else None
    # Whether each chunk is looked up as the lists go by: unless the set of chunks
    # referenced is built and compared with the sorted index as a whole afterwards (one
    # pass in key order), which answers for every chunk while no pack is known missing and
    # no location was learnt since loading; a lookup per chunk was a third of the CPU of a
    # check of 10^5 small files. When a chunk is missing, the lists are gone through again
    # with lookups, to name the files that need it.
    lookups = (
        referenced is None or bool(bad) or bool(index.entries.extra) or index.entries.base is None
    )
    walked: list[str] = []  # snapshots whose lists were gone through (perhaps part way)
    same = SamePieces()
    try:
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
                # the list streamed a piece at a time (as a file is read, a damaged piece fails);
                # a piece repeating an earlier snapshot's is decoded only to name damaged files
                files = same.files(repo, sid, decode_repeats=lookups, step=phases.step)
                if firsts is not None:
                    files = firsts.noted(len(docs), files)
                walked.append(sid)
                _check_files(index, sid, files, bad, referenced, file_errors, phases, lookups)
            except RepoError as exc:
                read_errors.append(str(exc))
                same.failed(sid)
                if firsts is not None:
                    firsts.spoilt = True  # rows of a snapshot left out: noted again later
                continue
            if not blocking_only:
                docs[sid] = header
        walk = _Walk(docs, bad, same=same)
        if referenced is not None:
            walk.referenced = opened(referenced)
        if not lookups and index.entries.base.lacks(walk.referenced):
            for sid in walked:
                try:
                    files = repo.snapshot_files(sid)
                    _check_files(index, sid, files, bad, None, file_errors, Phases(None))
                except RepoError:
                    continue  # named by the first pass
        walk.damaged_files = bool(file_errors)
        if firsts is not None:
            walk.firsts = firsts.done(repo, docs)
            walk.elsewhere = firsts.elsewhere
            walk.big = firsts.largest()
    finally:
        if referenced is not None:
            referenced.cleanup()
        if firsts is not None:
            firsts.builder.cleanup()
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
    return walk


def _place(path: str) -> int:
    """A path as 4 bytes, to tell the copies of a content in one snapshot apart (two paths
    of one snapshot holding one content and the same CRC: a content read twice, 2^-32)."""
    return zlib.crc32(path.encode())


def _content_key(f: dict) -> bytes:
    """32 bytes naming a file's content as verify tells contents apart: its SHA-256 and
    its chunk list."""
    return hashlib.sha256(f"{f['sha256']}:{','.join(f['chunks'])}".encode()).digest()


class _FirstCopies:
    """Where each distinct file content is first found, snapshot after snapshot in the
    order they are checked and path after path: (snapshot position, CRC-32 of the path),
    in a sorted file on disk. read_data reads a content there only, once, however many
    snapshots and paths hold it (and names a damaged one there), as a to-do list of every
    distinct file and a set of those seen did, in memory that grew with the files (23 MiB
    from the reference set at scale 1 to scale 4).

    A content found at one place only (however many snapshots hold it there) is read at the
    first version of its path that holds it, which read_data knows without a lookup; the
    contents found at more than one place are put in a filter (ELSEWHERE, 128 KiB) as the
    file is written, and only they (and the few the filter mistakes for them) are looked up:
    a lookup per file, a positioned read on the thread that feeds the verifiers, each
    letting the verifiers take the GIL from it, was a third of that thread's time on 10^5
    small files."""

    def __init__(self, index):
        self.index = index
        self._start()
        self.spoilt = False
        self.big: list[tuple[int, str]] = []  # a heap of (size, path): the largest files

    def _start(self) -> None:
        self.elsewhere = KeyFilter()
        self.builder = self.index.sorted_builder("firsts-", self._repeat)
        self.num = self.builder.pack(NO_PACK)

    def _repeat(self, kept: bytes, dropped: bytes) -> None:
        """A content noted twice: at another place (the record's length field), it is
        looked up."""
        if kept[40:44] != dropped[40:44]:
            self.elsewhere.add(kept[:32])

    def noted(self, pos: int, files) -> Iterator[dict]:
        """FILES (of the snapshot at POS), each noted as it goes by."""
        add, num, big = self.builder.add, self.num, self.big
        for f in files:
            # the first record given for a key wins
            add(_content_key(f), num, pos, _place(f["path"]), 0, 0)
            if len(big) < 4 * BIG_FIRST:
                heapq.heappush(big, (f["size"], f["path"]))
            elif f["size"] > big[0][0]:
                heapq.heapreplace(big, (f["size"], f["path"]))
            yield f

    def largest(self) -> list[str]:
        """The BIG_FIRST largest paths, largest first."""
        paths: list[str] = []
        for _size, path in sorted(self.big, reverse=True):
            if path not in paths:
                paths.append(path)
        return paths[:BIG_FIRST]

    def done(self, repo, docs: dict) -> SortedIndex:
        """The sorted file; noted again from DOCS alone when a snapshot's list failed part
        way (its first rows would claim contents that no snapshot read holds there)."""
        if self.spoilt:
            self.builder.cleanup()
            self._start()
            for pos, sid in enumerate(docs):
                for _f in self.noted(pos, repo.snapshot_files(sid)):
                    pass
        return opened(self.builder)


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
    index,
    sid: str,
    files,
    bad: dict,
    referenced,
    errors: list,
    phases: Phases,
    lookups: bool = True,
) -> None:
    """Every file of one snapshot: its chunks added to REFERENCED (a sortedindex.Builder
    whose pack 0 is NO_PACK, or None) and, with LOOKUPS, looked up: indexed, in sound packs
    (ERRORS appended)."""
    problems = 0
    if referenced is not None:
        add, key, num = referenced.add, bytes.fromhex, 0
    for f in files:
        phases.step()
        if referenced is not None:
            for cid in f["chunks"]:
                add(key(cid), num, 0, 0, 0, 0)
        if not lookups:
            continue
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
    processes: bool | None = None,
) -> CheckReport:
    """See Repository.check; PHASE(name, done, total) hears each phase: index, snapshots
    (files checked), reading (bytes read and verified), leftovers."""
    started = time.perf_counter()
    phases = Phases(phase)
    errors: list[str] = []
    bytes_read = 0
    garbage = None
    unreferenced = 0
    with repo.lock(exclusive=False), _hashers(repo, processes if read_data else False) as hashers:
        phases.start("index")
        repo.refresh_index(force=True)
        index = repo.index
        snap_ids = [repo.find_snapshot(snapshot_id).id] if snapshot_id else repo.snapshot_ids()
        files = _file_count(repo, snap_ids)
        phases.start("snapshots", files)
        if files is not None and files >= PROCESSES_AFTER and _mostly_small(repo, snap_ids):
            hashers.start_now(process_count())
        walk = _structure(
            repo, snap_ids, errors, whole=snapshot_id is None, phases=phases, contents=read_data
        )
        try:
            if read_data:
                damaged: list[tuple[str, str, int]] = []
                phases.start("reading")

                def reading(n: int) -> None:
                    phases.at(n)
                    if progress is not None:
                        progress(n)

                bytes_read = _read_data(
                    repo, walk, errors, reading, snapshot_id is None, damaged, hashers
                )
                _remember_damage(repo, damaged)
            if snapshot_id is None:
                phases.start("leftovers")
                garbage = leftovers.scan(repo, recovered=False)
                unreferenced = garbage.bytes + leftovers.unreferenced_index_bytes(
                    index, walk.referenced
                )
            chunks = len(walk.referenced) if snapshot_id else len(index.entries)
        finally:
            walk.close()
        phases.end()
    return CheckReport(
        ok=not errors,
        errors=errors,
        snapshots=len(snap_ids),
        packs=len(index.pack_sizes),
        chunks=chunks,
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


class _SharedPlain:
    """Plaintexts of chunks a version of a file needs again later, kept while the versions
    are read (the oldest dropped beyond MAX_BYTES); a chunk that failed is kept as its
    ChunkError."""

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
            self._forget(self.items.popitem(last=False)[1])
        return data

    def drop(self, cid: str) -> None:
        """Let go of CID's plaintext (no version needs it again)."""
        if (old := self.items.pop(cid, None)) is not None:
            self._forget(old)

    def _forget(self, old) -> None:
        if not isinstance(old, ChunkError):
            self.bytes -= len(old)


@dataclass(slots=True)
class _Step:
    """One chunk handed to the versions whose next chunk it is (HOLDERS, by position in the
    group): READ from its pack unless kept, KEPT afterwards when a version needs it again
    later, let go when it is the LAST use."""

    cid: str
    loc: tuple
    holders: list[int]
    read: bool
    keep: bool
    last: bool


def _schedule(index, files: list[_Checked]) -> Iterator[_Step]:
    """The order in which _verify_versions hands the chunks of FILES (versions of one path)
    to their hashes: each version's in its own order, a chunk the versions share read once.

    Each step takes a chunk at the head of some version: one kept already; else one no
    version needs after this (the versions holding it at their heads take it at once, and
    nothing is copied); else the first version's. So versions that an edit put out of step
    (a chunk inserted in one of them) each go through their own chunks until they meet at
    a shared one again, which is then read for all of them together. Reading them in step
    by chunk number instead copied every shared chunk's plaintext to keep it for the other
    versions (the reference data set's versions share most chunks): verify's peak at scale
    4 was 78 MiB with the copies, 53 without. The kept plaintexts' sizes are followed as
    _SharedPlain keeps them (a chunk's plaintext is its raw length, loc[3]), so the steps
    that READ are the reads made when none fails: helpers decode them ahead.

    The steps are made as they are taken: a list of them for a whole file (a location, a
    step and a list of holders a chunk) grew with the file, 4 MiB of the peak for the 3.4 GB
    database at scale 16 of the reference data set."""
    entries = index.entries
    remaining = Counter(cid for f in files for cid in f.chunks)
    at = [0] * len(files)
    live = [j for j, f in enumerate(files) if f.chunks]
    kept: OrderedDict[str, int] = OrderedDict()
    kept_bytes = 0
    while live:
        heads: dict[str, list[int]] = {}
        for j in live:
            heads.setdefault(files[j].chunks[at[j]], []).append(j)
        cid = (
            next((c for c in heads if c in kept), None)
            or next((c for c, js in heads.items() if remaining[c] == len(js)), None)
            or next(iter(heads))
        )
        holders = heads[cid]
        remaining[cid] -= len(holders)
        read = cid not in kept
        keep = read and remaining[cid] > 0
        last = remaining[cid] == 0
        loc = entries[cid]
        if keep:
            kept[cid] = loc[3]
            kept_bytes += loc[3]
            while kept_bytes > SHARED_CACHE_BYTES and len(kept) > 1:
                kept_bytes -= kept.popitem(last=False)[1]
        elif last and cid in kept:
            kept_bytes -= kept.pop(cid)
        for j in holders:
            at[j] += 1
        live = [j for j in live if at[j] < len(files[j].chunks)]
        yield _Step(cid, loc, holders, read, keep, last)


def _hash_into(shas: list, cache: _SharedPlain | None, cid: str, data) -> None:
    """Each of SHAS updated with a chunk's plaintext DATA, kept in CACHE first when given."""
    if cache is not None:
        data = cache.put(cid, data)
    for sha in shas:
        sha.update(data)


def _verify_versions(reader, index, files: list[_Checked], helpers=None) -> tuple[list, dict, int]:
    """Read FILES (versions of one path, or one file) as _schedule orders it, so that a
    chunk they share (or one repeated in a file) is decrypted and decompressed once, and
    hash each:
    ([(SHA-256 or None, ChunkError or None)] per file, {pack: offsets} of the chunks read,
    stored bytes read). Every version is still hashed whole: that is what its SHA-256 checks.
    HELPERS (chunkread.Helpers), when given, decode chunks ahead while threads are idle: the
    hashing is in order, the decoding need not be."""
    # the schedule twice: as the steps go, and ahead for PlannedReads (tee keeps the steps
    # between the two, a few reads' worth)
    steps, ahead = tee(_schedule(index, files))
    cache = _SharedPlain()
    reads = PlannedReads(((s.cid, s.loc) for s in ahead if s.read), reader, helpers)
    del ahead  # held by PlannedReads alone: let go with the rest of the plan when it stops
    shas = [hashlib.sha256() for _ in files]
    failed: list[ChunkError | None] = [None] * len(files)
    done: dict[str, array] = {}  # pack -> offsets of the chunks read (4 bytes each)
    nbytes = 0
    try:
        for s in steps:
            live = [shas[j] for j in s.holders if failed[j] is None]
            if not live:
                continue  # (a read skipped so ends the reading ahead: see PlannedReads)
            data = cache.get(s.cid)  # kept; or, after a failure, perhaps not as planned
            if data is None:
                nbytes += s.loc[2]
                # hashed (and kept when needed later) within the read: a large chunk is let
                # go before another thread decodes one (chunkread.LARGE_DECODE)
                keep = cache if s.keep else None
                data = reads.read(s.cid, s.loc, partial(_hash_into, live, keep, s.cid))
                if data is None:
                    offsets = done.get(s.loc[0])
                    if offsets is None:
                        offsets = done[s.loc[0]] = array("I")
                    offsets.append(s.loc[1])
                elif keep is not None:
                    cache.put(s.cid, data)  # its ChunkError, for the versions needing it later
            elif not isinstance(data, ChunkError):
                for sha in live:
                    sha.update(data)
            if isinstance(data, ChunkError):
                for j in s.holders:
                    failed[j] = failed[j] or data
            if s.last:
                cache.drop(s.cid)
    finally:
        reads.stop()
    outcomes = [
        (None, err) if err is not None else (sha.hexdigest(), None)
        for sha, err in zip(shas, failed, strict=True)
    ]
    return outcomes, done, nbytes


def _verify_chunk(reader, index, f: _Checked) -> tuple[list, list, int]:
    """_verify_versions of one file of one chunk (most small files), without its planning:
    nothing to share or to decode ahead, and the planning (a Counter, a set, a cache, a
    plan) was a third of the verifiers' own Python on 10^5 small files."""
    cid = f.chunks[0]
    loc = index.entries[cid]
    sha = hashlib.sha256()
    failed = reader.read(cid, loc, sha.update)
    if failed is not None:
        return [(None, failed)], [], loc[2]
    return [(sha.hexdigest(), None)], [(loc[0], loc[1])], loc[2]


def _sound(loc, bad: dict) -> bool:
    """An indexed chunk location in a pack not known missing or damaged."""
    return loc is not None and loc[0] not in bad


def _read_data(
    repo,
    walk: _Walk,
    errors: list[str],
    progress,
    whole: bool,
    damaged: list,
    hashers: OnDemand,
) -> int:
    """Read and verify every file of the snapshots WALK read, then the rest of every pack;
    the stored bytes read. Each chunk location that fails is appended to DAMAGED as
    (chunk id, pack, offset). HASHERS: worker processes for files of one chunk (_hashers).

    Memory stays bounded: the files come from a merge of the snapshots' lists (each sorted
    by path, a piece in memory each), a few groups are in flight at a time, and what is
    kept of every chunk read is 4 bytes (its offset, for the pack pass)."""
    index = repo.index
    sids = list(walk.docs)
    found: list[tuple[int, str, str]] = []  # (snapshot position, path, error)
    verified = _ReadOffsets()
    packs_used: set[str] = set()
    read = 0

    def record(group: list, outcomes: list, done: list, nbytes: int, packs) -> None:
        nonlocal read
        read += nbytes
        verified.add(done)
        packs_used.update(packs)
        if progress is not None:
            progress(read)
        for (pos, f), (digest, failed) in zip(group, outcomes, strict=True):
            sid = sids[pos]
            if failed is not None:
                loc = index.entries.get(failed.cid)
                if loc is not None and failed.pack == loc[0]:
                    damaged.append((failed.cid, loc[0], loc[1]))
                why = f"cannot be restored: {failed.reason}"
            elif digest != f.sha256:
                why = "does not match its SHA-256"
            else:
                continue
            found.append((pos, f.path, f"Snapshot {sid[:12]}: file {f.path} {why}."))

    _verify_files(repo, _path_groups(repo, walk, sids), record, whole, hashers)
    found.sort(key=itemgetter(0, 1))  # in snapshot and path order, as they are listed
    errors.extend(msg for _pos, _path, msg in found)

    # Then every pack (or, for one snapshot, the packs it uses): header, and unread chunks.
    packs = [p for p in index.pack_sizes if p not in walk.bad] if whole else sorted(packs_used)
    bad_chunks: list[tuple[str, str, int]] = []  # list.append is atomic: pool threads share it
    for problems, n in repo.pool().map(
        lambda p: _verify_pack(repo, p, verified.pop(p), bad_chunks), packs
    ):
        errors.extend(problems)
        read += n
        if progress is not None:
            progress(read)
    damaged.extend(bad_chunks)
    return read


class _ReadOffsets:
    """The offset of every chunk the files read, per pack, 4 bytes each in an array (a set
    of (pack, offset) tuples was ~120 bytes a chunk); the pack pass takes a pack's at a time."""

    def __init__(self):
        self.by_pack: dict[str, array] = {}

    def add(self, done) -> None:
        """DONE: (pack, offset) of each chunk read, or {pack: array of offsets}."""
        by_pack = self.by_pack
        if isinstance(done, dict):  # a worker process's answer (checkprocs.py)
            for pack, offs in done.items():
                by_pack.setdefault(pack, array("I")).extend(offs)
            return
        for pack, off in done:
            offs = by_pack.get(pack)
            if offs is None:
                offs = by_pack[pack] = array("I")
            offs.append(off)

    def pop(self, pack: str) -> set[int]:
        return set(self.by_pack.pop(pack, ()))


def _path_groups(repo, walk: _Walk, sids: list[str]) -> Iterator[list]:
    """The files to read, as lists of (snapshot position, _Checked): the versions of one
    path together (see _groups), the largest paths first (read while the others go by,
    as a to-do list sorted by size did: one of them started last kept one core busy alone
    at the end), then every other path from a merge of the snapshots' lists by path."""
    times = [walk.docs[sid]["time"] for sid in sids]
    big = walk.big if all(walk.docs[sid].get("format") == 2 for sid in sids) else []
    if big:
        found: dict[str, list] = {path: [] for path in big}
        for pos, sid in enumerate(sids):  # one snapshot's piece in memory at a time
            look = repo.snapshot_lookup(sid)
            for path in sorted(big):  # in path order: each piece is read at most once
                if f := look.get(path):
                    found[path].append((pos, f))
            del look
        for path in big:
            yield from _groups(found.pop(path), walk, repo.index, times)
    # a piece repeating an earlier snapshot's holds versions that snapshot holds: left out
    merged = heapq.merge(
        *(_by_path(walk.same.new_files(repo, sid), p) for p, sid in enumerate(sids))
    )
    for path, versions in groupby(merged, key=itemgetter(0)):
        if path not in big:
            yield from _groups(((pos, f) for _path, pos, f in versions), walk, repo.index, times)


def _by_path(files, pos: int) -> Iterator[tuple]:
    """(path, POS, entry) for each of FILES, for a merge by path (POS breaks ties)."""
    for f in files:
        yield f["path"], pos, f


def _groups(versions, walk: _Walk, index, times: list) -> list[list]:
    """The groups of VERSIONS ((snapshot position, entry) of one path, in snapshot order)
    to read: a content where it is first found (walk.firsts) and all its chunks lie in
    sound packs, in snapshot time order, at most GROUP_VERSIONS a group (so one path with
    many versions still spreads over the verifiers)."""
    todo = []
    seen: set[bytes] = set()
    for pos, f in versions:
        ckey = _content_key(f)
        if ckey in seen:  # the same content in an earlier snapshot (unchanged)
            continue
        seen.add(ckey)
        # read where it is first found: here when found at this path alone (the first
        # version holding it), else as the lookup says (another path, or none: removed)
        if walk.elsewhere is None or ckey in walk.elsewhere:
            first = walk.firsts.get(ckey.hex())
            if first is None or first[1:3] != (pos, _place(f["path"])):
                continue
        if walk.damaged_files and not all(
            _sound(index.entries.get(c), walk.bad) for c in f["chunks"]
        ):
            continue
        todo.append((pos, _Checked(f)))
    if len(todo) <= 1:  # most paths (one version to read): nothing to order or cut
        return [todo] if todo else []
    todo.sort(key=lambda v: times[v[0]])  # stable: equal times stay in snapshot order
    return [todo[k : k + GROUP_VERSIONS] for k in range(0, len(todo), GROUP_VERSIONS)]


def _one_chunk(group: list) -> bool:
    """A group of one file of one chunk (most small files)."""
    return len(group) == 1 and len(group[0][1].chunks) == 1


def _batches(groups: Iterator[list]) -> Iterator[tuple[bool, list[list]]]:
    """GROUPS in batches, those of one file of one chunk apart from the rest (they may go to
    worker processes): (of one chunk each, groups). Small groups go together in one task: a
    pool's task costs ~25 us of Python (submit, wait, wake), a tenth of a check of 10^5 small
    files when each was one."""
    held: dict[bool, list] = {True: [], False: []}
    size = {True: 0, False: 0}
    for group in groups:
        one = _one_chunk(group)
        held[one].append(group)
        size[one] += sum(f.size for _pos, f in group)
        if size[one] >= BATCH_BYTES or len(held[one]) >= BATCH_GROUPS:
            yield one, held[one]
            held[one], size[one] = [], 0
    for one, batch in held.items():
        if batch:
            yield one, batch


def _verify_files(repo, groups: Iterator[list], record, whole: bool, hashers: OnDemand) -> None:
    """Read and hash every file of GROUPS; RECORD(group, [(SHA-256 or None, ChunkError or
    None)] per file, the chunks read ((pack, offset) each, or {pack: offsets}), stored bytes
    read, packs of the files' chunks (only when not WHOLE)) hears each group as it
    finishes, or a worker's batch at once (its files with a problem as the group).

    One task per file (or per few versions of one file) in a pool of verifiers, so files
    are decrypted, decompressed and hashed in parallel (all three release the GIL). Each
    verifier reads its chunks with its own open packs and buffers: no per-chunk allocation,
    open or close; small files go a few together (BATCH_BYTES). At most 2 tasks a verifier
    are queued or running: the groups (and their outcomes) in memory stay bounded however
    many files there are.

    Files of one chunk go to HASHERS (worker processes, see _hashers) once they are up
    (when the check started them or was asked to); a batch a worker fails to answer
    (killed, out of memory) is verified here instead, and the rest by threads."""
    index = repo.index
    local = threading.local()
    readers: list = []
    lock = threading.Lock()
    by_worker: dict = {}  # a worker's future: its batch, to verify here if it is not answered

    def reader_of():
        reader = getattr(local, "reader", None)
        if reader is None:
            reader = local.reader = chunk_reader(repo)
            with lock:
                readers.append(reader)
        return reader

    def verify_groups(batch: list[list]) -> list[tuple]:
        out = []
        reader = reader_of()
        for group in batch:
            files = [f for _pos, f in group]
            if _one_chunk(group):
                outcomes, done, nbytes = _verify_chunk(reader, index, files[0])
            else:
                outcomes, done, nbytes = _verify_versions(reader, index, files, helpers)
            packs = () if whole else {index.entries[c][0] for f in files for c in f.chunks}
            out.append((group, outcomes, done, nbytes, packs))
        return out

    def answered(batch: list[list], got: tuple, _raw) -> list[tuple]:
        """A worker's answer (checkprocs.hash_chunks) as one result for RECORD: the files
        with a problem and their outcomes, the offsets read by pack."""
        problems, offsets, nbytes, packs = got
        group, outcomes = [], []
        for k, (digest, reason, pack) in problems.items():
            entry = batch[k][0]
            group.append(entry)
            failed = None if reason is None else ChunkError(entry[1].chunks[0], pack, reason)
            outcomes.append((digest, failed))
        return [(group, outcomes, offsets, nbytes, () if whole else packs)]

    def submit(one: bool, batch: list[list]):
        procs = hashers.get(0) if one else None
        if procs is not None:
            learnt = index.entries.learnt
            files = [(f.chunks[0], learnt(f.chunks[0]), f.sha256) for ((_pos, f),) in batch]
            try:
                fut = procs.submit(files, partial(answered, batch))
            except WorkerDied:
                hashers.close()
            else:
                by_worker[fut] = batch
                return fut
        return helpers.submit(verify_groups, batch)

    def take(fut) -> None:
        batch = by_worker.pop(fut, None)
        try:
            results = fut.result()
        except (WorkerDied, WorkerFailed):
            hashers.close()  # the workers' other batches are answered first (or fail too)
            results = verify_groups(batch)
        for result in results:
            record(*result)

    workers = worker_count()
    try:
        # Results are taken as they finish, not in order: waiting on a large file while the
        # window is full left the other verifiers idle.
        with ThreadPoolExecutor(workers, thread_name_prefix="sctk-check") as verifiers:
            helpers = Helpers(verifiers, reader_of)
            running: set = set()
            for one, batch in _batches(groups):
                running.add(submit(one, batch))
                if len(running) >= 2 * workers:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        take(fut)
            for fut in as_completed(running):
                take(fut)
    finally:
        for reader in readers:
            reader.close()


def _verify_pack(repo, pack: str, verified: set[int], found: list) -> tuple[list[str], int]:
    """Check PACK's header against the index and authenticate every chunk the files did
    not read (VERIFIED holds the offsets of those they did); a damaged chunk's location is
    appended to FOUND. (problems, stored bytes read)."""
    index = repo.index
    name = pack_name(pack)
    size = index.pack_sizes[pack]
    blobs = index.pack_blobs[pack]
    # a copy known damaged that another copy replaced is garbage (counted as such)
    todo_blobs = [
        b
        for b in blobs
        if b[1] not in verified
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
