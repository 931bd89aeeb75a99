"""Whether a service runs on a data directory: `sctk serve` keeps its pid in <home>/tmp/serve.pid.

Commands that replace the data directory under a running service (restore) consult it. The
file lives in tmp/, which no backup holds and no restore replaces.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sctk.fsutil import atomic_write

PID_FILE = Path("tmp") / "serve.pid"


def pid_path(home: Path) -> Path:
    return Path(home) / PID_FILE


def write_pid(home: Path, pid: int | None = None) -> Path:
    """Record PID (default: this process) as the service running on HOME."""
    path = pid_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{pid or os.getpid()}\n", mode=0o644)
    return path


def clear_pid(home: Path, pid: int | None = None) -> None:
    """Remove the pid file if it still names PID (default: this process); a newer service's
    file is left alone."""
    path = pid_path(home)
    if _read(path) == (pid or os.getpid()):
        path.unlink(missing_ok=True)


def clear_pid_on_sigterm(home: Path) -> None:
    """Remove the pid file when SIGTERM ends this process, which then still dies of the
    signal. uvicorn re-raises the SIGTERM it caught once it has shut down, so a `finally`
    around uvicorn.run never runs for it; this handler, installed first, does."""

    def on_term(signum, _frame) -> None:
        clear_pid(home)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_term)


def _read(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    # a zombie (exited, not yet reaped by its parent) answers signal 0 but runs nothing
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running_pid(home: Path) -> int | None:
    """The pid of the service running on HOME, or None when there is no pid file or its
    process is gone (a stale file left by kill -9 does not count)."""
    pid = _read(pid_path(home))
    if pid is None or not _alive(pid):
        return None
    return pid
