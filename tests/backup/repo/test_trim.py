"""The writer hands freed memory back to the system after each pack (trim.py): on glibc,
memory freed between live allocations stays resident until malloc_trim releases it."""

from __future__ import annotations

import os

import pytest

from sctk.backup.repo.trim import release_free_memory


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_freed_between_live_buffers_goes_back_to_the_system():
    if not os.path.exists("/proc/self/statm") or not release_free_memory():
        pytest.skip("no malloc_trim in this C library")
    # 64 KiB buffers, each followed by a small one that stays (both from malloc, not
    # Python's small-object allocator): freeing the large ones leaves holes that free()
    # cannot give back, as a chunk's read and compressed buffers do among the writer's
    # lasting objects.
    large, kept = [], []
    for _ in range(400):
        large.append(bytearray(64 * 1024))
        kept.append(bytearray(1024))
    del large
    before = _resident()
    assert release_free_memory()
    after = _resident()
    assert before - after > 10 << 20, (before >> 20, after >> 20)
    assert len(kept) == 400
