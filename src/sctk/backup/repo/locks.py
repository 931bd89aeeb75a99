"""Repository locks: files under locks/ naming the process (pid, host, start time) holding them.

Writers take an exclusive lock, readers a shared one. A lock whose process is dead on this
host (or whose pid now belongs to another process, told apart by the process start time) is
stale and removed. Locks from other hosts are never removed automatically: we cannot tell if
their process lives.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

from sctk.backup.repo.errors import RepoError


def _start_time(pid: int) -> float | None:
    """When process PID started (an opaque number, compared for equality only); None if there
    is no such process, -1 if it exists but cannot be inspected."""
    try:
        # Linux: field 22 of /proc/PID/stat (start time in clock ticks since boot); reading it
        # avoids importing psutil on the restore path, where every millisecond shows.
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] == b"Z":
            return None  # a zombie is dead
        return float(fields[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:
        return -1.0  # exists but unreadable: treat as alive


# Lock files this process released but could not delete (the storage was unreachable): they
# are stale though our pid lives, and are removed when next seen.
_UNDELETED: set[str] = set()


def _alive(pid: int, started: float | None) -> bool:
    now_started = _start_time(pid)
    if now_started is None:
        return False
    # A different start time: the pid was reused by a newer process.
    return started is None or now_started < 0 or abs(now_started - started) <= 1.0


class LockManager:
    """Takes and releases this repository's lock files."""

    def __init__(self, backend):
        self.backend = backend
        self.held: str | None = None
        self.held_exclusive = False
        self.depth = 0

    def _read_locks(self) -> dict[str, dict]:
        out = {}
        for name in self.backend.list("locks"):
            try:
                out[name] = json.loads(self.backend.read(name))
            except FileNotFoundError:
                continue
            except ValueError:
                out[name] = {}
        return out

    def _clear_stale(self, locks: dict[str, dict]) -> dict[str, dict]:
        host = socket.gethostname()
        live = {}
        for name, info in locks.items():
            if name == self.held:
                continue
            if name in _UNDELETED:
                with suppress(RepoError):
                    self.backend.delete(name)
                    _UNDELETED.discard(name)
                continue
            pid = info.get("pid")
            if (
                info.get("host") == host
                and isinstance(pid, int)
                and not _alive(pid, info.get("started"))
            ):
                self.backend.delete(name)
                continue
            live[name] = info
        return live

    @staticmethod
    def _conflict(locks: dict[str, dict], exclusive: bool) -> dict | None:
        for info in locks.values():
            if exclusive or info.get("exclusive", True):
                return info
        return None

    def _refuse(self, info: dict) -> RepoError:
        kind = "exclusively" if info.get("exclusive", True) else "for reading"
        return RepoError(
            f"Repository {self.backend.url} is locked {kind} by pid {info.get('pid')} on host "
            f"{info.get('host')} since {info.get('time')}; wait for it to finish "
            "(or remove the lock file under locks/ if that process is gone)."
        )

    def acquire(self, exclusive: bool) -> None:
        if self.held is not None:
            if exclusive and not self.held_exclusive:
                raise RepoError(
                    f"Repository {self.backend.url} is held for reading by this process; "
                    "finish reading before writing."
                )
            self.depth += 1
            return
        self.backend.forget_listings()  # what others wrote before we hold the lock must show
        locks = self._clear_stale(self._read_locks())
        other = self._conflict(locks, exclusive)
        if other is not None:
            raise self._refuse(other)
        pid = os.getpid()
        info = {
            "pid": pid,
            "host": socket.gethostname(),
            "time": datetime.now(UTC).isoformat(),
            "started": _start_time(pid),
            "exclusive": exclusive,
        }
        name = f"locks/{secrets.token_hex(16)}"
        try:
            # A reader's lock need not survive a crash (it would be stale then anyway), so it
            # is written without fsync: a one-file restore should not wait for the disk.
            self.backend.write(name, json.dumps(info).encode(), durable=exclusive)
        except RepoError as exc:
            cause = exc.__context__
            read_only = isinstance(cause, OSError) and cause.errno in (errno.EROFS, errno.ENOSPC)
            # A reader on a read-only or full medium goes on without a lock file: refusing
            # would make an off-site copy on read-only storage unrestorable.
            if not exclusive and (read_only or "read-only" in str(exc) or "No space" in str(exc)):
                self.held, self.held_exclusive, self.depth = "", False, 1
                return
            raise
        # Two processes may have written their locks at the same moment: look again.
        others = {k: v for k, v in self._read_locks().items() if k != name}
        other = self._conflict(others, exclusive)
        if other is not None and _alive_or_remote(other):
            self.backend.delete(name)
            raise self._refuse(other)
        self.held, self.held_exclusive, self.depth = name, exclusive, 1

    def release(self) -> None:
        if self.held is None:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        name, self.held = self.held, None
        if name:
            try:
                self.backend.delete(name)
            except RepoError:
                _UNDELETED.add(name)

    @contextmanager
    def lock(self, exclusive: bool = True):
        self.acquire(exclusive)
        try:
            yield self
        finally:
            self.release()


def _alive_or_remote(info: dict) -> bool:
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    return _alive(pid, info.get("started"))
