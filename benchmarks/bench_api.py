"""API load: sctk's API against a bare FastAPI app on the same uvicorn, in the same run.

Run by hand (not a test):

    python benchmarks/bench_api.py [--seconds 10] [--rounds 3] [--clients 8] [--no-write]

Both servers are real processes on loopback: `sctk serve --role api` (as each API process
of a deployment runs: request ids, access log, metrics, rate limits and auth all on, the
limits raised so that one client address is not refused) on a fresh SQLite data directory
with an admin and a small registered tabular model; and the peer, a FastAPI app with one
route returning {"status": "ok"}. The load generator of tests/reliability/harness.py keeps
CLIENTS keep-alive connections busy (closed loop) for SECONDS per endpoint and round; the
rounds alternate between the two servers so that whatever else the machine does weighs on
both alike. Figures: req/s (median over rounds), p50 and p99 latency (over all rounds'
requests), and the server's own CPU time per request (from the kernel's accounting of the
server process: less sensitive to other load on the machine than req/s).

Goals (issue 10): sctk's /health/live at least 0.8 of the bare app's req/s; the p99 of
POST /api/v1/models/{id}/predict for 1,000 rows under 50 ms at 8 clients (measured both
answered from the prediction cache and, every request distinct, computed each time).

The figures are printed and written to benchmarks/RESULTS.md, section "API load".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from results import RESULTS, write_section  # benchmarks/results.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.reliability.harness import (
    LoadResult,
    Target,
    bare_api,
    login,
    predict_rows,
    predict_targets,
    prepare_home,
    run_load,
    sctk_api,
)

SECTION = "## API load"
LIVE_GOAL = 0.8
P99_GOAL_MS = 50.0


def measure(server, target: Target, clients: int, seconds: float) -> tuple[LoadResult, float]:
    """One run of TARGET; (result, server CPU microseconds per answered request)."""
    before = server.cpu_seconds()
    result = run_load(server.url, target, clients, seconds, warmup=1.0)
    cpu = server.cpu_seconds() - before
    # the warm-up's requests used CPU too: charge the CPU over all requests of the run
    answered = max(len(result.latencies), 1)
    warm_share = seconds / (seconds + 1.0)
    return result, 1e6 * cpu * warm_share / answered


def combine(name: str, runs: list[tuple[LoadResult, float]]) -> dict:
    latencies = [x for r, _ in runs for x in r.latencies]
    pooled = LoadResult(name, runs[0][0].concurrency, 1.0, latencies, 0, [])
    return {
        "name": name,
        "rps": statistics.median(r.rps for r, _ in runs),
        "rps_all": [round(r.rps) for r, _ in runs],
        "p50": pooled.p50_ms,
        "p99": pooled.p99_ms,
        "cpu_us": statistics.median(c for _, c in runs),
        "requests": sum(r.requests for r, _ in runs),
        "errors": sum(r.errors for r, _ in runs),
        "samples": [s for r, _ in runs for s in r.error_samples][:3],
    }


def report(rows: list[dict], args, load: tuple[float, float, float], cold: float) -> str:
    by = {r["name"]: r for r in rows}
    bare, live = by["bare app GET /health/live"], by["sctk GET /health/live"]
    ratio = live["rps"] / bare["rps"]
    cpu_ratio = bare["cpu_us"] / live["cpu_us"]
    command = (
        f"python benchmarks/bench_api.py --seconds {args.seconds:g} --rounds {args.rounds} "
        f"--clients {args.clients}"
    )
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; load average at the start "
        f"{load[0]:.1f} (other work shared the machine); command: `{command}`. Both servers "
        "are single uvicorn processes on loopback (uvloop, httptools); the load generator "
        f"(tests/reliability/harness.py) runs on the same machine, {args.clients} keep-alive "
        f"connections in a closed loop, {args.seconds:g} s per endpoint and round after 1 s of "
        f"warm-up, {args.rounds} rounds alternating the servers. SQLite data directory. "
        "A row naming N workers is `sctk serve --workers N` (uvicorn worker processes on one "
        "port; its CPU column counts them all).",
        "",
        "| endpoint | req/s (median) | req/s per round | p50 ms | p99 ms | server CPU µs/req "
        "| requests | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['rps']:,.0f} | {', '.join(map(str, r['rps_all']))} "
            f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:,.0f} | {r['requests']:,} "
            f"| {r['errors']} |"
        )
    predict = [r for r in rows if "POST predict" in r["name"]]
    lines += [
        "",
        f"- /health/live: sctk answers **{ratio:.2f}** of the bare app's req/s (goal "
        f"{LIVE_GOAL}: {'met' if ratio >= LIVE_GOAL else 'missed'}); by server CPU per request "
        f"the ratio is {cpu_ratio:.2f}.",
    ]
    for r in predict:
        name = r["name"].replace("POST ", "")
        lines.append(
            f"- {name}: p99 **{r['p99']:.1f} ms** at {args.clients} clients (goal "
            f"< {P99_GOAL_MS:g} ms: {'met' if r['p99'] < P99_GOAL_MS else 'missed'})."
        )
    lines.append(
        f"- The first prediction of a fresh API process took {cold:.1f} s (importing torch, "
        "loading the model): not in the figures above."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also measure the predict endpoints on `sctk serve --workers N` (0: do not)",
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sctk-bench-api-") as tmp:
        root = Path(tmp)
        made = prepare_home(root / "home")
        with contextlib.ExitStack() as stack:
            sctk = stack.enter_context(sctk_api(root / "home"))
            bare = stack.enter_context(bare_api(root / "bare"))
            multi = None
            if args.workers > 1:
                multi = stack.enter_context(sctk_api(root / "home", workers=args.workers))
            auth = login(sctk.url)
            cached, uncached = predict_targets(made["model"], auth)
            # the first prediction of a process imports torch and loads the model: timed
            # apart, as the cold start it is, and kept out of the measured runs
            started = time.perf_counter()
            first = httpx.post(
                f"{sctk.url}/api/v1/models/{made['model']}/predict",
                json={"rows": predict_rows(1000)},
                headers=auth,
                timeout=120,
            )
            first.raise_for_status()
            cold = time.perf_counter() - started
            if multi is not None:  # each worker process pays its own cold start
                for _ in range(4 * args.workers):
                    httpx.post(
                        f"{multi.url}/api/v1/models/{made['model']}/predict",
                        json={"rows": predict_rows(1000)},
                        headers=auth,
                        timeout=120,
                    ).raise_for_status()
            plan = [
                ("bare app GET /health/live", bare, Target.get("live", "/health/live")),
                ("sctk GET /health/live", sctk, Target.get("live", "/health/live")),
                ("sctk GET /health/ready", sctk, Target.get("ready", "/health/ready")),
                ("sctk GET /api/v1/jobs", sctk, Target.get("jobs", "/api/v1/jobs", **auth)),
                ("sctk POST predict, 1,000 rows, cached", sctk, cached),
                ("sctk POST predict, 1,000 rows, computed", sctk, uncached),
            ]
            if multi is not None:
                n = args.workers
                plan += [
                    (f"sctk ({n} workers) POST predict, 1,000 rows, cached", multi, cached),
                    (f"sctk ({n} workers) POST predict, 1,000 rows, computed", multi, uncached),
                ]
            runs: dict[str, list] = {name: [] for name, _, _ in plan}
            for round_no in range(args.rounds):
                for name, server, target in plan:
                    result, cpu = measure(server, target, args.clients, args.seconds)
                    runs[name].append((result, cpu))
                    print(f"round {round_no + 1}: {result.line()}; server CPU {cpu:,.0f} µs/req")
    rows = [combine(name, found) for name, found in runs.items()]
    text = report(rows, args, load, cold)
    print()
    print(text)
    if any(r["errors"] for r in rows):
        print("errors:", [(r["name"], r["samples"]) for r in rows if r["errors"]])
    if not args.no_write:
        write_section(SECTION, text)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
