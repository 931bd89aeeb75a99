"""Bounded load on real servers: `sctk serve --role api` (as each API process of a deployment
runs) and, in the same run, a bare FastAPI app on the same uvicorn as the ceiling.

Every answer must be the expected one (zero errors); req/s, p50 and p99 are printed (run
with -s to see them). The goals of the issue (0.8 of the ceiling's req/s on /health/live;
p99 under 50 ms for 1,000 predicted rows at 8 clients) depend on the machine and on what
else runs on it, so they are measured and recorded by benchmarks/bench_api.py, not asserted
in CI; this test asserts correctness under load and that each endpoint kept up a rate.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.reliability.harness import (
    Target,
    bare_api,
    login,
    predict_rows,
    predict_targets,
    prepare_home,
    run_load,
    sctk_api,
)

pytestmark = pytest.mark.reliability

CLIENTS = 8
# Per endpoint; the suite runs in CI on a 2-core machine (SCTK_LOAD_SECONDS to lengthen).
# One second is a few hundred requests even on the slowest endpoint (uncached predictions:
# 230 to 310 a second, this test run alone here), all 8 connections in flight together:
# an error that concurrency brings (a 5xx, a 429, a pool running dry, a connection dropped)
# comes up in it. What a longer run adds is steadier rates, which benchmarks/bench_api.py
# measures; each second here costs six on the suite's clock (one per endpoint).
SECONDS = float(os.environ.get("SCTK_LOAD_SECONDS", "1"))
# what is sent meanwhile is not counted, errors included: only as long as opening the 8
# connections and the first answers take
WARMUP = 0.25


def test_bounded_load_zero_errors_against_the_bare_ceiling(tmp_path):
    made = prepare_home(tmp_path / "home")
    with sctk_api(tmp_path / "home") as sctk, bare_api(tmp_path / "bare") as bare:
        auth = login(sctk.url)
        # the answer under load is the right one, not only a 200: checked once here
        answer = httpx.post(
            f"{sctk.url}/api/v1/models/{made['model']}/predict",
            json={"rows": predict_rows(1000)},
            headers=auth,
            timeout=60,  # the first prediction loads the model
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["rows"] == 1000 and len(body["mean"]) == len(body["upper"]) == 1000
        assert all(
            lo <= m <= up
            for lo, m, up in zip(body["lower"], body["mean"], body["upper"], strict=True)
        )

        cached, uncached = predict_targets(made["model"], auth)
        runs = [
            (bare, Target.get("bare app /health/live", "/health/live")),
            (sctk, Target.get("sctk /health/live", "/health/live")),
            (sctk, Target.get("sctk /health/ready", "/health/ready")),
            (sctk, Target.get("sctk GET /api/v1/jobs", "/api/v1/jobs", **auth)),
            (sctk, cached),
            (sctk, uncached),
        ]
        results = []
        for server, target in runs:
            result = run_load(server.url, target, CLIENTS, SECONDS, WARMUP)
            print(result.line())
            results.append(result)

    ceiling, live = results[0], results[1]
    print(f"sctk /health/live / bare app: {live.rps / ceiling.rps:.2f} of the ceiling's req/s")
    for result in results:
        assert result.errors == 0, (result.name, result.error_samples)
        # a closed loop of 8 clients: fewer than this many answers means a stall, not load
        assert len(result.latencies) >= 4 * CLIENTS, result.line()
