"""Which processes use a data directory, and the pause that lets a command swap it under them.

Every long-running process that uses the database (`sctk serve` of any role, `sctk worker`,
`sctk scheduler`) keeps one record in <home>/tmp/serve/<pid>: its role, and the address it
serves when it serves one (which `--port` may have changed). One file per process, so that
two API processes on one home are both seen and one stopping does not hide the other; a
record whose process is gone (kill -9) is ignored and removed.

Commands that replace the data directory or change its database (restore, upgrade,
rollback) consult them through `refuse_while_serving`, one rule for all. With --coordinate
they instead hold `paused_services`: a file-based handshake (a request file the processes
poll, one acknowledgement file per process). Files rather than signals, because uvicorn's
worker processes, which hold the database connections, are not the pid `sctk serve`
started, and a signal handler cannot wait for requests to drain; a poll every half second
is cheap and needs nothing but the directory both sides already share. The request names
the coordinator's pid: a service resumes by itself when that process is gone, so a swap
command that dies midway never leaves them paused. All of it lives in tmp/, which no backup
holds and no restore replaces.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sctk.errors import Conflict
from sctk.fsutil import atomic_write, process_alive

log = logging.getLogger(__name__)

RUN_DIR = Path("tmp") / "serve"
PID_FILE = RUN_DIR  # what the cleaners of tmp/ must keep (the records and the handshake)
PAUSE = "pause"
ACK = ".paused"
POLL_SECONDS = 0.5
PAUSE_TIMEOUT = 60.0  # how long a coordinator waits for every service to pause


def run_dir(home: Path) -> Path:
    return Path(home) / RUN_DIR


def pid_path(home: Path, pid: int | None = None) -> Path:
    """The record of process PID (default: this one) on HOME."""
    return run_dir(home) / str(pid or os.getpid())


@dataclass(frozen=True)
class Served:
    """A running service process: its pid, role, and the address it listens on (if any)."""

    pid: int
    url: str | None = None
    role: str = "all"

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


def write_pid(
    home: Path, pid: int | None = None, url: str | None = None, role: str = "all"
) -> Path:
    """Record PID (default: this process) as a service of ROLE on HOME, serving URL
    (scheme://host:port) when given."""
    path = pid_path(home, pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{role}\n" + (f"{url}\n" if url else ""), mode=0o644)
    return path


def clear_pid(home: Path, pid: int | None = None) -> None:
    """Remove the record (and any pause acknowledgement) of PID (default: this process)."""
    path = pid_path(home, pid)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ACK).unlink(missing_ok=True)


def clear_pid_on_sigterm(home: Path) -> None:
    """Remove this process's record when SIGTERM ends it, which then still dies of the
    signal. uvicorn re-raises the SIGTERM it caught once it has shut down, so a `finally`
    around uvicorn.run never runs for it; this handler, installed first, does."""

    def on_term(signum, _frame) -> None:
        clear_pid(home)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_term)


@contextmanager
def recorded(home: Path, role: str, url: str | None = None) -> Iterator[Path]:
    """Keep this process's record on HOME while the block runs."""
    path = write_pid(home, url=url, role=role)
    try:
        yield path
    finally:
        clear_pid(home)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []


def _records(home: Path) -> list[tuple[int, Path]]:
    folder = run_dir(home)
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted((int(n), folder / n) for n in names if n.isdigit() and int(n) > 0)


def stale(home: Path) -> list[Path]:
    """The records on HOME whose process is gone (an unclean stop, kill -9)."""
    return [path for pid, path in _records(home) if not process_alive(pid)]


def clean_stale(home: Path) -> list[Path]:
    """Remove the records (and acknowledgements) of processes that are gone; those removed."""
    gone = stale(home)
    for path in gone:
        clear_pid(home, int(path.name))
    return gone


def services(home: Path) -> list[Served]:
    """Every live service process recorded on HOME, oldest pid first (the records of
    processes that are gone are ignored)."""
    found = []
    for pid, path in _records(home):
        if not process_alive(pid):
            continue
        lines = _lines(path)
        role = lines[0] if lines and "://" not in lines[0] else "all"
        url = next((line for line in lines if "://" in line), None)
        found.append(Served(pid, url, role))
    return found


def running_pid(home: Path) -> int | None:
    """The pid of a service running on HOME, or None when none runs (a record left by
    kill -9 does not count)."""
    running = served(home)
    return running.pid if running else None


def served(home: Path) -> Served | None:
    """A service running on HOME, the first one that serves an address if any does."""
    found = services(home)
    return next((s for s in found if s.url), found[0] if found else None)


def _paused_for_me(home: Path, pid: int) -> bool:
    """Whether process PID has acknowledged a pause this process requested."""
    folder = run_dir(home)
    return _coordinator(home) == os.getpid() and (folder / f"{pid}{ACK}").exists()


