"""Shared by the sctk-side backup tests: the passphrase, a populated data directory, a writer
that keeps inserting rows, and reading a snapshot's database back for row counts."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from sctk.config import Settings
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import CheckResult, utcnow

PASSPHRASE = "amber-lattice-tundra-0451"
ENV = {"SCTK_BACKUP_PASSPHRASE": PASSPHRASE}


def populate(settings: Settings, model: bool = True) -> dict[str, Any]:
    """Users, a dataset, jobs and (optionally) a tiny UQ model, through domain functions."""
    import pandas as pd

    from sctk.jobs import queue
    from sctk.pipeline import store
    from sctk.security import users

    engine = make_engine(settings)
    made: dict[str, Any] = {}
    try:
        with session_scope(engine) as s:
            users.create(s, "bea.backup", "Granite-Willow-Comet-552", "analyst", actor="tests")
            frame = pd.DataFrame({"x": [float(i) for i in range(40)]})
            frame["y"] = frame["x"] * 3.0 + 1.0
            out = store.Output("runs", frame, "parquet", {"origin": "import", "inputs": []})
            store.store(s, settings.home, [out], "import", "tests")
            made["jobs"] = [queue.submit(s, "noop", {"i": i}, owner="tests").id for i in range(3)]
        if model:
            import numpy as np

            from sctk.uq import registry
            from sctk.uq.hybrid import HybridRegressor

            X = np.arange(30, dtype=float)[:, None]
            fitted = HybridRegressor(epochs=1, hidden=(4,)).fit(
                X[:20], X[:20, 0], X_cal=X[20:], y_cal=X[20:, 0]
            )
            with session_scope(engine) as s:
                row = registry.save(s, settings.home, fitted, "tiny", lineage={"features": ["x"]})
                made["model"] = row.id
    finally:
        engine.dispose()
    return made


class RowWriter:
    """A thread inserting check_results rows, one short transaction each, until stopped."""

    def __init__(self, settings: Settings):
        self.engine = make_engine(settings)
        self.inserted = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with session_scope(self.engine) as s:
                    s.add(
                        CheckResult(
                            name="writer", status="OK", message="x", values={}, checked_at=utcnow()
                        )
                    )
                self.inserted += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def __enter__(self) -> RowWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.engine.dispose()


def count_rows(engine) -> dict[str, int]:
    names = [n for n in inspect(engine).get_table_names()]
    with engine.connect() as conn:
        return {n: conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one() for n in names}


def snapshot_file(repo, snapshot_id: str, path: str, target: Path) -> Path:
    with target.open("wb") as fh:
        for chunk in repo.read_file(snapshot_id, path):
            fh.write(chunk)
    return target


def sqlite_rows(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        conn.close()


def postgres_rows(dump: Path, server_url: str) -> dict[str, int]:
    """Load DUMP into a scratch database on SERVER_URL's server with psql; its row counts."""
    from sctk.backup.dbsnapshot import pg_env

    admin_url = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"sctk_t_load_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    scratch = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        result = subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump)],
            env=pg_env(scratch),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        engine = create_engine(make_url(scratch).set(drivername="postgresql+psycopg"))
        try:
            return count_rows(engine)
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def env_with_passphrase(**extra: str) -> dict[str, str]:
    return {**ENV, **extra}


def set_passphrase(monkeypatch) -> None:
    monkeypatch.setenv("SCTK_BACKUP_PASSPHRASE", PASSPHRASE)


PG_URL_ENV = "SCTK_TEST_POSTGRES_URL"
