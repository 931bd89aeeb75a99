"""What authentication costs: password hashing, and the extra latency of an authenticated request.

Run by hand (not a test):  python benchmarks/bench_auth.py [--pairs 2000] [--no-write]

(a) argon2id hash and verify with sctk.security.passwords: the median of ten of each; the
    hash must cost at least 50 ms, or offline guessing of a stolen hash gets cheap.
(b) Two routes with the same trivial handler are added at run time to the real sctk app
    (create_app on a temporary SQLite data directory): one plain, one behind
    Depends(current_user). Each is served by uvicorn in a subprocess (this script started
    again with --serve), so the client measuring it does not share the server's GIL. A
    keep-alive httpx client alternates requests to the plain route, the route with a personal
    API token and the route with a login JWT; the difference of the medians is what
    authentication adds. The peer is the same plain route on a bare FastAPI app with no sctk
    middleware, served the same way.

The figures are printed and written to benchmarks/RESULTS.md, section "Authentication cost".
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from results import RESULTS, write_section  # benchmarks/results.py

SECTION = "## Authentication cost"
ROUNDS = 10
MIN_HASH_MS = 50.0
GOAL_EXTRA_MS = 1.0
# Every request comes from 127.0.0.1: without these the per-address limit would answer 429.
UNLIMITED = {
    "security": {
        "client_rate_limit_per_minute": 10**9,
        "rate_limit_per_minute": 10**9,
        "rate_limit_burst": 10**9,
    }
}


# --- the servers (this script, started again with --serve) ----------------------------------


def _ok() -> dict[str, bool]:
    return {"ok": True}


def build_sctk_app(home: Path, cache: bool = True):
    from fastapi import Depends

    from sctk import config
    from sctk.api.app import create_app
    from sctk.api.deps import current_user, get_session

    overrides = {"security": {**UNLIMITED["security"]}}
    if not cache:
        overrides["security"]["auth_cache_seconds"] = 0
    app = create_app(config.load(home, overrides).settings)
    app.add_api_route("/bench/plain", _ok, methods=["GET"])
    # half-way: the per-request database session current_user depends on, and no credential
    app.add_api_route("/bench/session", _ok, methods=["GET"], dependencies=[Depends(get_session)])
    app.add_api_route("/bench/auth", _ok, methods=["GET"], dependencies=[Depends(current_user)])
    return app


def build_bare_app():
    from fastapi import FastAPI

    app = FastAPI()
    app.add_api_route("/bench/plain", _ok, methods=["GET"])
    return app


def serve(kind: str, port: int, home: str | None) -> None:
    import uvicorn

    bare = kind == "bare"
    app = build_bare_app() if bare else build_sctk_app(Path(home), cache=kind == "sctk")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the client ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """This script as a uvicorn server in a subprocess; stopped with SIGTERM."""

    def __init__(self, kind: str, home: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, __file__, "--serve", kind, "--port", str(self.port)]
        if home is not None:
            args += ["--home", str(home)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
        self.proc = subprocess.Popen(args, env=env)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the {self.url} server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/bench/plain", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"the server at {self.url} did not start within 60 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[int(0.9 * (len(ordered) - 1))],
        "n": len(ordered),
    }


def measure_passwords() -> dict[str, dict[str, float]]:
    from sctk.security import passwords

    password = "Harbor-Quartz-Lantern-581"
    hashes, verifies = [], []
    stored = passwords.hash_password(password)
    for _ in range(ROUNDS):
        t = time.perf_counter()
        passwords.hash_password(password)
        hashes.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        assert passwords.verify_password(stored, password)
        verifies.append((time.perf_counter() - t) * 1000)
    result = {"hash": summary(hashes), "verify": summary(verifies)}
    print(
        f"argon2id hash   median {result['hash']['median']:7.1f} ms  "
        f"p90 {result['hash']['p90']:7.1f} ms  (n={ROUNDS})"
    )
    print(
        f"argon2id verify median {result['verify']['median']:7.1f} ms  "
        f"p90 {result['verify']['p90']:7.1f} ms  (n={ROUNDS})"
    )
    assert result["hash"]["median"] >= MIN_HASH_MS, (
        f"a password hash takes {result['hash']['median']:.1f} ms, under {MIN_HASH_MS} ms: "
        "offline guessing would be cheap; raise the argon2 cost"
    )
    assert result["verify"]["median"] >= MIN_HASH_MS
    return result


def prepare_home(root: Path) -> tuple[Path, str, str]:
    """A data directory with one analyst, their personal API token and a login JWT."""
    from sctk import config
    from sctk.ops.init_home import init_home
    from sctk.security import tokens, users
    from sctk.security.keyring import Keyring
    from sctk.storage.engine import make_engine, session_scope

    home = root / "home"
    init_home(home)
    settings = config.load(home).settings
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            user = users.create(session, "bench.user", "Harbor-Quartz-Lantern-581", "analyst")
            api_token, _ = tokens.create(session, user, "bench", timedelta(days=1), "bench")
            login_jwt, _ = tokens.issue_jwt(Keyring.load(home), user, timedelta(hours=1))
    finally:
        engine.dispose()
    return home, api_token, login_jwt


def timed(client: httpx.Client, path: str, headers: dict[str, str]) -> float:
    t = time.perf_counter()
    r = client.get(path, headers=headers)
    elapsed = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise SystemExit(f"GET {path} answered {r.status_code}: {r.text}")
    return elapsed


def measure_requests(pairs: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="sctk-bench-") as tmp:
        home, api_token, login_jwt = prepare_home(Path(tmp))
        variants = {
            "plain": ("/bench/plain", {}),
            "session only": ("/bench/session", {}),
            "api token": ("/bench/auth", {"Authorization": f"Bearer {api_token}"}),
            "login JWT": ("/bench/auth", {"Authorization": f"Bearer {login_jwt}"}),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        with Server("sctk", home) as server, httpx.Client(base_url=server.url) as client:
            for _ in range(200):  # warm up: connections, caches, the token's last-use write
                for path, headers in variants.values():
                    timed(client, path, headers)
            for _ in range(pairs):  # interleaved, so drift in machine load hits all alike
                for name, (path, headers) in variants.items():
                    samples[name].append(timed(client, path, headers))
        # every request verified against the database: what a first request, or any request
        # with auth_cache_seconds = 0, costs
        uncached = {
            "plain (cache off)": ("/bench/plain", {}),
            "api token (cache off)": variants["api token"],
            "login JWT (cache off)": variants["login JWT"],
        }
        samples.update({name: [] for name in uncached})
        with Server("sctk-nocache", home) as server, httpx.Client(base_url=server.url) as client:
            for _ in range(200):
                for path, headers in uncached.values():
                    timed(client, path, headers)
            for _ in range(pairs):
                for name, (path, headers) in uncached.items():
                    samples[name].append(timed(client, path, headers))
        bare: list[float] = []
        with Server("bare") as server, httpx.Client(base_url=server.url) as client:
            for _ in range(200):
                timed(client, "/bench/plain", {})
            for _ in range(pairs):
                bare.append(timed(client, "/bench/plain", {}))
    result = {name: summary(s) for name, s in samples.items()}
    result["bare FastAPI plain"] = summary(bare)
    return result


def report(pw: dict, req: dict, pairs: int) -> str:
    plain = req["plain"]["median"]
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"Python {platform.python_version()}; "
        f"command: `python benchmarks/bench_auth.py --pairs {pairs}`.",
        "",
        "Password hashing (sctk.security.passwords, argon2id), median of "
        f"{ROUNDS}; must be >= {MIN_HASH_MS:.0f} ms:",
        "",
        "| operation | median ms | p90 ms |",
        "| --- | ---: | ---: |",
        f"| hash | {pw['hash']['median']:.1f} | {pw['hash']['p90']:.1f} |",
        f"| verify | {pw['verify']['median']:.1f} | {pw['verify']['p90']:.1f} |",
        "",
        "Latency of one GET over keep-alive HTTP/1.1 to uvicorn in another process, "
        f"{pairs} requests per variant, interleaved. Same trivial handler everywhere; "
        "'plain' has no authentication; 'session only' adds the per-request database session "
        "(`Depends(get_session)`) and no credential; 'api token' and 'login JWT' add "
        "`Depends(current_user)` (SQLite). By default a verified credential is trusted for "
        "`security.auth_cache_seconds` (2 s) before it is looked up again, so a client making "
        "repeated requests mostly takes the cached path; the '(cache off)' rows come from a "
        "second server with that setting at 0, where every request is verified against the "
        "database. "
        f"Goal: authentication adds at most {GOAL_EXTRA_MS:.0f} ms.",
        "",
        "| variant | median ms | p90 ms | extra vs plain (median) ms | ratio to plain |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in req.items():
        extra = s["median"] - plain
        lines.append(
            f"| {name} | {s['median']:.3f} | {s['p90']:.3f} | {extra:+.3f} | "
            f"{s['median'] / plain:.2f} |"
        )
    worst = max(req["api token"]["median"], req["login JWT"]["median"]) - plain
    verdict = "within" if worst <= GOAL_EXTRA_MS else "over"
    plain_off = req["plain (cache off)"]["median"]
    worst_off = (
        max(req["api token (cache off)"]["median"], req["login JWT (cache off)"]["median"])
        - plain_off
    )
    lines += [
        "",
        f"Authentication adds {worst:.3f} ms at the median: {verdict} the "
        f"{GOAL_EXTRA_MS:.0f} ms goal. With the cache off it adds {worst_off:.3f} ms "
        "(against 'plain (cache off)' from the same server). A load average above the "
        "number of CPUs means the machine was shared while measuring: absolute figures are "
        "then inflated, and the interleaving is what keeps the variants comparable.",
        "",
        "The peer, 'bare FastAPI plain', is the same route on `FastAPI()` with no sctk "
        "middleware (request ids, access log, address rate limit, body cap); its ratio shows "
        "what that middleware costs on a request that does nothing.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000, help="Requests per variant.")
    parser.add_argument("--no-write", action="store_true", help=f"Do not update {RESULTS}.")
    parser.add_argument("--serve", choices=["sctk", "sctk-nocache", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.home)
        return

    pw = measure_passwords()
    req = measure_requests(args.pairs)
    plain = req["plain"]["median"]
    for name, s in req.items():
        print(
            f"{name:>18}: median {s['median']:.3f} ms  p90 {s['p90']:.3f} ms  "
            f"extra {s['median'] - plain:+.3f} ms  ratio {s['median'] / plain:.2f}"
        )
    worst = max(req["api token"]["median"], req["login JWT"]["median"]) - plain
    verdict = "within" if worst <= GOAL_EXTRA_MS else "OVER"
    print(f"authentication adds {worst:.3f} ms at the median: {verdict} the goal")
    off = req["plain (cache off)"]["median"]
    worst_off = max(req["api token (cache off)"]["median"], req["login JWT (cache off)"]["median"])
    print(f"with the credential cache off it adds {worst_off - off:.3f} ms")
    print(f"sctk plain / bare FastAPI plain: {plain / req['bare FastAPI plain']['median']:.2f}")
    if not args.no_write:
        write_section(SECTION, report(pw, req, args.pairs))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
