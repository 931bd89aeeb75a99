"""The runtime of a process that runs jobs (a pool child, a Dask worker), one per data
directory, made on first use and kept for the life of the process: a job's progress, log
lines and its watch all write through its engine."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from sctk import config
from sctk.runtime import Runtime

log = logging.getLogger(__name__)

_runtimes: dict[str, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime_for(home: str) -> Runtime:
    """This process's runtime for the data directory HOME, made on first use (with the bus,
    so that the job events recorded here are published).

    Its settings are what `sctk.config.load(home)` reads there: sctk.toml and the SCTK_*
    environment the child inherited; overrides a worker was given in code do not reach it.
    """
    with _runtimes_lock:
        rt = _runtimes.get(home)
        if rt is None:
            rt = _runtimes[home] = Runtime(config.load(home).settings)
            connect_bus(rt)
        return rt


def engine_for(home: str) -> Engine:
    """The engine of `runtime_for(HOME)`."""
    return runtime_for(home).engine


def connect_bus(runtime: Runtime) -> None:
    """Make this process's message bus for the database, so that the job events it records
    are published to subscribers as well as stored."""
    try:
        runtime.bus  # noqa: B018 (made for its side effect: the process's bus exists)
    except Exception:  # running jobs matters more than publishing their events
        log.warning("job events will be stored but not published", exc_info=True)
