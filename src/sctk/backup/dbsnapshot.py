"""A consistent copy of the database while the service keeps writing, with its row counts.

SQLite: `VACUUM INTO` a temporary file under <home>/tmp. It reads inside one transaction, so
the copy is one point in time, and in WAL mode writers carry on meanwhile. (The stepped
online-backup API restarts whenever another connection writes and can livelock under steady
writes; VACUUM INTO cannot.) Rows are then counted in the copy itself.

PostgreSQL: a REPEATABLE READ, read-only transaction exports its snapshot
(`pg_export_snapshot`), counts every table's rows in it, and `pg_dump --snapshot` dumps that
very snapshot, so the counts in the manifest describe exactly the rows in the dump. The dump is
plain SQL (uncompressed, so unchanged tables deduplicate) streamed into the repository in
bounded chunks. Connection details reach pg_dump through PG* environment variables, so that
the password never appears on a command line (visible to every user in `ps`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sctk.backup.manifest import DB_FILES
from sctk.config import Settings
from sctk.errors import SctkError

if TYPE_CHECKING:
    from sctk.runtime import Runtime

CHUNK = 1 << 20
# URL query parameters libpq also reads from the environment
_PG_QUERY_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
}


@dataclass
class DbCopy:
    """What went into the snapshot for the database."""

    backend: str  # sqlite / postgresql
    path: str  # the snapshot path (sctk.db / postgres.sql)
    tables: dict[str, int]
    schema_revision: str | None
    entry: Any  # the engine's FileEntry


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_file(settings: Settings) -> Path:
    from sctk.storage.engine import normalise_url

    database = normalise_url(settings.db_url).database
    if not database or database == ":memory:":
        raise SctkError(
            "The database is an in-memory SQLite database; there is nothing to back up."
        )
    return Path(database)


def database_present(settings: Settings) -> bool:
    """False when the SQLite file is missing: opening it would create an empty one."""
    if not settings.is_sqlite:
        return True
    try:
        return sqlite_file(settings).is_file()
    except Exception:
        return False


def sqlite_counts(path: Path) -> tuple[dict[str, int], str | None]:
    """Row counts of every table and the alembic revision of the SQLite file PATH."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables = {n: conn.execute(f"SELECT count(*) FROM {_quote(n)}").fetchone()[0] for n in names}
        revision = None
        if "alembic_version" in names:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        return tables, revision
    finally:
        conn.close()


def _scratch_dir(settings: Settings) -> Path:
    tmp = settings.home / "tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="backup-", dir=tmp))
    except OSError as exc:
        raise SctkError(
            f"Cannot create a temporary directory in {tmp}: {exc.strerror}; make it writable "
            "and free some space."
        ) from None


