"""Where repository files live: a local directory or any fsspec file system.

Every name is a posix path relative to the repository root ("config", "data/ab/ab12...").
Files are written once and atomically: a local write goes to a temporary name in the same
directory, is fsynced and renamed; a remote write goes to a temporary name, is moved into
place and its size checked, so a reader never sees half a file under its real name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from sctk.backup.repo.errors import RepoError
from sctk.fsutil import fsync_dir

TMP_PREFIX = ".tmp-"


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

    def __init__(self, root: Path, url: str):
        self.root = root
        self.url = url

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

    def create_temp(self, folder: str) -> tuple[int, str]:
        """An open temporary file in FOLDER, for a pack written piece by piece."""
        try:
            directory = self.path(folder)
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
        except OSError as exc:
            raise _os_error(self.url, folder, exc, "writing") from None
        return fd, tmp

    def append(self, fd: int, tmp: str, parts) -> None:
        try:
            total = sum(len(p) for p in parts)
            n = os.writev(fd, parts)
            if n != total:  # short write: finish piece by piece
                rest = memoryview(b"".join(parts))[n:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
        except OSError as exc:
            raise _os_error(self.url, os.path.basename(tmp), exc, "writing") from None

    def commit_temp(self, fd: int, tmp: str, name: str) -> None:
        """fsync the temporary file, close it and rename it to NAME (durably)."""
        target = self.path(name)
        try:
            os.fsync(fd)
            os.close(fd)
            fd = -1  # closed: discard_temp after a failure below only unlinks
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise _os_error(self.url, name, exc, "writing") from None
        finally:
            if fd >= 0:
                os.close(fd)

    def discard_temp(self, fd: int, tmp: str) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)

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
    """Repository files on any fsspec file system (memory://, sftp://, s3://, ...)."""

    local = False

    def __init__(self, fs, root: str, url: str):
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _wrap(self, exc: Exception, name: str, doing: str) -> RepoError:
        if isinstance(exc, OSError) and exc.errno is not None:
            return _os_error(self.url, name, exc, doing)
        return RepoError(f"Failed {doing} {name} in repository {self.url}: {exc}.")

    def probe(self) -> str:
        try:
            if not self.fs.exists(self.root):
                return "missing"
            if not self.fs.isdir(self.root):
                raise RepoError(f"Repository path {self.url} is a file, not a directory.")
            return "present" if self.fs.ls(self.root, detail=False) else "empty"
        except RepoError:
            raise
        except Exception as exc:
            raise RepoError(f"Cannot reach repository {self.url}: {exc}.") from None

    def read(self, name: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(name))
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise self._wrap(exc, name, "reading") from None

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            return self.fs.cat_file(self.path(name), start=offset, end=offset + length)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise self._wrap(exc, name, "reading") from None

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = True) -> None:
        target = self.path(name)
        parent, _, base = target.rpartition("/")
        tmp = f"{parent}/{TMP_PREFIX}{secrets.token_hex(6)}-{base}"
        try:
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.pipe_file(tmp, bytes(data))
            self.fs.mv(tmp, target)
            # A remote move may be a copy: check that what landed is whole.
            got = self.fs.size(target)
            if got != len(data):
                raise RepoError(
                    f"Writing {name} in repository {self.url} left {got} of {len(data)} bytes; "
                    "check the remote storage and try again."
                )
        except RepoError:
            raise
        except Exception as exc:
            try:
                if self.fs.exists(tmp):
                    self.fs.rm_file(tmp)
            except Exception:
                pass
            raise self._wrap(exc, name, "writing") from None

    def list(self, prefix: str) -> dict[str, int]:
        base = self.path(prefix)
        try:
            if not self.fs.exists(base):
                return {}
            found = self.fs.find(base, detail=True)
        except Exception as exc:
            raise self._wrap(exc, prefix, "listing") from None
        out = {}
        for full, info in found.items():
            if not full.startswith(self.root + "/"):
                continue
            rel = full[len(self.root) + 1 :]
            if rel.rpartition("/")[2].startswith(TMP_PREFIX):
                continue
            out[rel] = int(info.get("size") or 0)
        return out

    def temporaries(self) -> list[str]:
        try:
            found = self.fs.find(self.root)
        except Exception:
            return []
        return [
            f[len(self.root) + 1 :]
            for f in found
            if f.rpartition("/")[2].startswith(TMP_PREFIX) and f.startswith(self.root + "/")
        ]

    def size(self, name: str) -> int | None:
        try:
            return int(self.fs.size(self.path(name)))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._wrap(exc, name, "reading") from None

    def delete(self, name: str) -> None:
        try:
            if self.fs.exists(self.path(name)):
                self.fs.rm_file(self.path(name))
        except Exception as exc:
            raise self._wrap(exc, name, "deleting") from None

    def mkdir_root(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except Exception as exc:
            raise self._wrap(exc, ".", "creating") from None


def open_backend(url: str) -> LocalBackend | FsspecBackend:
    """The backend for URL: a plain path or file:// is local, anything else goes to fsspec."""
    if not url or not str(url).strip():
        raise RepoError("The repository location is empty; give a directory or a URL.")
    url = str(url)
    parsed = urlparse(url)
    if "://" not in url:
        return LocalBackend(Path(url).expanduser().absolute(), url)
    if parsed.scheme == "file":
        return LocalBackend(Path(parsed.netloc + parsed.path).absolute(), url)
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise RepoError(
            f"Repository {url} needs an fsspec driver that is not installed ({exc}); "
            "install the matching extra (e.g. s3fs or sshfs)."
        ) from None
    except ValueError as exc:
        raise RepoError(f"Repository URL {url} is not understood: {exc}.") from None
    except Exception as exc:
        raise RepoError(f"Cannot reach repository {url}: {exc}.") from None
    return FsspecBackend(fs, root, url)
