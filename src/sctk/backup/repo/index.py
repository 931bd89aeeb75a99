"""The chunk index: which pack holds each chunk, loaded from every index file at open."""

from __future__ import annotations

import threading

from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import AAD_INDEX, content_id, open_json, seal_json

# One index file holds at most this many chunks, so a huge repository is not one huge file.
ENTRIES_PER_FILE = 50_000


class Index:
    """chunk id -> location, plus per-pack chunk lists and sizes (what prune and check need)."""

    def __init__(self):
        self.entries: dict[str, tuple] = {}
        self.pack_sizes: dict[str, int] = {}
        self.pack_blobs: dict[str, list[tuple]] = {}
        self.files: list[str] = []
        self.errors: list[str] = []
        self.unsound: set[str] = set()  # packs missing or of the wrong size when loaded
        # (chunk id, pack, offset) found damaged by a check: never the location a chunk
        # resolves to while another copy exists, and never reused by a writer
        self.damaged: set[tuple[str, str, int]] = set()
        # packs in no readable index file, indexed from their own headers because an index
        # file is damaged (in memory only: a writer or `repair` writes them down)
        self.recovered: set[str] = set()
        self.lock = threading.Lock()

    def add_pack(self, pack_id: str, size: int, blobs: list) -> None:
        """Record a pack and its chunks; the first location seen for a chunk wins, unless it
        is known damaged and this one is not."""
        with self.lock:
            self.pack_sizes[pack_id] = size
            rows = [tuple(b) for b in blobs]
            self.pack_blobs[pack_id] = rows
            damaged = self.damaged
            for cid, off, length, raw, flags in rows:
                cur = self.entries.get(cid)
                if cur is None or (
                    (cid, cur[0], cur[1]) in damaged and (cid, pack_id, off) not in damaged
                ):
                    self.entries[cid] = (pack_id, off, length, raw, flags)

    def is_damaged(self, cid: str) -> bool:
        """The chunk's current location was found damaged (no sound copy is indexed)."""
        loc = self.entries.get(cid)
        return loc is not None and (cid, loc[0], loc[1]) in self.damaged

    def mark_damaged(self, rows) -> None:
        """Note ROWS ((chunk id, pack, offset)) as damaged; a chunk resolving there stays
        indexed (check and restore name it) but a writer stores it again."""
        with self.lock:
            self.damaged.update((str(c), str(p), int(o)) for c, p, o in rows)

    def __contains__(self, cid: str) -> bool:
        return cid in self.entries

    def load(self, backend, keys: Keys) -> None:
        """Read every index file; a damaged or unreadable one is noted, not fatal, so check()
        can name it and a new backup can still run (it re-stores what the lost file listed).

        Packs that are missing or have the wrong size are added last, so a chunk stored again
        in a sound pack (by a backup after the loss) resolves to the sound copy."""
        stored = backend.list("data")
        later: list[tuple] = []
        rows: list[tuple] = []
        for name in sorted(backend.list("index")):
            try:
                blob = backend.read(name)
            except FileNotFoundError:
                continue
            if content_id(blob) != name.rpartition("/")[2]:
                self.errors.append(
                    f"Index file {name} is damaged (its content does not match its name)."
                )
                continue
            try:
                doc = open_json(keys, blob, AAD_INDEX, f"index file {name}")
            except RepoError as exc:
                self.errors.append(str(exc))
                continue
            self.files.append(name)
            self.mark_damaged(doc.get("damaged", ()))
            for pack in doc["packs"]:
                row = (pack["id"], pack["size"], pack["blobs"])
                if stored.get(f"data/{pack['id'][:2]}/{pack['id']}") != pack["size"]:
                    later.append(row)
                else:
                    rows.append(row)
        for row in rows + later:
            self.add_pack(*row)
        self.unsound = {row[0] for row in later}
        if self.errors:
            self._recover(backend, keys, stored)

    def _recover(self, backend, keys: Keys, stored: dict[str, int]) -> None:
        """Index the packs no readable index file lists from their own headers (two small
        reads each), so a damaged index file costs no restore; check still names it."""
        from sctk.backup.repo.packs import read_pack_header

        for name, size in sorted(stored.items()):
            pack = name.rpartition("/")[2]
            if pack in self.pack_sizes:
                continue
            try:
                blobs, _ = read_pack_header(backend, keys, name, size)
            except (RepoError, FileNotFoundError):
                continue
            self.add_pack(pack, size, blobs)
            self.recovered.add(pack)


def write_index(backend, keys: Keys, packs: dict[str, tuple[int, list]], damaged=()) -> list[str]:
    """Write PACKS (pack id -> (size, blobs)) as one or more index files, the first one also
    listing DAMAGED chunk locations ((chunk id, pack, offset)); their names."""
    names = []
    batch: list[dict] = []
    count = 0
    marks = sorted(list(d) for d in damaged)

    def flush(force: bool = False):
        nonlocal batch, count, marks
        if not batch and not (force and marks):
            return
        doc: dict = {"packs": batch}
        if marks:
            doc["damaged"], marks = marks, []
        blob = seal_json(keys, doc, AAD_INDEX)
        name = f"index/{content_id(blob)}"
        backend.write(name, blob)
        names.append(name)
        batch, count = [], 0

    for pack_id, (size, blobs) in packs.items():
        batch.append({"id": pack_id, "size": size, "blobs": [list(b) for b in blobs]})
        count += len(blobs)
        if count >= ENTRIES_PER_FILE:
            flush()
    flush(force=True)
    return names
