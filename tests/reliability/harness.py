"""The load harness of the reliability suite and benchmarks/bench_api.py: the servers under
test (`sctk serve --role api` and a bare FastAPI app, each a real uvicorn process), a data
directory with an admin and a small registered model, and a load generator.

The load generator is closed-loop HTTP/1.1: N keep-alive connections on asyncio. Each
connection sends one request, reads the whole answer, and sends the next, until the
deadline; latencies are measured per request. Written on raw asyncio streams (uvloop when
installed) rather than an HTTP client library so that the generator, which shares the
machine with the server it measures, costs as little CPU per request as possible: what it
costs is taken from the server under test and from the bare-app ceiling alike.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.helpers import free_port, wait_until

ADMIN = ("lola.load", "Saffron-Glacier-Pylon-713")  # passes the password policy
# Every request of a load run comes from 127.0.0.1: the per-address and per-account limits
# (which exist against abuse from one client) would answer 429 to a measurement; they are
# raised, not removed, so that their cost is still paid per request.
GENEROUS_LIMITS = {
    "SCTK_SECURITY__CLIENT_RATE_LIMIT_PER_MINUTE": "100000000",
    "SCTK_SECURITY__RATE_LIMIT_PER_MINUTE": "100000000",
    "SCTK_SECURITY__RATE_LIMIT_BURST": "1000000",
}
BARE_APP = """\
from fastapi import FastAPI

app = FastAPI()


@app.get("/health/live")
async def live():
    return {"status": "ok"}
"""


@dataclass(frozen=True)
class Target:
    """One kind of request repeated by every connection; NAME labels it in reports.

    BODY is the request body, or a function of the request's sequence number giving it
    (to make every request distinct, e.g. to miss a cache on purpose).
    """

    name: str
    method: str
    path: str
    body: bytes | Callable[[int], bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200

    @classmethod
    def get(cls, name: str, path: str, **headers: str) -> Target:
        return cls(name, "GET", path, headers=headers)

    @classmethod
    def post_json(cls, name: str, path: str, payload: Any, **headers: str) -> Target:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(name, "POST", path, body, {"Content-Type": "application/json", **headers})

    def requests(self, host: str) -> Iterator[bytes]:
        """The encoded requests, forever."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        head = "\r\n".join(lines)
        if callable(self.body):
            make = self.body
            for i in itertools.count():
                body = make(i)
                yield f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            head += f"\r\nContent-Length: {len(self.body)}"
        yield from itertools.repeat(f"{head}\r\n\r\n".encode("latin-1") + self.body)


