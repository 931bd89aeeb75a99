"""The engine of a process that runs jobs (a pool child, a Dask worker, the worker itself),
one per data directory, made on first use and kept for the life of the process: a job's
progress, log lines and its watch all write through it."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from sctk import config
from sctk.bus import get_bus
from sctk.config import Settings
from sctk.storage.engine import make_engine

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(home: str) -> Engine:
    """This process's engine for the data directory HOME, made on first use.

    Its settings are what `sctk.config.load(home)` reads there: sctk.toml and the SCTK_*
    environment the child inherited; overrides a worker was given in code do not reach it.
    """
    with _engines_lock:
        engine = _engines.get(home)
        if engine is None:
            settings = config.load(home).settings
            engine = _engines[home] = make_engine(settings)
            connect_bus(settings)
        return engine


def connect_bus(settings: Settings) -> None:
    """Make this process's message bus for the database, so that the job events it records
    are published to subscribers as well as stored."""
    try:
        get_bus(settings)
    except Exception:  # running jobs matters more than publishing their events
        log.warning("job events will be stored but not published", exc_info=True)
