"""Writing a snapshot: read -> cut (FastCDC) -> hash -> compress -> encrypt -> pack, pipelined.

The calling thread reads files in large blocks, cuts them into chunks and computes each
file's SHA-256; a small thread pool computes chunk ids, compresses (zstd, at a level learnt
per file: see compression.py) and encrypts (AES-256-GCM) — all of which release the GIL on
large buffers; one more thread writes packs.
A window bounded in bytes limits the chunks in flight, so memory stays bounded whatever the
size of the data.

Chunks are views of the read blocks, never copies; a block is reused once every chunk cut
from it has been processed (so its pages are not faulted in again for every block).
pyfastcdc's own stream chunker shifts its buffer (up to the maximum chunk size) after every
chunk while holding the GIL, which cost more than all the hashing.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path, PurePosixPath

from pyfastcdc import FastCDC

from sctk.backup.repo import leftovers
from sctk.backup.repo.compression import SMALL_FILES, Compressors, FilePolicy
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import AAD_SNAPSHOT, content_id, pack_name, seal_json
from sctk.backup.repo.index import write_index
from sctk.backup.repo.models import FileEntry, SnapshotInfo
from sctk.backup.repo.packs import PackWriter
from sctk.backup.repo.threads import worker_count

# Chunks in flight: enough to keep every worker busy (more bought no speed, 8 MiB cost 10 MiB
# of peak memory more on two data sets).
WINDOW_BYTES = 4 * 1024 * 1024
READ_BLOCK = 4 * 1024 * 1024  # bytes read at once from a large file (or stream)
FREE_BLOCKS = 3  # read blocks kept for reuse


def check_path(path: str) -> str:
    """A snapshot path: relative, posix, without '..' or empty parts."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise RepoError(
            f"Snapshot path {path!r} is not a plain relative path; "
            "use forward slashes without '..' or a leading '/'."
        )
    return str(p)


def _file_doc(e: FileEntry, st: list | None) -> dict:
    doc = {"path": e.path, "mode": e.mode, "size": e.size, "sha256": e.sha256, "chunks": e.chunks}
    if st is not None:
        doc["st"] = st  # size, mtime_ns, ctime_ns, inode: lets the next backup skip the file
    return doc


# The keys _file_doc writes for a file with a stat: a parent's entry with exactly these is
# put in the new snapshot as it is (no new dict per unchanged file).
_DOC_KEYS = frozenset(("path", "mode", "size", "sha256", "chunks", "st"))
_PATH = itemgetter("path")


class _IterReader:
    """A readinto() view of an iterable of byte strings, for the stream chunker."""

    def __init__(self, chunks: Iterable[bytes]):
        self.it = iter(chunks)
        self.pending = memoryview(b"")

    def readinto(self, buf) -> int:
        while not self.pending:
            try:
                nxt = next(self.it)
            except StopIteration:
                return 0
            self.pending = memoryview(nxt).cast("B")
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


class _Block:
    """A read buffer whose chunks are in flight; reused when none is (and it is cut)."""

    __slots__ = ("buf", "pending", "cut")

    def __init__(self, size: int):
        self.buf = bytearray(size)
        self.pending = 0
        self.cut = False


class _File:
    """A file of the snapshot being written. SHA (the running SHA-256) exists only while its
    bytes are read; ST is its stat key for the next backup; DOC is the parent's entry when
    the file is unchanged (written into the new snapshot as it is)."""

    __slots__ = ("entry", "pending", "reading", "sha", "policy", "st", "doc")

    def __init__(self, path: str, mode: int):
        self.entry = FileEntry(path=path, mode=mode, size=0, sha256="", chunks=[])
        self.pending = 0
        self.reading = True
        self.sha = None
        self.policy = SMALL_FILES  # how its chunks are compressed (see compression.py)
        self.st: list | None = None
        self.doc: dict | None = None


