"""`sctk scheduler`: the maintenance scheduler with the metrics collector and alerting, alone
(what `sctk serve --role scheduler` runs; `sctk serve` runs them inside the API by default)."""

from __future__ import annotations

import signal
import threading

import typer

from sctk.cli.common import console, runtime


def scheduler(
    ctx: typer.Context,
    monitor: bool = typer.Option(
        True, "--monitor/--no-monitor", help="Also collect metrics and raise alerts."
    ),
) -> None:
    """Run scheduled maintenance (and monitoring) until stopped; one active per database."""
    from sctk import logs
    from sctk.monitoring.collector import Collector
    from sctk.monitoring.watch import start_watch
    from sctk.ops.scheduler import Scheduler
    from sctk.storage.layout import require_data_dir

    rt = runtime(ctx)  # the process's engine and bus: the scheduler's and the monitor's
    s = rt.settings
    require_data_dir(s)
    logs.configure(s, console_level="INFO")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    from sctk import runstate

    running: dict = {}

    def start() -> None:
        running["sched"] = Scheduler(rt).start()
        if monitor:
            running["bus"] = bus = rt.bus
            bus.start()
            running["collector"] = collector = Collector.from_settings(s, rt.engine).start()
            running["watch"] = start_watch(s, rt.sessionmaker, collector, bus)

    def halt() -> None:  # also the pause while a command swaps the data directory
        if "watch" in running:
            running.pop("watch").close()
            running.pop("collector").stop()
            running.pop("bus").stop()
        if "sched" in running:
            running.pop("sched").stop()

    runstate.wait_while_paused(s.home)  # a swap under way: start after it
    start()
    console.print(
        f"scheduler {running['sched'].holder} started{' with monitoring' if monitor else ''}; "
        "Ctrl-C stops it",
        highlight=False,
    )
    with runstate.recorded(s.home, "scheduler"):
        watcher = runstate.PauseWatcher(s.home, halt, start).start()
        stop.wait()
        watcher.stop(resume=False)
    halt()
