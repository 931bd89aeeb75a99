"""Loading a snapshot's database into a target: a SQLite file, or a PostgreSQL database via psql.

PostgreSQL loads run the plain pg_dump script through `psql --set ON_ERROR_STOP=1` inside one
explicit transaction that sctk opens and commits itself. The COMMIT is sent only after the
whole script has been read from the repository and its SHA-256 checked, so a damaged
snapshot, a failing statement or a kill -9 of sctk or psql (stdin closes without COMMIT, the
session ends, the server rolls back) all leave the target database exactly as it was.
(`psql --single-transaction` would not do: it commits at end of input, and a killed writer
looks like end of input.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from sctk.errors import SctkError
from sctk.fsutil import fsync_dir
from sctk.storage.engine import describe_target, first_line, normalise_url

_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,63}$")


def _libpq(url: str | URL) -> tuple[str, dict[str, str]]:
    """A URL psql understands, and an environment carrying the password (kept out of argv,
    where `ps` would show it)."""
    parsed = normalise_url(url if isinstance(url, str) else url.render_as_string(False))
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def with_database(url: str, database: str) -> str:
    """URL of another database on the same server (same spelling of the scheme)."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def database_name(url: str) -> str:
    return normalise_url(url).database or ""


def _admin_engine(url: str):
    # CREATE/DROP DATABASE cannot run in a transaction and not in the database concerned:
    # connect to the server's maintenance database
    admin = normalise_url(url).set(database="postgres")
    return create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})


def _quoted(name: str) -> str:
    if not _NAME_RE.match(name):
        raise SctkError(
            f"Database name {name!r} is not usable here; use letters, digits, '_' or '-'."
        )
    return '"' + name + '"'


def database_exists(url: str) -> bool:
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database_name(url)}
                ).scalar()
            )
    except DBAPIError as exc:
        raise SctkError(
            f"Cannot reach the {describe_target(normalise_url(url))}: {first_line(exc)}; "
            "check the database URL and that the server is running."
        ) from None
    finally:
        engine.dispose()


def create_database(url: str) -> None:
    """Create the (empty) database URL names."""
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {_quoted(database_name(url))}"))
    except DBAPIError as exc:
        raise SctkError(
            f"Cannot create the {describe_target(normalise_url(url))}: {first_line(exc)}; "
            "create it yourself or use a role allowed to (CREATEDB)."
        ) from None
    finally:
        engine.dispose()


def drop_database(url: str) -> None:
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(
                text(f"DROP DATABASE IF EXISTS {_quoted(database_name(url))} WITH (FORCE)")
            )
    finally:
        engine.dispose()


def scratch_url(url: str, purpose: str = "restore_test") -> str:
    """URL of a new, unused database name next to URL's (for a restore test)."""
    return with_database(url, f"sctk_{purpose}_{uuid.uuid4().hex[:12]}")


def xact_status(url: str, xid: str) -> str | None:
    """'committed', 'aborted', 'in progress' or None (unknown) for a transaction id of URL's
    server: how a rerun learns whether an interrupted load had committed."""
    engine = create_engine(normalise_url(url), connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT pg_xact_status(CAST(:x AS xid8))"), {"x": str(xid)}
            ).scalar()
    except DBAPIError:
        return None
    finally:
        engine.dispose()


def load_postgres(
    url: str,
    chunks: Iterable[bytes],
    *,
    replace: bool = True,
    on_xid: Callable[[str], None] | None = None,
    psql: str = "psql",
) -> None:
    """Run a plain pg_dump script (CHUNKS) against URL in one transaction.

    REPLACE drops the public schema first, in the same transaction, so the database ends up
    holding exactly the dump or, on any failure, exactly what it held before. ON_XID gets the
    transaction id before any data is sent (the restore journal keeps it).
    """
    target, env = _libpq(url)
    where = describe_target(normalise_url(url))
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                [
                    psql,
                    "--no-psqlrc",
                    "--quiet",
                    "--no-align",
                    "--tuples-only",
                    "--set",
                    "ON_ERROR_STOP=1",
                    "--dbname",
                    target,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
            )
        except FileNotFoundError:
            raise SctkError(
                f"The program {psql} is not installed; install the PostgreSQL client "
                "(Debian: postgresql-client) to restore a PostgreSQL database."
            ) from None
        assert proc.stdin is not None and proc.stdout is not None

        def failure() -> SctkError:
            proc.wait()
            errors.seek(0)
            lines = [ln for ln in errors.read().decode("utf-8", "replace").splitlines() if ln]
            reason = next((ln for ln in lines if "ERROR" in ln or "FATAL" in ln), None)
            reason = reason or (lines[0] if lines else f"psql exited with {proc.returncode}")
            return SctkError(
                f"Loading the database into the {where} failed, nothing was changed: "
                f"{reason.strip().rstrip('.')}."
            )

        try:
            proc.stdin.write(b"BEGIN;\nSELECT pg_current_xact_id();\n")
            proc.stdin.flush()
            xid = proc.stdout.readline().decode().strip()
            if not xid.isdigit():
                raise failure()
            if on_xid is not None:
                on_xid(xid)
            # the script's own output (set_config, setval rows) is of no interest
            proc.stdin.write(b"\\o /dev/null\n")
            if replace:
                proc.stdin.write(b"DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n")
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.write(b"\n\\o\nCOMMIT;\nSELECT 'sctk-committed';\n")
            proc.stdin.close()
        except BrokenPipeError:
            raise failure() from None
        except BaseException:
            # a damaged chunk, a full disk, Ctrl-C: never let psql reach end of input
            # (it would not commit, but killing it makes the rollback immediate)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            raise
        out = proc.stdout.read().decode("utf-8", "replace")
        if proc.wait() != 0 or "sctk-committed" not in out:
            raise failure()


def write_file(chunks: Iterable[bytes], dest: Path, mode: int = 0o600) -> int:
    """Write CHUNKS to DEST through a temporary file in the same directory (fsync, rename):
    DEST appears only complete and only once every chunk was read (and authenticated)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    return size
