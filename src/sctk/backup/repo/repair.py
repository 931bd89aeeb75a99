"""Repairing a repository: the index rebuilt from the packs, damaged chunks dropped from it,
partial files removed, and a report of what can no longer be restored.

Packs carry their own (sealed) list of chunks, so the index is redundant and can always be
rebuilt from them. A chunk found damaged (by a check's record, or by reading every chunk with
read_data) is left out of the new index: nothing resolves to the damaged bytes any more, and
the next backup that reads the same data stores the chunk again, which heals every snapshot
that shares it. Snapshot files are never rewritten: a file whose chunk is lost stays listed,
and is named as damaged until a backup stores that chunk again (or the snapshot is forgotten).
"""

from __future__ import annotations

from sctk.backup.repo import leftovers
from sctk.backup.repo.errors import ChunkError, RepoError
from sctk.backup.repo.formats import decode_pack_header
from sctk.backup.repo.index import write_index
from sctk.backup.repo.models import RepairReport
from sctk.backup.repo.packs import read_pack_header


def _sound_entries(repo, name: str, pack: str, size: int, read_data: bool, known: set):
    """(chunk rows of the pack worth indexing, (chunk id, pack, offset) of those left out as
    damaged)."""
    if read_data:
        data = repo.backend.read(name)
        entries, _ = decode_pack_header(repo.keys, data, name)
        view = memoryview(data)
        sound = []
        for cid, off, length, raw, flags in entries:
            try:
                repo.open_chunk(cid, pack, view[off : off + length], raw, flags)
            except ChunkError:
                continue
            sound.append([cid, off, length, raw, flags])
    else:
        entries, _ = read_pack_header(repo.backend, repo.keys, name, size)
        sound = [e for e in entries if (e[0], pack, e[1]) not in known]
    kept = {(e[0], e[1]) for e in sound}
    return sound, [(e[0], pack, e[1]) for e in entries if (e[0], e[1]) not in kept]


def rebuild_index(repo, read_data: bool = False) -> tuple[int, int, list[str]]:
    """Replace the index with one built from every pack's header (exclusive lock held):
    (packs indexed, damaged chunks left out, packs whose header cannot be read)."""
    known = set(repo.index.damaged)
    packs: dict[str, tuple[int, list]] = {}
    marks: set[tuple[str, str, int]] = set()
    unreadable: list[str] = []
    for name, size in sorted(repo.backend.list("data").items()):
        pack = name.rpartition("/")[2]
        try:
            entries, left_out = _sound_entries(repo, name, pack, size, read_data, known)
        except (RepoError, FileNotFoundError):
            unreadable.append(name)  # its chunks stay unindexed; the report names the files
            continue
        marks.update(left_out)
        packs[pack] = (size, entries)
    old = repo.backend.list("index")
    # the marks stay, so a later rebuild from the headers alone leaves them out too, and
    # prune knows to rewrite the packs that hold them
    new = set(write_index(repo.backend, repo.keys, packs, damaged=marks))
    for name in old:
        if name not in new:
            repo.backend.delete(name)
    repo.index_files = frozenset()
    repo.refresh_index()
    return len(packs), len(marks), unreadable


def repair_index(repo, verify: bool = False) -> int:
    """Rebuild the index from every pack's own header; the number of packs indexed."""
    with repo.lock(exclusive=True):
        repo.refresh_index(force=True)
        return rebuild_index(repo, verify)[0]


def repair(repo, read_data: bool = False) -> RepairReport:
    """Rebuild the index (leaving damaged chunks out), remove partial files, and say what
    each snapshot can no longer restore, and which file versions no snapshot can."""
    with repo.lock(exclusive=True):
        repo.refresh_index(force=True)
        packs, dropped, unreadable = rebuild_index(repo, read_data)
        junk = leftovers.scan(repo).junk
        partial = [n for n in junk if n not in unreadable]
        for name in partial:
            repo.backend.delete(name)
        index = repo.index
        damaged_snapshots = repo.unreadable_snapshots()
        damaged_files: list[dict] = []
        intact: set[str] = set()
        broken: dict[tuple[str, str], list[str]] = {}
        for snap_id in repo.snapshot_ids():
            if snap_id in damaged_snapshots:
                continue
            try:
                for f in repo.snapshot_files(snap_id):
                    whole = all(
                        c in index.entries and index.entries[c][0] not in index.unsound
                        for c in f["chunks"]
                    )
                    if whole:
                        intact.add(f["sha256"])
                    else:
                        damaged_files.append({"snapshot": snap_id, "path": f["path"]})
                        broken.setdefault((f["path"], f["sha256"]), []).append(snap_id)
            except RepoError as exc:  # a piece of its file list is damaged
                damaged_snapshots[snap_id] = str(exc)
        lost = [
            {"path": path, "sha256": sha, "snapshots": ids}
            for (path, sha), ids in sorted(broken.items())
            if sha not in intact
        ]
        return RepairReport(
            packs=packs,
            dropped_chunks=dropped,
            unreadable_packs=unreadable,
            removed_files=len(partial),
            damaged_snapshots=damaged_snapshots,
            damaged_files=damaged_files,
            lost=lost,
        )
