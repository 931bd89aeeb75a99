"""Whether a service runs on a data directory: `sctk serve` keeps its pid in <home>/tmp/serve.pid,
and on the file's second line the address it serves (which `--port` may have changed).

Commands that replace the data directory or change its database under a running service
(restore, upgrade, rollback) consult it through `refuse_while_serving`, one rule for all of
them. The file lives in tmp/, which no backup holds and no restore replaces.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from sctk.errors import Conflict
from sctk.fsutil import atomic_write, process_alive

PID_FILE = Path("tmp") / "serve.pid"


def pid_path(home: Path) -> Path:
    return Path(home) / PID_FILE


@dataclass(frozen=True)
class Served:
    """A running service: its pid and the address it listens on (when it said)."""

    pid: int
    url: str | None = None

    @property
    def host(self) -> str | None:
        return _split_url(self.url)[1]

    @property
    def port(self) -> int | None:
        return _split_url(self.url)[2]

    @property
    def tls(self) -> bool:
        return _split_url(self.url)[0] == "https"


def _split_url(url: str | None) -> tuple[str | None, str | None, int | None]:
    if not url or "://" not in url:
        return None, None, None
    scheme, rest = url.split("://", 1)
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    return scheme, host or None, int(port) if port.isdigit() else None


def write_pid(home: Path, pid: int | None = None, url: str | None = None) -> Path:
    """Record PID (default: this process) as the service running on HOME, serving URL
    (scheme://host:port) when given."""
    path = pid_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{pid or os.getpid()}\n" + (f"{url}\n" if url else ""), mode=0o644)
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


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []


def _read(path: Path) -> int | None:
    lines = _lines(path)
    text = lines[0] if lines else ""
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    return process_alive(pid)


def running_pid(home: Path) -> int | None:
    """The pid of the service running on HOME, or None when there is no pid file or its
    process is gone (a stale file left by kill -9 does not count)."""
    pid = _read(pid_path(home))
    if pid is None or not _alive(pid):
        return None
    return pid


def served(home: Path) -> Served | None:
    """The service running on HOME (pid and served address), or None as for running_pid."""
    pid = running_pid(home)
    if pid is None:
        return None
    lines = _lines(pid_path(home))
    return Served(pid, lines[1] if len(lines) > 1 and "://" in lines[1] else None)


def refuse_while_serving(home: Path, action: str, override: str | None = None) -> None:
    """Raise Conflict when a service runs on HOME: ACTION ('the rollback', ...) would change
    its database or files under it, and whatever it wrote afterwards would be lost. The one
    rule of every command that swaps or migrates a data directory; OVERRIDE names the flag
    of a command that lets the operator go ahead anyway."""
    pid = running_pid(home)
    if pid is None:
        return
    anyway = f", or pass {override} to go ahead under it" if override else ""
    raise Conflict(
        f"A service (pid {pid}) is running on {home}: {action} would change the database "
        f"under it; stop it first ('kill -TERM {pid}', or 'systemctl stop' its unit), then "
        f"run the command again{anyway}."
    )
