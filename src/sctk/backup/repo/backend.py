"""Where repository files live: a local directory or any fsspec file system.

Every name is a posix path relative to the repository root ("config", "data/ab/ab12...").
Files are written once and atomically: a local write goes to a temporary name in the same
directory, is fsynced and renamed; a remote write goes to a temporary name and is moved into
place (an object store's PUT, itself atomic, goes straight to the real name); its size is
checked after, so a reader never sees half a file under its real name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import tempfile
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import urlparse

from sctk.backup.repo import remote_io
from sctk.backup.repo.backend_contract import Backend
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.readahead import BlockReader
from sctk.backup.repo.remote import (
    OBJECT_STORES,
    PART_SIZE,
    RemoteOptions,
    RetryPolicy,
    classify,
    failure,
    fs_factory,
    reason_of,
)
from sctk.fsutil import fsync_dir

TMP_PREFIX = ".tmp-"
# A remote pack file larger than this waits for its upload in a local temporary file, not in
# memory (data packs are ~16 MiB; a snapshot's file list can be far larger).
SPILL_BYTES = 32 * 1024 * 1024
log = logging.getLogger(__name__)


def _os_error(url: str, name: str, exc: OSError, doing: str) -> RepoError:
    """One sentence for an OS error while DOING something with NAME in the repository URL."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return RepoError(
            f"No space left on the device holding repository {url} while writing {name}; "
            "free some space (or prune the repository) and try again."
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return RepoError(
            f"Permission denied {doing} {name} in repository {url}; "
            "fix the permissions or use another repository."
        )
    if exc.errno == errno.EROFS:
        return RepoError(
            f"Repository {url} is on a read-only file system ({doing} {name}); "
            "use a writable location."
        )
    reason = exc.strerror or str(exc)
    return RepoError(f"Failed {doing} {name} in repository {url}: {reason}.")


