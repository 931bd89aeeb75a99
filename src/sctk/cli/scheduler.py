"""`sctk scheduler`: the maintenance scheduler with the metrics collector and alerting, alone
(what `sctk serve --role scheduler` runs; `sctk serve` runs them inside the API by default)."""

from __future__ import annotations

import signal
import threading

import typer

from sctk.cli.common import console, settings


def scheduler(
    ctx: typer.Context,
    monitor: bool = typer.Option(
        True, "--monitor/--no-monitor", help="Also collect metrics and raise alerts."
    ),
) -> None:
    """Run scheduled maintenance (and monitoring) until stopped; one active per database."""
    from sqlalchemy.orm import sessionmaker

    from sctk import logs
    from sctk.bus import get_bus
    from sctk.monitoring.collector import Collector
    from sctk.monitoring.watch import start_watch
    from sctk.ops.scheduler import Scheduler
    from sctk.storage.layout import require_data_dir

    s = settings(ctx)
    require_data_dir(s)
    logs.configure(s, console_level="INFO")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sched = Scheduler(s).start()
    collector = watch = bus = None
    if monitor:
        bus = get_bus(s)
        bus.start()
        collector = Collector.from_settings(s, sched.engine).start()
        watch = start_watch(s, sessionmaker(sched.engine), collector, bus)
    console.print(
        f"scheduler {sched.holder} started{' with monitoring' if monitor else ''}; Ctrl-C stops it",
        highlight=False,
    )
    stop.wait()
    if watch is not None:
        watch.close()
        collector.stop()
        bus.stop()
    sched.stop()
