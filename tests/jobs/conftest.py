"""Fixtures for the job tests: an engine on the test's data directory, settings with the
short timings the tests need, and the API fixtures of the security tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tests.jobs.kinds_for_tests  # noqa: F401 - registers the test kinds in this process
from sctk import config
from sctk.config import Settings
from sctk.jobs import queue
from sctk.storage.engine import session_scope
from tests.security.conftest import accounts, api, engine, start_api  # noqa: F401

# Fast enough for tests on a loaded machine: retries at once, short polls and heartbeats.
FAST = {"poll_seconds": 0.05, "heartbeat_seconds": 0.2, "backoff_seconds": 0.0}


def job_settings(settings: Settings, **jobs: Any) -> Settings:
    """The data directory's settings with [jobs] overrides (FAST by default) and one process
    in the local pool, so that a test does not pay for starting more."""
    overrides = {"jobs": {**FAST, **jobs}, "executor": {"processes": 1}}
    return config.load(settings.home, overrides).settings


@pytest.fixture
def fast_settings(settings) -> Settings:
    return job_settings(settings)


@pytest.fixture(autouse=True)
def _no_buses_left() -> Iterator[None]:
    """Buses made by workers in this process are stopped after each test."""
    yield
    try:
        from sctk.bus import shutdown_all
    except ImportError:
        return
    shutdown_all(1.0)


def submit(eng, kind: str, params: dict | None = None, **kw: Any) -> int:
    with session_scope(eng) as s:
        return queue.submit(s, kind, params or {}, owner=kw.pop("owner", "tests"), **kw).id


def status_of(eng, job_id: int) -> str:
    with session_scope(eng) as s:
        return queue.get(s, job_id).status


def job_dict(eng, job_id: int) -> dict[str, Any]:
    with session_scope(eng) as s:
        return queue.as_dict(queue.get(s, job_id))