class LocalBackend:
    """Repository files in a local directory."""

    local = True
    packs_in_memory = False

    def __init__(self, root: Path, url: str):
        self.root = root
        self.url = url

    def close(self) -> None:
        pass  # nothing is held open between calls

    def forget_listings(self) -> None:
        pass  # listings are read fresh every time

    def path(self, name: str) -> Path:
        return self.root / name

    def probe(self) -> str:
        """'missing', 'empty', or 'present' (non-empty directory); RepoError if not a directory."""
        if not self.root.exists():
            return "missing"
        if not self.root.is_dir():
            raise RepoError(f"Repository path {self.url} is a file, not a directory.")
        try:
            return "present" if any(self.root.iterdir()) else "empty"
        except OSError as exc:
            raise _os_error(self.url, ".", exc, "listing") from None

    def read(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _os_error(self.url, name, exc, "reading") from None

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self.path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _os_error(self.url, name, exc, "reading") from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = True) -> None:
        target = self.path(name)
        tmp = target.parent / f"{TMP_PREFIX}{secrets.token_hex(6)}-{target.name}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            if durable:
                fsync_dir(target.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _os_error(self.url, name, exc, "writing") from None

    def new_pack(self, folder: str) -> _LocalPack:
        return _LocalPack(self, folder)

    def list(self, prefix: str) -> dict[str, int]:
        """Every finished file under the folder PREFIX: name -> size (temporary files left out)."""
        base = self.path(prefix)
        out: dict[str, int] = {}
        if not base.is_dir():
            return out
        try:
            for dirpath, _dirs, files in os.walk(base):
                for fname in files:
                    if fname.startswith(TMP_PREFIX):
                        continue
                    full = os.path.join(dirpath, fname)
                    rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                    try:
                        out[rel] = os.stat(full).st_size
                    except FileNotFoundError:
                        continue
        except OSError as exc:
            raise _os_error(self.url, prefix, exc, "listing") from None
        return out

    def temporaries(self) -> list[str]:
        """Temporary files left by an interrupted write."""
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for fname in files:
                if fname.startswith(TMP_PREFIX):
                    full = os.path.join(dirpath, fname)
                    found.append(os.path.relpath(full, self.root).replace(os.sep, "/"))
        return found

    def size(self, name: str) -> int | None:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(self.url, name, exc, "deleting") from None

    def mkdir_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(self.url, ".", exc, "creating") from None


class FsspecBackend:
    """Repository files on any fsspec file system (memory://, sftp://, s3://, ...).

    On a network file system every operation is retried with backoff on transient failures
    (see remote.py), reconnecting first; a refused credential fails at once. Listings are
    kept for the life of this object (one command) and updated by its own writes and
    deletes; taking a lock forgets them, so what another process wrote before shows.
    """

    local = False
    packs_in_memory = True

    def __init__(
        self,
        fs,
        root: str,
        url: str,
        make=None,
        retry: RetryPolicy | None = None,
        protocol: str = "",
    ):
        self._fs = fs
        self._make = make
        self.root = root.rstrip("/")
        self.url = url
        self.shown = _shown(url)
        self.endpoint = url  # where the storage is, for messages (open_backend says better)
        self.retry = retry or RetryPolicy()
        self.network = make is not None and protocol != "memory"
        # an object store's PUT is atomic: no temporary name (a move there is a copy)
        self.atomic_put = protocol in OBJECT_STORES
        self._put_options = {"chunksize": PART_SIZE} if protocol in ("s3", "s3a") else {}
        self._fs_lock = threading.Lock()
        # An SFTP session serves one thread at a time (paramiko would hand one thread's reply
        # to another): each thread gets its own connection, closed with this backend.
        self._tls = threading.local() if protocol in ("sftp", "ssh") else None
        self._made: list = []
        weakref.finalize(self, _close_all, self._made)
        self._cache_lock = threading.Lock()
        self._listings: dict[str, dict[str, int]] = {}
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()
        # over a network, chunks are read from packs a block of a few MiB at a time
        self._blocks = BlockReader(self._fetch) if self.network else None

    @property
    def fs(self):
        if self._tls is not None:
            fs = getattr(self._tls, "fs", None)
            if fs is None:
                fs = self._tls.fs = self._make()
                with self._fs_lock:
                    self._made.append(fs)
            return fs
        with self._fs_lock:
            if self._fs is None:
                self._fs = self._make()
            return self._fs

    def _reconnect(self, fs) -> None:
        """Drop FS after a failure: a dropped session does not come back."""
        if fs is None or self._make is None:
            return
        if self._tls is not None:
            if getattr(self._tls, "fs", None) is fs:
                self._tls.fs = None
            with self._fs_lock:
                self._made[:] = [f for f in self._made if f is not fs]  # by identity
            _close_all([fs])
        else:
            with self._fs_lock:
                if self._fs is fs:
                    self._fs = None

    def close(self) -> None:
        """Close the connections this backend opened."""
        with self._fs_lock:
            made, self._made[:] = list(self._made), []
        _close_all(made)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _wrap(self, exc: Exception, name: str, doing: str) -> RepoError:
        if isinstance(exc, OSError) and exc.errno is not None:
            return _os_error(self.shown, name, exc, doing)
        return RepoError(f"Failed {doing} {name} in repository {self.shown}: {exc}.")

    def _call(self, fn, name: str, doing: str):
        """FN(fs), tried again on a transient failure of a network file system."""
        attempt = 0
        while True:
            fs = None
            try:
                fs = self.fs
                return fn(fs)
            except (FileNotFoundError, RepoError):
                raise
            except Exception as exc:
                kind = classify(exc) if self.network else None
                if kind is None:
                    raise self._wrap(exc, name, doing) from None
                attempt += 1
                if kind == "denied" or attempt >= self.retry.attempts:
                    raise failure(kind, exc, self.url, self.shown, attempt, self.endpoint) from None
                self._reconnect(fs)
                pause = self.retry.pause(attempt - 1)
                # the log, not the console: a command still ends in one sentence
                log.info(
                    "%s %s in repository %s failed (%s); attempt %d of %d in %.2f s",
                    doing,
                    name,
                    self.shown,
                    reason_of(exc),
                    attempt + 1,
                    self.retry.attempts,
                    pause,
                )
                time.sleep(pause)

    def probe(self) -> str:
        def look(fs):
            if self.atomic_put:
                # a prefix "exists" once it holds objects; listing (unlike exists() on a
                # bucket) raises on refused credentials instead of answering False
                try:
                    return "present" if fs.ls(self.root, detail=False) else "empty"
                except FileNotFoundError:
                    return "missing"
            if not fs.exists(self.root):
                return "missing"
            if not fs.isdir(self.root):
                raise RepoError(f"Repository path {self.shown} is a file, not a directory.")
            return "present" if fs.ls(self.root, detail=False) else "empty"

        try:
            return self._call(look, ".", "reaching")
        except FileNotFoundError:
            return "missing"

    def read(self, name: str) -> bytes:
        return self._call(lambda fs: remote_io.get(fs, self.path(name)), name, "reading")

    def _fetch(self, name: str, start: int, end: int) -> bytes:
        return self._call(
            lambda fs: remote_io.get(fs, self.path(name), start, end), name, "reading"
        )

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        if self._blocks is not None and name.startswith("data/"):
            return self._blocks.read(name, offset, length)  # a pack: read in blocks
        return self._fetch(name, offset, offset + length)

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = True) -> None:
        target = self.path(name)
        size = len(data)
        blob = bytes(data) if isinstance(data, memoryview) else data

        def landed(fs) -> None:
            # what arrived must be whole (a remote move may be a copy)
            got = fs.size(target)
            if got != size:
                raise RepoError(
                    f"Writing {name} in repository {self.shown} left {got} of {size} bytes; "
                    "check the remote storage and try again."
                )

        def put(fs) -> None:
            # An object store shows an object only once it is complete (a multipart upload
            # once completed), so it is written under its real name.
            remote_io.put(fs, target, blob, **self._put_options)
            landed(fs)

        def put_and_move(fs) -> None:
            parent, _, base = target.rpartition("/")
            tmp = f"{parent}/{TMP_PREFIX}{secrets.token_hex(6)}-{base}"
            if parent not in self._dirs:
                # one at a time: two threads making the same folder over SFTP would have the
                # second told only "Failure"
                with self._dirs_lock:
                    if parent not in self._dirs:
                        try:
                            fs.makedirs(parent, exist_ok=True)
                        except OSError:
                            if not fs.isdir(parent):  # else another process made it
                                raise
                        self._dirs.add(parent)
            try:
                remote_io.put(fs, tmp, blob)
                fs.mv(tmp, target)
            except BaseException:
                with contextlib.suppress(Exception):
                    fs.rm_file(tmp)  # best effort: a later writer removes what remains
                raise
            landed(fs)

        self._call(put if self.atomic_put else put_and_move, name, "writing")
        with self._cache_lock:
            folder = self._listings.get(name.partition("/")[0])
            if folder is not None:
                folder[name] = size

    def new_pack(self, folder: str) -> _BufferedPack:
        return _BufferedPack(self)

    def etag(self, name: str) -> str | None:
        """The object's ETag on S3 (None elsewhere, or when the store gives none)."""
        if not self._put_options:
            return None
        info = self._call(lambda fs: fs.info(self.path(name)), name, "reading")
        tag = info.get("ETag") or info.get("etag")
        return str(tag).strip('"') if tag else None

    def _find(self, base: str, detail: bool = True):
        # fsspec's generic walk skips folders it cannot list (a dropped link would look like
        # an empty repository): it must raise. Object stores list in one call of their own.
        strict = {} if self.atomic_put else {"on_error": "raise"}

        def find(fs):
            try:
                return fs.find(base, detail=detail, **strict)
            except FileNotFoundError:
                return {} if detail else []

        return self._call(find, base, "listing")

    def list(self, prefix: str) -> dict[str, int]:
        cacheable = prefix != "locks"  # locks are how processes see each other: always fresh
        if cacheable:
            with self._cache_lock:
                if prefix in self._listings:
                    return dict(self._listings[prefix])
        out = {}
        for full, info in self._find(self.path(prefix)).items():
            full = full.rstrip("/")
            if not full.startswith(self.root + "/") or info.get("type") == "directory":
                continue
            rel = full[len(self.root) + 1 :]
            if rel.rpartition("/")[2].startswith(TMP_PREFIX):
                continue
            out[rel] = int(info.get("size") or 0)
        if cacheable:
            with self._cache_lock:
                self._listings[prefix] = dict(out)
        return out

    def forget_listings(self) -> None:
        """Drop the cached listings (another process may have written since)."""
        with self._cache_lock:
            self._listings.clear()

    def temporaries(self) -> list[str]:
        try:
            found = self._find(self.root, detail=False)
        except RepoError:
            return []
        return [
            f[len(self.root) + 1 :]
            for f in found
            if f.rpartition("/")[2].startswith(TMP_PREFIX) and f.startswith(self.root + "/")
        ]

    def size(self, name: str) -> int | None:
        try:
            return int(self._call(lambda fs: fs.size(self.path(name)), name, "reading"))
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        def rm(fs):
            with contextlib.suppress(FileNotFoundError):  # gone already: what we wanted
                fs.rm_file(self.path(name))

        self._call(rm, name, "deleting")
        with self._cache_lock:
            folder = self._listings.get(name.partition("/")[0])
            if folder is not None:
                folder.pop(name, None)

    def mkdir_root(self) -> None:
        self._call(lambda fs: fs.makedirs(self.root, exist_ok=True), ".", "creating")


