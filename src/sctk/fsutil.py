"""File-system helpers used wherever a write must not be seen half-done."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sctk.errors import InsufficientStorage

# A full disk and an exhausted quota are the same fix for the operator: free some space.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
