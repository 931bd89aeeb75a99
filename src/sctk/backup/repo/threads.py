"""How many threads a pass over the repository uses."""

from __future__ import annotations

import os


def worker_count() -> int:
    """Threads for hashing/compressing/decrypting: one more than cores, so reading and writing
    overlap with computing. More buy no speed on data in the page cache (measured on two
    cores: 3 and 4 threads back up, verify and restore alike) and each costs its buffers and
    zstd contexts, about 8 MiB of peak memory."""
    return max(3, min(8, (os.cpu_count() or 2) + 1))


def process_count() -> int:
    """Worker processes sealing small files (batchseal.py): one per core. On two cores, three
    were no faster than two, and the writer's own process needs a share too."""
    return max(2, min(8, os.cpu_count() or 2))
