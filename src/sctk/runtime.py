"""What a process shares while it serves: built once at each way in, handed down.

Each entry point builds one `Runtime` and closes it when it ends: a CLI command
(`sctk.cli.common.runtime`), the served app (`app.state.runtime`), a worker and the job
processes it starts (`sctk.jobs.child_engine`), the scheduler. The runtime holds the settings,
the one engine of the process and its sessionmaker, the message bus, the keyring and the
plugins that fill the registries. Code below the entry points takes a session or the runtime;
it builds no engine and reads no settings from the environment.

The commit rule, the same for every session a runtime gives (`Runtime.session`), the API's
request session included: the session commits when its block ends without an error and rolls
back on any error. For a request the block is the route function: the commit happens when it
returns, before the response is sent; an error (an HTTPException too) rolls everything back.
Something that must be kept whatever the outcome (a refused permission's audit record) is
written in a session of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sctk.config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from sctk.bus import Bus
    from sctk.plugins import Plugin
    from sctk.security.keyring import Keyring


class Runtime:
    """The settings and the shared parts of one process (see the module docstring).

    The engine, the bus and the keyring are made on first use, so that a command that never
    reads the database opens no pool. ENGINE, when given, is borrowed: `close` leaves it to
    its owner."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None):
        self.settings = settings
        self._engine = engine
        self._owns_engine = engine is None
        self._sessionmaker: sessionmaker[Session] | None = None
        self._keyring: Keyring | None = None
        self._lock = threading.Lock()
        self.closed = False

    def __repr__(self) -> str:
        return f"Runtime(home={str(self.settings.home)!r}, closed={self.closed})"

    # -- the database --------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The process's one engine, built on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from sctk.storage.engine import make_engine

                    self._engine = make_engine(self.settings)
        return self._engine

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        """Sessions on the engine; they keep their objects readable after a commit."""
        if self._sessionmaker is None:
            from sqlalchemy.orm import sessionmaker

            self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        return self._sessionmaker

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends without an error and rolls back on
        any error: the one commit rule (module docstring)."""
        with self.sessionmaker() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def release(self) -> None:
        """Close every pooled connection and keep the engine: before a command replaces the
        database under this process (a restore, a rollback), and after, so that no connection
        opened on the old file is used again."""
        if self._engine is not None:
            self._engine.dispose()

    # -- the services --------------------------------------------------------------------

    @property
    def bus(self) -> Bus:
        """This process's message bus for the database, on the runtime's engine when the bus
        is made here (a bus is one per database in a process: `sctk.bus.get_bus`)."""
        from sctk.bus import get_bus

        return get_bus(self.settings, engine=self.engine)

    @property
    def keyring(self) -> Keyring:
        """The data directory's encryption keys, read on first use."""
        if self._keyring is None:
            from sctk.security.keyring import Keyring

            self._keyring = Keyring.load(self.settings.home)
        return self._keyring

    def reload_keyring(self) -> Keyring:
        """Read the keys afresh (after a rotation or a swap of the data directory)."""
        self._keyring = None
        return self.keyring

    @staticmethod
    def plugins() -> list[Plugin]:
        """The plugins that fill the registries (job kinds, health checks, maintenance tasks,
        detectors, model kinds, settings sections), loaded once per process."""
        from sctk import plugins

        return plugins.load()

    # -- the end -------------------------------------------------------------------------

    def close(self) -> None:
        """Dispose of the engine this runtime built (a borrowed one is left to its owner).

        The one place a process's engine is disposed. A runtime used again after it (a test
        that starts an app twice) reconnects; closing it again disposes those connections."""
        self.closed = True
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
