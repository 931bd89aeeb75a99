"""Pruning: forget snapshots by policy, then collect chunks no snapshot references.

Order matters so that a crash at any point leaves a valid repository, and the rerun finishes
the work (tests kill a prune with SIGKILL at each step: see the crashpoints.reached calls):
  1. snapshot files of forgotten snapshots are deleted (their chunks become garbage);
  2. packs that are mostly garbage (> 50%), or hold a damaged copy of a chunk stored again
     since, have their live chunks copied into new packs;
  3. a new index describing every kept and new pack is written;
  4. the old index files are deleted;
  5. only then are garbage packs, repacked packs and orphan packs deleted.
A crash before 4 leaves duplicate index entries (harmless); between 4 and 5, packs no index
lists (orphans, removed by the next prune).
"""

from __future__ import annotations

from itertools import chain

from sctk import crashpoints
from sctk.backup.repo.check import blocking_problems
from sctk.backup.repo.errors import ChunkError, RepoError
from sctk.backup.repo.filelist import stream_sha256
from sctk.backup.repo.formats import pack_name
from sctk.backup.repo.index import NO_PACK, write_index
from sctk.backup.repo.models import PrunePolicy, PruneReport
from sctk.backup.repo.packs import PackWriter
from sctk.backup.repo.phases import PhaseReport, Phases

REPACK_GARBAGE_RATIO = 0.5
SPAN = 4 * 1024 * 1024  # bytes of a pack read at once when repacking


class _Keepers:
    """For each referenced chunk, the copy (pack, offset) prune keeps: the one in the pack
    with the largest share of referenced bytes (then the indexed one), never a copy known
    damaged or in a lost pack. A chunk is stored twice after a prune was killed between
    writing its new index and deleting the old one; which copy the index resolves to then
    depends on the order of index file names, and keeping the copies in the fullest packs
    lets the rerun drop every other pack whole instead of keeping stray duplicates.

    Only chunks stored more than once (few) are scored and held in memory; a chunk stored
    once keeps its indexed copy, looked up when asked. REFERENCED answers `cid in` (a set,
    or the on-disk set of Index.chunk_set)."""

    def __init__(self, index, referenced):
        self.index = index
        self.referenced = referenced
        share: dict[str, float] = {}
        twice: set[str] = set()
        entries = index.entries
        for pack in index.pack_blobs:
            blobs = index.pack_blobs[pack]
            total = live = 0
            for cid, off, length, _raw, _flags in blobs:
                total += length
                if cid in referenced:
                    live += length
                    loc = entries.get(cid)
                    if loc is None or loc[:2] != (pack, off):
                        twice.add(cid)  # a copy the index does not resolve to
            share[pack] = live / (total or 1)
        self.best: dict[str, tuple[str, int]] = {}
        if twice:
            scores: dict[str, tuple[float, bool, str, int]] = {}
            for pack in index.pack_blobs:
                if pack in index.unsound:
                    continue
                for cid, off, _length, _raw, _flags in index.pack_blobs[pack]:
                    if cid not in twice or (cid, pack, off) in index.damaged:
                        continue
                    loc = entries.get(cid)
                    score = (share[pack], loc is not None and loc[:2] == (pack, off), pack, off)
                    cur = scores.get(cid)
                    if cur is None or score > cur:
                        scores[cid] = score
            self.best = {cid: (v[2], v[3]) for cid, v in scores.items()}
        self.twice = twice

    def keeps(self, cid: str, pack: str, off: int) -> bool:
        """PACK holds at OFF the copy of CID that prune keeps."""
        if cid in self.twice:
            return self.best.get(cid) == (pack, off)
        index = self.index
        if pack in index.unsound or (cid, pack, off) in index.damaged:
            return False
        if cid not in self.referenced:
            return False
        loc = index.entries.get(cid)
        return loc is not None and loc[:2] == (pack, off)


