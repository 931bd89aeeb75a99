"""The worker loop: claim queued jobs, run them on an executor, record what became of them.

One pass of the loop records the outcome of every finished try (succeeded, failed and
retried later, dead, cancelled), re-queues the jobs of workers that stopped heartbeating,
and claims as many jobs as it has free slots. A thread says every heartbeat_seconds that
the worker still runs the jobs it holds. `stop()` ends the loop: running jobs get a grace
period to finish, then the executor is stopped and what is left goes back to the queue.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from sctk.config import Settings
from sctk.errors import SctkError
from sctk.jobs import queue
from sctk.jobs.child_engine import connect_bus
from sctk.jobs.executors import Outcome, RunContext, execute, make_executor
from sctk.jobs.kinds import RESERVED_PARAMS, get_kind
from sctk.runtime import Runtime
from sctk.storage.engine import session_scope
from sctk.storage.outage import OUTAGE_ERRORS, Outage

log = logging.getLogger(__name__)

SERVE_GRACE_SECONDS = 10.0
"""How long `sctk serve` lets running jobs finish at shutdown before re-queuing them."""


def new_worker_id() -> str:
    """host:pid:random, unique per worker loop."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class _Running:
    job_id: int
    kind: str
    attempt: int
    future: Any
    started: float


class Worker:
    """One worker loop. Runs jobs on EXECUTOR (default: the one settings describe, owned and
    shut down by this worker), at most CONCURRENCY at a time (default: jobs.concurrency, or
    one per CPU core). It uses RUNTIME's engine and bus (a group's or the app's); a worker
    started alone builds a runtime of its own and closes it with itself."""

    def __init__(
        self,
        settings: Settings,
        executor: Any = None,
        concurrency: int | None = None,
        runtime: Runtime | None = None,
        worker_id: str | None = None,
    ):
        self.settings = settings
        self.policy = settings.jobs
        self.id = worker_id or new_worker_id()
        self.concurrency = concurrency or settings.jobs.concurrency or os.cpu_count() or 1
        self._own_runtime = runtime is None
        self.runtime = runtime or Runtime(settings)
        self.engine = self.runtime.engine
        connect_bus(self.runtime)
        self._own_executor = executor is None
        self.executor = executor or make_executor(settings)
        self.stats: Counter[str] = Counter()
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._force = threading.Event()
        self._wake = threading.Event()
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._next_sweep = 0.0
        self._closed = False
        self._outage = Outage(f"worker {self.id}", self.engine, self.policy.poll_seconds, log)
        self._beat_outage = Outage(f"heartbeat of {self.id}", self.engine, 0.0, log)
        if self.policy.stale_after_seconds < 2 * self.policy.heartbeat_seconds:
            log.warning(
                "jobs.stale_after_seconds (%g) is less than twice jobs.heartbeat_seconds (%g): "
                "running jobs of live workers may be taken for lost and run again",
                self.policy.stale_after_seconds,
                self.policy.heartbeat_seconds,
            )

    # --- control ---------------------------------------------------------------------------

    def stop(self, force: bool = False) -> None:
        """Ask the loop to end (from any thread or a signal handler); FORCE skips the grace."""
        self._stop.set()
        if force:
            self._force.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def held(self) -> list[int]:
        """Ids of the jobs this worker runs now."""
        with self._lock:
            return list(self._running)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- heartbeat ------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._beat_thread is None:
            self._beat_thread = threading.Thread(
                target=self._beat, name=f"heartbeat {self.id}", daemon=True
            )
            self._beat_thread.start()

    def _beat(self) -> None:
        # A thread of its own, so that a slow pass of the loop (a long wait on a lock, a
        # large batch of results) never makes a live worker look dead.
        period = self.policy.heartbeat_seconds
        while not self._beat_stop.wait(period):
            ids = self.held()
            if ids:
                try:
                    with session_scope(self.engine) as session:
                        queue.heartbeat(session, self.id, ids)
                    self._beat_outage.ok()
                except OUTAGE_ERRORS as exc:  # keep beating; the database may come back
                    self._beat_outage.failed(exc)
                except Exception:  # keep beating
                    log.warning("heartbeat failed", extra={"worker": self.id}, exc_info=True)

    # --- one pass ---------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Re-queue the jobs of silent workers; cancel queued jobs marked for cancellation."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + max(self.policy.stale_after_seconds / 4, self.policy.poll_seconds)
        with session_scope(self.engine) as session:
            stale = queue.requeue_stale(session, self.policy.stale_after_seconds, self.policy)
            cancelled = queue.cancel_pending(session)
        for job in stale:
            log.warning(
                "job %s of a silent worker is now %s",
                job.id,
                job.status,
                extra={"job_id": job.id, "worker": self.id},
            )
        self.stats["requeued_stale"] += len(stale)
        self.stats["cancelled"] += len(cancelled)

    def _record(self, session: Session, run: _Running, outcome: Outcome) -> str:
        """Write OUTCOME of RUN; the job's new status ('lost' when it was no longer ours)."""
        if outcome.status == "ok":
            job = queue.finish(session, run.job_id, outcome.result, worker=self.id)
        elif outcome.status == "cancelled":
            job = queue.mark_cancelled(session, run.job_id, outcome.error, worker=self.id)
        else:
            job = queue.fail(
                session,
                run.job_id,
                outcome.error,
                worker=self.id,
                policy=self.policy,
                retryable=outcome.retryable,
            )
        return job.status if job is not None else "lost"

    def _finished(self) -> list[tuple[_Running, Outcome]]:
        with self._lock:
            # in id order, as the heartbeat's UPDATE locks them: two transactions of this
            # worker never wait on each other's rows in opposite orders
            done = sorted(
                (run for run in self._running.values() if run.future.done()),
                key=lambda run: run.job_id,
            )
        finished = []
        for run in done:
            try:
                outcome = run.future.result()
            except Exception as exc:  # the process running it died or vanished
                outcome = Outcome("error", error=f"the process running the job died: {exc!r}")
            finished.append((run, outcome))
        return finished

    def run_once(self, claim: bool = True) -> tuple[int, int]:
        """One pass: record the outcome of every finished try and claim jobs for the free
        slots, in one transaction (fewer commits: on PostgreSQL each one waits for the disk).
        Then start the claimed jobs. Returns (outcomes recorded, jobs claimed)."""
        if claim:
            self._sweep()
        finished = self._finished()
        with self._lock:
            free = self.concurrency - len(self._running) + len(finished)
        free = min(free, self.executor.free_slots()) if claim and not self.stopping else 0
        with session_scope(self.engine) as session:
            statuses = [self._record(session, run, outcome) for run, outcome in finished]
            claimed = []
            for job in queue.claim(session, self.id, free) if free > 0 else []:
                try:
                    kind = get_kind(job.kind)
                except SctkError as exc:  # a kind this installation lacks: no retry helps
                    queue.fail(session, job.id, exc.message, worker=self.id, retryable=False)
                    self.stats["failed"] += 1
                    log.warning("job %s: %s", job.id, exc.message, extra={"job_id": job.id})
                    continue
                # a row queued before owners were refused as parameters may still name one
                params = {k: v for k, v in job.params.items() if k not in RESERVED_PARAMS}
                claimed.append((job.id, job.kind, kind.func, params, job.attempts, job.owner))
        for (run, outcome), status in zip(finished, statuses, strict=True):
            self._done(run, outcome, status)
        for job_id, kind_name, func, params, attempt, owner in claimed:
            self._start(job_id, kind_name, func, params, attempt, owner)
        self.stats["claimed"] += len(claimed)
        return len(finished), len(claimed)

    def _done(self, run: _Running, outcome: Outcome, status: str) -> None:
        with self._lock:
            del self._running[run.job_id]
        self.stats["retried" if status == "queued" else status] += 1
        level = logging.INFO if status in ("succeeded", "cancelled") else logging.WARNING
        log.log(
            level,
            "job %s (%s) %s after %.2f s%s",
            run.job_id,
            run.kind,
            "was re-queued" if status == "queued" else status,
            time.monotonic() - run.started,
            f": {outcome.error.splitlines()[0]}" if outcome.error else "",
            extra={"job_id": run.job_id, "worker": self.id, "status": status},
        )

    def _start(
        self, job_id: int, kind: str, func: Any, params: dict, attempt: int, owner: str
    ) -> None:
        ctx = RunContext(
            job_id,
            str(self.settings.home),
            self.id,
            attempt,
            owner=owner,
            kind=kind,
            max_runtime=self.policy.max_runtime(kind),
            grace=self.policy.cancel_grace_seconds,
        )
        try:
            future = self.executor.submit(execute, func, params, ctx)
        except Exception as exc:  # executor gone: give the job back
            log.error("could not start job %s: %r", job_id, exc, extra={"job_id": job_id})
            with session_scope(self.engine) as session:
                queue.release(session, job_id, self.id, f"could not start it: {exc!r}")
            return
        with self._lock:
            self._running[job_id] = _Running(job_id, kind, attempt, future, time.monotonic())
        future.add_done_callback(lambda _f: self._wake.set())
        log.info(
            "job %s (%s) started, try %s",
            job_id,
            kind,
            attempt,
            extra={"job_id": job_id, "worker": self.id},
        )

    def _wait(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()

    def _safe_pass(self) -> tuple[int, int] | None:
        try:
            done = self.run_once()
        except OUTAGE_ERRORS as exc:  # the database away, a lock timeout: try again later
            self._wait(self._outage.failed(exc))
            return None
        except Exception:  # a bug: said in full, then the loop goes on
            log.exception("worker pass failed; retrying", extra={"worker": self.id})
            self._wait(self.policy.poll_seconds)
            return None
        self._outage.ok()
        return done

    # --- loops ------------------------------------------------------------------------------

    def run_forever(self, grace: float = 30.0) -> None:
        """Run until stop(); then let running jobs finish for up to GRACE seconds and give
        back (re-queue) the ones that did not. Closes the worker."""
        self._start_heartbeat()
        log.info(
            "worker %s started (%s slots)", self.id, self.concurrency, extra={"worker": self.id}
        )
        try:
            self.loop()
            self.drain(grace)
        finally:
            self.close()

    def loop(self) -> None:
        """Run passes until stop(), waiting poll_seconds (or for a job to end) when idle."""
        self._start_heartbeat()
        while not self.stopping:
            done = self._safe_pass()
            if done is not None and not any(done):
                self._wait(self.policy.poll_seconds)

    def run_until_idle(self, timeout: float | None = None) -> Counter[str]:
        """Run until no job is runnable now and none is running; the stats. Jobs waiting for
        a retry later are left queued. TimeoutError after TIMEOUT seconds."""
        self._start_heartbeat()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._next_sweep = 0.0
        while not self.stopping:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.id} still busy after {timeout:g} s: {self.stats}")
            done = self._safe_pass()
            if done is None:
                continue
            collected, claimed = done
            if not claimed and not self.held():
                with session_scope(self.engine) as session:
                    if not queue.has_runnable(session):
                        break
            if not collected and not claimed:
                self._wait(self.policy.poll_seconds)
        return self.stats

    def drain(self, grace: float) -> None:
        """Wait up to GRACE seconds for running jobs, recording their outcomes."""
        deadline = time.monotonic() + grace
        while self.held() and not self._force.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.run_once(claim=False)
            except Exception:  # keep waiting; stale detection is the backstop
                log.exception("recording an outcome failed", extra={"worker": self.id})
            self._wait(min(remaining, self.policy.poll_seconds))

    def release_all(self, reason: str) -> int:
        """Give back every held job (its try does not count); their processes must be gone."""
        released = 0
        for job_id in self.held():
            try:
                with session_scope(self.engine) as session:
                    job = queue.release(session, job_id, self.id, reason)
            except Exception:  # stale detection re-queues it later
                log.exception("could not release job %s", job_id, extra={"job_id": job_id})
                continue
            with self._lock:
                self._running.pop(job_id, None)
            if job is not None:
                released += 1
                log.warning("job %s re-queued: %s", job_id, reason, extra={"job_id": job_id})
        self.stats["released"] += released
        return released

    def close(self) -> None:
        """Stop heartbeating; with an executor of its own, stop it (killing what still runs,
        whose jobs go back to the queue); dispose of an engine of its own."""
        if self._closed:
            return
        self._closed = True
        if self._own_executor:
            if self.held():
                self.executor.shutdown(wait=True, kill=True)
                self.release_all(f"worker {self.id} shut down before the job finished")
            else:
                self.executor.shutdown(wait=True)
        elif self.held():
            log.warning(
                "worker %s closed holding jobs %s of a shared executor", self.id, self.held()
            )
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(timeout=self.policy.heartbeat_seconds + 5)
        if self._own_runtime:
            self.runtime.close()