class _LocalPack:
    """A pack appended to a temporary file in its folder (created at the first append, so
    an empty pack costs nothing), fsynced and renamed at commit."""

    def __init__(self, backend: LocalBackend, folder: str):
        self.backend = backend
        self.folder = folder
        self.fd = -1
        self.tmp = ""

    def _open(self) -> None:
        try:
            directory = self.backend.path(self.folder)
            directory.mkdir(parents=True, exist_ok=True)
            self.fd, self.tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
        except OSError as exc:
            raise _os_error(self.backend.url, self.folder, exc, "writing") from None

    def append(self, parts) -> None:
        if self.fd < 0:
            self._open()
        try:
            total = sum(len(p) for p in parts)
            n = os.writev(self.fd, parts)
            if n != total:  # short write: finish piece by piece
                rest = memoryview(b"".join(parts))[n:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]
        except OSError as exc:
            raise _os_error(self.backend.url, os.path.basename(self.tmp), exc, "writing") from None

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset) if self.fd >= 0 else b""

    def commit(self, name: str) -> None:
        target = self.backend.path(name)
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1  # closed: discard() after a failure below only unlinks
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp, target)
            self.tmp = ""
            fsync_dir(target.parent)
        except OSError as exc:
            self.discard()
            raise _os_error(self.backend.url, name, exc, "writing") from None

    def discard(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.tmp:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = ""


class _BufferedPack:
    """A pack built in memory and written in one call at commit (remote storage: a file
    appended piece by piece over a network would be a request per piece). One that outgrows
    SPILL_BYTES (a long snapshot file list, not a data pack) moves to a local temporary file
    until then."""

    def __init__(self, backend: FsspecBackend):
        self.backend = backend
        self.buf = bytearray()
        self.spill = None

    def append(self, parts) -> None:
        if self.spill is not None:
            for part in parts:
                self.spill.write(part)
            return
        for part in parts:
            self.buf += part
        if len(self.buf) > SPILL_BYTES:
            self.spill = tempfile.TemporaryFile(prefix="sctk-pack-")  # noqa: SIM115 (closed in discard)
            self.spill.write(self.buf)
            self.buf = bytearray()

    def read(self, offset: int, length: int) -> bytes:
        if self.spill is None:
            return bytes(self.buf[offset : offset + length])
        self.spill.flush()
        return os.pread(self.spill.fileno(), length, offset)

    def commit(self, name: str) -> None:
        try:
            if self.spill is not None:
                self.spill.seek(0)
                self.backend.write(name, self.spill.read())
            else:
                self.backend.write(name, self.buf)
        finally:
            self.discard()

    def discard(self) -> None:
        self.buf = bytearray()
        if self.spill is not None:
            with contextlib.suppress(OSError):
                self.spill.close()
            self.spill = None


def _close_all(made: list) -> None:
    """Close SFTP connections (others have nothing to close or close themselves)."""
    for fs in made:
        client = getattr(fs, "client", None)
        if client is not None and hasattr(client, "close"):
            with contextlib.suppress(Exception):
                client.close()


def _shown(url: str) -> str:
    """URL without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if not sep or "@" not in host:
        return url
    user, _, where = host.rpartition("@")
    return f"{scheme}://{user.split(':', 1)[0]}@{where}{slash}{path}"


def open_backend(url: str, options: RemoteOptions | None = None) -> Backend:
    """The backend for URL: a plain path or file:// is local, anything else goes to fsspec
    (OPTIONS: per-protocol storage options and the retry policy for remote storage)."""
    if not url or not str(url).strip():
        raise RepoError("The repository location is empty; give a directory or a URL.")
    url = str(url)
    parsed = urlparse(url)
    if "://" not in url:
        return LocalBackend(Path(url).expanduser().absolute(), url)
    if parsed.scheme == "file":
        return LocalBackend(Path(parsed.netloc + parsed.path).absolute(), url)
    make, root, protocol, where = fs_factory(url, options)
    retry = options.retry if options is not None else None
    # the connection is made at the first operation, inside the retry loop
    backend = FsspecBackend(None, root, url, make=make, retry=retry, protocol=protocol)
    backend.endpoint = where
    return backend
