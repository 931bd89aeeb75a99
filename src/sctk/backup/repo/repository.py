"""The Repository: open/init, snapshots, reading chunks back, and the entry points of the
engine (writer, restore, check, prune, copy)."""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard
from cryptography.exceptions import InvalidTag

from sctk.backup.repo import crypto, heap
from sctk.backup.repo.backend import open_backend
from sctk.backup.repo.errors import ChunkError, RepoError
from sctk.backup.repo.formats import (
    AAD_SNAPSHOT,
    AAD_VERIFIED,
    FLAG_ZSTD,
    FORMAT,
    VERSION,
    VERSIONS,
    content_id,
    open_json,
    pack_name,
    seal_json,
)
from sctk.backup.repo.index import Index
from sctk.backup.repo.locks import LockManager
from sctk.backup.repo.models import (
    CheckReport,
    CopyReport,
    FileEntry,
    PrunePolicy,
    PruneReport,
    RepairReport,
    RestoreStats,
    SnapshotInfo,
)
from sctk.backup.repo.remote import RemoteOptions
from sctk.backup.repo.threads import worker_count

if TYPE_CHECKING:
    from sctk.backup.repo.writer import SnapshotWriter

# Chunker parameters: pyfastcdc skips min_size before looking for a cut, so its real average
# is about min + avg = 512 KiB. Measured on the 1 GiB reference set (SQLite database with
# scattered page changes): 256/256 KiB re-stores 20 MiB after the 5% change where 512/512
# re-stored 30 MiB (restic: 21 MiB), for the same first-backup size and speed.
CHUNKER = {"min": 256 * 1024, "avg": 256 * 1024, "max": 4 * 1024 * 1024}
SNAPSHOT_CACHE = 4  # snapshot file lists kept in memory
READ_WINDOW = 16  # chunks being fetched/decrypted ahead of the consumer (~16 MiB)


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class Repository:
    """A deduplicated, encrypted, verifiable backup repository on a path or fsspec URL."""

    def __init__(self, backend, config: dict, keys: crypto.Keys):
        heap.settle()  # before the first chunk buffer: see heap.py
        self.backend = backend
        self.url = backend.url
        self.config = config
        self.keys = keys
        # loaded when first used (refresh_index): a backup whose repository is as its parent
        # left it needs none of it (a million chunks' index took seconds to load)
        self._index = Index()
        self._index_ready = False
        self._index_lock = threading.Lock()
        self.locks = LockManager(backend)
        # Snapshot files are immutable (named by their hash): their summaries are cached for
        # good, their file lists only for the few most recent (memory stays bounded).
        self._snapshot_cache: OrderedDict[str, dict] = OrderedDict()
        self._info_cache: dict[str, SnapshotInfo] = {}
        self._headers: dict[str, dict] = {}  # snapshot id -> header (small, immutable)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        self.index_files: frozenset[str] = frozenset()
        self._unreadable: dict[str, str] = {}  # snapshot id -> why its file cannot be read

    # -- init / open ---------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        url: str,
        passphrase: str,
        chunk_id: str = crypto.CHUNK_ID_DEFAULT,
        options: RemoteOptions | None = None,
        version: int = VERSION,
    ) -> Repository:
        """Create a new repository at URL; refuses an existing one or a non-empty directory.
        CHUNK_ID names the keyed hash for chunk ids (the default; "hmac-sha256" is what older
        repositories use, kept for tests and for compatibility); OPTIONS configure remote
        storage (see remote.py); VERSION 1 makes a repository as older sctk did (tests of
        reading and upgrading one)."""
        crypto.check_passphrase(passphrase)
        if version not in VERSIONS:
            raise RepoError(f"Unknown repository version {version}; choose one of {VERSIONS}.")
        if chunk_id not in crypto.CHUNK_ID_ALGORITHMS:
            raise RepoError(
                f"Unknown chunk id algorithm {chunk_id!r}; "
                f"choose one of {', '.join(crypto.CHUNK_ID_ALGORITHMS)}."
            )
        backend = open_backend(url, options)
        state = backend.probe()
        if state == "present":
            if backend.size("config") is not None:
                raise RepoError(f"A repository already exists at {url}; open it instead.")
            raise RepoError(
                f"{url} is a non-empty directory that is not a backup repository; "
                "choose an empty or new directory."
            )
        backend.mkdir_root()
        repo_id = secrets.token_hex(16)
        keys = crypto.Keys.generate(chunk_id)
        kdf = crypto.new_kdf()
        config = {
            "format": FORMAT,
            "version": version,
            "id": repo_id,
            "created": datetime.now(UTC).isoformat(),
            "chunker": dict(CHUNKER),
            "chunk_id": keys.chunk_id_algorithm,
            "compression": "zstd",
            "cipher": "aes-256-gcm",
            "kdf": kdf,
            "key": crypto.wrap_master(keys.master, passphrase, kdf, repo_id),
        }
        backend.write("config", json.dumps(config, indent=1).encode())
        repo = cls(backend, config, keys)
        return repo

    @classmethod
    def open(cls, url: str, passphrase: str, options: RemoteOptions | None = None) -> Repository:
        """Open the repository at URL; RepoError if missing, uninitialised or wrong passphrase
        (OPTIONS configure remote storage: see remote.py)."""
        backend = open_backend(url, options)
        state = backend.probe()
        if state == "missing":
            raise RepoError(f"No backup repository at {url}; create it with `sctk backup init`.")
        try:
            raw = backend.read("config")
        except FileNotFoundError:
            raise RepoError(
                f"{url} is not an initialised backup repository (no config file); "
                "create it with `sctk backup init` or check the location."
            ) from None
        try:
            config = json.loads(raw)
            if config.get("format") != FORMAT:
                raise ValueError
        except (ValueError, AttributeError):
            raise RepoError(
                f"The config file of {url} is not a backup repository config."
            ) from None
        if config.get("version") not in VERSIONS:
            raise RepoError(
                f"Repository {url} has format version {config.get('version')}; "
                f"this sctk reads versions {', '.join(map(str, VERSIONS))}: upgrade sctk."
            )
        # Repositories made before the id algorithm was recorded used HMAC-SHA256.
        algorithm = config.get("chunk_id", crypto.CHUNK_ID_HMAC_SHA256)
        if algorithm not in crypto.CHUNK_ID_ALGORITHMS:
            raise RepoError(
                f"Repository {url} names chunks with {algorithm!r}, which this sctk does not "
                "know; upgrade sctk to open it."
            )
        master = crypto.unwrap_master(config["key"], passphrase, config["kdf"], config["id"], url)
        return cls(backend, config, crypto.Keys(master, algorithm))

    def change_passphrase(self, new_passphrase: str) -> None:
        """Wrap the master key with NEW_PASSPHRASE (fresh argon2id parameters, so an older
        repository's KDF is upgraded too); the data, and its keys, stay as they are."""
        crypto.check_passphrase(new_passphrase)
        with self.lock(exclusive=True):
            kdf = crypto.new_kdf()
            config = dict(self.config)
            config["kdf"] = kdf
            config["key"] = crypto.wrap_master(self.keys.master, new_passphrase, kdf, config["id"])
            self.backend.write("config", json.dumps(config, indent=1).encode())
            self.config = config

    @property
    def index(self) -> Index:
        """The chunk index, loaded at its first use."""
        if not self._index_ready:
            with self._index_lock:
                if not self._index_ready:
                    self.refresh_index()
        return self._index

    @index.setter
    def index(self, index: Index) -> None:
        self._index = index
        self._index_ready = True

    @property
    def index_loaded(self) -> bool:
        return self._index_ready

    def refresh_index(self, force: bool = False) -> None:
        """(Re)load the index when index files were added or removed by another process
        (FORCE: also when packs may have been lost since)."""
        names = frozenset(self.backend.list("index"))
        if names == self.index_files and not force:
            self._index_ready = True
            return
        index = Index()
        index.load(self.backend, self.keys)
        self._index.close()
        self.index = index
        self.index_files = names

    def close(self) -> None:
        self._index.close()  # its local sorted file
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.backend.close()  # a remote backend's connections

    def __repr__(self) -> str:
        return f"Repository({self.url!r})"

    # -- locks, writer -------------------------------------------------------------------------

    def lock(self, exclusive: bool = True):
        """A context manager holding the repository lock (re-entrant within this object)."""
        return self.locks.lock(exclusive)

    def writer(
        self,
        progress: Callable[[int], None] | None = None,
        threads: int | None = None,
        processes: bool | None = None,
    ) -> SnapshotWriter:
        """A context manager writing one snapshot (exclusive lock while it runs). PROCESSES:
        whether worker processes seal small files (None: once there are many of them)."""
        from sctk.backup.repo.writer import SnapshotWriter  # not needed to restore: lazy

        return SnapshotWriter(self, progress=progress, threads=threads, processes=processes)

    # -- snapshots -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The repository's format version (1: snapshot files hold their list whole)."""
        return int(self.config.get("version", 1))

    def _snapshot_doc(self, snap_id: str) -> dict:
        return self.snapshot_doc(snap_id)

    def snapshot_doc(self, snap_id: str, remember: bool = True) -> dict:
        """The header of snapshot SNAP_ID with its whole file list under "files" (small
        snapshots and tests; passes over many files use snapshot_files())."""
        header = self.snapshot_header(snap_id)
        if header["format"] == 1:
            return self._v1_doc(snap_id, remember)
        return {**header, "files": list(self.snapshot_files(snap_id))}

    def _v1_doc(self, snap_id: str, remember: bool = True) -> dict:
        """A version-1 snapshot document (REMEMBER=False: a pass over every snapshot that
        needs each once; not kept in the cache of recent file lists)."""
        doc = self._snapshot_cache.get(snap_id)
        if doc is None:
            name = f"snapshots/{snap_id}"
            try:
                blob = self.backend.read(name)
            except FileNotFoundError:
                raise RepoError(f"Snapshot {snap_id[:12]} was removed from {self.url}.") from None
            doc = open_json(self.keys, blob, AAD_SNAPSHOT, f"snapshot file {name}")
            if remember:
                self._remember(snap_id, doc)
        else:
            self._snapshot_cache.move_to_end(snap_id)
        return doc

    def snapshot_header(self, snap_id: str, size: int | None = None) -> dict:
        """What a listing needs of snapshot SNAP_ID, without its file list ("files" is the
        count, "format" the snapshot file's version); read once, then cached."""
        header = self._headers.get(snap_id)
        if header is not None:
            return header
        from sctk.backup.repo.filelist import read_header

        name = f"snapshots/{snap_id}"
        try:
            if size is None:
                size = self.backend.size(name)
                if size is None:
                    raise FileNotFoundError(name)
            header = read_header(self.backend, self.keys, name, size)
            if header is None:
                doc = self._v1_doc(snap_id, remember=False)
                header = {k: v for k, v in doc.items() if k != "files"}
                header["files"] = len(doc["files"])
                header["format"] = 1
        except FileNotFoundError:
            raise RepoError(f"Snapshot {snap_id[:12]} was removed from {self.url}.") from None
        self._headers[snap_id] = header
        self._info_cache[snap_id] = self._info_from_doc(snap_id, header)
        return header

    def snapshot_files(self, snap_id: str) -> Iterator[dict]:
        """The file entries of snapshot SNAP_ID in path order, a piece at a time (a
        version-1 file is read whole)."""
        header = self.snapshot_header(snap_id)
        if header["format"] == 1:
            files = self._v1_doc(snap_id, remember=False)["files"]
            paths = [f["path"] for f in files]
            if any(a >= b for a, b in zip(paths, paths[1:], strict=False)):
                files = sorted(files, key=lambda f: f["path"])  # an older writer's order
            return iter(files)
        from sctk.backup.repo.filelist import iter_docs

        return self._guard(
            snap_id, iter_docs(self.backend, self.keys, f"snapshots/{snap_id}", header)
        )

    def snapshot_piece_blob(self, snap_id: str, header: dict, i: int) -> bytes:
        """The sealed bytes of piece I of a version-2 snapshot's list (HEADER its header):
        for a pass that tells repeated pieces apart by their bytes (check's samepieces)."""
        off, length = header["pieces"][i][:2]
        try:
            return self.backend.read_range(f"snapshots/{snap_id}", off, length)
        except FileNotFoundError:
            raise RepoError(f"Snapshot {snap_id[:12]} was removed from {self.url}.") from None

    def _guard(self, snap_id: str, docs: Iterator[dict]) -> Iterator[dict]:
        try:
            yield from docs
        except FileNotFoundError:
            raise RepoError(f"Snapshot {snap_id[:12]} was removed from {self.url}.") from None

    def snapshot_lookup(self, snap_id: str):
        """A SortedLookup of snapshot SNAP_ID's entries by path (one piece in memory)."""
        from sctk.backup.repo.filelist import SortedLookup, read_piece

        header = self.snapshot_header(snap_id)
        if header["format"] == 1:
            files = list(self.snapshot_files(snap_id))
            bounds = [(files[0]["path"], files[-1]["path"])] if files else []
            return SortedLookup(bounds, lambda _i: files)
        name = f"snapshots/{snap_id}"
        return SortedLookup(
            [(p[2], p[3]) for p in header["pieces"]],
            lambda i: read_piece(self.backend, self.keys, name, header, i),
        )

    def drop_file_list(self, snap_id: str) -> None:
        """Let go of a cached snapshot document (its summary stays cached): a restore that
        has made its own entries from it need not hold both (~2 KiB a file)."""
        self._snapshot_cache.pop(snap_id, None)

    def forget_cached(self, snap_id: str) -> None:
        """Drop what is cached of a snapshot file that was deleted or replaced."""
        self._snapshot_cache.pop(snap_id, None)
        self._info_cache.pop(snap_id, None)
        self._headers.pop(snap_id, None)

    def committed(self, snap_id: str, doc: dict) -> SnapshotInfo:
        """Note a snapshot this process has just written: its summary, known without reading
        the file back."""
        info = self._info_cache[snap_id] = self._info_from_doc(snap_id, doc)
        return info

    def _remember(self, snap_id: str, doc: dict) -> None:
        self._snapshot_cache[snap_id] = doc
        while len(self._snapshot_cache) > SNAPSHOT_CACHE:
            self._snapshot_cache.popitem(last=False)
        self._info_cache[snap_id] = self._info_from_doc(snap_id, doc)

    def _info_from_doc(self, snap_id: str, doc: dict) -> SnapshotInfo:
        files = doc["files"]
        return SnapshotInfo(
            id=snap_id,
            time=_parse_time(doc["time"]),
            label=doc.get("label", ""),
            host=doc.get("host", ""),
            manifest=doc.get("manifest", {}),
            files=files if isinstance(files, int) else len(files),
            size=int(doc.get("size", 0)),
            added_bytes=int(doc.get("added_bytes", 0)),
        )

    def snapshot_sizes(self) -> dict[str, int]:
        return {n.rpartition("/")[2]: size for n, size in self.backend.list("snapshots").items()}

    def snapshot_ids(self) -> list[str]:
        return sorted(self.snapshot_sizes())

    def snapshots(self) -> list[SnapshotInfo]:
        """Every readable snapshot, oldest first, from the headers alone (a damaged snapshot
        file is left out and named by unreadable_snapshots(); a version-1 file that an
        interrupted upgrade has already rewritten is left out for its new copy)."""
        infos = []
        unreadable: dict[str, str] = {}
        for snap_id, size in sorted(self.snapshot_sizes().items()):
            info = self._info_cache.get(snap_id)
            if info is None or snap_id not in self._headers:
                try:
                    self.snapshot_header(snap_id, size)
                except RepoError as exc:
                    unreadable[snap_id] = str(exc)  # the others stay usable
                    continue
                info = self._info_cache[snap_id]
            infos.append(info)
        replaced = {self._headers[i.id].get("replaces") for i in infos}
        self._unreadable = unreadable
        infos = [i for i in infos if i.id not in replaced]
        return sorted(infos, key=lambda s: (s.time, s.id))

    def unreadable_snapshots(self) -> dict[str, str]:
        """Snapshot files that cannot be read (damaged or removed while listing): id -> why."""
        self.snapshots()
        return dict(self._unreadable)

    def no_snapshot_error(self) -> RepoError:
        """Why no snapshot can be used: damaged snapshot files named, else none taken yet."""
        if self._unreadable:
            names = ", ".join(f"snapshots/{i}" for i in sorted(self._unreadable)[:3])
            return RepoError(
                f"Repository {self.url} has no readable snapshot: {len(self._unreadable)} "
                f"snapshot file(s) are damaged ({names}); restore them from a copy of the "
                "repository, or forget them and take a new backup."
            )
        return RepoError(f"Repository {self.url} has no snapshots yet; take a backup first.")

    def find_snapshot(self, ref: str) -> SnapshotInfo:
        """A snapshot by full id, unique prefix (>= 4 hex digits) or 'latest'."""
        snap_id = self._resolve(ref)
        return self._info_from_doc(snap_id, self.snapshot_header(snap_id))

    def _resolve(self, ref: str) -> str:
        """The id REF names (full id, unique prefix or 'latest'), without reading the file."""
        ref = (ref or "").strip().lower()
        if ref == "latest":
            snaps = self.snapshots()
            if not snaps:
                raise self.no_snapshot_error()
            return snaps[-1].id
        if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
            raise RepoError(
                f"Snapshot id {ref!r} is not valid; "
                "give at least 4 hex digits of an id, or 'latest'."
            )
        matches = [i for i in self.snapshot_ids() if i.startswith(ref)]
        if not matches:
            raise RepoError(
                f"No snapshot {ref} in repository {self.url}; list the snapshots to find its id."
            )
        if len(matches) > 1:
            raise RepoError(
                f"Snapshot prefix {ref} matches {len(matches)} snapshots; give more digits."
            )
        return matches[0]

    def files(
        self, snapshot_id: str, include: Callable[[str], bool] | None = None
    ) -> list[FileEntry]:
        """The files of a snapshot (id or prefix), sorted by path (those INCLUDE accepts)."""
        return list(self.iter_files(self.find_snapshot(snapshot_id).id, include))

    def iter_files(
        self, snap_id: str, include: Callable[[str], bool] | None = None
    ) -> Iterator[FileEntry]:
        """files() of snapshot SNAP_ID (a full id) streamed a piece at a time."""
        for f in self.snapshot_files(snap_id):
            if include is None or include(f["path"]):
                yield FileEntry.of(f)

    def sha256_of(self, snap_id: str, paths: Iterable[str]) -> dict[str, str]:
        """The SHA-256 of each of PATHS that snapshot SNAP_ID holds (looked up in path order:
        each piece of its list is read at most once)."""
        lookup = self.snapshot_lookup(snap_id)
        out = {}
        for p in sorted(set(paths)):
            f = lookup.get(p)
            if f is not None:
                out[p] = f["sha256"]
        return out

    def _file(self, snapshot_id: str, path: str) -> tuple[SnapshotInfo, FileEntry]:
        info = self.find_snapshot(snapshot_id)
        path = path.strip().lstrip("/")
        f = self.snapshot_lookup(info.id).get(path)
        if f is not None:
            return info, FileEntry.of(f)
        raise RepoError(
            f"{path} is not in snapshot {info.id[:12]}; list the snapshot's files to find the path."
        )

    # -- reading chunks ------------------------------------------------------------------------

    def pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                n = worker_count()
                self._pool = ThreadPoolExecutor(n, thread_name_prefix="sctk-restore")
            return self._pool

    def load_chunk(self, cid: str) -> bytes:
        """The plaintext of a chunk, authenticated; ChunkError if it cannot be read back."""
        loc = self.index.entries.get(cid)
        if loc is None:
            raise ChunkError(cid, None, f"chunk {cid[:12]} is in no index")
        pack, off, length, raw_len, flags = loc
        name = pack_name(pack)
        try:
            blob = self.backend.read_range(name, off, length)
        except FileNotFoundError:
            raise ChunkError(cid, pack, f"pack {name} is missing") from None
        if len(blob) != length:
            raise ChunkError(cid, pack, f"pack {name} is truncated")
        return self.open_chunk(cid, pack, blob, raw_len, flags)

    def open_chunk(self, cid: str, pack: str, blob, raw_len: int, flags: int) -> bytes:
        try:
            plain = self.keys.open(blob, cid.encode())
        except (InvalidTag, ValueError):
            raise ChunkError(
                cid,
                pack,
                f"pack {pack_name(pack)} is damaged (chunk {cid[:12]} fails authentication)",
            ) from None
        if flags & FLAG_ZSTD:
            dctx = getattr(self._local, "dctx", None)
            if dctx is None:
                dctx = self._local.dctx = zstandard.ZstdDecompressor()
            try:
                plain = dctx.decompress(plain, max_output_size=raw_len)
            except zstandard.ZstdError:
                raise ChunkError(
                    cid, pack, f"pack {pack_name(pack)} holds an undecodable chunk {cid[:12]}"
                ) from None
        if len(plain) != raw_len:
            raise ChunkError(cid, pack, f"chunk {cid[:12]} in {pack_name(pack)} has a wrong size")
        return plain

    def safe_load(self, cid: str):
        try:
            return self.load_chunk(cid)
        except ChunkError as exc:
            return exc
        except RepoError as exc:
            return ChunkError(cid, None, str(exc).rstrip("."))

    def iter_chunks(self, cids: Iterable[str], window: int = READ_WINDOW) -> Iterator:
        """Chunks' plaintexts (or ChunkError values) in order, fetched and decrypted ahead."""
        pool = self.pool()
        pending: deque = deque()
        for cid in cids:
            pending.append(pool.submit(self.safe_load, cid))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def read_file(self, snapshot_id: str, path: str) -> Iterator[bytes]:
        """The bytes of one file of a snapshot, authenticated; its SHA-256 is checked at the end
        (RepoError on damage or mismatch; RepoError at once if PATH is not in the snapshot)."""
        info, entry = self._file(snapshot_id, path)
        return self._read_entry(info, entry)

    def _read_entry(self, info: SnapshotInfo, entry: FileEntry) -> Iterator[bytes]:
        import hashlib

        # Taken when reading starts, so a generator never iterated holds no lock.
        self.locks.acquire(False)
        try:
            sha = hashlib.sha256()
            for data in self.iter_chunks(entry.chunks):
                if isinstance(data, ChunkError):
                    raise RepoError(
                        f"Cannot read {entry.path} from snapshot {info.id[:12]}: {data.reason}; "
                        "nothing from the damaged data was restored."
                    )
                sha.update(data)
                yield data
            if sha.hexdigest() != entry.sha256:
                raise RepoError(
                    f"{entry.path} in snapshot {info.id[:12]} does not match its SHA-256; "
                    "the repository is damaged."
                )
        finally:
            self.locks.release()

    def restore(
        self,
        snapshot_id: str,
        target: Path,
        include: Callable[[str], bool] | None = None,
        progress: Callable[[int], None] | None = None,
        partial: bool = False,
    ) -> RestoreStats:
        """Write a snapshot's files under TARGET, verified; all or nothing, or with PARTIAL
        every intact file, the damaged ones named (see restore.py)."""
        from sctk.backup.repo.restore import restore

        return restore(self, snapshot_id, Path(target), include, progress, partial)

    # -- verification markers ------------------------------------------------------------------

    def mark_verified(self, snapshot_id: str, report: dict) -> None:
        """Record that a snapshot was verified (a write-once marker file)."""
        info = self.find_snapshot(snapshot_id)
        doc = {"snapshot": info.id, "time": datetime.now(UTC).isoformat(), "report": report}
        try:
            blob = seal_json(self.keys, doc, AAD_VERIFIED)
        except TypeError as exc:
            raise RepoError(f"The verification report is not JSON data: {exc}.") from None
        self.backend.write(f"verified/{content_id(blob)}", blob)

    def _verified_files(self) -> dict[str, tuple[str, datetime]]:
        out = {}
        for name in self.backend.list("verified"):
            try:
                doc = open_json(self.keys, self.backend.read(name), AAD_VERIFIED, name)
            except (RepoError, FileNotFoundError):
                continue
            out[name] = (doc["snapshot"], _parse_time(doc["time"]))
        return out

    def verified(self) -> dict[str, datetime]:
        """Snapshot id -> last time it was verified."""
        out: dict[str, datetime] = {}
        for snap, when in self._verified_files().values():
            if snap not in out or when > out[snap]:
                out[snap] = when
        return out

    def verifications(self) -> dict[str, tuple[datetime, dict]]:
        """Snapshot id -> (time, report) of its newest verification marker."""
        out: dict[str, tuple[datetime, dict]] = {}
        for name in self.backend.list("verified"):
            try:
                doc = open_json(self.keys, self.backend.read(name), AAD_VERIFIED, name)
            except (RepoError, FileNotFoundError):
                continue
            when = _parse_time(doc["time"])
            if doc["snapshot"] not in out or when > out[doc["snapshot"]][0]:
                out[doc["snapshot"]] = (when, doc.get("report") or {})
        return out

    # -- forget, retention, prune, check, copy -------------------------------------------------

    def forget(self, snapshot_ids: list[str]) -> None:
        """Remove snapshots (their data goes at the next prune)."""
        with self.locks.lock(True):
            ids = [self._resolve(s) for s in snapshot_ids]  # a damaged one can go too
            markers = self._verified_files()
            for snap in ids:
                self.backend.delete(f"snapshots/{snap}")
                self.forget_cached(snap)
                for name, (marked, _) in markers.items():
                    if marked == snap:
                        self.backend.delete(name)

    def newest_verified(self) -> str | None:
        verified = self.verified()
        snaps = [s for s in self.snapshots() if s.id in verified]
        return snaps[-1].id if snaps else None

    def plan_retention(
        self, policy: PrunePolicy
    ) -> tuple[list[tuple[SnapshotInfo, str]], list[SnapshotInfo]]:
        """(kept with the reason, removed) under POLICY; the newest verified is always kept."""
        from sctk.backup.repo.retention import plan

        return plan(self.snapshots(), policy, self.newest_verified())

    def prune(
        self,
        policy: PrunePolicy | None,
        dry_run: bool = False,
        plan: Callable[[list[SnapshotInfo]], tuple[list, list]] | None = None,
        phase: Callable[[str, int, int | None], None] | None = None,
    ) -> PruneReport:
        """Forget by POLICY, then collect unreferenced chunks (see prune.py). PLAN, when
        given, decides instead of POLICY: snapshots -> (kept with reasons, removed).
        PHASE(name, done, total) hears the progress of each phase."""
        from sctk.backup.repo.prune import prune

        return prune(self, policy, dry_run, plan, phase)

    def check(
        self,
        read_data: bool = False,
        snapshot_id: str | None = None,
        progress: Callable[[int], None] | None = None,
        phase: Callable[[str, int, int | None], None] | None = None,
        processes: bool | None = None,
    ) -> CheckReport:
        """Structure check, and with READ_DATA every chunk and file verified (see check.py);
        PHASE(name, done, total) hears the progress of each phase. PROCESSES: whether files
        of one chunk are read by worker processes (checkprocs.py): None from the start where
        the snapshots hold 2,048 files or more (one per core where most are small, else
        one), True one per core from the first, False never."""
        from sctk.backup.repo.check import check

        return check(self, read_data, snapshot_id, progress, phase, processes)

    def upgrade(self, phase: Callable[[str, int, int | None], None] | None = None):
        """Move a version-1 repository to the current format (snapshot files rewritten with
        their lists in pieces; see upgrade.py); an UpgradeReport. Safe to rerun."""
        from sctk.backup.repo.upgrade import upgrade

        return upgrade(self, phase)

    def repair_index(self, verify: bool = False) -> int:
        """Rebuild the index from the pack headers (after an index file was lost or damaged);
        with VERIFY, every chunk is authenticated and damaged ones are left out, so the next
        backup stores them again. The number of packs indexed."""
        from sctk.backup.repo.repair import repair_index

        return repair_index(self, verify)

    def repair(self, read_data: bool = False) -> RepairReport:
        """Rebuild the index from the packs (damaged chunks left out, with READ_DATA every
        chunk authenticated first), remove partial files, report what is lost (repair.py)."""
        from sctk.backup.repo.repair import repair

        return repair(self, read_data)

    def copy_to(
        self,
        dest_url: str,
        progress: Callable[[int], None] | None = None,
        options: RemoteOptions | None = None,
    ) -> CopyReport:
        """Mirror this repository's files into DEST_URL (see copy.py)."""
        from sctk.backup.repo.copy import copy_to

        return copy_to(self, dest_url, progress, options)