def prune(
    repo,
    policy: PrunePolicy | None,
    dry_run: bool = False,
    plan=None,
    phase: PhaseReport | None = None,
) -> PruneReport:
    """See Repository.prune; PHASE(name, done, total) hears each phase: checking and marking
    (files), planning (packs), forgetting (snapshots), repacking (packs), indexing, deleting
    (files)."""
    phases = Phases(phase)
    with repo.lock(exclusive=True):
        _fresh_index(repo)
        snaps = repo.snapshots()
        kept, removed = _retention(repo, snaps, policy, plan)
        removed_ids = {s.id for s in removed}
        live_ids = [s.id for s in snaps if s.id not in removed_ids]
        delete, repack, keep = _sort_packs(repo, live_ids, phases)
        index = repo.index
        stored = repo.backend.list("data")
        orphans = [n for n in stored if n.rpartition("/")[2] not in index.pack_sizes]
        freed = sum(index.pack_sizes[p] for p in delete) + sum(stored[n] for n in orphans)
        freed += sum(index.pack_sizes[p] - sum(b[2] for b in live) for p, live in repack)

        result = PruneReport(
            removed_snapshots=[s.id for s in removed],
            kept=[(s.id, why) for s, why in kept],
            deleted_packs=len(delete) + len(orphans),
            repacked_packs=len(repack),
            freed_bytes=freed,
            dry_run=dry_run,
        )
        if dry_run:
            phases.end()
            return result

        # 1. forget
        if removed:
            phases.start("forgetting", len(removed))
            repo.forget([s.id for s in removed])
            phases.at(len(removed))
            crashpoints.reached("backup.prune.forgotten")
        # 2. repack live chunks of mostly-garbage packs
        new_packs = _repack(repo, repack, phases)
        if repack:
            new_size = sum(size for size, _ in new_packs.values())
            result.freed_bytes = (
                freed - new_size + sum(sum(b[2] for b in live) for _, live in repack)
            )
        # 3. and 4. the new index, then the old index files (only when packs go away: orphan
        #    packs are in no index, and rewriting an unchanged index would only churn copies)
        if delete or repack:
            _rewrite_index(repo, keep, new_packs, phases)
        # 5. packs nothing points to any more, and leftovers of interrupted writes
        doomed = [pack_name(p) for p in delete] + [pack_name(p) for p, _ in repack] + orphans
        phases.start("deleting", len(doomed))
        for name in doomed:
            repo.backend.delete(name)
            phases.step()
            crashpoints.reached("backup.prune.deleting")
        for name in repo.backend.temporaries():
            repo.backend.delete(name)
        repo.index_files = frozenset()
        repo.refresh_index()
        phases.end()
        return result


def _fresh_index(repo) -> None:
    """The index as the repository is now: reloaded when index files were added or removed,
    when packs were lost or damaged since it was loaded (its unsound packs differ) or added
    by this process (a writer's packs are held beside the sorted file, which the marks are
    merged with), not again for nothing (a load reads and sorts every index file)."""
    repo.refresh_index()
    index = repo.index
    stored = repo.backend.list("data")
    lost = {p for p, size in index.pack_sizes.items() if stored.get(pack_name(p)) != size}
    # base None: no index file was loaded yet (a new repository, or every index file gone
    # since it was opened): load, so that the marks have a sorted file to merge with
    if lost != index.unsound or index.pack_blobs.held or index.entries.base is None:
        repo.refresh_index(force=True)


def _retention(repo, snaps: list, policy: PrunePolicy | None, plan) -> tuple[list, list]:
    """(kept with their reasons, removed): PLAN, the caller's own retention (sctk keeps
    kinds apart), else POLICY's, else everything kept."""
    if plan is not None:
        return plan(snaps)
    if policy is None:
        return [(s, "no policy") for s in snaps], []
    return repo.plan_retention(policy)


def _refuse_if_damaged(repo, phases: Phases) -> None:
    """The full structure check (check.py), and prune refused when it names a problem."""
    problems = blocking_problems(repo, phases)
    if problems:
        raise RepoError(
            f"Repository {repo.url} is damaged ({len(problems)} problem(s), first: "
            f"{problems[0].rstrip('.')}); prune refuses to run: repair the index or "
            "forget the damaged snapshots first."
        )


