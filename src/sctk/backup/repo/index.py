"""The chunk index: which pack holds each chunk, from every index file at open.

The index files (encrypted JSON in the repository, the format every sctk reads) are read
one at a time into a sorted file on local disk (sortedindex.py), so lookups during backup,
check, prune and restore hold no Python object per chunk: memory grows with the number of
packs (~16 MiB each), not of chunks. The local file is a cache of what the repository
holds, rebuilt at every open: the repository's format is unchanged."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import AAD_INDEX, content_id, open_index, seal_json, unpack_rows
from sctk.backup.repo.sortedindex import Builder, SortedIndex, build

# One index file holds at most this many chunks (older sctk wrote up to 50,000), so a huge
# repository is not one huge file, and one file's text and packed rows (~2.5 MiB while it is
# read, ~0.5 MiB kept) are what a pass over the packs' rows holds at a time.
ENTRIES_PER_FILE = 10_000
NO_PACK = "00" * 32  # the pack of the rows of a chunk_set(): no pack


def group_pack(number: int) -> str:
    """The pack id chunk_groups() gives the ids of group NUMBER (the first is NO_PACK)."""
    return f"{number:064x}"


class ChunkMap:
    """chunk id -> (pack, offset, length, raw length, flags), served from a sorted index file
    (sortedindex.py: 49 bytes a chunk on disk, a positioned read a lookup) built when the
    index is loaded, plus the few locations learnt since (packs a writer added, packs
    recovered from their headers, damage resolved) in a dict. Thread-safe."""

    def __init__(self, base: SortedIndex | None = None):
        self.base = base
        # packs a writer of this process added since loading, as sorted files, newest first;
        # asked first: a writer stores a chunk only where no sound copy was indexed
        self.newer: list[SortedIndex] = []
        self.extra: dict[str, tuple] = {}

    def get(self, cid: str, default=None):
        loc = self.learnt(cid)
        if loc is None and self.base is not None:
            loc = self.base.get(cid)
        return default if loc is None else loc

    def learnt(self, cid: str):
        """CID's location if learnt since loading (the newer files, the dict), else None:
        what a process holding the base file alone cannot know (checkprocs.py)."""
        for newer in self.newer:
            loc = newer.get(cid)
            if loc is not None:
                return loc
        return self.extra.get(cid)

    def __contains__(self, cid: str) -> bool:
        return (
            cid in self.extra
            or (self.base is not None and cid in self.base)
            or any(cid in newer for newer in self.newer)
        )

    def __getitem__(self, cid: str) -> tuple:
        loc = self.get(cid)
        if loc is None:
            raise KeyError(cid)
        return loc

    def __len__(self) -> int:
        base = 0 if self.base is None else len(self.base)
        newer = sum(len(n) for n in self.newer)  # new chunks (a few may repeat a lost copy)
        return newer + base + sum(1 for c in self.extra if self.base is None or c not in self.base)


class PackBlobs(Mapping):
    """pack id -> its chunk rows, read again from the index file that lists the pack when
    asked (the last DOCS_KEPT files kept, their rows packed: a pass goes pack after pack in
    file order), so the rows of every pack are never in memory at once. Packs added since
    loading are held as given."""

    DOCS_KEPT = 2

    def __init__(self, index: Index):
        self.index = index
        self.held: dict[str, list[tuple]] = {}
        self.file_of: dict[str, str] = {}  # pack id -> index file name
        # index file name -> {pack id: its rows packed (formats.pack_rows)}: 49 bytes a row,
        # where the rows as decoded were ~300 (two files of 10,000 rows kept that way were
        # most of what a verify's pass over the packs held)
        self._docs: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, pack: str) -> list[tuple]:
        rows = self.held.get(pack)
        if rows is not None:
            return rows
        name = self.file_of[pack]  # KeyError: a pack no index lists
        with self._lock:
            doc = self._docs.get(name)
            if doc is None:
                doc = self.index.read_packed(name)
                if doc is None:
                    raise RepoError(
                        f"Index file {name} was removed while in use; run the command again."
                    )
                self._docs[name] = doc
                while len(self._docs) > self.DOCS_KEPT:
                    self._docs.popitem(last=False)
            else:
                self._docs.move_to_end(name)
        return unpack_rows(doc[pack])

    def __contains__(self, pack) -> bool:
        return pack in self.held or pack in self.file_of

    def __iter__(self) -> Iterator[str]:
        return iter(self.index.pack_sizes)

    def __len__(self) -> int:
        return len(self.index.pack_sizes)


class Index:
    """chunk id -> location (entries, mostly on disk), plus pack sizes and per-pack chunk lists
    (pack_blobs, read again from the index files when asked): what backup, check, prune and
    restore need, in memory that grows with the number of packs (tens of bytes each), not of
    chunks."""

    def __init__(self):
        self.entries = ChunkMap()
        self.pack_sizes: dict[str, int] = {}
        self.pack_blobs = PackBlobs(self)
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
        self._backend = None
        self._keys: Keys | None = None
        self._dir: str | None = None
        self._cleanup = None

    def add_pack(self, pack_id: str, size: int, blobs: list) -> None:
        """Record a pack and its chunks; the first location seen for a chunk wins, unless it
        is known damaged and this one is not."""
        with self.lock:
            self.pack_sizes[pack_id] = size
            rows = [tuple(b) for b in blobs]
            self.pack_blobs.held[pack_id] = rows
            self._resolve(pack_id, rows, self.entries.extra)

    def add_written(
        self, backend, keys: Keys, packs: Iterable[tuple[str, int, Iterable]], file_of: dict
    ) -> None:
        """Record the packs a writer has just written and indexed (PACKS: (pack id, size,
        rows), FILE_OF: pack id -> the index file listing it), their chunks in a sorted file
        beside the index's, asked before it: no Python object per chunk. Each chunk in them
        was stored because no sound copy was indexed, so their location wins."""
        if self._backend is None:  # a new repository's index, never loaded: read from here
            self._backend, self._keys = backend, keys
        path = Path(self._local_dir()) / f"written-{len(self.entries.newer)}.idx"
        sizes: dict[str, int] = {}

        def rows():
            for pack, size, blobs in packs:
                sizes[pack] = size
                yield pack, blobs

        build(path, rows())
        with self.lock:
            self.entries.newer.insert(0, SortedIndex(path))
            self.pack_sizes.update(sizes)
            self.pack_blobs.file_of.update(file_of)

    def _resolve(self, pack_id: str, rows, into: dict) -> None:
        """Set INTO[chunk id] for ROWS of PACK_ID where this location wins over the current
        one (the entries' answer, or INTO's own)."""
        damaged = self.damaged
        entries = self.entries
        for cid, off, length, raw, flags in rows:
            cur = into.get(cid) or entries.get(cid)
            if cur is None or (
                (cid, cur[0], cur[1]) in damaged and (cid, pack_id, off) not in damaged
            ):
                into[cid] = (pack_id, off, length, raw, flags)

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

    def _read_doc(self, name: str) -> dict | None:
        """Index file NAME decoded; None if it is gone. RepoError if it is damaged."""
        try:
            blob = self._backend.read(name)
        except FileNotFoundError:
            return None
        if content_id(blob) != name.rpartition("/")[2]:
            raise RepoError(f"Index file {name} is damaged (its content does not match its name).")
        return open_index(self._keys, blob, f"index file {name}")

    def read_file(self, name: str) -> tuple[list[tuple[str, int, list[tuple]]], list] | None:
        """The packs index file NAME lists, as (pack id, size, rows), and the damaged chunk
        locations it records; None if it is gone. RepoError if it is damaged."""
        doc = self._read_doc(name)
        if doc is None:
            return None
        packs = [(pack, size, unpack_rows(rows)) for pack, size, rows in doc["packs"]]
        return packs, doc.get("damaged", [])

    def read_packed(self, name: str) -> dict[str, bytes] | None:
        """The packs index file NAME lists: pack id -> its rows packed (formats.pack_rows);
        None if it is gone. RepoError if it is damaged.

        The pack ids are made anew once the decoded file is let go (see load)."""
        doc = self._read_doc(name)
        if doc is None:
            return None
        ids = bytearray()
        rows = []
        for pack, _size, packed in doc["packs"]:
            ids += bytes.fromhex(pack)
            rows.append(packed)
        del doc
        return {ids[32 * k : 32 * k + 32].hex(): packed for k, packed in enumerate(rows)}

    def load(self, backend, keys: Keys) -> None:
        """Read every index file, one at a time, into a sorted index file on local disk; a
        damaged or unreadable one is noted, not fatal, so check() can name it and a new backup
        can still run (it re-stores what the lost file listed).

        Packs that are missing or have the wrong size are added last, so a chunk stored again
        in a sound pack (by a backup after the loss) resolves to the sound copy."""
        self._backend, self._keys = backend, keys
        stored = backend.list("data")
        names = sorted(backend.list("index"))
        later: list[tuple] = []  # unsound packs: few, kept to be added last
        # What outlives the load, kept in flat buffers until every file is read: a Python
        # object made while a decoded file's objects were alive would keep the allocator's
        # pages under them from being given back (on the reference data set at scale 16,
        # 10 MiB held by a verify to its end, for 0.2 MiB of pack ids and sizes).
        ids = bytearray()
        sizes = array("Q")
        files = array("I")  # into self.files

        def sound_packs():
            for name in names:
                try:
                    doc = self._read_doc(name)
                except RepoError as exc:
                    self.errors.append(str(exc))
                    continue
                if doc is None:
                    continue
                self.files.append(name)
                self.mark_damaged(doc.get("damaged", []))
                for pack, size, rows in doc["packs"]:
                    ids.extend(bytes.fromhex(pack))
                    sizes.append(size)
                    files.append(len(self.files) - 1)
                    if stored.get(f"data/{pack[:2]}/{pack}") != size:
                        later.append((pack, size, unpack_rows(rows)))
                    else:
                        yield pack, rows

        path = Path(self._local_dir()) / "chunks.idx"
        build(path, sound_packs())
        for k, size in enumerate(sizes):
            pack = ids[32 * k : 32 * k + 32].hex()
            self.pack_sizes[pack] = size
            self.pack_blobs.file_of[pack] = self.files[files[k]]
        self.entries.base = SortedIndex(path)
        for pack, _size, rows in later:
            self._resolve(pack, rows, self.entries.extra)
        self.unsound = {row[0] for row in later}
        if self.damaged:
            self._resolve_damage(names, later)
        if self.errors:
            self._recover(backend, keys, stored)

    def _resolve_damage(self, names: list[str], later: list[tuple]) -> None:
        """The sorted file keeps the first location of each chunk; where that one is known
        damaged, read the index files again for the chunks concerned (few) and let a sound
        copy win, as add_pack does."""
        hurt = {cid for cid, _p, _o in self.damaged}
        found: dict[str, tuple] = {}
        for name in names:
            try:
                packs = (self.read_file(name) or ([], []))[0]
            except RepoError:
                continue
            for pack, _size, rows in packs:
                if pack in self.unsound:
                    continue
                rows = [r for r in rows if r[0] in hurt]
                if rows:
                    self._first_sound(pack, rows, found)
        for pack, _size, rows in later:
            self._first_sound(pack, [r for r in rows if r[0] in hurt], found)
        self.entries.extra.update(found)

    def _first_sound(self, pack: str, rows, found: dict) -> None:
        damaged = self.damaged
        for cid, off, length, raw, flags in rows:
            cur = found.get(cid)
            if cur is None or (
                (cid, cur[0], cur[1]) in damaged and (cid, pack, off) not in damaged
            ):
                found[cid] = (pack, off, length, raw, flags)

    def chunk_set(self, cids: Iterable[str]) -> SortedIndex:
        """The set of chunk ids CIDS (repeats allowed) as a sorted file beside the index's
        (`cid in` the result: a positioned read), for a pass that must know every chunk a
        snapshot references (prune) without a set of them in memory."""
        return self.chunk_groups([cids])

    def chunk_groups(self, groups: list[Iterable[str]]) -> SortedIndex:
        """chunk_set() of the ids of every group, each id under the first group that holds
        it: its record's pack is group_pack(number) (prune: live snapshots' chunks first)."""
        where = self._local_dir()
        fd, name = tempfile.mkstemp(prefix="set-", suffix=".idx", dir=where)
        os.close(fd)
        build(
            Path(name),
            [(group_pack(i), ((c, 0, 0, 0, 0) for c in g)) for i, g in enumerate(groups)],
        )
        found = SortedIndex(Path(name))
        os.unlink(name)  # the open descriptor keeps it readable; nothing to clean up later
        return found

    def sorted_builder(self, prefix: str, on_repeat=None) -> Builder:
        """A Builder of a new sorted file beside the index's (removed with it; open it with
        sortedindex.opened()), for a pass that fills sets as it goes (check); ON_REPEAT as
        Builder's."""
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".idx", dir=self._local_dir())
        os.close(fd)
        return Builder(Path(name), on_repeat)

    def _local_dir(self) -> str:
        if self._dir is None:
            # the system's temporary directory (TMPDIR moves it, as for every temporary file)
            _remove_stale(tempfile.gettempdir())
            self._dir = tempfile.mkdtemp(prefix=f"sctk-index-{os.getpid()}-")
            self._cleanup = weakref.finalize(self, _remove, self._dir)
        return self._dir

    def close(self) -> None:
        """Remove the local sorted files now (they also go when the index is collected or
        the process exits); lookups already open keep working until they are let go."""
        if self._cleanup is not None:
            self._cleanup()

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


