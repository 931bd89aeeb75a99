"""The process heap while the engine runs: peak memory that does not grow with the data.

glibc's malloc raises its mmap threshold to the size of every large block freed (up to
32 MiB) and its trim threshold to twice that. The engine frees a large block for almost
every chunk (0.25 to 4 MiB: compressed, sealed and decompressed buffers) on several
threads, so after the first few chunks every such buffer comes from a per-thread arena
that keeps up to tens of MiB of free space it never gives back, and fragments further the
longer the run: measured on the reference data set, the peak resident memory of a first
backup grew from 86 to 106 MiB between 0.25 and 1 GiB of source, of a verify from 46 to
65 MiB and of a restore from 50 to 72 MiB, while the Python objects at the peak stayed
within 7 MiB of each other (tracemalloc).

Setting the thresholds once turns the dynamic adjustment off: the mmap threshold stays
where it is set and the trim threshold at its 128 KiB default (set again: the start-up's
own frees may have raised it already), so an arena gives back free space at its top as it
is freed. The mmap threshold is set above every buffer the engine allocates (read blocks
are 8 MiB), so those still come from the arenas, without a page fault per chunk (a 256 KiB
threshold, which puts every chunk buffer in its own mapping, cost a verify 20% more CPU).
Measured on the reference data set at 2 GiB: first backup 110 -> 99 MiB, verify 85 -> 74 MiB,
restore 89 -> 81 MiB (benchmarks/RESULTS.md, "Backup engine memory at scale").

A variable MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the environment is the
operator's own choice and is left alone; other C libraries are left alone too.
"""

from __future__ import annotations

import ctypes
import os
import threading

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024  # glibc's default, which the dynamic adjustment may have raised

_done = False
_lock = threading.Lock()


def settle() -> bool:
    """Fix glibc's mmap threshold once per process (see above); whether it was set now."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
            return False
        try:
            if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
                return False
            libc = ctypes.CDLL(None)
            # both: by now the start-up (imports) may have raised the trim threshold already
            return bool(
                libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        except (OSError, AttributeError, ValueError):
            return False
