"""Handing memory that the process has freed back to the system (glibc's malloc_trim).

glibc keeps freed memory in its arenas, one per thread that allocates (the writer's
workers each have one), and returns it only from the top of a heap; a chunk's buffers
(reads of up to 4 MiB, compressed copies, sealed copies) free memory in the middle of a
heap, which then stays resident (8 to 24 MiB at a first backup's peak: RESULTS.md, "Backup
first-run growth"). malloc_trim(0) releases the free pages inside every arena. Where the
C library has no malloc_trim (musl, macOS), nothing is done.
"""

from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Give the free pages of every malloc arena back to the system; whether it could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
