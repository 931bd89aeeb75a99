"""What a built app runs beside its requests, and when: the job workers, the metrics
collector, alerting and the scheduler started with the app and stopped with it; the bus
started first; the process's record on the data directory (a served process) and the pause
a swapping command asks for (sctk.runstate)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from sctk.api.pausing import PauseGate
from sctk.jobs.worker import start_workers, stop_workers
from sctk.runtime import Runtime
from sctk.security.credentials import CredentialCache

SERVE_URL_ENV = "SCTK_SERVE_URL"  # the address `sctk serve` serves, for the process's record


class AppLoops:
    """The loops one app runs and its lifespan. WORKERS job worker loops (None: jobs.workers,
    and the app is a served one); COLLECT the metrics collector (None: only in a served
    app); SCHEDULE the maintenance scheduler and alerting (None: in a served app unless
    maintenance.scheduler_in_serve is off); WARM the UQ engine imported at start; ANNOUNCE
    the role the process records on the data directory (None: not recorded)."""

    def __init__(
        self,
        rt: Runtime,
        workers: int | None,
        collect: bool | None,
        schedule: bool | None,
        warm: bool,
        announce: str | None,
    ):
        self.rt = rt
        self.settings = rt.settings
        self.workers = workers
        self.collect = collect
        self.schedule = schedule
        self.warm = warm
        self.announce = announce
        self.gate = PauseGate()  # closed while paused: requests wait or are turned away

    def start_loops(self, app: FastAPI) -> None:
        """Start the job workers, collector, alerting and scheduler this app runs."""
        settings, workers = self.settings, self.workers
        app.state.job_workers = start_workers(
            self.rt, settings.jobs.workers if workers is None else workers
        )
        serving = workers is None
        scheduling = (
            (serving and settings.maintenance.scheduler_in_serve)
            if self.schedule is None
            else self.schedule
        )
        if serving if self.collect is None else self.collect:
            from sctk.monitoring.collector import Collector

            app.state.collector = Collector.from_settings(settings, self.rt.engine).start()
            if scheduling:  # alerting goes with the scheduler: one place raises alerts
                from sctk.monitoring.watch import start_watch

                app.state.watch = start_watch(
                    settings, app.state.sessionmaker, app.state.collector, app.state.bus
                )
        app.state.scheduler = None
        if scheduling:
            from sctk.ops.scheduler import Scheduler

            # every such process runs one; the lease lets only one of them act
            app.state.scheduler = Scheduler(self.rt).start()

    def stop_loops(self, app: FastAPI) -> None:
        if app.state.scheduler is not None:
            app.state.scheduler.stop()
        if app.state.watch is not None:
            app.state.watch.close()
        if app.state.collector is not None:
            app.state.collector.stop()
        app.state.watch = app.state.collector = app.state.scheduler = None
        stop_workers(app.state.job_workers)
        app.state.job_workers = None

    def pause(self, app: FastAPI) -> None:
        """Stop using the database: no new request, the running ones and the loops done,
        every connection closed (a command is about to swap the data directory)."""
        from sctk.runstate import pause_requested

        self.gate.close(lambda: pause_requested(self.settings.home))
        self.stop_loops(app)
        app.state.bus.engine.dispose()  # the runtime's own unless a bus was made before
        self.rt.release()

    def resume(self, app: FastAPI) -> None:
        """Reopen on what the swap left: fresh connections, keys and credentials."""
        self.rt.release()  # nothing opened meanwhile may outlive the swap
        app.state.bus.engine.dispose()
        app.state.keyring = self.rt.reload_keyring()
        app.state.credential_cache = CredentialCache(self.settings.security.auth_cache_seconds)
        self.start_loops(app)
        self.gate.open()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        from sctk import runstate

        home, announce = self.settings.home, self.announce
        watcher = None
        if announce is not None:
            await run_in_threadpool(runstate.wait_while_paused, home)
            # one record per served process (uvicorn's workers each have theirs), before it
            # opens the database: restore, upgrade and rollback refuse while it is there, or
            # pause it (--coordinate)
            runstate.write_pid(home, url=os.environ.get(SERVE_URL_ENV), role=announce)
        try:
            # the process's bus: job events recorded here or (PostgreSQL) elsewhere reach it
            bus = app.state.bus = self.rt.bus
            await run_in_threadpool(bus.start)  # waits for LISTEN: blocking, so off the loop
            try:
                await run_in_threadpool(self.start_loops, app)
                if self.warm:
                    from sctk.api.warmup import warm_up

                    await run_in_threadpool(warm_up)
                if announce is not None:
                    watcher = runstate.PauseWatcher(
                        home, lambda: self.pause(app), lambda: self.resume(app)
                    ).start()
                yield
            finally:
                if watcher is not None:
                    await run_in_threadpool(watcher.stop, False)
                await run_in_threadpool(self.stop_loops, app)  # none left when stopped paused
                await run_in_threadpool(bus.stop)
                self.rt.close()
        finally:
            if announce is not None:
                runstate.clear_pid(home)
