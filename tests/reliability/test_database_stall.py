"""PostgreSQL behind a stalled network path: connections stay open, nothing flows. The
service must say so within seconds (/health/ready and reads answer 503 naming the
database), its worker must wait quietly, and everything must come back by itself."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from sctk import config
from sctk.api.app import create_app
from sctk.ops.init_home import init_home
from sctk.storage.engine import make_engine
from tests.helpers import LiveServer, wait_until
from tests.security.conftest import bearer, create_token, create_user
from tests.storage.tcp_forwarder import Forwarder

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

PROBLEM_JSON = "application/problem+json"
WITHIN = 8.0  # seconds: the bound the defaults promise for a first answer on a stall


@pytest.fixture
def forwarder(pg_migrated_url) -> Iterator[Forwarder]:
    relay = Forwarder(pg_migrated_url)
    try:
        yield relay
    finally:
        relay.close()


def timed(call):
    start = time.monotonic()
    answer = call()
    return answer, time.monotonic() - start


def test_a_stalled_database_is_a_503_within_seconds_and_recovers(forwarder, tmp_path, caplog):
    home = tmp_path / "home"
    init_home(home, database_url=forwarder.url)
    settings = config.load(home, {"jobs": {"poll_seconds": 0.2}}).settings
    engine = make_engine(settings)
    create_user(engine, "ana.lyst", "Velvet-Orbit-Meadow-927", "analyst")
    token, _ = create_token(engine, "ana.lyst")
    engine.dispose()
    auth = bearer(token)
    caplog.set_level(logging.WARNING)

    with LiveServer(create_app(settings, workers=1)) as server, server.client() as http:
        assert http.get("/health/ready").status_code == 200
        assert http.get("/api/v1/jobs", headers=auth).status_code == 200

        forwarder.stall()
        ready, took = timed(lambda: http.get("/health/ready"))
        times = [took]
        assert ready.status_code == 503, ready.text
        assert took < WITHIN, f"/health/ready took {took:.1f} s on a stalled database"
        assert ready.headers["content-type"].startswith(PROBLEM_JSON)
        assert "database" in ready.json()["detail"], ready.json()

        listed, took = timed(lambda: http.get("/api/v1/jobs", headers=auth))
        times.append(took)
        assert listed.status_code == 503, listed.text
        assert took < WITHIN, f"a read took {took:.1f} s on a stalled database"
        assert listed.headers["content-type"].startswith(PROBLEM_JSON)
        problem = listed.json()
        assert problem["title"] == "Database not answering", problem
        assert "did not answer in time" in problem["detail"], problem
        # the probe again, while the first stalled connections may still be waiting
        again, took = timed(lambda: http.get("/health/ready"))
        times.append(took)
        assert again.status_code == 503 and took < WITHIN, (again.status_code, took)
        assert http.get("/health/live").status_code == 200

        forwarder.resume()
        wait_until(
            lambda: http.get("/health/ready").status_code == 200,
            timeout=30,
            what="/health/ready to recover once the path flows again",
        )
        assert http.get("/api/v1/jobs", headers=auth).status_code == 200
        wait_until(
            lambda: any("resumed" in r.getMessage() for r in caplog.records),
            timeout=30,
            what="the worker to say the database answers again",
        )

    worker = [r for r in caplog.records if r.name == "sctk.jobs.worker"]
    # one line when the outage starts and one when it ends; never a traceback per pass
    assert not [r for r in worker if r.exc_info], [r.getMessage() for r in worker]
    paused = [r.getMessage() for r in worker if " paused: " in r.getMessage()]
    loops = [m.split(" paused: ")[0] for m in paused]
    assert paused and len(loops) == len(set(loops)), paused
    assert "did not answer in time" in paused[0], paused
    shown = ", ".join(f"{t:.1f}" for t in times)
    print(f"\nstalled database: ready, read, ready answered 503 in {shown} s")
