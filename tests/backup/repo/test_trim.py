"""The writer hands freed memory back to the system after each pack (trim.py): on glibc,
memory freed between live allocations stays resident until malloc_trim releases it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sctk.backup.repo.trim import release_free_memory

# Run in a fresh interpreter: in a long-lived test worker the heap is already fragmented, the
# small buffers come from old holes instead of lying between the large ones, and the large
# ones, freed together at the heap's top, go back to the system at free() (CI saw 0.8 MiB
# left for the trim to release where a fresh process leaves 25).
EXPERIMENT = r"""
import json, os
from sctk.backup.repo.trim import release_free_memory

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

# 64 KiB buffers, each followed by a small one that stays (both from malloc, not Python's
# small-object allocator): freeing the large ones leaves holes that free() cannot give back,
# as a chunk's read and compressed buffers do among the writer's lasting objects.
large, kept = [], []
for _ in range(400):
    large.append(bytearray(64 * 1024))
    kept.append(bytearray(1024))
del large
before = resident()
trimmed = release_free_memory()
print(json.dumps({"trimmed": trimmed, "before": before, "after": resident(), "kept": len(kept)}))
"""


def test_memory_freed_between_live_buffers_goes_back_to_the_system():
    if not os.path.exists("/proc/self/statm") or not release_free_memory():
        pytest.skip("no malloc_trim in this C library")
    out = subprocess.run(
        [sys.executable, "-c", EXPERIMENT], capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    assert found["trimmed"] and found["kept"] == 400
    assert found["before"] - found["after"] > 10 << 20, found