def refuse_while_serving(home: Path, action: str, override: str | None = None) -> None:
    """Raise Conflict when a service runs on HOME: ACTION ('the rollback', ...) would change
    its database or files under it, and whatever it wrote afterwards would be lost. The one
    rule of every command that swaps or migrates a data directory; OVERRIDE names the flag
    of a command that lets the operator go ahead anyway. Processes paused for this very
    process (`paused_services`) do not count: they use no database until it lets them go."""
    running = [s for s in services(home) if not _paused_for_me(home, s.pid)]
    if not running:
        return
    named = "; ".join(f"pid {s.pid}, role {s.role}" for s in running)
    kills = " ".join(str(s.pid) for s in running)
    anyway = f", or pass {override} to go ahead under it" if override else ""
    noun = "A service" if len(running) == 1 else f"{len(running)} service processes"
    raise Conflict(
        f"{noun} ({named}) {'is' if len(running) == 1 else 'are'} running on {home}: {action} "
        f"would change the database under {'it' if len(running) == 1 else 'them'}; stop "
        f"{'it' if len(running) == 1 else 'them'} first ('kill -TERM {kills}', or "
        f"'systemctl stop' the units), then run the command again, or pass --coordinate to "
        f"pause them for it{anyway}."
    )


# --- the pause handshake -------------------------------------------------------------------


def _coordinator(home: Path) -> int | None:
    lines = _lines(run_dir(home) / PAUSE)
    return int(lines[0]) if lines and lines[0].isdigit() else None


def pause_requested(home: Path) -> bool:
    """Whether a live coordinator asks the services of HOME to pause; a request left by one
    that died is removed, so that the services resume by themselves."""
    pid = _coordinator(home)
    if pid is None:
        return False
    if process_alive(pid):
        return True
    (run_dir(home) / PAUSE).unlink(missing_ok=True)
    return False


def wait_while_paused(home: Path) -> None:
    """Block while a command holds the services of HOME paused: a service starting then
    waits for the swap to end instead of opening the database under it."""
    logged = False
    while pause_requested(home):
        if not logged:
            log.info("waiting: a command is swapping the data directory %s", home)
            logged = True
        time.sleep(POLL_SECONDS)


@contextmanager
def paused_services(home: Path, action: str, timeout: float | None = None) -> Iterator[list[int]]:
    """Pause every service process of HOME for the block (ACTION says what for): each stops
    taking requests and jobs, lets the running ones finish, closes its database connections
    and acknowledges; when the block ends they reopen and go on. Conflict, with nothing
    done, when one does not acknowledge within TIMEOUT seconds (default PAUSE_TIMEOUT)."""
    timeout = PAUSE_TIMEOUT if timeout is None else timeout
    folder = run_dir(home)
    other = _coordinator(home)
    if other is not None and other != os.getpid() and process_alive(other):
        raise Conflict(
            f"Another command (pid {other}) holds the services of {home} paused; wait for it "
            "to finish, then run this one again."
        )
    # written even when none runs: a service starting during the swap waits for its end
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / PAUSE, f"{os.getpid()}\n", mode=0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            waiting = [s.pid for s in services(home) if not (folder / f"{s.pid}{ACK}").exists()]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise Conflict(
                    f"The service process(es) {', '.join(map(str, waiting))} on {home} did "
                    f"not pause within {timeout:g} s, so {action} did not start and nothing "
                    "was changed; see that they answer (or stop them), then run it again."
                )
            time.sleep(POLL_SECONDS / 5)
        yield [s.pid for s in services(home)]
    finally:
        (folder / PAUSE).unlink(missing_ok=True)
    # they resume on their own now; wait a little so that the caller finds them serving
    deadline = time.monotonic() + timeout
    while any((folder / f"{s.pid}{ACK}").exists() for s in services(home)):
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS / 5)


@contextmanager
def coordinated(home: Path, action: str, coordinate: bool) -> Iterator[None]:
    """The block under `paused_services` when COORDINATE (a command's --coordinate), else
    as it is: the command's own `refuse_while_serving` then refuses beside a service."""
    if not coordinate:
        yield
        return
    with paused_services(home, action):
        yield


class PauseWatcher:
    """The service side of the handshake: a thread that polls HOME's pause request and
    calls PAUSE (which returns once the process no longer uses the database) and then
    RESUME when the request goes away or its coordinator dies."""

    def __init__(self, home: Path, pause: Callable[[], None], resume: Callable[[], None]):
        self.home, self._pause, self._resume = Path(home), pause, resume
        self._stop = threading.Event()
        self.paused = False
        self._thread = threading.Thread(target=self._run, name="sctk-pause-watch", daemon=True)

    def start(self) -> PauseWatcher:
        self._thread.start()
        return self

    def stop(self, resume: bool = True) -> None:
        """Stop watching; a paused process resumes first unless RESUME is false (it is
        stopping anyway)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self.paused and resume:
            self._go_on()
        self._ack().unlink(missing_ok=True)

    def _ack(self) -> Path:
        return run_dir(self.home) / f"{os.getpid()}{ACK}"

    def _go_on(self) -> None:
        try:
            self._resume()
        finally:
            self.paused = False
            self._ack().unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                wanted = pause_requested(self.home)
                if wanted and not self.paused:
                    log.info("pausing: a command is about to swap the data directory")
                    self.paused = True
                    self._pause()
                    if pause_requested(self.home):
                        atomic_write(self._ack(), f"{os.getpid()}\n", mode=0o644)
                elif self.paused and not wanted:
                    log.info("resuming: the data directory is ready again")
                    self._go_on()
            except Exception:  # the watcher must outlive one bad pass
                log.exception("the pause watcher failed a pass; it tries again")