class WorkerGroup:
    """LOOPS worker loops in threads of this process, sharing one executor and the engine of
    RUNTIME (the process's): what `sctk serve` (jobs.workers) and `sctk worker` run."""

    def __init__(self, runtime: Runtime, loops: int, concurrency: int | None = None):
        if loops < 1:
            raise SctkError(f"A worker group needs at least one loop, not {loops}.")
        self.runtime = runtime
        self.settings = settings = runtime.settings
        self.engine = runtime.engine
        self.executor = make_executor(settings)
        self.workers = [
            Worker(settings, self.executor, concurrency, runtime=runtime) for _ in range(loops)
        ]
        self._threads: list[threading.Thread] = []
        self._grace = 30.0

    def start(self, grace: float = 30.0) -> None:
        self._grace = grace
        for worker in self.workers:
            thread = threading.Thread(
                target=self._run, args=(worker,), name=f"worker {worker.id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self, worker: Worker) -> None:
        worker.loop()
        worker.drain(self._grace)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def request_stop(self, force: bool = False) -> None:
        for worker in self.workers:
            worker.stop(force=force)

    def stop(self, grace: float | None = None, force: bool = False) -> None:
        """Stop every loop; running jobs get GRACE seconds, then the executor is stopped and
        the jobs still held go back to the queue."""
        if grace is not None:
            self._grace = grace
        self.request_stop(force)
        for thread in self._threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
        holding = any(w.held() for w in self.workers)
        self.executor.shutdown(wait=True, kill=holding)
        for worker in self.workers:
            worker.release_all(f"worker {worker.id} shut down before the job finished")
            worker.close()
        # no pooled connection outlives the loops (a swap of the data directory may follow)
        self.runtime.release()
        log.info("workers stopped", extra={"stats": dict(self.stats())})

    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for worker in self.workers:
            total.update(worker.stats)
        return total


def start_workers(runtime: Runtime, loops: int, grace: float = SERVE_GRACE_SECONDS):
    """Start LOOPS worker loops in this process (none when 0) on RUNTIME's engine; what to
    pass to stop_workers."""
    if loops < 1:
        return None
    group = WorkerGroup(runtime, loops)
    group.start(grace)
    return group


def stop_workers(group: WorkerGroup | None) -> None:
    """Stop what start_workers started: running jobs get their grace, the rest is re-queued."""
    if group is not None:
        group.stop()
