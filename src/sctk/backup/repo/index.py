"""The chunk index: which pack holds each chunk, served from a local SQLite cache.

The repository's own index files (index/<sha256>, sealed JSON) stay the truth and keep their
format. What a process looks chunks up in is a cache derived from them: one SQLite file per
repository (and location) in a cache directory, or a private temporary SQLite database when
no cache directory is given. Lookups go to SQLite's B-tree (a few microseconds each), so the
memory of a backup, verify, prune or restore no longer grows with the number of chunks: the
process holds SQLite's page cache (CACHE_KIB) and the few marks below.

Keeping the cache true to the repository:
  * index files are named by the SHA-256 of their bytes and never rewritten, so the cache
    records the names of the files it holds; new names are read and added (one transaction
    per file), and when a name it holds has gone (prune and repair replace the index) the
    cache is emptied and rebuilt from the files present;
  * a kill while the cache is written loses at most the transaction in flight (SQLite's
    journal), and a cache file that cannot be read (torn, of another schema, of another
    repository) is deleted and rebuilt: it holds nothing the repository does not;
  * a full check reads every index file again and compares it with its name, so an index
    file damaged after it was cached is still named (and the cache rebuilt without it).
Several processes may share a cache file: SQLite serialises their writes, and each sync runs
in one write transaction that looks at the recorded names again first.

Packs missing or of the wrong size (unsound), chunk locations found damaged, and packs
indexed from their own headers because an index file is damaged (recovered) are small sets
kept in memory: they name exceptions, not the repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import AAD_INDEX, content_id, open_json, seal_json

# One index file holds at most this many chunks, so a huge repository is not one huge file.
ENTRIES_PER_FILE = 50_000
SCHEMA = 2  # of the cache file; another value means: rebuild
PACK_NAMES = 65_536  # pack numbers -> ids remembered per process (numbers are never reused)
CACHE_KIB = 8 * 1024  # SQLite page cache per process
# a pack's chunk rows, packed: chunk id (32 bytes), offset, length, raw length, flags
_ROW = struct.Struct("<32sIIIB")

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packs (
    no INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL,
    rows BLOB NOT NULL, recovered INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS chunks (
    cid BLOB NOT NULL, pack INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL,
    raw INTEGER NOT NULL, flags INTEGER NOT NULL, PRIMARY KEY (cid, pack, off)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS damaged (
    cid TEXT NOT NULL, pack TEXT NOT NULL, off INTEGER NOT NULL,
    PRIMARY KEY (cid, pack, off)) WITHOUT ROWID;
"""


class CacheDamaged(RepoError):
    """The local index cache file cannot be read (it was removed: the next run rebuilds it)."""


def _key(hex_id: str) -> bytes:
    try:
        raw = bytes.fromhex(hex_id)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise RepoError(f"Index entry {str(hex_id)[:16]!r} is not a 64-digit hex id.")
    return raw


def _pack_rows(blobs) -> bytes:
    return b"".join(
        _ROW.pack(_key(cid), off, length, raw, flags) for cid, off, length, raw, flags in blobs
    )


def _unpack_rows(data: bytes) -> list[tuple]:
    return [(c.hex(), o, n, r, f) for c, o, n, r, f in _ROW.iter_unpack(data)]


def cache_file(cache_dir: Path, repo_id: str, url: str) -> Path:
    """The cache file of the repository REPO_ID at URL (a copy elsewhere has its own: the
    two may hold different index files for a while)."""
    tag = hashlib.sha256(f"{repo_id}\n{url}".encode()).hexdigest()[:32]
    return Path(cache_dir) / f"index-{tag}.sqlite"


