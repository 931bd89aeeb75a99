"""Snapshot files of format version 2: a file list in sealed pieces, then a small header.

A version-1 snapshot file is one sealed JSON document holding the whole file list (about
0.85 KiB a file once decoded), so listing snapshots decoded every list, and a backup, a
prune or a check held whole lists. A version-2 file is

    piece 0 | piece 1 | ... | sealed header | header length (4 bytes, little endian) | MAGIC

where each piece is the sealed JSON list of up to PIECE_ENTRIES file entries (the entries of
version 1: path, mode, size, sha256, chunks, st) holding up to PIECE_CHUNKS chunk ids (an
entry with more is a piece alone; about twice either in a piece following the parent's,
below), all pieces together sorted by path, and the header holds what a listing needs (time,
label, host, manifest, totals, the count of files) and where each piece lies with its first
and last path. So a listing reads the last few KiB of each file, and a reader goes through
the list one piece at a time, or finds a path by bisecting the pieces' bounds. Each piece's
AAD names the list (a random id in the header) and the piece's place, so pieces cannot be
moved within a file or between files. The file is still named by the SHA-256 of all its
bytes.

The writer side (FileListSink) takes entries in any order: it sorts them a piece at a time,
writes pieces as they fill (to a temporary file in the repository's snapshots/ folder on local
storage, else to a local temporary file), and when the pieces did not come in path order (a
backup made of several trees and files) merges the sorted runs into a second file at the
end. Memory is a piece per run, whatever the number of files. A piece is bounded by its
chunk ids as well as its entries because a reader holds a decoded piece per list (a check's
merge, one per snapshot): a decoded entry weighs ~0.8 KiB and each of its chunk ids ~120
bytes more (a 64-character string and its list slot), so 1,000 entries of large files
(tens of chunks each) made pieces of several MiB. The readers take pieces of any size (the
header lists each with its bounds), so files cut either way read the same everywhere.

A backup with a parent (the previous snapshot, a version-2 file) writes its list under the
parent's list id and cuts its pieces where the parent's pieces end (whichever limit cut
them); a piece whose entries are exactly the parent's piece at the same place (every file of
it unchanged) is then the same sealed bytes under the same AAD, so it is copied as stored
instead of being encoded, compressed and encrypted again (an unchanged backup of a million
files seals no piece). The snapshots that share a list id could have same-place pieces
swapped between their files without failing authentication; such a file no longer matches
its name (the SHA-256 of its bytes), which a check verifies, as it does for a snapshot file
replaced whole by another.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter

from sctk.backup.repo.backend_contract import Backend
from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import open_json, seal_json

MAGIC = b"sctksnp2"
PIECE_ENTRIES = 1000  # entries a piece: ~0.8 MiB decoded, ~0.1 MiB stored
# chunk ids a piece: ~0.25 MiB decoded (120 bytes each), so a piece full by both limits is
# ~1 MiB decoded, and one of a few large files' entries ~0.3 MiB (without it, 1,000 entries
# of 40 chunk ids each decode to ~5.3 MiB)
PIECE_CHUNKS = 2048
TAIL_READ = 64 * 1024  # bytes read from a file's end to find its header (one read, usually)
COPY_BLOCK = 1 << 20
AAD_HEADER = b"sctk-snapshot-header"
AAD_PIECE = b"sctk-snapshot-files"
_TAIL = struct.Struct("<I")
_PATH = itemgetter("path")


def _piece_aad(list_id: str, i: int) -> bytes:
    return AAD_PIECE + f":{list_id}:{i}".encode()


def added_twice(path: str) -> RepoError:
    return RepoError(f"Snapshot path {path} was added twice; add each path once.")


def _ids(doc: dict) -> int:
    return len(doc["chunks"])


def _fits(docs: list[dict], slack: int = 1) -> bool:
    """Whether DOCS make one piece within SLACK times the limits."""
    return len(docs) <= slack * PIECE_ENTRIES and sum(map(_ids, docs)) <= slack * PIECE_CHUNKS


def _cut(docs: Iterable[dict]) -> Iterator[list[dict]]:
    """DOCS (sorted) in pieces: one is sealed once it holds PIECE_ENTRIES entries or
    PIECE_CHUNKS chunk ids, and an entry that would take it past PIECE_CHUNKS starts the
    next (alone when it has more)."""
    piece: list[dict] = []
    ids = 0
    for doc in docs:
        n = _ids(doc)
        if piece and ids + n > PIECE_CHUNKS:
            yield piece
            piece, ids = [], 0
        piece.append(doc)
        ids += n
        if len(piece) >= PIECE_ENTRIES or ids >= PIECE_CHUNKS:
            yield piece
            piece, ids = [], 0
    if piece:
        yield piece


# -- writing ---------------------------------------------------------------------------------


class PieceFile:
    """Sealed pieces appended to one of the backend's pack files (hashed as they go), with
    their bounds; the file shows under its snapshot id only once committed."""

    def __init__(self, backend: Backend, keys: Keys, list_id: str):
        self.keys = keys
        self.list_id = list_id
        self.pieces: list[list] = []  # [offset, length, first path, last path]
        self.size = 0
        self.sha = hashlib.sha256()
        self.file = backend.new_pack("snapshots")

    def _append(self, data: bytes) -> None:
        self.file.append([data])
        self.sha.update(data)
        self.size += len(data)

    def add(self, docs: list[dict]) -> None:
        blob = seal_json(self.keys, docs, _piece_aad(self.list_id, len(self.pieces)))
        self.add_sealed(blob, docs[0]["path"], docs[-1]["path"])

    def add_sealed(self, blob: bytes, first: str, last: str) -> None:
        """Append a piece sealed already for this list and this place (a parent's piece)."""
        self.pieces.append([self.size, len(blob), first, last])
        self._append(blob)

    def sealed(self, i: int) -> bytes:
        off, length = self.pieces[i][:2]
        return self.file.read(off, length)

    def read(self, i: int) -> list[dict]:
        blob = self.sealed(i)
        return open_json(self.keys, blob, _piece_aad(self.list_id, i), "snapshot being written")

    def commit(self, header: dict) -> str:
        """Append HEADER (with the pieces' places) and store the file; its snapshot id."""
        header = {**header, "version": 2, "list": self.list_id, "pieces": self.pieces}
        try:
            sealed = seal_json(self.keys, header, AAD_HEADER)
        except TypeError as exc:
            raise RepoError(f"The snapshot manifest is not JSON data: {exc}.") from None
        self._append(sealed + _TAIL.pack(len(sealed)) + MAGIC)
        snap_id = self.sha.hexdigest()
        self.file.commit(f"snapshots/{snap_id}")
        return snap_id

    def discard(self) -> None:
        self.file.discard()


class StoredList:
    """A committed version-2 snapshot's list as stored: its id, its pieces' places and bounds,
    and their sealed bytes read back as they are (for a child list to reuse)."""

    def __init__(self, backend, name: str, header: dict):
        self.backend = backend
        self.name = name
        self.list_id: str = header["list"]
        self.pieces: list[list] = header["pieces"]

    def sealed(self, i: int) -> bytes:
        off, length = self.pieces[i][:2]
        blob = self.backend.read_range(self.name, off, length)
        if len(blob) != length:
            raise RepoError(f"The snapshot file {self.name} is damaged (a piece is cut off).")
        return blob


class FileListSink:
    """A snapshot's file entries, taken in any order, written sorted by path in pieces.

    With PARENT (a StoredList), entries the caller took unchanged from the parent come with
    their origin (piece, position, entries in that piece): pieces are cut where the parent's
    end, and one that is the parent's piece whole, at the same place, is copied as stored."""

    def __init__(self, backend, keys: Keys, parent: StoredList | None = None):
        self.backend = backend
        self.keys = keys
        self.parent = parent
        self.list_id = parent.list_id if parent is not None else secrets.token_hex(8)
        self.out = PieceFile(backend, keys, self.list_id)
        self.buf: list[dict] = []
        self.buf_ids = 0  # chunk ids of the entries in buf
        self.runs: list[list[int]] = []  # [first piece, end piece) of pieces in path order
        self.count = 0
        self.size = 0
        self.reused = 0  # pieces copied from the parent as stored
        self.side: list[dict] = []  # files added on their own (add_side)
        self._follow = -1  # the parent piece whose entries are in buf (-1: none)
        self._match = -1  # the parent piece that buf is the start of, exactly (-1: none)

    def add(self, doc: dict, origin: tuple[int, int, int] | None = None) -> None:
        """Add DOC; ORIGIN (piece, position, its entries) when DOC is the parent's entry."""
        ids = _ids(doc)
        if origin is None:
            self._match = -1
            # DOC would take the piece past its chunk ids: it starts the next (so an entry
            # with more is alone), with the slack below while following the parent. Never
            # before the parent's entries (an origin): the parent's cuts and the slack cut
            # those, so a new or grown file at a piece's start leaves the later pieces at
            # the parent's places.
            limit = 2 * PIECE_CHUNKS if self._follow >= 0 else PIECE_CHUNKS
            if self.buf and self.buf_ids + ids > limit:
                self._flush()
        else:
            piece, at, n = origin
            if self._follow >= 0 and piece != self._follow:
                self._flush()  # cut where the parent cut
            if at == len(self.buf) and (at == 0 or self._match == piece):
                self._match = piece
            else:
                self._match = -1
            self._follow = piece
        self.buf.append(doc)
        self.buf_ids += ids
        self.count += 1
        self.size += doc["size"]
        if origin is not None and origin[1] == origin[2] - 1:
            self._flush()  # the parent's piece ends here
        # following the parent, a piece may grow past its size with new files, rather than
        # be cut early (which would move every later piece off the parent's places): to
        # twice the limits (the parent's entry that takes it past its chunk ids ends it)
        elif self._follow >= 0:
            if len(self.buf) >= 2 * PIECE_ENTRIES or self.buf_ids >= 2 * PIECE_CHUNKS:
                self._flush()
        elif len(self.buf) >= PIECE_ENTRIES:
            self._flush()

    def add_side(self, doc: dict) -> None:
        """Add DOC, a file added on its own (a database dump, a config file) out of the walk's
        order: kept aside and put into the piece where it belongs at finish(), so the walk's
        pieces stay one sorted run (and the parent's pieces reusable)."""
        self.side.append(doc)
        self.count += 1
        self.size += doc["size"]
        if len(self.side) > PIECE_ENTRIES:  # many: pieces of their own, merged at the end
            self._flush_side()

    def _flush_side(self) -> None:
        """The side files as pieces of their own (a sorted run, cut by the limits)."""
        self._flush()
        side, self.side = sorted(self.side, key=_PATH), []
        for piece in _cut(side):
            self.buf = piece
            self._flush()

    def _splice(self) -> None:
        """Put the side files into the pieces where they belong; the other pieces are copied
        as they are sealed (those copied from the parent stay the parent's bytes). A piece
        that the side files take past twice the limits (the slack of a piece following the
        parent) is cut again by the limits; the pieces after it then lie one place or more
        further, so they are sealed again for their places (their AAD names the place)."""
        side = sorted(self.side, key=_PATH)
        self.side = []
        out = self.out
        firsts = [p[2] for p in out.pieces]
        into: dict[int, list[dict]] = {}
        for doc in side:
            into.setdefault(max(0, bisect.bisect_right(firsts, doc["path"]) - 1), []).append(doc)
        spliced = PieceFile(self.backend, self.keys, self.list_id)
        try:
            for i, (_off, _len, first, last) in enumerate(out.pieces):
                extra = into.get(i)
                if extra is None:
                    if len(spliced.pieces) == i:
                        spliced.add_sealed(out.sealed(i), first, last)
                    else:
                        spliced.add(out.read(i))
                    continue
                docs = list(heapq.merge(out.read(i), extra, key=_PATH))
                for a, b in zip(docs, docs[1:], strict=False):
                    if a["path"] == b["path"]:
                        raise added_twice(a["path"])
                for piece in [docs] if _fits(docs, 2) else _cut(docs):
                    spliced.add(piece)
        except BaseException:
            spliced.discard()
            raise
        out.discard()
        self.out = spliced

    def _flush(self) -> None:
        match, self._match, self._follow = self._match, -1, -1
        if not self.buf:
            return
        pieces = self.out.pieces
        parent = self.parent
        # the parent's piece whole (its last entry added: a cut), sorted and without repeats
        whole = (
            match >= 0
            and parent is not None
            and match == len(pieces)
            and self.buf[-1]["path"] == parent.pieces[match][3]
        )
        buf = self.buf if whole else sorted(self.buf, key=_PATH)
        self.buf, self.buf_ids = [], 0
        if not whole:
            prev = buf[0]["path"]
            for d in buf[1:]:
                if d["path"] == prev:
                    raise added_twice(prev)
                prev = d["path"]
        if not self.runs or buf[0]["path"] <= pieces[-1][3]:
            if self.runs and buf[0]["path"] == pieces[-1][3]:
                raise added_twice(buf[0]["path"])
            self.runs.append([len(pieces), len(pieces)])
        if whole:
            assert parent is not None
            self.out.add_sealed(parent.sealed(match), buf[0]["path"], buf[-1]["path"])
            self.reused += 1
        else:
            self.out.add(buf)
        self.runs[-1][1] += 1

    def _run(self, start: int, end: int) -> Iterator[dict]:
        for i in range(start, end):
            yield from self.out.read(i)

    def finish(self) -> PieceFile:
        """The sorted pieces (the runs merged when there are several)."""
        self._flush()
        if self.side:
            if len(self.runs) == 1:
                self._splice()
            else:  # no pieces, or several runs to merge anyway: the side files as a run
                self._flush_side()
        if len(self.runs) <= 1:
            return self.out
        merged = PieceFile(self.backend, self.keys, self.list_id)
        try:
            for piece in _cut(self._merged()):
                merged.add(piece)
        except BaseException:
            merged.discard()
            raise
        self.out.discard()
        self.out = merged
        self.runs = [[0, len(merged.pieces)]]
        return merged

    def _merged(self) -> Iterator[dict]:
        """The runs' entries merged in path order, a path added twice refused."""
        prev = None
        for doc in heapq.merge(*(self._run(a, b) for a, b in self.runs), key=_PATH):
            if doc["path"] == prev:
                raise added_twice(prev)
            prev = doc["path"]
            yield doc

    def docs(self) -> Iterator[dict]:
        """Every entry in path order (after finish())."""
        return self._run(0, len(self.out.pieces))

    def discard(self) -> None:
        self.out.discard()


# -- reading ---------------------------------------------------------------------------------


def read_header(backend, keys: Keys, name: str, size: int) -> dict | None:
    """The header of a version-2 snapshot file of SIZE bytes; None for a version-1 file."""
    start = max(0, size - TAIL_READ)
    tail = backend.read_range(name, start, size - start)
    if len(tail) < 12 or tail[-8:] != MAGIC:
        return None
    (hlen,) = _TAIL.unpack(tail[-12:-8])
    if hlen + 12 > size:
        raise RepoError(f"The snapshot file {name} is damaged (its header is cut off).")
    if hlen + 12 > len(tail):
        tail = backend.read_range(name, size - 12 - hlen, hlen + 12)
    header = open_json(keys, tail[-12 - hlen : -12], AAD_HEADER, f"snapshot file {name}")
    header["format"] = 2
    return header


def read_piece(backend, keys: Keys, name: str, header: dict, i: int) -> list[dict]:
    off, length = header["pieces"][i][:2]
    return open_piece(keys, name, header, i, backend.read_range(name, off, length))


def open_piece(keys: Keys, name: str, header: dict, i: int, blob: bytes) -> list[dict]:
    """The entries of piece I of snapshot file NAME, from its sealed bytes BLOB."""
    return open_json(keys, blob, _piece_aad(header["list"], i), f"snapshot file {name}")


def iter_docs(backend, keys: Keys, name: str, header: dict) -> Iterator[dict]:
    for i in range(len(header["pieces"])):
        yield from read_piece(backend, keys, name, header, i)


def stream_sha256(backend, name: str, size: int, block: int = 4 * COPY_BLOCK) -> str:
    """The SHA-256 of a stored file read in blocks of BLOCK bytes (a snapshot file can be
    large)."""
    sha = hashlib.sha256()
    off = 0
    while off < size:
        data = backend.read_range(name, off, min(block, size - off))
        if not data:
            break
        sha.update(data)
        off += len(data)
    if off != size:
        raise FileNotFoundError(name)
    return sha.hexdigest()


class SortedLookup:
    """Entries of a sorted file list found by path with one piece in memory; a run of
    lookups in path order (a backup's walk) goes through each piece once."""

    def __init__(self, bounds: list[tuple[str, str]], load: Callable[[int], list[dict]]):
        self.firsts = [b[0] for b in bounds]
        self.lasts = [b[1] for b in bounds]
        self.load = load
        self.piece = -1
        self.docs: list[dict] = []
        self.at = 0

    def get(self, path: str) -> dict | None:
        p = self.piece
        if p < 0 or not (self.firsts[p] <= path <= self.lasts[p]):
            j = bisect.bisect_right(self.firsts, path) - 1
            if j < 0 or path > self.lasts[j]:
                return None
            self.piece, self.docs, self.at = j, self.load(j), 0
        docs, i = self.docs, self.at
        if i >= len(docs) or docs[i]["path"] != path:
            i = bisect.bisect_left(docs, path, key=_PATH)
            if i >= len(docs) or docs[i]["path"] != path:
                self.at = i
                return None
        self.at = i + 1
        return docs[i]
