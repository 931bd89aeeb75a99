"""File chores shared by the maintenance tasks: ages, compression, removal."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import zstandard

from sctk.fsutil import fsync_dir, make_temp


def age_days(path: Path, now: float | None = None) -> float:
    return ((now or time.time()) - path.stat().st_mtime) / 86400.0


def old_files(root: Path, days: float, skip: set[Path] = frozenset()) -> Iterator[Path]:
    """Regular files under ROOT last modified more than DAYS ago, not under a SKIP path."""
    if not root.is_dir():
        return
    now = time.time()
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        if path.is_file() and not path.is_symlink() and age_days(path, now) > days:
            yield path


def compress(source: Path, target: Path) -> int:
    """SOURCE compressed with zstd into TARGET (written atomically), SOURCE then removed;
    the modification time is kept so that age-based rules still see the file's own age."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp(target.parent, target.name)
    stat = source.stat()
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        zstandard.ZstdCompressor(level=9).copy_stream(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    os.utime(tmp, (stat.st_atime, stat.st_mtime))
    os.replace(tmp, target)
    fsync_dir(target.parent)
    source.unlink()
    return target.stat().st_size


def remove(path: Path) -> int:
    size = path.stat().st_size if path.is_file() else 0
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size
