"""The engine fixes glibc's heap thresholds once per process, unless the operator chose them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[3] / "src")
PROBE = textwrap.dedent(
    """
    from sctk.backup.repo import heap
    print(heap.settle(), heap.settle())
    """
)

glibc_only = pytest.mark.skipif(
    not (hasattr(os, "confstr") and os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
    reason="the thresholds are glibc's",
)


def _run(**env: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env={"PYTHONPATH": SRC, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@glibc_only
def test_the_thresholds_are_set_once_per_process():
    assert _run() == "True False"


@glibc_only
@pytest.mark.parametrize("name", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"])
def test_an_operators_own_threshold_is_left_alone(name):
    assert _run(**{name: "131072"}) == "False False"
