"""What a dead writer leaves behind, and what a clean repository would not hold.

A backup killed (or failing on a full disk) after some packs were made durable leaves those
packs in no index (orphans), and perhaps a temporary file it was filling. The next writer,
holding the exclusive lock (so no live writer can own them), deletes the temporary files and
adopts every orphan pack whose header authenticates: its chunks are what the interrupted
backup had read, usually what this one reads again, so they are not stored twice. At commit
an adopted pack that a snapshot uses is indexed; one that nothing uses is deleted. So the
repository ends as a clean run would have left it, as borg's rollback of an unfinished
transaction does (restic leaves the packs for `prune`).

`scan` also tells `check` how many bytes no snapshot references, so garbage is never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sctk.backup.repo.backend import TMP_PREFIX
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.packs import read_pack_header
from sctk.backup.repo.sortedindex import SortedIndex

# Folders that only writers (holding the exclusive lock) write to: a temporary file there has
# no live owner while we hold a lock. locks/ and verified/ are written without it.
WRITER_FOLDERS = ("data", "index", "snapshots")


@dataclass
class Leftovers:
    """Orphan packs that can be adopted (id -> (size, chunk rows)), and files that cannot
    (temporary files, orphan packs whose header does not authenticate: name -> size)."""

    packs: dict[str, tuple[int, list]] = field(default_factory=dict)
    junk: dict[str, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(size for size, _ in self.packs.values()) + sum(self.junk.values())

    @property
    def files(self) -> int:
        return len(self.packs) + len(self.junk)


def scan(repo, recovered: bool = True, packs: bool = True) -> Leftovers:
    """The orphan packs and partial files of REPO (its index loaded; call under a lock);
    with RECOVERED, also the packs indexed only in memory because an index file is damaged
    (a writer adopts them, which writes them into the index again); without PACKS, only
    the partial files (a writer that knows every pack is indexed)."""
    found = Leftovers()
    backend = repo.backend
    stored = backend.list("data") if packs else {}
    index = repo.index if packs else None
    for name, size in sorted(stored.items()):
        pack = name.rpartition("/")[2]
        if pack in index.pack_sizes and not (recovered and pack in index.recovered):
            continue
        try:
            blobs, _ = read_pack_header(backend, repo.keys, name, size)
        except (RepoError, FileNotFoundError):
            found.junk[name] = size
            continue
        found.packs[pack] = (size, [list(b) for b in blobs])
    for name in backend.temporaries():
        if name.partition("/")[0] in WRITER_FOLDERS:
            found.junk[name] = backend.size(name) or 0
    return found


def remove_junk(repo, leftovers: Leftovers) -> None:
    """Delete partial files (exclusive lock held). An orphan pack that does not authenticate
    is kept while an index file is damaged: it may be the only copy of indexed data."""
    for name in leftovers.junk:
        temporary = name.rpartition("/")[2].startswith(TMP_PREFIX)
        if not temporary and repo.index.errors:
            continue
        repo.backend.delete(name)


def referenced_chunks(repo, skip: frozenset[str] = frozenset()) -> set[str]:
    """Every chunk id a readable snapshot references (snapshot ids in SKIP left out)."""
    used: set[str] = set()
    for snap_id in repo.snapshot_ids():
        if snap_id in skip:
            continue
        try:
            for f in repo.snapshot_files(snap_id):
                used.update(f["chunks"])
        except RepoError:
            continue
    return used


def unreferenced_index_bytes(index, referenced) -> int:
    """Stored bytes of indexed chunks that no snapshot uses, or that are a second copy
    (REFERENCED: the chunk ids used, a set or a sorted file).

    When every location is the sorted index's own (none learnt since loading: no pack
    missing, no damage resolved), that is every row's bytes but those of each referenced
    chunk's first copy (the one the sorted index keeps), summed in one pass over both
    sorted files: a lookup per chunk in each was a tenth of a check of 10^6 small files."""
    entries = index.entries
    if (
        isinstance(referenced, SortedIndex)
        and entries.base is not None
        and not entries.extra
        and not entries.newer
    ):
        rows = sum(row[2] for _pack, rows in index.pack_blobs.items() for row in rows)
        return rows - entries.base.held_length(referenced)
    total = 0
    for pack, rows in index.pack_blobs.items():
        for cid, off, length, _raw, _flags in rows:
            loc = index.entries.get(cid)
            if cid not in referenced or loc is None or loc[:2] != (pack, off):
                total += length
    return total
