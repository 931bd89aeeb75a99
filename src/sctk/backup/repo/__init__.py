"""The backup repository engine: deduplicated (FastCDC), compressed (zstd), encrypted
(AES-256-GCM) and verifiable snapshots on a local path or any fsspec URL. It knows nothing of
sctk's database, settings or CLI."""

from sctk.backup.repo.errors import RepoError

# Loaded on first use: a worker process sealing small files (batchseal.py) imports this
# package and needs none of them (the repository and its backends cost it ~0.1 s and ~4 MiB).
_LAZY = {
    "Repository": "sctk.backup.repo.repository",
    "SnapshotWriter": "sctk.backup.repo.writer",  # with pyfastcdc: not needed to restore
    **dict.fromkeys(
        ("CheckReport", "CopyReport", "FileEntry", "PrunePolicy", "PruneReport")
        + ("RestoreStats", "SnapshotInfo"),
        "sctk.backup.repo.models",
    ),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)


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