def _sort_packs(repo, live_ids: list[str], phases: Phases) -> tuple[list, list, list]:
    """Mark every chunk a snapshot references, refuse a damaged repository, then sort the
    packs: (packs to delete, (pack, its live chunks) to repack, packs to keep).

    Every snapshot file is hashed and its list streamed once; the chunk ids go into a sorted
    file on local disk (live snapshots' first, so an id any of them holds is marked live),
    which is then merged with the index's own sorted file: one sequential read of each, no
    per-chunk lookup and no set in memory. A sound repository whose every pack row is the
    location its chunk resolves to (no chunk stored twice, nothing damaged or lost) is
    planned from that merge alone. Any doubt (a snapshot file that does not hash to its
    name or cannot be read, a chunk no sound pack holds, an index file, pack or copy
    known bad, a chunk stored twice) takes the careful way: check.py's full check, which
    names the problem and refuses, then a plan that scores every copy (_Keepers)."""
    index = repo.index
    marks = _Marks(repo, live_ids, phases)
    try:
        trouble = marks.doubtful or bool(
            index.errors or index.unsound or index.damaged or index.entries.extra
        )
        if trouble:
            _refuse_if_damaged(repo, phases)
            index = repo.index  # the check reloaded it
        phases.start("planning", len(index.pack_blobs))
        plan = None if trouble else _quick_plan(index, marks, phases)
        if plan is None:
            phases.start("planning", len(index.pack_blobs))
            plan = _careful_plan(index, marks.live, phases)
        return plan
    finally:
        marks.close()


class _Marks:
    """Which chunks the snapshots reference (a sorted file: group 0 the live snapshots',
    group 1 only the others'), and from its merge with the index, per pack number of the
    index's sorted file: the live bytes, the live chunks and the chunks resolving there."""

    def __init__(self, repo, live_ids: list[str], phases: Phases):
        index = repo.index
        sizes = repo.snapshot_sizes()
        live = [s for s in live_ids if s in sizes]
        others = sorted(set(sizes) - set(live))
        self.doubtful = bool(repo.unreadable_snapshots())
        files: dict[str, int] = {}
        for sid in [*live, *others]:
            try:
                files[sid] = repo.snapshot_header(sid, sizes[sid])["files"]
            except RepoError:
                self.doubtful = True
        # each snapshot file must hash to its name (counted in its files, as check does)
        phases.start("checking", sum(files.values()))
        for sid, count in files.items():
            try:
                if stream_sha256(repo.backend, f"snapshots/{sid}", sizes[sid]) != sid:
                    self.doubtful = True
            except FileNotFoundError:
                self.doubtful = True
            phases.step(count)
        phases.start("marking", sum(files.values()))

        def refs(ids):
            for sid in ids:
                try:
                    # streamed a piece at a time: the file lists are what grows with the data
                    for f in repo.snapshot_files(sid):
                        phases.step()
                        yield from f["chunks"]
                except RepoError:
                    self.doubtful = True

        self.set = index.chunk_groups([refs(live), refs(others)])
        self.live = _LiveSet(self.set)
        base = index.entries.base
        self.pack_ids = base.pack_ids()
        n = len(self.pack_ids)
        self.live_bytes, self.live_chunks, self.resolved = [0] * n, [0] * n, [0] * n
        self._merge(base)

    def _merge(self, base) -> None:
        """One pass over both sorted files: a referenced id the index lacks is a doubt."""
        live_bytes, live_chunks, resolved = self.live_bytes, self.live_chunks, self.resolved
        refs = self.set.records()
        ref = next(refs, None)
        for key, num, _off, length, _raw, _flags in base.records():
            resolved[num] += 1
            while ref is not None and ref[0] < key:
                self.doubtful = True  # referenced, in no index
                ref = next(refs, None)
            if ref is not None and ref[0] == key:
                if ref[1] == 0:
                    live_bytes[num] += length
                    live_chunks[num] += 1
                ref = next(refs, None)
        if ref is not None:
            self.doubtful = True

    def close(self) -> None:
        self.set.close()


class _LiveSet:
    """`cid in` it: a live snapshot references CID (group 0 of the marks' sorted file)."""

    def __init__(self, marks):
        self.marks = marks

    def __contains__(self, cid: str) -> bool:
        loc = self.marks.get(cid)
        return loc is not None and loc[0] == NO_PACK


def _quick_plan(index, marks: _Marks, phases: Phases) -> tuple[list, list, list] | None:
    """The plan from the merge's counts, or None when a pack has a row its chunk does not
    resolve to (a chunk stored twice: the careful plan decides which copy stays)."""
    if len(set(marks.pack_ids)) != len(marks.pack_ids):
        return None  # a pack listed by two index files (a prune killed before step 4)
    number = {p: i for i, p in enumerate(marks.pack_ids)}
    delete, repack, keep = [], [], []
    for pack, blobs in index.pack_blobs.items():
        phases.step()
        num = number.get(pack)
        if num is None or len(blobs) != marks.resolved[num]:
            return None
        if not marks.live_chunks[num]:
            delete.append(pack)
            continue
        total = sum(b[2] for b in blobs) or 1
        if 1 - marks.live_bytes[num] / total > REPACK_GARBAGE_RATIO:
            repack.append((pack, [b for b in blobs if b[0] in marks.live]))
        else:
            keep.append(pack)
    return delete, repack, keep


