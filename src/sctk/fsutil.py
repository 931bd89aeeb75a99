"""File-system helpers used wherever a write must not be seen half-done.

Every writer names its temporary files one way, `.NAME.p<PID>-<random>.tmp` next to the file
it will become (`make_temp`), so that the leftovers of a writer killed midway are found by
one finder (`temporaries`) whoever wrote them, and told apart from those of a live writer by
the pid in their name.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sctk.errors import InsufficientStorage

# A full disk and an exhausted quota are the same fix for the operator: free some space.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

TEMP_SUFFIX = ".tmp"
# hidden, ending in .tmp (or .part, the restore's database loads); the pid is there when the
# writer used make_temp (files of older versions have none)
_TEMP = re.compile(r"^\..+(?:\.tmp|\.part)$")
_TEMP_PID = re.compile(r"\.p(\d+)-[^./]+\.(?:tmp|part)$")


def make_temp(directory: Path, name: str) -> tuple[int, Path]:
    """Create and open a temporary file for NAME in DIRECTORY under the one naming convention;
    (fd, path). The caller writes, fsyncs and renames it, or unlinks it on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.p{os.getpid()}-", suffix=TEMP_SUFFIX, dir=directory)
    return fd, Path(tmp)


def process_alive(pid: int) -> bool:
    """Whether process PID runs (a zombie, exited but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Temporary:
    """A temporary file of some writer: where, whose (pid, when its name says), how old."""

    path: Path
    pid: int | None
    age_seconds: float
    size: int

    @property
    def held(self) -> bool:
        """Whether its writer still runs (and may still rename it into place)."""
        return self.pid is not None and process_alive(self.pid)


def temporaries(root: Path, skip: Iterable[Path] = ()) -> list[Temporary]:
    """Every temporary file (by the naming convention) under ROOT, not under a SKIP path."""
    skip = [Path(p) for p in skip]
    if not Path(root).is_dir():
        return []
    now = time.time()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in filenames:
            path = here / name
            if not _TEMP.match(name) or path in skip or path.is_symlink():
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # renamed into place meanwhile
                continue
            m = _TEMP_PID.search(name)
            found.append(
                Temporary(path, int(m.group(1)) if m else None, now - st.st_mtime, st.st_size)
            )
    return sorted(found, key=lambda t: t.path)


def stale_temporaries(
    root: Path, min_age_seconds: float, skip: Iterable[Path] = ()
) -> list[Temporary]:
    """The temporaries under ROOT left by interrupted writers: older than MIN_AGE_SECONDS and
    not held by a live writer (the age also covers names without a pid, and a writer on
    another machine sharing the directory)."""
    return [t for t in temporaries(root, skip) if t.age_seconds > min_age_seconds and not t.held]


def read_user_text(path: Path, what: str, error: type[Exception]) -> str:
    """The text of a file a user named (WHAT: 'schema file', ...); any problem reading it is
    one ERROR sentence naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"The {what} {path} does not exist; check the path.") from None
    except UnicodeDecodeError:
        raise error(f"The {what} {path} is not UTF-8 text; save it as TOML.") from None
    except OSError as exc:
        raise error(f"Cannot read the {what} {path}: {exc.strerror}.") from None


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over PATH; a full
    disk is InsufficientStorage naming PATH, with nothing left behind."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with space_errors(path.parent, path.name):
        fd, tmp = make_temp(path.parent, path.name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    fsync_dir(path.parent)  # make the rename itself durable


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_space_cause(exc: BaseException | None) -> OSError | None:
    """The OSError meaning a full file system in EXC or what led to it (a library may wrap
    it: torch.save raises a RuntimeError whose context is the ENOSPC)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def is_no_space(exc: BaseException) -> bool:
    """True when EXC (or its cause) means the file system (or the user's quota) is full."""
    return _no_space_cause(exc) is not None


def no_space(where: Path | str, what: str | None = None) -> InsufficientStorage:
    """The one sentence for a write that ran out of space on the device holding WHERE."""
    doing = f" while writing {what}" if what else ""
    return InsufficientStorage(
        f"No space left on the device holding {where}{doing}, so nothing was kept; "
        "free some space and try again."
    )


def no_space_error(exc: BaseException, where: Path | str) -> InsufficientStorage | None:
    """The sentence for EXC when it is a full disk (naming the folder of the file it names,
    else WHERE); None for any other error."""
    cause = _no_space_cause(exc)
    if cause is None:
        return None
    if isinstance(exc, InsufficientStorage):
        return exc
    return no_space(Path(cause.filename).parent if cause.filename else where)


@contextmanager
def space_errors(where: Path | str, what: str | None = None) -> Iterator[None]:
    """Turn a full disk met in the block into InsufficientStorage naming WHERE (and WHAT)."""
    try:
        yield
    except InsufficientStorage:
        raise
    except Exception as exc:
        if is_no_space(exc):
            raise no_space(where, what) from exc
        raise
