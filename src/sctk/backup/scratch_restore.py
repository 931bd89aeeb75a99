"""The restore test of `sctk backup verify --restore-test`: load a snapshot's database into a
scratch database and compare what it holds with what the manifest says it should."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text

from sctk.backup import dbload
from sctk.backup.dbsnapshot import sqlite_counts
from sctk.config import Settings
from sctk.errors import SctkError
from sctk.storage.engine import normalise_url


def table_counts(url: str) -> tuple[dict[str, int], str | None]:
    """Every table's row count and the alembic revision of the database at URL."""
    # an engine of its own: URL is a scratch or freshly restored database, not (or not yet)
    # one a runtime serves
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            names = sorted(inspect(conn).get_table_names())
            counts = {
                n: conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one() for n in names
            }
            revision = None
            if "alembic_version" in counts:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return counts, revision
    finally:
        engine.dispose()


def compare(
    manifest: dict[str, Any], counts: dict[str, int], revision: str | None
) -> tuple[dict[str, dict[str, int | None]], list[str]]:
    """Per-table expected/actual counts and one sentence per disagreement."""
    expected: dict[str, int] = dict(manifest.get("tables") or {})
    tables: dict[str, dict[str, int | None]] = {}
    mismatches: list[str] = []
    for name in sorted(set(expected) | set(counts)):
        want, have = expected.get(name), counts.get(name)
        # the manifest may leave alembic's bookkeeping table out; its content is checked below
        if want is None and name == "alembic_version":
            continue
        tables[name] = {"expected": want, "actual": have}
        if want is None:
            mismatches.append(f"table {name} is in the database but not in the manifest")
        elif have is None:
            mismatches.append(f"table {name} is in the manifest but not in the database")
        elif want != have:
            mismatches.append(f"table {name} has {have} rows, the manifest says {want}")
    want_rev = manifest.get("schema_revision") or None
    if want_rev != revision:
        mismatches.append(
            f"schema revision is {revision or 'none'}, the manifest says {want_rev or 'none'}"
        )
    return tables, mismatches


@contextmanager
def scratch_database(settings: Settings, repo, info) -> Iterator[str]:
    """The database of snapshot INFO loaded into a scratch database (a temporary SQLite file,
    or a PostgreSQL database created next to the configured one); its URL, for the time of
    the with-block. Nothing is left behind."""
    manifest = info.manifest or {}
    backend = manifest.get("backend") or ("sqlite" if settings.is_sqlite else "postgresql")
    db_file = manifest.get("database_file") or (
        "sctk.db" if backend == "sqlite" else "postgres.sql"
    )
    if backend == "sqlite":
        scratch_parent = settings.home / "tmp" if (settings.home / "tmp").is_dir() else None
        with tempfile.TemporaryDirectory(prefix="restore-test-", dir=scratch_parent) as tmp:
            path = Path(tmp) / "sctk.db"
            dbload.write_file(repo.read_file(info.id, db_file), path)
            yield f"sqlite:///{path}"
        return
    if settings.is_sqlite:
        raise SctkError(
            "The snapshot holds a PostgreSQL database but this data directory uses SQLite; "
            "run the restore test from a data directory configured with PostgreSQL."
        )
    scratch = dbload.scratch_url(settings.db_url)
    dbload.create_database(scratch)
    try:
        dbload.load_postgres(scratch, repo.read_file(info.id, db_file), replace=True)
        yield scratch
    finally:
        dbload.drop_database(scratch)


def counts_of(url: str) -> tuple[dict[str, int], str | None]:
    """Row counts and revision of a scratch database (a SQLite file is read read-only)."""
    if url.startswith("sqlite:///"):
        return sqlite_counts(Path(url[len("sqlite:///") :]))
    return table_counts(url)


def restore_test(
    settings: Settings, repo, snapshot_id: str, url: str | None = None
) -> dict[str, Any]:
    """Restore SNAPSHOT_ID's database into a scratch database (see scratch_database; URL: one
    already loaded) and compare every table's row count and the schema revision with the
    manifest."""
    start = time.perf_counter()
    info = repo.find_snapshot(snapshot_id)
    manifest = info.manifest or {}
    backend = manifest.get("backend") or ("sqlite" if settings.is_sqlite else "postgresql")
    if url is None:
        with scratch_database(settings, repo, info) as loaded:
            counts, revision = counts_of(loaded)
    else:
        counts, revision = counts_of(url)
    tables, mismatches = compare(manifest, counts, revision)
    message = (
        "; ".join(mismatches) + "."
        if mismatches
        else f"all {len(tables)} tables and the schema revision match the manifest."
    )
    return {
        "ok": not mismatches,
        "message": message,
        "snapshot": info.id,
        "backend": backend,
        "schema_revision": revision,
        "tables": tables,
        "mismatches": mismatches,
        "seconds": round(time.perf_counter() - start, 3),
    }