class IndexCache:
    """The SQLite file (or private temporary database) holding the cached index; one
    connection shared by the process's threads under a lock (lookups are microseconds)."""

    def __init__(self, path: Path | None, repo_id: str):
        self.path = path
        self.repo_id = repo_id
        self.lock = threading.RLock()
        self._pack_names: dict[int, str] = {}
        self.db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            return self._setup(sqlite3.connect("", check_same_thread=False))
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return self._setup(self._open_file())
        except sqlite3.DatabaseError:
            # torn, of another schema or another repository: derived data, so start over
            self._remove_files()
            return self._setup(self._open_file())

    def _open_file(self) -> sqlite3.Connection:
        assert self.path is not None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # chunk ids and sizes: ours
        os.close(fd)
        db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL: a kill or a power cut loses at most the last transactions,
            # never the file's consistency; the cache is derived and catches up at the next sync
            db.execute("PRAGMA synchronous=NORMAL")
            self._check_meta(db)
        except BaseException:
            db.close()
            raise
        return db

    def _check_meta(self, db: sqlite3.Connection) -> None:
        db.executescript(_TABLES)
        meta = dict(db.execute("SELECT key, value FROM meta"))
        want = {"schema": str(SCHEMA), "repository": self.repo_id}
        if not meta:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", want.items())
        elif {k: meta.get(k) for k in want} != want:
            raise sqlite3.DatabaseError("the cache belongs to another repository or schema")

    def _setup(self, db: sqlite3.Connection) -> sqlite3.Connection:
        db.isolation_level = None  # transactions are explicit
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.execute("PRAGMA temp_store=FILE")
        db.executescript(_TABLES)
        return db

    def _remove_files(self) -> None:
        assert self.path is not None
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def pack_name(self, no: int) -> str:
        """The id of pack number NO (remembered: packs are few and numbers never reused in
        one cache file, so a lookup costs one B-tree search, not a join)."""
        name = self._pack_names.get(no)
        if name is None:
            rows = self.query("SELECT id FROM packs WHERE no = ?", (no,))
            if not rows:
                raise self.damaged(sqlite3.DatabaseError(f"chunk rows name no pack {no}"))
            if len(self._pack_names) >= PACK_NAMES:
                self._pack_names.clear()
            name = self._pack_names[no] = rows[0][0].hex()
        return name

    def query(self, sql: str, args=()) -> list[tuple]:
        """The rows of one read; a cache file found damaged is removed and named (it is
        rebuilt by the next run: it holds nothing the repository does not)."""
        with self.lock:
            try:
                return self.db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                raise self.damaged(exc) from None

    def damaged(self, exc: Exception) -> CacheDamaged:
        """Remove a cache file that fails to read; the error to raise."""
        where = self.path or "temporary index"
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        if self.path is not None:
            self._remove_files()
        return CacheDamaged(
            f"The local index cache {where} is damaged ({exc}); it was removed and is rebuilt "
            "from the repository's index files when you run the command again."
        )

    def reset(self) -> None:
        """Start from an empty cache file (after damage was found while syncing)."""
        with self.lock:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            if self.path is not None:
                self._remove_files()
            self._pack_names.clear()
            self.db = self._connect()

    @contextlib.contextmanager
    def write(self):
        """One write transaction (taken at once, so two processes syncing do not both read
        the recorded names and then both add the same file)."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.db.close()


class _Entries:
    """chunk id -> (pack, offset, length, raw length, flags): the copy a reader uses (a
    sound pack before an unsound one, an undamaged copy before a damaged one, else the
    first indexed)."""

    def __init__(self, index: Index):
        self.index = index

    def get(self, cid: str, default=None):
        try:
            key = bytes.fromhex(cid)
        except (ValueError, TypeError):
            return default
        cache = self.index.cache
        rows = cache.query(
            "SELECT pack, off, len, raw, flags FROM chunks WHERE cid = ?",
            (key,),
        )
        if not rows:
            return default
        if len(rows) > 1:
            damaged, unsound = self.index.damaged, self.index.unsound
            rows.sort(
                key=lambda r: (
                    (cid, cache.pack_name(r[0]), r[1]) in damaged,
                    cache.pack_name(r[0]) in unsound,
                    r[0],
                )
            )
        no, off, length, raw, flags = rows[0]
        return (cache.pack_name(no), off, length, raw, flags)

    def __getitem__(self, cid: str):
        loc = self.get(cid)
        if loc is None:
            raise KeyError(cid)
        return loc

    def __contains__(self, cid: str) -> bool:
        try:
            key = bytes.fromhex(cid)
        except (ValueError, TypeError):
            return False
        return bool(self.index.cache.query("SELECT 1 FROM chunks WHERE cid = ? LIMIT 1", (key,)))

    def __len__(self) -> int:
        """Distinct chunks indexed."""
        return self.index.cache.query("SELECT COUNT(DISTINCT cid) FROM chunks")[0][0]


class _Packs:
    """pack id -> size (PackSizes) or -> chunk rows (PackBlobs), read from the cache."""

    def __init__(self, index: Index, rows: bool):
        self.index = index
        self.rows = rows

    def _value(self, size: int, data: bytes):
        return _unpack_rows(data) if self.rows else size

    def get(self, pack: str, default=None):
        try:
            key = bytes.fromhex(pack)
        except (ValueError, TypeError):
            return default
        rows = self.index.cache.query("SELECT size, rows FROM packs WHERE id = ?", (key,))
        return default if not rows else self._value(*rows[0])

    def __getitem__(self, pack: str):
        got = self.get(pack)
        if got is None:
            raise KeyError(pack)
        return got

    def __contains__(self, pack: str) -> bool:
        try:
            key = bytes.fromhex(pack)
        except (ValueError, TypeError):
            return False
        return bool(self.index.cache.query("SELECT 1 FROM packs WHERE id = ?", (key,)))

    def __len__(self) -> int:
        return self.index.cache.query("SELECT COUNT(*) FROM packs")[0][0]

    def _scan(self, what: str) -> Iterator[tuple]:
        """Rows of the packs table in batches (no cursor is held across the caller's work, so
        the caller may look things up in between)."""
        last = -1
        while True:
            batch = self.index.cache.query(
                f"SELECT no, id, {what} FROM packs WHERE no > ? ORDER BY no LIMIT 512", (last,)
            )
            if not batch:
                return
            for row in batch:
                yield row[1:]
            last = batch[-1][0]

    def __iter__(self) -> Iterator[str]:
        return (pid.hex() for (pid, _size) in self._scan("size"))

    def keys(self) -> Iterator[str]:
        return iter(self)

    def items(self) -> Iterator[tuple[str, object]]:
        if self.rows:
            return ((pid.hex(), _unpack_rows(data)) for pid, data in self._scan("rows"))
        return ((pid.hex(), size) for pid, size in self._scan("size"))

    def values(self) -> Iterator:
        return (v for _k, v in self.items())


def _batches(cids: Iterable[str], size: int = 500) -> Iterator[list[bytes]]:
    """CIDS as lists of keys of at most SIZE (one statement each); malformed ids skipped."""
    part: list[bytes] = []
    for cid in cids:
        try:
            key = bytes.fromhex(cid)
        except (ValueError, TypeError):
            continue
        part.append(key)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


class _Referenced:
    """See Index.referenced."""

    def __init__(self, cache: IndexCache):
        self.cache = cache

    def add(self, cids: Iterable[str]) -> None:
        with self.cache.lock:
            self.cache.db.executemany(
                "INSERT OR IGNORE INTO temp.referenced VALUES (?)",
                ((k,) for part in _batches(cids) for k in part),
            )

    def among(self, cids: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for part in _batches(cids):
            rows = self.cache.query(
                f"SELECT cid FROM temp.referenced WHERE cid IN ({','.join('?' * len(part))})",
                part,
            )
            out.update(k.hex() for (k,) in rows)
        return out


class Index:
    """chunk id -> location, plus per-pack chunk lists and sizes (what prune and check need),
    looked up in the cache; see the module doc."""

    def __init__(self, cache: IndexCache | None = None):
        self.cache = cache if cache is not None else IndexCache(None, "")
        self.entries = _Entries(self)
        self.pack_sizes = _Packs(self, rows=False)
        self.pack_blobs = _Packs(self, rows=True)
        self.files: list[str] = []
        self.errors: list[str] = []
        self.unsound: set[str] = set()  # packs missing or of the wrong size when loaded
        # (chunk id, pack, offset) found damaged by a check: never the location a chunk
        # resolves to while another copy exists, and never reused by a writer
        self.damaged: set[tuple[str, str, int]] = set()
        # packs in no readable index file, indexed from their own headers because an index
        # file is damaged (a writer or `repair` writes them down)
        self.recovered: set[str] = set()
        self._failed: set[str] = set()  # index files found damaged by this load
        self.lock = threading.Lock()

    # -- adding ------------------------------------------------------------------------------

    @staticmethod
    def _insert_pack(db, pack_id: str, size: int, blobs, recovered: bool = False) -> None:
        rows = [tuple(b) for b in blobs]
        key = _key(pack_id)
        db.execute(
            "INSERT OR REPLACE INTO packs (no, id, size, rows, recovered) VALUES "
            "((SELECT no FROM packs WHERE id = ?), ?, ?, ?, ?)",
            (key, key, size, _pack_rows(rows), int(recovered)),
        )
        (no,) = db.execute("SELECT no FROM packs WHERE id = ?", (key,)).fetchone()
        db.executemany(
            "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
            ((_key(c), no, o, n, r, f) for c, o, n, r, f in rows),
        )

    @classmethod
    def _insert_packs(cls, db, packs) -> None:
        """Insert PACKS ((id, size, blobs)), their chunk rows in id order: B-tree inserts in
        order touch each page once, twice the rate of the order they come in."""
        chunk_rows = []
        for pack_id, size, blobs in packs:
            rows = [tuple(b) for b in blobs]
            key = _key(pack_id)
            db.execute(
                "INSERT OR REPLACE INTO packs (no, id, size, rows, recovered) VALUES "
                "((SELECT no FROM packs WHERE id = ?), ?, ?, ?, 0)",
                (key, key, size, _pack_rows(rows)),
            )
            (no,) = db.execute("SELECT no FROM packs WHERE id = ?", (key,)).fetchone()
            chunk_rows.extend((_key(c), no, o, n, r, f) for c, o, n, r, f in rows)
        chunk_rows.sort()
        db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?)", chunk_rows)

    def add_pack(self, pack_id: str, size: int, blobs: list) -> None:
        """Record a pack and its chunks (in the cache only: `record` also names its file)."""
        with self.cache.write() as db:
            self._insert_pack(db, pack_id, size, blobs)

    def record(self, names: Iterable[str], packs, damaged=()) -> None:
        """Add what this process just wrote as index files NAMES (PACKS: pack id -> (size,
        blobs), DAMAGED: marks), so the cache need not read them back."""
        marks = [(str(c), str(p), int(o)) for c, p, o in damaged]
        with self.cache.write() as db:
            self._insert_packs(db, ((p, size, blobs) for p, (size, blobs) in packs.items()))
            db.executemany("INSERT OR IGNORE INTO damaged VALUES (?, ?, ?)", marks)
            db.executemany("INSERT OR IGNORE INTO files VALUES (?)", ((n,) for n in names))
        with self.lock:
            self.damaged.update(marks)
        self.files.extend(names)

    def locations(self, cids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """chunk id -> (pack, offset) of the copy readers use (as entries.get resolves it),
        for many ids at a time."""
        found: dict[str, list[tuple]] = {}
        for part in _batches(cids):
            rows = self.cache.query(
                f"SELECT cid, pack, off FROM chunks WHERE cid IN ({','.join('?' * len(part))})",
                part,
            )
            for key, no, off in rows:
                found.setdefault(key.hex(), []).append((no, off))
        out = {}
        damaged, unsound, name = self.damaged, self.unsound, self.cache.pack_name
        for cid, rows in found.items():
            if len(rows) > 1:
                rows.sort(
                    key=lambda r: ((cid, name(r[0]), r[1]) in damaged, name(r[0]) in unsound, r[0])
                )
            out[cid] = (name(rows[0][0]), rows[0][1])
        return out

    @contextlib.contextmanager
    def referenced(self):
        """A set of chunk ids kept in a temporary table of the cache (on disk, so marking
        every chunk of every kept snapshot costs no memory): add(ids), among(ids)."""
        cache = self.cache
        with cache.lock:
            cache.db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS referenced (cid BLOB PRIMARY KEY) WITHOUT ROWID"
            )
            cache.db.execute("DELETE FROM temp.referenced")
        try:
            yield _Referenced(cache)
        finally:
            with cache.lock:
                cache.db.execute("DELETE FROM temp.referenced")

    def usable(self, cids: Iterable[str]) -> set[str]:
        """Those of CIDS with a copy a writer may reference (in a sound pack, not found
        damaged), looked up many at a time: one statement per chunk costs more than the
        search itself, and an unchanged file of a backup asks for all of its chunks."""
        out: set[str] = set()
        cache = self.cache
        damaged, unsound = self.damaged, self.unsound
        for part in _batches(set(cids)):
            rows = cache.query(
                f"SELECT cid, pack, off FROM chunks WHERE cid IN ({','.join('?' * len(part))})",
                part,
            )
            for key, no, off in rows:
                cid, pack = key.hex(), cache.pack_name(no)
                if pack not in unsound and (cid, pack, off) not in damaged:
                    out.add(cid)
        return out

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

    # -- loading -----------------------------------------------------------------------------

    def load(self, backend, keys: Keys, names=None, verify: bool = False, progress=None) -> None:
        """See _load; a cache file found damaged on the way is started again, once."""
        try:
            self._load(backend, keys, names, verify, progress)
        except (sqlite3.DatabaseError, CacheDamaged) as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            self.errors.clear()
            self._failed.clear()
            self.cache.reset()
            self._load(backend, keys, names, verify, progress)

    def _load(self, backend, keys: Keys, names=None, verify: bool = False, progress=None) -> None:
        """Bring the cache up to the index files NAMES (default: those listed), then note
        unsound packs against the listing of data/. A damaged or unreadable index file is
        noted, not fatal, so check() can name it and a new backup can still run (it re-stores
        what the lost file listed). With VERIFY every index file is read and authenticated
        again, cached or not (a check); PROGRESS(files done, files) as files are read."""
        names = sorted(backend.list("index") if names is None else names)
        stored = backend.list("data")
        bad = self._verify(backend, keys, names) if verify else set()
        # Read first: an unchanged cache (the usual case) takes no write lock, so readers
        # opening the repository at once do not wait on each other.
        cached = {n for (n,) in self.cache.query("SELECT name FROM files")}
        recovered = bool(self.cache.query("SELECT 1 FROM meta WHERE key = 'recovered'"))
        if cached - set(names) or bad & cached or recovered:
            with self.cache.write() as db:
                cached = {n for (n,) in db.execute("SELECT name FROM files")}
                if cached - set(names) or bad & cached:
                    # the index was replaced (prune, repair) or a cached file is now damaged
                    for table in ("files", "packs", "chunks", "damaged"):
                        db.execute(f"DELETE FROM {table}")
                    cached = set()
                else:  # recovered packs are redone below, from the current damage
                    db.execute(
                        "DELETE FROM chunks WHERE pack IN "
                        "(SELECT no FROM packs WHERE recovered = 1)"
                    )
                    db.execute("DELETE FROM packs WHERE recovered = 1")
                db.execute("DELETE FROM meta WHERE key = 'recovered'")
        todo = [n for n in names if n not in cached]
        for i, name in enumerate(todo):
            doc = None if name in bad else self._read_file(backend, keys, name)
            if doc is not None:
                with self.cache.write() as db:
                    if db.execute("SELECT 1 FROM files WHERE name = ?", (name,)).fetchone():
                        continue  # another process added it meanwhile
                    self._insert_packs(db, ((p["id"], p["size"], p["blobs"]) for p in doc["packs"]))
                    db.executemany(
                        "INSERT OR IGNORE INTO damaged VALUES (?, ?, ?)",
                        ((str(c), str(p), int(o)) for c, p, o in doc.get("damaged", ())),
                    )
                    db.execute("INSERT INTO files VALUES (?)", (name,))
            if progress is not None:
                progress(i + 1, len(todo))
        self.files = [n for n in names if n not in bad and n not in self._failed]
        self.damaged = set(self.cache.query("SELECT cid, pack, off FROM damaged"))
        self.unsound = {
            pack
            for pack, size in self.pack_sizes.items()
            if stored.get(f"data/{pack[:2]}/{pack}") != size
        }
        if self.errors:
            self._recover(backend, keys, stored)

    def _read_file(self, backend, keys: Keys, name: str):
        """The parsed index file NAME, or None (the problem noted in errors)."""
        try:
            blob = backend.read(name)
        except FileNotFoundError:
            return None
        return self._open(keys, name, blob)

    def _open(self, keys: Keys, name: str, blob: bytes):
        if content_id(blob) != name.rpartition("/")[2]:
            self._note(name, f"Index file {name} is damaged (its content does not match its name).")
            return None
        try:
            return open_json(keys, blob, AAD_INDEX, f"index file {name}")
        except RepoError as exc:
            self._note(name, str(exc))
            return None

    def _note(self, name: str, why: str) -> None:
        if name not in self._failed:
            self.errors.append(why)
            self._failed.add(name)

    def _verify(self, backend, keys: Keys, names: list[str]) -> set[str]:
        """The index files among NAMES that are damaged (each read and authenticated)."""
        for name in names:
            try:
                blob = backend.read(name)
            except FileNotFoundError:
                continue
            self._open(keys, name, blob)
        return set(self._failed)

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
            with self.cache.write() as db:
                self._insert_pack(db, pack, size, blobs, recovered=True)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('recovered', '1')")
            self.recovered.add(pack)


def write_index(backend, keys: Keys, packs, damaged=()) -> list[str]:
    """Write PACKS (pack id -> (size, blobs), or an iterable of (pack id, size, blobs), so a
    caller can stream them) as one or more index files, the first one also listing DAMAGED
    chunk locations ((chunk id, pack, offset)); their names."""
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

    triples = ((p, s, b) for p, (s, b) in packs.items()) if isinstance(packs, dict) else iter(packs)
    for pack_id, size, blobs in triples:
        batch.append({"id": pack_id, "size": size, "blobs": [list(b) for b in blobs]})
        count += len(blobs)
        if count >= ENTRIES_PER_FILE:
            flush()
    flush(force=True)
    return names