def add_sqlite(settings: Settings, writer, on_size: Callable[[int], None] | None = None) -> DbCopy:
    """VACUUM INTO a temporary copy, count its rows, add it to WRITER as sctk.db."""
    source = sqlite_file(settings)
    if not source.is_file():
        raise SctkError(
            f"The database file {source} does not exist; there is no database to back up "
            "(restore one with 'sctk restore')."
        )
    scratch = _scratch_dir(settings)
    try:
        copy = scratch / "sctk.db"
        conn = sqlite3.connect(str(source), timeout=30)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(settings.database.busy_timeout_ms)}")
            conn.execute("VACUUM INTO ?", (str(copy),))
        except sqlite3.Error as exc:
            raise SctkError(
                f"Copying the SQLite database {source} failed: {exc}; check free space in "
                f"{scratch.parent}."
            ) from None
        finally:
            conn.close()
        os.chmod(copy, 0o600)  # it holds password hashes and encrypted secrets
        if on_size is not None:
            on_size(copy.stat().st_size)
        tables, revision = sqlite_counts(copy)
        entry = writer.add_file(DB_FILES["sqlite"], copy)
        return DbCopy("sqlite", DB_FILES["sqlite"], tables, revision, entry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pg_env(url: str) -> dict[str, str]:
    """The environment pg_dump (or psql) needs to reach the database at URL."""
    from sctk.storage.engine import normalise_url

    parsed = normalise_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in parsed.query.items():
        name = _PG_QUERY_ENV.get(key)
        if name is not None:
            env[name] = value if isinstance(value, str) else value[-1]
    if parsed.host:
        env["PGHOST"] = parsed.host
    if parsed.port:
        env["PGPORT"] = str(parsed.port)
    if parsed.username:
        env["PGUSER"] = parsed.username
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    if parsed.database:
        env["PGDATABASE"] = parsed.database
    return env


def _pg_tables(conn) -> tuple[dict[str, int], str | None]:
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "SELECT schemaname, tablename FROM pg_catalog.pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY schemaname, tablename"
        )
    ).all()
    tables: dict[str, int] = {}
    revision = None
    for schema, table in rows:
        key = table if schema == "public" else f"{schema}.{table}"
        tables[key] = conn.execute(
            text(f"SELECT count(*) FROM {_quote(schema)}.{_quote(table)}")
        ).scalar_one()
        if table == "alembic_version" and schema == "public":
            revision = conn.execute(text("SELECT version_num FROM public.alembic_version")).scalar()
    return tables, revision


def _dump_chunks(cmd: list[str], env: dict[str, str], program: str) -> Iterator[bytes]:
    """pg_dump's standard output in CHUNK-sized pieces; raises if pg_dump fails."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        except OSError as exc:
            raise SctkError(
                f"Cannot run {program}: {exc.strerror}; install the PostgreSQL client "
                "(pg_dump) or set backup.pg_dump to its path."
            ) from None
        try:
            assert proc.stdout is not None
            total = 0
            while chunk := proc.stdout.read(CHUNK):
                total += len(chunk)
                yield chunk
            code = proc.wait()
            if code != 0 or total == 0:
                err.seek(0)
                lines = err.read(4096).decode("utf-8", "replace").strip().splitlines()
                why = lines[0].removeprefix("pg_dump: ").rstrip(".") if lines else "no output"
                raise SctkError(
                    f"pg_dump failed (exit {code}): {why}; check database_url and backup.pg_dump."
                )
        finally:
            if proc.poll() is None:  # the consumer gave up: do not leave pg_dump behind
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def add_postgres(rt: Runtime, writer, on_size: Callable[[int], None] | None = None) -> DbCopy:
    """Count rows and pg_dump in one exported snapshot; stream the dump into WRITER."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from sctk.storage.engine import unavailable

    settings, engine = rt.settings, rt.engine
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
    # the isolation level and read-only flag are this connection's: reset when it goes
    # back to the runtime's pool
    with conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            if on_size is not None:
                on_size(
                    int(
                        conn.execute(
                            text("SELECT pg_database_size(current_database())")
                        ).scalar_one()
                    )
                )
            tables, revision = _pg_tables(conn)
            program = settings.backup.pg_dump
            cmd = [
                program,
                "--format=plain",
                "--no-owner",
                "--no-privileges",
                "--encoding=UTF8",
                f"--snapshot={snapshot}",
            ]
            # the transaction stays open until pg_dump is done: the snapshot lives as long
            entry = writer.add_stream(
                DB_FILES["postgresql"],
                _dump_chunks(cmd, pg_env(settings.db_url), program),
                mode=0o600,
            )
    return DbCopy("postgresql", DB_FILES["postgresql"], tables, revision, entry)


def add_database(rt: Runtime, writer, on_size: Callable[[int], None] | None = None) -> DbCopy:
    """Add the runtime's database to WRITER, consistently; see the module docstring."""
    if rt.settings.is_sqlite:
        return add_sqlite(rt.settings, writer, on_size)
    return add_postgres(rt, writer, on_size)