def _remove_stale(where: str) -> None:
    """Remove the sorted files of processes that died without removing their own (killed)."""
    root = Path(where)
    try:
        found = list(root.glob("sctk-index-*-*"))
    except OSError:
        return
    for path in found:
        try:
            pid = int(path.name.split("-")[2])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue  # alive, or another user's


def _remove(path: str) -> None:
    # Only the directory: a reader still holding the old ChunkMap (a restore's generator
    # across a reload) keeps reading through its open descriptor, closed when it goes.
    shutil.rmtree(path, ignore_errors=True)


def write_index(backend, keys: Keys, packs, damaged=(), file_of: dict | None = None) -> list[str]:
    """Write PACKS (pack id -> (size, blobs), or an iterable of such pairs, consumed as the
    files are written) as one or more index files, the first one also listing DAMAGED chunk
    locations ((chunk id, pack, offset)); their names (and in FILE_OF, pack id -> the name
    of the file listing it)."""
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
        if file_of is not None:
            file_of.update((p["id"], name) for p in batch)
        batch, count = [], 0

    for pack_id, (size, blobs) in packs.items() if isinstance(packs, dict) else packs:
        batch.append({"id": pack_id, "size": size, "blobs": [list(b) for b in blobs]})
        count += len(blobs)
        if count >= ENTRIES_PER_FILE:
            flush()
    flush(force=True)
    return names