def _careful_plan(index, referenced, phases: Phases) -> tuple[list, list, list]:
    """The plan with every copy of a chunk scored (_Keepers): copies stored twice, damaged
    copies, lost packs. REFERENCED answers `cid in` for the live snapshots' chunks."""
    damaged_in: dict[str, list[tuple[str, int]]] = {}
    for cid, pack, off in index.damaged:
        damaged_in.setdefault(pack, []).append((cid, off))
    delete, repack, keep = [], [], []
    keeper = _Keepers(index, referenced)
    for pack, blobs in index.pack_blobs.items():
        phases.step()
        live = [b for b in blobs if keeper.keeps(b[0], pack, b[1])]
        live_bytes = sum(b[2] for b in live)
        total = sum(b[2] for b in blobs) or 1
        # a copy found damaged that nothing reads any more goes, whatever the ratio
        marks = damaged_in.get(pack, [])
        healed = bool(marks) and all(index.entries.get(c, ("",))[:2] != (pack, o) for c, o in marks)
        if not live:
            delete.append(pack)
        elif healed or 1 - live_bytes / total > REPACK_GARBAGE_RATIO:
            repack.append((pack, live))
        else:
            keep.append(pack)
    return delete, repack, keep


def _repack(repo, repack: list, phases: Phases) -> dict[str, tuple[int, list]]:
    """Copy the live chunks of the REPACK packs into new packs (sealed bytes copied as they
    are, after authenticating them, so damage is never copied forward); the new packs."""
    new_packs: dict[str, tuple[int, list]] = {}
    if not repack:
        return new_packs

    def written(pack_id: str, size: int, blobs: list) -> None:
        new_packs[pack_id] = (size, blobs)

    phases.start("repacking", len(repack))
    writer = PackWriter(repo.backend, repo.keys, written)
    try:
        for pack, live in repack:
            phases.step()
            for rows, base, data in _spans(repo.backend, pack_name(pack), live):
                for cid, off, length, raw, flags in rows:
                    blob = data[off - base : off - base + length]
                    try:
                        repo.open_chunk(cid, pack, blob, raw, flags)
                    except ChunkError as exc:
                        raise RepoError(
                            f"Prune stopped: {exc.reason}; nothing was deleted."
                        ) from None
                    writer.add(cid, flags, raw, (blob,))
        writer.flush()
        crashpoints.reached("backup.prune.repacked")
    finally:
        writer.close()
    return new_packs


def _spans(backend, name: str, rows: list):
    """ROWS (a pack's live chunks) read a span of neighbours at a time, at most SPAN bytes
    (or one chunk): (rows, offset of the span, its bytes). A repacked pack is mostly
    garbage; reading it whole held 16 MiB, the largest block of a prune's peak memory."""
    rows = sorted(rows, key=lambda b: b[1])
    i = 0
    while i < len(rows):
        start = rows[i][1]
        j = i + 1
        while j < len(rows) and rows[j][1] + rows[j][2] - start <= SPAN:
            j += 1
        end = rows[j - 1][1] + rows[j - 1][2]
        data = memoryview(backend.read_range(name, start, end - start))
        if len(data) != end - start:
            raise RepoError(f"Prune stopped: pack {name} is truncated; nothing was deleted.")
        yield rows[i:j], start, data
        i = j


def _rewrite_index(repo, keep: list, new_packs: dict, phases: Phases) -> None:
    """Write the index of every kept and new pack, then delete the old index files."""
    index = repo.index
    phases.start("indexing")
    # kept packs' rows read again from the index files as they are written, so the whole
    # index is never in memory at once
    full = chain(((p, (index.pack_sizes[p], index.pack_blobs[p])) for p in keep), new_packs.items())
    old_index = repo.backend.list("index")
    kept = set(keep) | set(new_packs)
    marks = [d for d in index.damaged if d[1] in kept]  # still true of kept packs
    new_names = set(write_index(repo.backend, repo.keys, full, damaged=marks))
    crashpoints.reached("backup.prune.indexed")
    for name in old_index:
        if name not in new_names:
            repo.backend.delete(name)
    crashpoints.reached("backup.prune.old-index-deleted")
