"""The records the engine hands out: snapshots, files, policies and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class FileEntry:
    """One file of a snapshot: where it goes, how it looks and which chunks hold it."""

    path: str
    mode: int
    size: int
    sha256: str
    chunks: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, f: dict) -> FileEntry:
        """The entry of F, a file as a snapshot's list holds it."""
        return cls(f["path"], f["mode"], f["size"], f["sha256"], list(f["chunks"]))


@dataclass
class SnapshotInfo:
    """A snapshot as listed from the repository alone."""

    id: str
    time: datetime
    label: str
    host: str
    manifest: dict
    files: int
    size: int
    added_bytes: int


@dataclass
class PrunePolicy:
    """Which snapshots to keep, with restic's semantics (None: the rule is off)."""

    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_within_days: float | None = None

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.keep_last,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_within_days,
            )
        )


@dataclass
class CheckReport:
    ok: bool
    errors: list[str]
    snapshots: int
    packs: int
    chunks: int
    bytes_read: int
    seconds: float
    read_data: bool
    # bytes no snapshot references (orphan packs, partial files, unused or duplicate chunks);
    # counted for a whole-repository check only
    unreferenced_bytes: int = 0
    leftover_files: int = 0  # packs in no index and partial files a dead writer left


@dataclass
class PruneReport:
    removed_snapshots: list[str]
    kept: list[tuple[str, str]]
    deleted_packs: int
    repacked_packs: int
    freed_bytes: int
    dry_run: bool


@dataclass
class RestoreStats:
    files: int  # files restored
    bytes: int
    seconds: float
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (path, why) left out


@dataclass
class CopyReport:
    files_copied: int
    bytes_copied: int
    files_skipped: int
    seconds: float


@dataclass
class RepairReport:
    """What `repair` did, and what the repaired repository can no longer restore."""

    packs: int  # packs indexed
    dropped_chunks: int  # damaged chunk copies left out of the index
    unreadable_packs: list[str]  # packs whose own header cannot be read
    removed_files: int  # partial files of interrupted writes deleted
    damaged_snapshots: dict[str, str]  # snapshot id -> why its file cannot be read
    damaged_files: list[dict]  # {snapshot, path}: files a snapshot cannot restore
    lost: list[dict]  # {path, sha256, snapshots}: file versions no snapshot can restore
