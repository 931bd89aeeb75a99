"""Where jobs run: a local process pool or a Dask cluster, behind one small interface.

An executor has `submit(fn, *args) -> future` (the future has done(), result() and
add_done_callback()), `free_slots()` and `shutdown(wait=True, kill=False)`. The worker loop
submits `execute(func, params, ctx)`: it runs in the child, turns whatever the job does into
an `Outcome` (so that nothing unpicklable has to travel back), and gives the job a
`RunContext` whose progress() and log() write job events straight to the database through
an engine of the child's own. While the job runs, a `Watch` (sctk.jobs.watch) stops it on
a cancel request or past its maximum run time.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, NamedTuple

from sctk.errors import DatabaseUnavailable, InsufficientStorage, SctkError
from sctk.fsutil import no_space_error
from sctk.jobs import watch
from sctk.jobs.child_engine import engine_for
from sctk.jobs.kinds import JobCancelled, JobTimedOut

if TYPE_CHECKING:
    from collections.abc import Callable

    from sctk.config import Settings

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024
_MAX_LOG_CHARS = 4000


# --- in the process that runs the job ---------------------------------------------------------


class RunContext:
    """The JobContext of one try of one job, in the process running it.

    It pickles to plain fields. progress() and checkpoint() raise JobCancelled when
    cancellation was requested, and also when this try no longer owns the job (its worker was
    presumed dead and the job re-queued), so that an orphaned try stops instead of running
    twice; JobTimedOut past MAX_RUNTIME seconds. GRACE: how long the job then has to stop on
    its own before it is interrupted harder (see sctk.jobs.watch).
    """

    def __init__(
        self,
        job_id: int,
        home: str,
        worker: str,
        attempt: int,
        owner: str = "system",
        kind: str = "",
        max_runtime: float | None = None,
        grace: float = 5.0,
    ):
        self.job_id = job_id
        self._home = str(home)
        self.worker = worker
        self.attempt = attempt
        self.owner = owner
        self.kind = kind
        self.max_runtime = max_runtime
        self.grace = grace
        self.watch: watch.Watch | None = None  # made in the process that runs the job

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "watch": None}

    @property
    def home(self) -> str:
        return self._home

    def cancelled(self) -> bool:
        """Whether the job must stop (cancelled, timed out, or no longer this try's): cheap,
        it reads what the watch last saw, so a kind may ask between any two steps."""
        return self.watch is not None and self.watch.reason is not None

    def checkpoint(self) -> None:
        """Raise JobCancelled (or JobTimedOut) when the job must stop; else return at once."""
        if not self.cancelled():
            return
        assert self.watch is not None
        if self.watch.reason == watch.TIMEOUT:
            raise JobTimedOut(self.watch.message)
        raise JobCancelled(self.watch.message)

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1] (one event per call); raises JobCancelled on request."""
        from sqlalchemy import update

        from sctk.jobs import events
        from sctk.storage.engine import session_scope
        from sctk.storage.models import Job, utcnow

        self.checkpoint()
        fraction = min(max(float(fraction), 0.0), 1.0)
        message = str(message)[:500]
        with session_scope(engine_for(self._home)) as session:
            changed = session.execute(
                update(Job)
                .where(
                    Job.id == self.job_id,
                    Job.status == "running",
                    Job.worker == self.worker,
                    Job.attempts == self.attempt,
                    Job.cancel_requested.is_(False),
                )
                .values(progress=fraction, message=message, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed:
                events.record(
                    session, self.job_id, "progress", {"fraction": fraction, "message": message}
                )
                return
            job = session.get(Job, self.job_id)
        if job is not None and job.cancel_requested:
            raise JobCancelled(f"job {self.job_id} was cancelled on request")
        raise JobCancelled(f"job {self.job_id} is no longer held by worker {self.worker}")

    def log(self, line: str) -> None:
        """Append a log line to the job's events."""
        from sctk.jobs import events
        from sctk.storage.engine import session_scope

        with session_scope(engine_for(self._home)) as session:
            events.record(session, self.job_id, "log", {"line": str(line)[:_MAX_LOG_CHARS]})


class Outcome(NamedTuple):
    """What became of one try: status 'ok', 'cancelled' or 'error'."""

    status: str
    result: dict[str, Any] | None = None
    error: str = ""
    retryable: bool = True


def execute(func: Callable[..., Any], params: dict[str, Any], ctx: RunContext) -> Outcome:
    """Run one try of a job under a watch (see sctk.jobs.watch); every exception becomes an
    Outcome."""
    watcher = ctx.watch = watch.Watch(ctx, ctx.max_runtime, ctx.grace)
    try:
        try:
            watcher.start()
            return _outcome(func, params, ctx)
        finally:
            watcher.stop()
    except watch.JobStopped:
        # the interruption landed just as the job ended: it ended because of it
        watcher.stop()
        return _stopped(watcher)


def _stopped(watcher: watch.Watch) -> Outcome:
    if watcher.reason == watch.TIMEOUT:
        return Outcome("error", error=watcher.message, retryable=False)
    return Outcome("cancelled", error=watcher.message or "cancelled on request")


def _outcome(func: Callable[..., Any], params: dict[str, Any], ctx: RunContext) -> Outcome:
    try:
        result = func(params, ctx)
    except watch.JobStopped:
        assert ctx.watch is not None
        ctx.watch.stop()
        return _stopped(ctx.watch)
    except JobTimedOut as exc:
        return Outcome("error", error=str(exc), retryable=False)
    except JobCancelled as exc:
        return Outcome("cancelled", error=str(exc) or "cancelled on request")
    except SctkError as exc:
        # a user-fixable problem (bad parameters, a missing dataset): a retry cannot help,
        # unless the database was away for a moment or the disk full (space may return)
        passing = isinstance(exc, DatabaseUnavailable | InsufficientStorage)
        return Outcome("error", error=exc.message, retryable=passing)
    except Exception as exc:  # the job's own failure, reported as its error
        full = no_space_error(exc, "the data directory")
        if full is not None:
            return Outcome("error", error=full.message, retryable=True)
        return Outcome("error", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    if result is None:
        return Outcome("ok", None)
    try:
        if not isinstance(result, dict):
            raise TypeError(f"it is a {type(result).__name__}, not a dict")
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return Outcome(
            "error",
            error=f"The job returned a result that is not a plain JSON object: {exc}.",
            retryable=False,
        )
    if len(encoded) > MAX_RESULT_BYTES:
        return Outcome(
            "error",
            error=f"The job returned {len(encoded)} bytes of result, more than the "
            f"{MAX_RESULT_BYTES} a job row keeps; write large results to a file and return "
            "its path.",
            retryable=False,
        )
    return Outcome("ok", json.loads(encoded))


def _ready() -> int:
    return os.getpid()


def _orphan_watch(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            # The worker that owns this job is gone (killed); its jobs will be re-queued once
            # its heartbeat is stale, so running on here would only run them twice.
            os._exit(70)


def _child_init(parent: int, home: str | None = None) -> None:
    # The parent decides about interrupts: Ctrl-C reaches the whole process group, and a
    # job must not die of it while the worker is still draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch.in_pool_process = True
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    if home is not None:
        # reading the settings and making the engine takes seconds on a busy machine: done
        # now, the first job's watch notices a cancel as soon as any other's
        threading.Thread(target=_warm_engine, args=(home,), daemon=True).start()


def _warm_engine(home: str) -> None:
    try:
        engine_for(home)
    except Exception:  # the job's own first use reports what is wrong
        log.debug("could not make the engine ahead of the first job", exc_info=True)


# --- in the worker -----------------------------------------------------------------------------


class _Slots:
    """Counts submitted, unfinished futures so that workers sharing an executor do not
    claim more jobs than it can start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0

    def taken(self, future: Any) -> Any:
        with self._lock:
            self.in_flight += 1
        future.add_done_callback(self._freed)
        return future

    def _freed(self, _future: Any) -> None:
        with self._lock:
            self.in_flight -= 1


class LocalExecutor:
    """A pool of PROCESSES (default: one per CPU core) started with 'spawn'.

    'spawn', not 'fork': the worker holds database connections and threads, which a forked
    child must not inherit. With HOME, each process makes its engine for that data directory
    as it starts, ahead of its first job.
    """

    def __init__(self, processes: int | None = None, home: str | None = None):
        self.processes = processes or os.cpu_count() or 1
        self._home = home
        self._slots = _Slots()
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_child_init,
            initargs=(os.getpid(), self._home),
        )

    def free_slots(self) -> int:
        return max(self.processes - self._slots.in_flight, 0)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            try:
                future = self._pool.submit(fn, *args)
            except BrokenProcessPool:
                # a child died (killed, out of memory): its futures failed; start afresh
                log.warning("process pool broken; starting a new one")
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                future = self._pool.submit(fn, *args)
        return self._slots.taken(future)

    def warm_up(self) -> list[int]:
        """Start every process of the pool now; their pids."""
        futures = [self._pool.submit(_ready) for _ in range(self.processes)]
        return [f.result() for f in futures]

    def pids(self) -> list[int]:
        return [p.pid for p in list(getattr(self._pool, "_processes", {}).values()) if p.pid]

    def shutdown(self, wait: bool = True, kill: bool = False) -> None:
        """Stop the pool; KILL terminates the processes even in the middle of a job."""
        with self._lock:
            if kill:
                # ProcessPoolExecutor has no way to stop a call that has started: ending its
                # processes (a private attribute, there since Python 3.2) is the only one.
                processes = list(getattr(self._pool, "_processes", {}).values())
                for process in processes:
                    process.terminate()
                for process in processes:
                    process.join(timeout=10)
            self._pool.shutdown(wait=wait, cancel_futures=True)


class DaskExecutor:
    """Jobs on a Dask cluster: the scheduler at ADDRESS, or a LocalCluster of PROCESSES
    single-threaded worker processes (default: one per CPU core) when there is none."""

    def __init__(
        self, address: str | None = None, processes: int | None = None, timeout: float = 10.0
    ):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise SctkError(
                "The Dask executor needs dask.distributed, which is not installed; install "
                "sctk[dask] (pip install 'sctk[dask]') or set executor.kind = \"local\"."
            ) from None
        self._slots = _Slots()
        self._cluster = None
        self._nthreads = 0
        self._nthreads_at = 0.0
        if address:
            try:
                self._client = Client(address, timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise SctkError(
                    f"Cannot reach the Dask scheduler at {address}: {exc}; check "
                    "executor.address and that the scheduler is running."
                ) from None
        else:
            self._cluster = LocalCluster(
                n_workers=processes or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                # its HTTP server (health, metrics) on loopback and a free port: None
                # still opened 8787 on every interface, and a second cluster clashed there
                dashboard_address="127.0.0.1:0",
            )
            self._client = Client(self._cluster)

    def capacity(self) -> int:
        """Threads across the cluster's workers (asked again every few seconds)."""
        now = time.monotonic()
        if not self._nthreads or now - self._nthreads_at > 5.0:
            try:
                self._nthreads = sum(self._client.nthreads().values())
            except Exception:  # scheduler briefly unreachable: keep the old figure
                log.warning("could not ask the Dask scheduler for its workers", exc_info=True)
            self._nthreads_at = now
        return self._nthreads

    def free_slots(self) -> int:
        return max(self.capacity() - self._slots.in_flight, 0)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        key = f"sctk-job-{uuid.uuid4().hex}"
        return self._slots.taken(self._client.submit(fn, *args, key=key, pure=False))

    def warm_up(self) -> list[int]:
        return [self._client.submit(_ready, pure=False).result()]

    def shutdown(self, wait: bool = True, kill: bool = False) -> None:
        # A remote cluster keeps running a task it was given; an orphaned try stops at its
        # next progress() call, since its job is no longer held by this worker.
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(settings: Settings) -> LocalExecutor | DaskExecutor:
    """The executor settings.executor describes."""
    ex = settings.executor
    if ex.kind == "dask":
        return DaskExecutor(ex.address, ex.processes or None)
    return LocalExecutor(ex.processes or None, home=str(settings.home))
