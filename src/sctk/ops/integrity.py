"""Data integrity: stored files against the size and SHA-256 their rows recorded, JSON files
that must parse, and the database's own consistency check.

Used by `sctk doctor data` and the weekly maintenance task, so both name the same problems.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from sctk.pipeline.store import file_sha256
from sctk.storage.models import Dataset, UqModel

JSON_DIRS = ("results", "reports")


@dataclass
class FileProblem:
    what: str  # "dataset 'x' (id 3)"
    path: str  # relative to the data directory
    problem: str  # "missing", "changed", "unparsable"
    detail: str = ""

    def sentence(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"{self.what}: {self.path} is {self.problem}{tail}"


@dataclass
class IntegrityReport:
    files_checked: int = 0
    bytes_checked: int = 0
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def recorded_files(session: Session) -> Iterator[tuple[str, str, str, int | None]]:
    """(what, relative path, sha256, size or None) for every file a row vouches for."""
    for ds in session.scalars(select(Dataset).order_by(Dataset.id)):
        yield f"dataset '{ds.name}' (id {ds.id})", ds.path, ds.sha256, ds.size_bytes
    for m in session.scalars(select(UqModel).order_by(UqModel.id)):
        yield f"model '{m.name}:{m.version}' (id {m.id})", m.path, m.sha256, None


def check_files(session: Session, home: Path) -> IntegrityReport:
    """Each recorded file present, of its recorded size, with its recorded SHA-256."""
    report = IntegrityReport()
    for what, rel, sha, size in recorded_files(session):
        path = Path(home) / rel
        report.files_checked += 1
        if not path.is_file():
            report.problems.append(FileProblem(what, rel, "missing"))
            continue
        actual_size = path.stat().st_size
        report.bytes_checked += actual_size
        if size is not None and actual_size != size:
            report.problems.append(
                FileProblem(what, rel, "changed", f"{actual_size} bytes, recorded {size}")
            )
        elif file_sha256(path) != sha:
            report.problems.append(FileProblem(what, rel, "changed", "SHA-256 differs"))
    return report


def check_json(home: Path, report: IntegrityReport | None = None) -> IntegrityReport:
    """Every *.json file under results/ and reports/ parses."""
    report = report or IntegrityReport()
    for top in JSON_DIRS:
        for path in sorted((Path(home) / top).rglob("*.json")):
            report.files_checked += 1
            report.bytes_checked += path.stat().st_size
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                rel = path.relative_to(home).as_posix()
                report.problems.append(FileProblem("JSON file", rel, "unparsable", str(exc)))
    return report


def database_problems(engine: Engine) -> list[str]:
    """The database's consistency check: SQLite's integrity_check; on PostgreSQL, which has
    no such check built in, a full read of every table (a damaged page fails the read)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = [r[0] for r in conn.execute(text("PRAGMA integrity_check"))]
            return [] if rows == ["ok"] else rows
        problems = []
        for table in inspect(conn).get_table_names():
            try:
                conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar()
            except Exception as exc:  # any failure here is the finding
                problems.append(f"table {table}: {exc}")
        return problems
