"""`sctk scheduler`: run the maintenance scheduler alone (`sctk serve` also runs one)."""

from __future__ import annotations

import signal
import threading

import typer

from sctk.cli.common import console, settings


def scheduler(ctx: typer.Context) -> None:
    """Run scheduled maintenance until stopped; only one scheduler per database is active."""
    from sctk import logs
    from sctk.ops.scheduler import Scheduler
    from sctk.storage.layout import require_data_dir

    s = settings(ctx)
    require_data_dir(s)
    logs.configure(s, console_level="INFO")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sched = Scheduler(s).start()
    console.print(f"scheduler {sched.holder} started; Ctrl-C stops it", highlight=False)
    stop.wait()
    sched.stop()
