"""Moving a data directory's database to another server (SQLite to PostgreSQL, as a service
outgrows one process): `sctk db migrate-to URL`.

The target must be empty. Its schema is made by the same migrations, then every table is
copied in dependency order with its primary keys, PostgreSQL's sequences are moved past the
copied ids, and the copy is verified before anything points at it: every table's rows are
compared value by value with the source, the files every row vouches for are checked against
their recorded SHA-256, and the audit chain must verify on the target. Only then is
`database_url` written to sctk.toml. A failure leaves the target empty and sctk.toml as it was.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.engine import make_url

from sctk.config import CONFIG_FILE_MODE, CONFIG_FILE_NAME, Settings
from sctk.errors import SctkError
from sctk.fsutil import atomic_write
from sctk.runtime import Runtime
from sctk.storage import migrate
from sctk.storage.engine import make_engine, normalise_url, session_scope
from sctk.storage.models import Base

BATCH = 1000


@dataclass
class TransferReport:
    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)
    files_checked: int = 0
    audit_entries: int = 0
    switched: bool = False
    seconds: float = 0.0


def shown(url: str) -> str:
    return make_url(str(normalise_url(url))).render_as_string(hide_password=True)


def _digest(engine: Engine, table) -> tuple[int, str]:
    """Row count and a hash of every row, in primary-key order, as SQLAlchemy types read
    them (the same Python values whichever database they come from)."""
    h = hashlib.sha256()
    count = 0
    order = list(table.primary_key.columns) or list(table.columns)
    with engine.connect() as conn:
        for row in conn.execute(select(table).order_by(*order)).yield_per(BATCH):
            h.update(repr(tuple(row)).encode())
            count += 1
    return count, h.hexdigest()


def _reset_sequences(conn, table) -> None:
    for column in table.primary_key.columns:
        if column.autoincrement is True or (
            column.autoincrement == "auto" and column.type.python_type is int
        ):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                    f'COALESCE((SELECT max("{column.name}") FROM "{table.name}"), 0) + 1, false)'
                )
            )


def _copy(source: Engine, target: Engine, report: TransferReport, progress) -> None:
    with target.begin() as out:
        for table in Base.metadata.sorted_tables:
            with source.connect() as conn:
                rows = conn.execute(select(table)).mappings().yield_per(BATCH)
                batch: list[dict[str, Any]] = []
                copied = 0
                for row in rows:
                    batch.append(dict(row))
                    if len(batch) == BATCH:
                        out.execute(table.insert(), batch)
                        copied += len(batch)
                        batch = []
                if batch:
                    out.execute(table.insert(), batch)
                    copied += len(batch)
            report.tables[table.name] = copied
            if target.dialect.name == "postgresql":
                _reset_sequences(out, table)
            if progress:
                progress(table.name, copied)


def _verify(settings: Settings, source: Engine, target: Engine, report: TransferReport) -> None:
    from sctk.ops import integrity
    from sctk.security import audit_log

    for table in Base.metadata.sorted_tables:
        if _digest(source, table) != _digest(target, table):
            raise SctkError(f"Table {table.name} differs after the copy; the target was emptied.")
    with session_scope(target) as s:
        files = integrity.check_files(s, settings.home)
        chain = audit_log.verify(s)
    if files.problems:
        raise SctkError(
            f"{files.problems[0].sentence()} (checked against the copy); fix it first, e.g. "
            "with 'sctk restore --latest --file PATH'."
        )
    if not chain.ok:
        raise SctkError(f"The audit chain does not verify on the target: {chain.problem}.")
    report.files_checked, report.audit_entries = files.files_checked, chain.checked


def _switch(settings: Settings, target_url: str, target: Engine, actor: str) -> None:
    from sctk.security import audit_log

    path = settings.home / CONFIG_FILE_NAME
    doc = tomlkit.parse(path.read_text("utf-8")) if path.exists() else tomlkit.document()
    doc["database_url"] = target_url
    with session_scope(target) as s:
        audit_log.record(
            s,
            "db.migrated",
            actor=actor,
            target=shown(target_url),
            details={"from": shown(settings.db_url)},
        )
    atomic_write(path, tomlkit.dumps(doc), mode=CONFIG_FILE_MODE)


def migrate_to(
    rt: Runtime,
    target_url: str,
    *,
    actor: str = "cli",
    switch: bool = True,
    force: bool = False,
    progress=None,
) -> TransferReport:
    from sctk import runstate

    settings = rt.settings
    started = time.perf_counter()
    if normalise_url(target_url) == normalise_url(settings.db_url):
        raise SctkError("The target is the database sctk uses now; give another URL.")
    pid = runstate.running_pid(settings.home)
    if pid is not None and not force:
        raise SctkError(
            f"A service (pid {pid}) is running on {settings.home}; stop it first so that no "
            "row changes during the copy, or pass --force."
        )
    # the source is the command's own engine; the target a second database, with its own
    source, target = rt.engine, make_engine(settings, target_url)
    report = TransferReport(shown(settings.db_url), shown(target_url))
    try:
        if migrate.current(source) != migrate.head():
            raise SctkError(
                "The database is not at the newest schema; run 'sctk db upgrade' first."
            )
        with target.connect() as conn:
            present = inspect(conn).get_table_names()
        if present:
            raise SctkError(
                f"The database at {report.target} is not empty (it has {len(present)} tables, "
                f"e.g. {present[0]}); give an empty database. Nothing was copied."
            )
        migrate.upgrade(target, "head")
        try:
            _copy(source, target, report, progress)
            _verify(settings, source, target, report)
        except BaseException:
            migrate.downgrade(target, "base")  # leave the target as empty as it was
            with target.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
            raise
        if switch:
            _switch(settings, target_url, target, actor)
            report.switched = True
    finally:
        target.dispose()
    report.seconds = time.perf_counter() - started
    return report
