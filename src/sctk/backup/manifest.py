"""What a snapshot of a data directory holds, part by part, and the manifest describing it.

Snapshot paths mirror the data directory: `sctk.db` or `postgres.sql` (part "db"),
`sctk.toml` ("config"), `keys/**` ("keys"), `data/**`, `results/**`, `archive/**`,
`reports/**` ("data"). `backups/`, `logs/` and `tmp/` are never included.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

FORMAT = 1
PARTS = ("db", "config", "keys", "data")
DB_FILES = {"sqlite": "sctk.db", "postgresql": "postgres.sql"}
CONFIG_FILE = "sctk.toml"
KEYS_DIR = "keys"
DATA_DIRS = ("data", "results", "archive", "reports")
NEVER = ("backups", "logs", "tmp")
LABELS = ("daily", "weekly", "monthly", "pre-update", "manual")


def part_of(path: str) -> str:
    """The part a snapshot path belongs to: db, config, keys or data."""
    path = path.lstrip("/")
    if path in DB_FILES.values():
        return "db"
    if path == CONFIG_FILE:
        return "config"
    top = path.split("/", 1)[0]
    if top == KEYS_DIR:
        return "keys"
    if top in DATA_DIRS:
        return "data"
    raise ValueError(f"{path!r} belongs to no part of a snapshot")


def host_name() -> str:
    return socket.gethostname()


def build(
    *,
    backend: str,
    schema_revision: str | None,
    tables: dict[str, int],
    label: str,
    files: dict[str, int],
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The manifest stored with a snapshot (see the module docstring)."""
    from sctk import __version__
    from sctk.backup.kinds import kind_of_label

    return {
        "format": FORMAT,
        "sctk_version": __version__,
        "schema_revision": schema_revision or "",
        "backend": backend,
        "database_file": DB_FILES[backend],
        "tables": dict(sorted(tables.items())),
        "host": host_name(),
        "label": label,
        "kind": kind_of_label(label),
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        "files": {part: int(files.get(part, 0)) for part in PARTS},
    }


def count_parts(paths: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(PARTS, 0)
    for path in paths:
        counts[part_of(path)] += 1
    return counts