class SnapshotWriter:
    """Adds files to a new snapshot; leaving the `with` block without commit() leaves none."""

    def __init__(
        self, repo, progress: Callable[[int], None] | None = None, threads: int | None = None
    ):
        self.repo = repo
        self.keys = repo.keys
        self.progress = progress
        self.threads = threads or worker_count()
        self.read_bytes = 0
        self.skipped_files = 0  # unchanged since the parent snapshot, not read again
        self.committed = False
        self._entries: dict[str, _File] = {}
        self._parent: list[dict] = []  # the parent's files with a stat, sorted by path
        self._parent_at = 0  # where the last lookup ended: the walk goes in path order
        self._added: set[str] = set()
        self._written: dict[str, tuple[int, list]] = {}
        self._written_lock = threading.Lock()
        self._pack_lock = threading.Lock()
        self._inflight: deque = deque()
        self._inflight_bytes = 0
        self._free_blocks: list[_Block] = []
        self._local = threading.local()
        cfg = repo.config["chunker"]
        self._cdc = FastCDC(
            cfg["avg"], min_size=cfg["min"], max_size=cfg["max"], seed=self.keys.chunker_seed
        )
        self._max_chunk = cfg["max"]
        self._pool: ThreadPoolExecutor | None = None
        self._packs: PackWriter | None = None
        # packs a dead writer left in no index, taken over (see leftovers.py)
        self._adopted: dict[str, tuple[int, list]] = {}
        self._adopted_chunks: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SnapshotWriter:
        self.repo._locks.acquire(True)
        try:
            self.repo._refresh_index(force=True)
            self._take_over_leftovers()
            self._parent = self._parent_files()
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sctk-backup")
            self._packs = PackWriter(self.repo.backend, self.keys, self._on_pack_written)
        except BaseException:
            self.repo._locks.release()
            raise
        return self

    def _take_over_leftovers(self) -> None:
        """Delete the partial files of a dead writer and adopt its finished packs (we hold
        the exclusive lock: no live writer owns them)."""
        found = leftovers.scan(self.repo)
        leftovers.remove_junk(self.repo, found)
        self._adopted = found.packs
        self._adopted_chunks = {b[0] for _, blobs in found.packs.values() for b in blobs}

    def _parent_files(self) -> list[dict]:
        """The files of the newest snapshot (the parent) sorted by path, for skipping unchanged
        ones; none when that snapshot cannot be read (everything is then read again).

        Looked up by bisection, and first at the place after the previous hit (add_tree walks
        in path order): no second map of a million paths beside the parent's own list."""
        try:
            snaps = self.repo.snapshots()
            if not snaps:
                return []
            files = self.repo._snapshot_doc(snaps[-1].id)["files"]
        except RepoError:
            return []
        paths = map(_PATH, files)
        prev = next(paths, None)
        for p in paths:  # commit() writes them sorted; an older writer may not have
            if p <= prev:
                return sorted((f for f in files if "st" in f), key=_PATH)
            prev = p
        return files

    def _parent_entry(self, path: str) -> dict | None:
        """The parent's entry for PATH (with a stat), or None."""
        files = self._parent
        i = self._parent_at
        if i >= len(files) or files[i]["path"] != path:
            i = bisect.bisect_left(files, path, key=_PATH)
            if i >= len(files) or files[i]["path"] != path:
                self._parent_at = i
                return None
        self._parent_at = i + 1
        prev = files[i]
        return prev if "st" in prev else None

    def __exit__(self, *exc) -> None:
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if self._packs is not None:
                self._packs.close()
        finally:
            self.repo._locks.release()

    def _on_pack_written(self, pack_id: str, size: int, blobs: list) -> None:
        with self._written_lock:
            self._written[pack_id] = (size, blobs)

    # -- the pipeline --------------------------------------------------------------------------

    def _known(self, cid: str) -> bool:
        """Stored already (in a sound pack) or by this writer: no need to store it again."""
        if cid in self._added or cid in self._adopted_chunks:
            return True
        index = self.repo.index
        loc = index.entries.get(cid)
        # A chunk whose pack was lost or truncated, or that a check found damaged, is stored
        # again, so new backups are whole (and older ones that share it heal).
        return (
            loc is not None
            and loc[0] not in index.unsound
            and (cid, loc[0], loc[1]) not in index.damaged
        )

    def _all_known(self, cids: list[str]) -> bool:
        """_known() of every chunk of an unchanged file. With no unsound pack and no damaged
        chunk in the index (the usual case), an indexed chunk is known: one dict lookup."""
        index = self.repo.index
        if index.unsound or index.damaged:
            return all(self._known(c) for c in cids)
        entries = index.entries
        for c in cids:
            if c not in entries and c not in self._added and c not in self._adopted_chunks:
                return False
        return True

    def _process(self, data, policy: FilePolicy, trial: bool) -> str:
        """Worker: chunk id, then (unless known) compress, encrypt and append to the pack.

        Chunks go into packs in the order they finish: their order in a pack does not matter,
        and appending here keeps the pack writes off the reading thread."""
        try:
            cid = self.keys.chunk_id(data)
            # A trial runs even on a chunk stored already: the file's other chunks wait for it.
            if self._known(cid) and not trial:
                return cid
            local = self._local
            comp = getattr(local, "comp", None)
            if comp is None:
                comp = local.comp = Compressors()
                local.sealed = bytearray()
            payload, flags = comp.compress(data, policy, trial)
        finally:
            if trial:
                policy.trial_done()
        if not self._known(cid):
            self._store(cid, len(data), payload, flags)
        return cid

    def _store(self, cid: str, raw_len: int, payload, flags: int) -> None:
        local = self._local
        nonce = os.urandom(12)
        # Sealed into this thread's reusable buffer: the pack writer copies it (appends it to
        # the pack file) before add() returns, so no fresh 0.5 MiB buffer per chunk.
        need = len(payload) + 16
        if len(local.sealed) < need:
            local.sealed = bytearray(max(need, 2 * len(local.sealed)))
        sealed = memoryview(local.sealed)[:need]
        self.keys.aead.encrypt_into(nonce, payload, cid.encode(), sealed)
        with self._pack_lock:
            if not self._known(cid):  # another worker may have stored the same chunk
                assert self._packs is not None
                self._packs.add(cid, flags, raw_len, (nonce, sealed))
                self._added.add(cid)

    def _cut_blocks(self, readinto: Callable) -> Iterator[tuple[memoryview, _Block]]:
        """The chunks of a stream (READINTO(view) -> bytes read, 0 at the end) as views of
        large blocks, cut exactly where pyfastcdc's stream chunker cuts: a cut is taken only
        with at least max_size bytes after the chunk's start in the buffer (or at the end),
        so what follows the block cannot move it; the rest is carried to the next block.
        Each chunk comes with its block, which is reused once its chunks are processed."""
        max_size = self._max_chunk
        carry = memoryview(b"")
        prev: _Block | None = None
        eof = False
        while not eof:
            block = self._take_block()
            view = memoryview(block.buf)
            view[: len(carry)] = carry
            filled = len(carry)
            carry = memoryview(b"")
            if prev is not None:
                self._cut_done(prev)
            size = min(len(view), filled + READ_BLOCK)
            while filled < size:
                n = readinto(view[filled:size])
                if not n:
                    eof = True
                    break
                filled += n
            data = view[:filled]
            for c in self._cdc.cut_buf(data):
                if not eof and filled - c.offset < max_size:
                    carry = data[c.offset :]
                    break
                yield c.data, block
            prev = block
        if prev is not None:
            self._cut_done(prev)

    def _take_block(self) -> _Block:
        if self._free_blocks:
            block = self._free_blocks.pop()
            block.pending, block.cut = 0, False
            return block
        return _Block(READ_BLOCK + self._max_chunk)

    def _cut_done(self, block: _Block) -> None:
        block.cut = True
        if block.pending == 0:
            self._recycle(block)

    def _recycle(self, block: _Block) -> None:
        if len(self._free_blocks) < FREE_BLOCKS:
            self._free_blocks.append(block)

    def _submit(self, data, f: _File, block: _Block | None = None) -> None:
        assert self._pool is not None
        n = len(data)
        f.pending += 1
        f.entry.size += n
        self.read_bytes += n
        if block is not None:
            block.pending += 1
        fut = self._pool.submit(self._process, data, f.policy, f.policy.next_is_trial())
        self._inflight.append((fut, f, n, block))
        self._inflight_bytes += n
        while self._inflight_bytes > WINDOW_BYTES and len(self._inflight) > 1:
            self._drain_one()
        if self.progress is not None:
            self.progress(self.read_bytes)

    def _drain_one(self) -> None:
        fut, f, n, block = self._inflight.popleft()
        self._inflight_bytes -= n
        if block is not None:
            block.pending -= 1
            if block.pending == 0 and block.cut:
                self._recycle(block)
        f.entry.chunks.append(fut.result())
        f.pending -= 1

    def _drain_until(self, f: _File) -> None:
        while f.pending:
            self._drain_one()

    def _drain_all(self) -> None:
        while self._inflight:
            self._drain_one()

    def _start(self, path: str, mode: int, checked: bool = False) -> _File:
        """A new file at PATH (CHECKED: a plain relative path already, as the walk makes)."""
        if self._pool is None:
            raise RepoError("Use the snapshot writer inside a `with repo.writer() as w:` block.")
        if self.committed:
            raise RepoError("This snapshot is already committed; start a new writer.")
        if not checked:
            path = check_path(path)
        if path in self._entries:
            raise RepoError(f"Snapshot path {path} was added twice; add each path once.")
        f = _File(path, mode & 0o7777)
        self._entries[path] = f
        return f

    def _finish(self, f: _File) -> None:
        f.entry.sha256 = f.sha.hexdigest()
        f.sha = None  # a hash object per file kept to the commit weighed more than the entry
        f.reading = False

    def _feed_file(self, source: str | Path, f: _File) -> None:
        f.sha = hashlib.sha256()
        with open(source, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= self._max_chunk:
                # Small file: one read, chunks are views of it (no copies).
                data = fh.read()
                while True:
                    more = fh.read(1 << 20)
                    if not more:
                        break
                    data += more
                f.sha.update(data)
                for c in self._cdc.cut_buf(data):
                    self._submit(c.data, f)
            else:
                f.policy = FilePolicy(trials=True)
                for piece, block in self._cut_blocks(fh.readinto):
                    f.sha.update(piece)
                    self._submit(piece, f, block)
        self._finish(f)

    def _queue_file(
        self, path: str, source: str | Path, st: os.stat_result | None = None
    ) -> _File | None:
        """Add SOURCE at PATH: reused from the parent when unchanged, else read. ST: its
        lstat from the walk (a regular file, PATH checked already), saving a stat call."""
        if st is None:
            try:
                st = os.stat(source)
            except FileNotFoundError:
                raise RepoError(f"File {source} does not exist; check the path.") from None
            if not stat.S_ISREG(st.st_mode):
                raise RepoError(
                    f"{source} is not a regular file; only regular files are backed up."
                )
            f = self._start(path, st.st_mode)
        else:
            f = self._start(path, st.st_mode, checked=True)
        prev = self._parent_entry(f.entry.path) if self._parent else None
        if prev is not None:
            pst = prev["st"]
            if (
                pst[0] == st.st_size
                and pst[1] == st.st_mtime_ns
                and pst[2] == st.st_ctime_ns
                and pst[3] == st.st_ino
                and prev["mode"] == f.entry.mode
                and self._all_known(prev["chunks"])
            ):
                # Unchanged since the parent snapshot (same size, mtime, ctime and inode) and
                # all its chunks still stored: reuse the entry without reading the file, as
                # restic does; its lists and strings are the parent's (never modified).
                f.entry.size, f.entry.sha256 = prev["size"], prev["sha256"]
                f.entry.chunks = prev["chunks"]
                f.st = pst
                if prev.keys() == _DOC_KEYS:
                    f.doc = prev
                f.reading = False
                self.skipped_files += 1
                self.read_bytes += f.entry.size
                if self.progress is not None:
                    self.progress(self.read_bytes)
                return f
        # Stat taken before reading: a change while we read shows as a new stat next time.
        f.st = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        try:
            self._feed_file(source, f)
        except FileNotFoundError:
            raise RepoError(f"File {source} vanished while it was being backed up.") from None
        except PermissionError:
            raise RepoError(
                f"Cannot read {source}: permission denied; "
                "run the backup as a user who can read it."
            ) from None
        except IsADirectoryError:
            raise RepoError(f"{source} is a directory; use add_tree for directories.") from None
        return f

    # -- public API ----------------------------------------------------------------------------

    def add_file(self, path: str, source: Path) -> FileEntry:
        """Add the file SOURCE under the snapshot path PATH (streamed, bounded memory)."""
        f = self._queue_file(path, Path(source))
        assert f is not None
        self._drain_until(f)
        return f.entry

    def add_stream(self, path: str, chunks: Iterable[bytes], mode: int = 0o600) -> FileEntry:
        """Add a file whose bytes come from an iterable (e.g. a dump's stdout)."""
        f = self._start(path, mode)
        f.policy = FilePolicy(trials=True)
        f.sha = hashlib.sha256()
        for piece, block in self._cut_blocks(_IterReader(chunks).readinto):
            f.sha.update(piece)
            self._submit(piece, f, block)
        self._finish(f)
        self._drain_until(f)
        return f.entry

    def add_tree(
        self,
        root: Path,
        prefix: str = "",
        exclude: Callable[[str], bool] | None = None,
    ) -> list[FileEntry]:
        """Every regular file under ROOT as PREFIX + its relative posix path (symlinks and
        special files skipped; EXCLUDE gets each directory and file path and may skip it)."""
        root = Path(root)
        if not root.is_dir():
            raise RepoError(f"{root} is not a directory; give the directory to back up.")
        files: list[_File] = []
        # Names from scandir are never empty, '.', '..' or hold a '/': with a plain prefix
        # every path the walk makes is plain, so it is not checked again file by file.
        checked = not prefix or (prefix.endswith("/") and check_path(prefix[:-1]) == prefix[:-1])

        def order(item: os.DirEntry) -> str:
            # A directory sorts as 'name/': the walk then yields paths in sorted order (the
            # parent snapshot's order), so most parent lookups hit the next entry.
            return item.name + "/" if item.is_dir(follow_symlinks=False) else item.name

        def walk(dirpath: str, rel: str) -> None:
            try:
                with os.scandir(dirpath) as it:
                    items = sorted(it, key=order)
            except FileNotFoundError:
                return
            except PermissionError:
                raise RepoError(f"Cannot list {dirpath}: permission denied.") from None
            for item in items:
                sub = f"{rel}{item.name}"
                snap_path = prefix + sub
                if exclude is not None and exclude(snap_path):
                    continue
                if item.is_symlink():
                    continue
                if item.is_dir(follow_symlinks=False):
                    walk(item.path, sub + "/")
                elif item.is_file(follow_symlinks=False):
                    try:
                        # the entry's own lstat: a regular file that is not a link
                        st = item.stat(follow_symlinks=False)
                        if not stat.S_ISREG(st.st_mode):
                            continue  # replaced by something else since the listing
                        if checked:
                            f = self._queue_file(snap_path, item.path, st)
                        else:
                            f = self._queue_file(snap_path, item.path)
                    except FileNotFoundError:
                        continue  # deleted while we walked: not part of this snapshot
                    except RepoError as exc:
                        if "vanished" in str(exc) or "does not exist" in str(exc):
                            self._entries.pop(check_path(snap_path), None)
                            continue  # deleted while we walked: not part of this snapshot
                        raise
                    if f is not None:
                        files.append(f)

        walk(str(root), "")
        self._drain_all()
        return [f.entry for f in files]

    def _sort_adopted(self, entries: list[FileEntry]) -> tuple[dict, list[str]]:
        """(adopted packs some snapshot uses: indexed now, ids of the others: deleted)."""
        if not self._adopted:
            return {}, []
        used = {c for e in entries for c in e.chunks}
        keep = {p: v for p, v in self._adopted.items() if any(b[0] in used for b in v[1])}
        rest = [p for p in self._adopted if p not in keep]
        if rest and self.repo.index.errors:
            # an index file is damaged: an "orphan" may hold indexed data; keep it all
            keep.update((p, self._adopted[p]) for p in rest)
            rest = []
        if rest:
            older = leftovers.referenced_chunks(self.repo)
            for p in list(rest):
                if any(b[0] in older for b in self._adopted[p][1]):
                    keep[p] = self._adopted[p]
                    rest.remove(p)
        return keep, rest

    def commit(
        self,
        label: str,
        manifest: dict,
        host: str | None = None,
        time: datetime | None = None,
    ) -> SnapshotInfo:
        """Make the snapshot durable: packs, then their index, then the snapshot file."""
        if self._packs is None:
            raise RepoError("Use the snapshot writer inside a `with repo.writer() as w:` block.")
        if self.committed:
            raise RepoError("This snapshot is already committed; start a new writer.")
        import socket

        self._drain_all()
        self._packs.flush()
        written = dict(self._written)
        files = sorted(self._entries.values(), key=lambda f: f.entry.path)
        entries = [f.entry for f in files]
        adopted, unused = self._sort_adopted(entries)
        written.update(adopted)
        if written:
            write_index(self.repo.backend, self.keys, written)
        when = (time or datetime.now(UTC)).astimezone(UTC)
        added = sum(size for size, _ in written.values())
        doc = {
            "version": 1,
            "time": when.isoformat(),
            "label": label,
            "host": host or socket.gethostname(),
            "manifest": manifest,
            "size": sum(e.size for e in entries),
            "added_bytes": added,
            "files": [f.doc if f.doc is not None else _file_doc(f.entry, f.st) for f in files],
        }
        try:
            blob = seal_json(self.keys, doc, AAD_SNAPSHOT)
        except TypeError as exc:
            raise RepoError(f"The snapshot manifest is not JSON data: {exc}.") from None
        snap_id = content_id(blob)
        self.repo.backend.write(f"snapshots/{snap_id}", blob)
        for pack_id, (size, blobs) in written.items():
            self.repo.index.add_pack(pack_id, size, blobs)
        for pack_id in unused:  # a dead writer's pack that no snapshot needs: garbage
            self.repo.backend.delete(pack_name(pack_id))
        self.committed = True
        info = self.repo._info_from_doc(snap_id, doc)
        self.repo._remember(snap_id, doc)
        return info
