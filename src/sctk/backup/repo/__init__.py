"""The backup repository engine: deduplicated (FastCDC), compressed (zstd), encrypted
(AES-256-GCM) and verifiable snapshots on a local path or any fsspec URL. It knows nothing of
sctk's database, settings or CLI."""

from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.models import (
    CheckReport,
    CopyReport,
    FileEntry,
    PrunePolicy,
    PruneReport,
    RestoreStats,
    SnapshotInfo,
)
from sctk.backup.repo.repository import Repository


def __getattr__(name: str):
    # The writer (and pyfastcdc) loads only when a backup is written, not for a restore.
    if name == "SnapshotWriter":
        from sctk.backup.repo.writer import SnapshotWriter

        return SnapshotWriter
    raise AttributeError(name)


__all__ = [
    "CheckReport",
    "CopyReport",
    "FileEntry",
    "PrunePolicy",
    "PruneReport",
    "Repository",
    "RepoError",
    "RestoreStats",
    "SnapshotInfo",
    "SnapshotWriter",
]
