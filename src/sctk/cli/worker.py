"""`sctk worker`: run job workers alone, without the API."""

from __future__ import annotations

import signal
import threading
from collections import Counter

import typer

from sctk.cli.common import console, runtime


def worker(
    ctx: typer.Context,
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        max=256,
        help="Jobs one loop runs at once (default: jobs.concurrency, else one per CPU core).",
    ),
    loops: int | None = typer.Option(
        None, "--loops", min=1, max=64, help="Worker loops in this process (default: jobs.workers)."
    ),
    grace: float = typer.Option(
        30.0,
        "--grace",
        min=0,
        help="On SIGTERM or Ctrl-C, seconds running jobs get to finish before they are put "
        "back in the queue; a second signal stops at once.",
    ),
    until_idle: bool = typer.Option(
        False, "--until-idle", help="Exit once no job is runnable and none is running."
    ),
) -> None:
    """Run queued jobs until stopped (SIGTERM or Ctrl-C end it cleanly, exit status 0)."""
    from sctk import logs
    from sctk.jobs.worker import Worker, WorkerGroup
    from sctk.storage.layout import require_data_dir

    rt = runtime(ctx)  # the process's engine and bus, shared by every loop
    s = rt.settings
    require_data_dir(s)
    logs.configure(s, console_level="INFO")
    stop_requested = threading.Event()
    signals = {"count": 0}
    stoppers: list = []

    def on_signal(signum: int, _frame) -> None:
        signals["count"] += 1
        force = signals["count"] > 1
        stop_requested.set()
        for stop in stoppers:
            stop(force)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    where = s.executor.address or ("a local Dask cluster" if s.executor.kind == "dask" else None)
    pool = f"on {where}" if where else "in a local process pool"
    if until_idle:
        with Worker(s, concurrency=concurrency, runtime=rt) as one:
            stoppers.append(lambda force: one.stop(force))
            console.print(
                f"worker {one.id}: {one.concurrency} slots {pool}, until the queue is idle",
                highlight=False,
            )
            stats = one.run_until_idle()
            one.drain(grace)
    else:
        from sctk import runstate

        runstate.wait_while_paused(s.home)  # a swap under way: start after it
        count = loops or max(s.jobs.workers, 1)
        groups = [WorkerGroup(rt, count, concurrency)]
        stoppers.append(lambda force: groups[-1].request_stop(force))
        first = groups[0].workers[0]
        console.print(
            f"{len(groups[0].workers)} worker loop(s) of {first.concurrency} slots {pool} "
            f"(first id {first.id}); SIGTERM or Ctrl-C stops them, running jobs get "
            f"{grace:g} s to finish",
            highlight=False,
        )
        stats = Counter()

        def pause() -> None:  # a swap of the data directory: the loops end, jobs re-queued
            groups[-1].stop()
            stats.update(groups[-1].stats())

        def resume() -> None:
            groups.append(WorkerGroup(rt, count, concurrency))
            groups[-1].start(grace)

        groups[0].start(grace)
        with runstate.recorded(s.home, "worker"):
            watcher = runstate.PauseWatcher(s.home, pause, resume).start()
            while not stop_requested.wait(0.5):
                if not watcher.paused and not groups[-1].alive():
                    break
            watcher.stop(resume=False)  # stopping: a paused group stays stopped
            if not watcher.paused:
                groups[-1].stop()
                stats.update(groups[-1].stats())
    done = ", ".join(f"{n} {what}" for what, n in sorted(stats.items()) if n) or "no jobs"
    console.print(f"worker stopped: {done}", highlight=False)
