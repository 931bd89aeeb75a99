"""Fixtures for the bus tests: settings with fast retries, buses that are shut down before
the test's database is dropped, and the security fixtures (accounts, a live API)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sctk import config
from sctk.bus import Bus, shutdown_all
from sctk.config import Settings
from tests.helpers import run_sctk  # noqa: F401 - re-exported for the tests
from tests.security.conftest import (  # noqa: F401 - fixtures used by the WebSocket tests
    accounts,
    api,
    engine,
    start_api,
    viewer_api,
)

MAX_ATTEMPTS = 3
FAST_BUS = {"bus": {"max_attempts": MAX_ATTEMPTS, "backoff_seconds": 0.01}}


@pytest.fixture
def settings(home) -> Iterator[Settings]:
    """The data directory's settings with quick retries. Every bus of the process is shut
    down afterwards, before the test's PostgreSQL database is dropped under its listener."""
    yield config.load(home, FAST_BUS).settings
    shutdown_all()


@pytest.fixture
def bus(settings) -> Iterator[Bus]:
    """A started bus of its own (not the process-wide one)."""
    b = Bus(settings, source="tests").start()
    yield b
    b.shutdown()


def python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """Run CODE in a fresh interpreter (another process, as a worker would be)."""
    import os
    import subprocess

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    return result