@dataclass
class LoadResult:
    """What one bounded run measured."""

    name: str
    concurrency: int
    seconds: float
    latencies: list[float]  # seconds, of the answered requests that counted
    errors: int
    error_samples: list[str]

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """The Q-th percentile latency in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank] * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
        }

    def line(self) -> str:
        return (
            f"{self.name}: {self.rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, {self.requests} requests, {self.errors} errors "
            f"({self.concurrency} connections, {self.seconds:.1f} s)"
        )


class _BadAnswer(Exception):
    pass


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 answer; Content-Length or chunked bodies."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        raise _BadAnswer(f"answer {status} without a length")
    return status, body, headers.get("connection", "").lower() != "close"


async def _connection(
    host: str,
    port: int,
    requests: Iterator[bytes],
    expect: int,
    start_at: float,
    stop_at: float,
    result: LoadResult,
) -> None:
    reader = writer = None
    try:
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            sent = time.perf_counter()
            try:
                writer.write(next(requests))
                status, body, keep = await _read_answer(reader)
                if status != expect:
                    raise _BadAnswer(f"{status}: {body[:300]!r}")
            except (OSError, asyncio.IncompleteReadError, ValueError, _BadAnswer) as exc:
                if sent >= start_at:
                    result.errors += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader = writer = None
                continue
            if sent >= start_at:  # requests sent during the warm-up do not count
                result.latencies.append(time.perf_counter() - sent)
            if not keep:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run(url: str, target: Target, concurrency: int, seconds: float, warmup: float):
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = target.requests(f"{host}:{port}")  # shared: one sequence over all connections
    result = LoadResult(target.name, concurrency, seconds, [], 0, [])
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    await asyncio.gather(
        *(
            _connection(host, port, requests, target.expect, start_at, stop_at, result)
            for _ in range(concurrency)
        )
    )
    # the measured window: from the end of the warm-up to the last answer counted
    result.seconds = max(time.perf_counter() - start_at, 1e-9)
    return result


def run_load(
    url: str, target: Target, concurrency: int = 8, seconds: float = 5.0, warmup: float = 1.0
) -> LoadResult:
    """Drive TARGET on the server at URL with CONCURRENCY connections for SECONDS (after
    WARMUP seconds whose requests are not counted); what was measured."""
    coro = _run(url, target, concurrency, seconds, warmup)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# --- the servers under test ---------------------------------------------------------------


@dataclass
class Served:
    """A server process on a loopback port."""

    url: str
    process: subprocess.Popen
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        import psutil

        process = psutil.Process(self.process.pid)
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total


@contextmanager
def _serve(args: list[str], env: dict[str, str], port: int, log: Path, timeout: float):
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def live() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{args[2:5]} exited: {log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{url}/health/live", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, timeout=timeout, interval=0.2, what=f"{url} to answer")
        yield Served(url, process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}


@contextmanager
def sctk_api(home: Path, workers: int = 1, timeout: float = 120) -> Iterator[Served]:
    """`sctk serve --role api` on HOME, as a deployment runs each API process (WORKERS > 1:
    uvicorn's worker processes behind one port)."""
    port = free_port()
    env = {**_clean_env(), "SCTK_HOME": str(home), **GENEROUS_LIMITS}
    args = [sys.executable, "-m", "sctk", "serve", "--role", "api", "--port", str(port)]
    args += ["--workers", str(workers)]
    with _serve(args, env, port, home.parent / f"serve-{port}.log", timeout) as served:
        yield served


@contextmanager
def bare_api(directory: Path, timeout: float = 60) -> Iterator[Served]:
    """The ceiling: one FastAPI route returning {"status": "ok"}, on the same uvicorn (uvloop,
    httptools, one process, no access log: as `sctk serve` runs it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_app:app",
        "--app-dir",
        str(directory),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with _serve(args, _clean_env(), port, directory / f"bare-{port}.log", timeout) as served:
        yield served


# --- the data the load runs on ------------------------------------------------------------


def prepare_home(home: Path, database_url: str | None = None) -> dict[str, Any]:
    """An initialised data directory with the ADMIN account and a small tabular model
    (a HybridRegressor on one feature 'x'); {"model": its id}."""
    import numpy as np

    from sctk import config
    from sctk.ops.init_home import init_home
    from sctk.security import users
    from sctk.storage.engine import make_engine, session_scope
    from sctk.storage.layout import is_data_dir
    from sctk.uq import registry
    from sctk.uq.hybrid import HybridRegressor

    if not is_data_dir(home):
        init_home(home, database_url=database_url)
    settings = config.load(home).settings
    X = np.linspace(0.0, 10.0, 60)[:, None]
    y = 3.0 * X[:, 0] + 1.0 + np.sin(X[:, 0])
    fitted = HybridRegressor(epochs=5, hidden=(16,)).fit(X[:40], y[:40], X_cal=X[40:], y_cal=y[40:])
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            users.create(session, ADMIN[0], ADMIN[1], "admin", actor="tests")
            row = registry.save(session, home, fitted, "load", lineage={"features": ["x"]})
            return {"model": row.id}
    finally:
        engine.dispose()


def login(url: str) -> dict[str, str]:
    """The Authorization header of a fresh admin JWT."""
    r = httpx.post(
        f"{url}/api/v1/auth/token", json={"username": ADMIN[0], "password": ADMIN[1]}, timeout=30
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def predict_rows(n: int = 1000) -> list[dict[str, float]]:
    return [{"x": round(10.0 * i / n, 6)} for i in range(n)]


def predict_targets(model: int, auth: dict[str, str], rows: int = 1000) -> tuple[Target, Target]:
    """(every request the same: answered from the prediction cache after the first;
    every request distinct, by its alpha: a cache miss, the model runs each time)."""
    path = f"/api/v1/models/{model}/predict"
    cached = Target.post_json(
        f"predict {rows} rows (cached)", path, {"rows": predict_rows(rows)}, **auth
    )
    rows_json = json.dumps(predict_rows(rows), separators=(",", ":")).encode()

    def distinct(i: int) -> bytes:
        return b'{"alpha":%.9f,"rows":%s}' % (0.1 + i * 1e-7, rows_json)

    uncached = Target(
        f"predict {rows} rows (uncached)",
        "POST",
        path,
        distinct,
        {"Content-Type": "application/json", **auth},
    )
    return cached, uncached
