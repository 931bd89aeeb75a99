"""The watch over one running try of a job, in the process that runs it.

A thread reads the job's row every WATCH_PERIOD seconds and decides that the try must stop
when cancellation was requested, when the try no longer holds the job (its worker was taken
for dead and the job re-queued), or when the job has run past its maximum run time. Then:

1. the job is told: ctx.cancelled() turns true and ctx.checkpoint() (and ctx.progress())
   raise, so a kind that works in steps stops between two of them;
2. the job is interrupted: a JobStopped exception (a BaseException, so that a kind's
   `except Exception` does not swallow it) is raised in the thread running it, by a signal
   when that is a process's main thread (which also cuts a blocking sleep or read short),
   else asynchronously at its next bytecode;
3. after the grace period, a job still running in a pool process of a local worker (stuck
   in C code, or swallowing the interruption) has its final state written here and its
   process ended. The pool then starts a new process for the next job.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sctk.jobs.executors import RunContext

log = logging.getLogger(__name__)

WATCH_PERIOD = 0.5
"""Seconds between two looks at a running job's row: how soon a cancel is noticed."""

STOP_SIGNAL = signal.SIGUSR1
HARD_STOP_EXIT = 75
"""The exit status of a pool process ended because its job would not stop."""

CANCELLED, LOST, TIMEOUT = "cancelled", "lost", "timeout"

# Set by the local pool's process initializer: only there may the watch end the process.
in_pool_process = False

_current: Watch | None = None


class JobStopped(BaseException):
    """Raised in a running job that was told to stop and did not; REASON says why."""

    def __init__(self, reason: str = "", message: str = ""):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _on_signal(_signum, _frame) -> None:
    watch = _current
    if watch is not None and watch.armed:
        raise JobStopped(watch.reason or CANCELLED, watch.message)


class Watch:
    """Watches CTX's job while it runs in THREAD (default: the calling thread)."""

    def __init__(self, ctx: RunContext, max_runtime: float | None, grace: float):
        self.ctx = ctx
        self.max_runtime = max_runtime
        self.grace = grace
        self.reason: str | None = None
        self.message = ""
        self.armed = True
        self._thread_id = threading.get_ident()
        self._in_main = threading.current_thread() is threading.main_thread()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watch job {ctx.job_id}", daemon=True
        )

    def start(self) -> Watch:
        global _current
        if self._in_main:
            signal.signal(STOP_SIGNAL, _on_signal)
        _current = self
        self._thread.start()
        return self

    def stop(self) -> None:
        """The job has returned: no interruption may reach it from now on. Idempotent."""
        global _current
        with self._lock:
            self.armed = False
        self._done.set()
        if _current is self:
            _current = None

    # --- in the watch thread ----------------------------------------------------------------

    def _run(self) -> None:
        wait = 0.0  # the first look at once: it also makes this process's engine if need be
        while not self._done.wait(wait):
            wait = WATCH_PERIOD
            try:
                found = self._look()
            except Exception:  # the database away for a moment: look again
                log.warning("could not look at job %s", self.ctx.job_id, exc_info=True)
                continue
            if found is not None:
                self._stop_job(*found)
                return

    def _look(self) -> tuple[str, str] | None:
        """(reason, message) when the try must stop, else None."""
        ctx = self.ctx
        elapsed = time.monotonic() - self._started
        if self.max_runtime is not None and elapsed > self.max_runtime:
            return TIMEOUT, (
                f"Job {ctx.job_id} ({ctx.kind}) ran longer than its maximum run time of "
                f"{self.max_runtime:g} s and was stopped; if it needs longer, raise "
                f"[jobs] max_runtime_seconds (or its entry in max_runtime_by_kind) in sctk.toml."
            )
        from sqlalchemy import select

        from sctk.jobs.child_engine import engine_for
        from sctk.storage.models import Job

        with engine_for(ctx.home).connect() as conn:
            row = conn.execute(
                select(Job.status, Job.worker, Job.attempts, Job.cancel_requested).where(
                    Job.id == ctx.job_id
                )
            ).first()
        if row is not None and row.cancel_requested:
            return CANCELLED, f"job {ctx.job_id} was cancelled on request"
        if row is None or (row.status, row.worker, row.attempts) != (
            "running",
            ctx.worker,
            ctx.attempt,
        ):
            return LOST, f"job {ctx.job_id} is no longer held by worker {ctx.worker}"
        return None

    def _stop_job(self, reason: str, message: str) -> None:
        self.reason, self.message = reason, message  # ctx.cancelled() is true from here
        with self._lock:
            if not self.armed:
                return
            if self._in_main:
                os.kill(os.getpid(), STOP_SIGNAL)
            else:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread_id), ctypes.py_object(JobStopped)
                )
        if self._done.wait(self.grace) or not in_pool_process:
            return
        log.error(
            "job %s did not stop within %g s; ending its process %s",
            self.ctx.job_id,
            self.grace,
            os.getpid(),
        )
        try:
            self._record_hard_stop(reason, message)
        finally:
            os._exit(HARD_STOP_EXIT)

    def _record_hard_stop(self, reason: str, message: str) -> None:
        """Write the job's end here: the worker sees only that the process died."""
        from sctk.jobs import queue
        from sctk.jobs.child_engine import engine_for
        from sctk.storage.engine import session_scope

        note = f"{message} (it did not stop within {self.grace:g} s, so its process was ended)"
        with session_scope(engine_for(self.ctx.home)) as session:
            if reason == TIMEOUT:
                queue.fail(session, self.ctx.job_id, note, self.ctx.worker, retryable=False)
            elif reason == CANCELLED:
                queue.mark_cancelled(session, self.ctx.job_id, note, self.ctx.worker)
