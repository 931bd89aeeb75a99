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
from sctk.backup.repo.formats import pack_name
from sctk.backup.repo.index import write_index
from sctk.backup.repo.models import PrunePolicy, PruneReport
from sctk.backup.repo.packs import PackWriter
from sctk.backup.repo.phases import PhaseReport, Phases

REPACK_GARBAGE_RATIO = 0.5


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
        repo.refresh_index()
        problems = blocking_problems(repo, phases)
        if problems:
            raise RepoError(
                f"Repository {repo.url} is damaged ({len(problems)} problem(s), first: "
                f"{problems[0].rstrip('.')}); prune refuses to run: repair the index or "
                "forget the damaged snapshots first."
            )
        snaps = repo.snapshots()
        kept, removed = _retention(repo, snaps, policy, plan)
        removed_ids = {s.id for s in removed}
        delete, repack, keep = _sort_packs(
            repo, [s for s in snaps if s.id not in removed_ids], phases
        )
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


def _retention(repo, snaps: list, policy: PrunePolicy | None, plan) -> tuple[list, list]:
    """(kept with their reasons, removed): PLAN, the caller's own retention (sctk keeps
    kinds apart), else POLICY's, else everything kept."""
    if plan is not None:
        return plan(snaps)
    if policy is None:
        return [(s, "no policy") for s in snaps], []
    return repo.plan_retention(policy)


def _sort_packs(repo, live_snaps: list, phases: Phases) -> tuple[list, list, list]:
    """Mark every chunk LIVE_SNAPS reference, then sort the packs: (packs to delete, (pack,
    its live chunks) to repack, packs to keep)."""
    index = repo.index
    phases.start("marking", sum(s.files for s in live_snaps))

    def referenced_ids():
        for s in live_snaps:
            # streamed a piece at a time: the file lists are what grows with the data
            for f in repo.snapshot_files(s.id):
                phases.step()
                yield from f["chunks"]

    # every referenced chunk id, in a sorted file on local disk: not a set in memory
    referenced = index.chunk_set(referenced_ids())
    damaged_in: dict[str, list[tuple[str, int]]] = {}
    for cid, pack, off in index.damaged:
        damaged_in.setdefault(pack, []).append((cid, off))
    delete, repack, keep = [], [], []
    phases.start("planning", len(index.pack_blobs))
    try:
        keeper = _Keepers(index, referenced)
        for pack, blobs in index.pack_blobs.items():
            phases.step()
            live = [b for b in blobs if keeper.keeps(b[0], pack, b[1])]
            live_bytes = sum(b[2] for b in live)
            total = sum(b[2] for b in blobs) or 1
            # a copy found damaged that nothing reads any more goes, whatever the ratio
            marks = damaged_in.get(pack, [])
            healed = bool(marks) and all(
                index.entries.get(c, ("",))[:2] != (pack, o) for c, o in marks
            )
            if not live:
                delete.append(pack)
            elif healed or 1 - live_bytes / total > REPACK_GARBAGE_RATIO:
                repack.append((pack, live))
            else:
                keep.append(pack)
    finally:
        referenced.close()
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
            data = memoryview(repo.backend.read(pack_name(pack)))
            for cid, off, length, raw, flags in live:
                blob = data[off : off + length]
                try:
                    repo.open_chunk(cid, pack, blob, raw, flags)
                except ChunkError as exc:
                    raise RepoError(f"Prune stopped: {exc.reason}; nothing was deleted.") from None
                writer.add(cid, flags, raw, (blob,))
        writer.flush()
        crashpoints.reached("backup.prune.repacked")
    finally:
        writer.close()
    return new_packs


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
