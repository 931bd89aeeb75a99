"""Soak: `sctk serve` under minutes of mixed load, its memory sampled every second.

Run by hand (not a test, not in CI):

    python benchmarks/bench_soak.py [--minutes 10] [--warmup 2] [--clients 4] [--no-write]

What it does:

- a temporary data directory on SQLite with an admin (personal API token), a dataset and a
  small registered UQ model, and an initialised backup repository;
- `sctk serve` (role all: the API, one job worker loop with its process pool, the metrics
  collector, alerting and the maintenance scheduler) on a free loopback port;
- CLIENTS closed-loop clients, each sending the next request as soon as the last answered,
  over a seeded mix: /health/live, /health/ready, the job, model and dataset lists, a
  prediction of 50 fresh random rows (so that the prediction cache keeps filling and
  evicting), and `noop` / short `sleep` job submissions; every two minutes (the first in
  the warm-up) a backup through POST /api/v1/backups;
- every second, the resident set size (RSS) of the server's whole process tree (the server
  and every descendant: the job pool's processes, multiprocessing's helpers).

Verdict: after the warm-up (the first WARMUP minutes, in which caches, pools and lazily
imported modules reach their working size) the RSS must not grow by more than 10%: growth is
the median of the last minute over the median of the first minute after the warm-up (medians,
so one short spike of a running job is not taken for a leak); the highest sample after the
warm-up and a least-squares slope are reported too. Any request error fails the run as well.

The curve is saved as benchmarks/soak.png and the figures are written to
benchmarks/RESULTS.md, section "Soak". Traffic goes to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
from results import RESULTS, write_section  # benchmarks/results.py

SECTION = "## Soak"
PNG = Path(__file__).with_name("soak.png")
ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "soak-benchmark-lantern-4417"
ADMIN = ("sofia.soak", "Harbor-Quill-Meteor-608")
LIMIT = 0.10  # the allowed growth after warm-up
BACKUP_EVERY_SECONDS = 120.0
# closed-loop clients from one address: the anti-abuse limits would answer 429 to a
# measurement; raised (their cost is still paid per request), not removed
SERVER_ENV = {
    "SCTK_SECURITY__CLIENT_RATE_LIMIT_PER_MINUTE": "100000000",
    "SCTK_SECURITY__RATE_LIMIT_PER_MINUTE": "100000000",
    "SCTK_SECURITY__RATE_LIMIT_BURST": "1000000",
    "SCTK_BACKUP_PASSPHRASE": PASSPHRASE,
}


# -- the data directory and the server ----------------------------------------------------


def prepare(home: Path) -> tuple[str, int]:
    """An initialised data directory with an admin, a dataset, a small model and a backup
    repository; the admin's API token and the model's id."""
    import numpy as np
    import pandas as pd

    from sctk import config
    from sctk.backup.location import init_repo
    from sctk.ops.init_home import init_home
    from sctk.pipeline import store
    from sctk.security import tokens, users
    from sctk.storage.engine import make_engine, session_scope
    from sctk.uq import registry
    from sctk.uq.hybrid import HybridRegressor

    init_home(home)
    settings = config.load(home).settings
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"a": rng.uniform(-2, 2, n), "b": rng.uniform(-1, 1, n)})
    frame["y"] = np.sin(frame["a"]) + 0.5 * frame["b"] + rng.normal(0, 0.1, n)
    X, y = frame[["a", "b"]].to_numpy(), frame["y"].to_numpy()
    model = HybridRegressor(epochs=20, hidden=(32, 32)).fit(
        X[:300], y[:300], X_cal=X[300:], y_cal=y[300:]
    )
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            user = users.create(s, *ADMIN, "admin", actor="soak")
            out = store.Output("runs", frame, "parquet", {"origin": "import", "inputs": []})
            store.store(s, home, [out], "import", "soak")
        with session_scope(engine) as s:
            token, _view = tokens.create(
                s, users.get(s, user.username), "soak", timedelta(days=1), actor="soak"
            )
            row = registry.save(
                s, home, model, "soak", lineage={"features": ["a", "b"], "target": "y"}
            )
            model_id = row.id
    finally:
        engine.dispose()
    os.environ["SCTK_BACKUP_PASSPHRASE"] = PASSPHRASE
    init_repo(settings)
    return token, model_id


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update({"SCTK_HOME": str(home), **SERVER_ENV})
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sctk", "serve", "--role", "all", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sctk serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("sctk serve did not start within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)


def count_jobs(home: Path) -> dict[str, int]:
    """Jobs by status, read from the data directory once the server has stopped."""
    from sctk import config
    from sctk.jobs import queue
    from sctk.storage.engine import make_engine, session_scope

    engine = make_engine(config.load(home).settings)
    try:
        with session_scope(engine) as s:
            return {k: v for k, v in queue.counts(s).items() if v}
    finally:
        engine.dispose()


def _label(p: psutil.Process, root: int) -> str:
    if p.pid == root:
        return "server"
    try:
        line = " ".join(p.cmdline())
    except psutil.Error:
        return "process"
    if "resource_tracker" in line:
        return "multiprocessing resource tracker"
    if "multiprocessing" in line:
        return "job pool process"
    return p.name()


def tree_rss(pid: int) -> dict[int, tuple[str, int]]:
    """RSS in bytes of PID and of each of its descendants: {pid: (what it is, rss)}."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for p in procs:
        try:
            out[p.pid] = (_label(p, pid), p.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return out


def per_process(
    tree: list[tuple[float, dict[int, tuple[str, int]]]], warmup_s: float
) -> list[tuple[str, int, float, float]]:
    """(what, pid, MiB in the first minute after warm-up, MiB in the last minute), medians,
    for every process seen in both: which one grew."""
    end = tree[-1][0]
    first = [(t, d) for t, d in tree if warmup_s <= t < warmup_s + 60]
    last = [(t, d) for t, d in tree if t > end - 60]
    pids = sorted({p for _, d in first for p in d} & {p for _, d in last for p in d})
    rows = []
    for pid in pids:
        a = statistics.median(d[pid][1] for _, d in first if pid in d) / 2**20
        b = statistics.median(d[pid][1] for _, d in last if pid in d) / 2**20
        label = next(d[pid][0] for _, d in last if pid in d)
        rows.append((label, pid, a, b))
    return rows


# -- the load -------------------------------------------------------------------------------


@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    done_at: list[float] = field(default_factory=list)  # completion times, for req/s
    backup_jobs: list[int] = field(default_factory=list)
    backup_at: list[float] = field(default_factory=list)  # monotonic times of the requests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, seconds: float, ok: bool, what: str = "") -> None:
        with self.lock:
            self.counts[name] += 1
            self.latencies[name].append(seconds)
            self.done_at.append(time.monotonic())
            if not ok:
                self.errors[name] += 1
                if len(self.error_samples) < 20:
                    self.error_samples.append(f"{name}: {what}")


MIX = [
    ("live", 15),
    ("ready", 10),
    ("jobs", 15),
    ("models", 10),
    ("datasets", 10),
    ("predict", 30),
    ("submit", 10),
]


def client_loop(url: str, token: str, model_id: int, seed: int, until: float, stats: Stats):
    rng = random.Random(seed)
    names = [n for n, _ in MIX]
    weights = [w for _, w in MIX]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
        while time.monotonic() < until:
            name = rng.choices(names, weights)[0]
            start = time.perf_counter()
            try:
                if name == "live":
                    r = http.get("/health/live")
                elif name == "ready":
                    r = http.get("/health/ready")
                elif name == "jobs":
                    r = http.get("/api/v1/jobs", params={"limit": 50})
                elif name == "models":
                    r = http.get("/api/v1/models")
                elif name == "datasets":
                    r = http.get("/api/v1/datasets")
                elif name == "predict":
                    rows = [{"a": rng.uniform(-2, 2), "b": rng.uniform(-1, 1)} for _ in range(50)]
                    r = http.post(f"/api/v1/models/{model_id}/predict", json={"rows": rows})
                else:
                    job = (
                        {"kind": "noop", "params": {"echo": rng.random()}}
                        if rng.random() < 0.8
                        else {"kind": "sleep", "params": {"seconds": 0.2, "steps": 2}}
                    )
                    r = http.post("/api/v1/jobs", json=job)
                ok = r.status_code < 400
                what = f"HTTP {r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                ok, what = False, repr(exc)
            stats.add(name, time.perf_counter() - start, ok, what)


def backup_loop(url: str, token: str, until: float, stats: Stats, stop: threading.Event):
    """A backup job at 30 s, then every BACKUP_EVERY_SECONDS; their job ids."""
    headers = {"Authorization": f"Bearer {token}"}
    next_at = time.monotonic() + 30
    with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
        while not stop.is_set() and time.monotonic() < until:
            if time.monotonic() >= next_at:
                start = time.perf_counter()
                try:
                    r = http.post("/api/v1/backups", json={"label": "manual"})
                    ok, what = r.status_code == 202, f"HTTP {r.status_code} {r.text[:200]}"
                    if ok:
                        stats.backup_jobs.append(r.json()["job"])
                        stats.backup_at.append(time.monotonic())
                except httpx.HTTPError as exc:
                    ok, what = False, repr(exc)
                stats.add("backup", time.perf_counter() - start, ok, what)
                next_at += BACKUP_EVERY_SECONDS
            stop.wait(1.0)


# -- the analysis -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def analyse(samples: list[tuple[float, int]], warmup_s: float) -> dict[str, float]:
    after = [(t, r) for t, r in samples if t >= warmup_s]
    if len(after) < 60:
        raise SystemExit("too few samples after the warm-up: run longer than the warm-up")
    first = [r for t, r in after if t < warmup_s + 60]
    end = after[-1][0]
    last = [r for t, r in after if t > end - 60]
    base = statistics.median(first)
    final = statistics.median(last)
    ts = [t for t, _ in after]
    rs = [r for _, r in after]
    mt, mr = statistics.fmean(ts), statistics.fmean(rs)
    slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rs, strict=True)) / sum(
        (t - mt) ** 2 for t in ts
    )
    return {
        "baseline": base,
        "final": final,
        "growth": final / base - 1.0,
        "peak": max(rs),
        "peak_growth": max(rs) / base - 1.0,
        "start": samples[0][1],
        "slope_mib_per_min": slope * 60 / 2**20,
    }


def plot(samples, warmup_s, fig, req_times, backup_times, t0, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [t / 60 for t, _ in samples]
    mib = [r / 2**20 for _, r in samples]
    figure, (ax, ax2) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot(minutes, mib, lw=1.2, color="#1f5fa8", label="RSS of the server's process tree")
    ax.axvspan(0, warmup_s / 60, color="#dddddd", label="warm-up")
    base = fig["baseline"] / 2**20
    ax.axhline(base, color="#444444", lw=0.8, ls="--", label="baseline (median, 1st min after)")
    ax.axhline(base * (1 + LIMIT), color="#c0392b", lw=0.8, ls=":", label="baseline + 10%")
    for i, t in enumerate(backup_times):
        ax.axvline((t - t0) / 60, color="#27ae60", lw=0.8, alpha=0.7,
                   label="backup requested" if i == 0 else None)  # fmt: skip
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(
        f"sctk serve soak: growth after warm-up {fig['growth'] * 100:+.1f}% "
        f"(limit +{LIMIT * 100:.0f}%)"
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(0, max(mib) * 1.15)
    # requests per second in 10 s bins
    end = samples[-1][0]
    bins = [0] * max(1, int(end // 10))  # whole bins only
    for t in req_times:
        i = int((t - t0) // 10)
        if 0 <= i < len(bins):
            bins[i] += 1
    ax2.bar([i * 10 / 60 for i in range(len(bins))], [b / 10 for b in bins], width=10 / 60,
            align="edge", color="#7f8c8d")  # fmt: skip
    ax2.set_ylabel("req/s")
    ax2.set_xlabel("minutes")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="Length of the run.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Warm-up minutes.")
    parser.add_argument("--clients", type=int, default=4, help="Closed-loop clients.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="Do not touch RESULTS.md/PNG.")
    args = parser.parse_args()
    if args.minutes <= args.warmup + 1:
        parser.error("--minutes must exceed --warmup by at least one minute")

    work = Path(tempfile.mkdtemp(prefix="sctk-soak-"))
    home = work / "home"
    print(f"preparing {home} ...", flush=True)
    token, model_id = prepare(home)
    port = free_port()
    proc = start_server(home, port, work / "serve.log")
    url = f"http://127.0.0.1:{port}"
    print(f"sctk serve (pid {proc.pid}) on {url}; {args.minutes:g} min of load", flush=True)

    stats = Stats()
    samples: list[tuple[float, int]] = []
    nprocs: list[int] = []
    tree: list[tuple[float, dict[int, tuple[str, int]]]] = []
    stop = threading.Event()
    t0 = time.monotonic()
    until = t0 + args.minutes * 60
    threads = [
        threading.Thread(
            target=client_loop, args=(url, token, model_id, args.seed + i, until, stats)
        )
        for i in range(args.clients)
    ]
    threads.append(threading.Thread(target=backup_loop, args=(url, token, until, stats, stop)))
    started = datetime.now(UTC)
    try:
        for t in threads:
            t.start()
        next_sample = t0
        last_report = t0
        while time.monotonic() < until:
            now_tree = tree_rss(proc.pid)
            rss, n = sum(r for _, r in now_tree.values()), len(now_tree)
            if proc.poll() is not None:
                raise SystemExit(f"the server died: {(work / 'serve.log').read_text()[-2000:]}")
            samples.append((time.monotonic() - t0, rss))
            tree.append((samples[-1][0], now_tree))
            nprocs.append(n)
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                print(
                    f"  {samples[-1][0] / 60:5.1f} min  RSS {rss / 2**20:7.1f} MiB in {n} "
                    f"processes  requests {sum(stats.counts.values())}  "
                    f"errors {sum(stats.errors.values())}",
                    flush=True,
                )
            next_sample += 1.0
            time.sleep(max(0.0, next_sample - time.monotonic()))
        for t in threads:
            t.join(timeout=120)
        stop.set()
        # the backups must have ended well too
        with httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            backups = []
            for job_id in stats.backup_jobs:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    job = http.get(f"/api/v1/jobs/{job_id}").json()
                    if job["status"] in ("succeeded", "failed", "dead", "cancelled"):
                        break
                    time.sleep(1)
                backups.append(job["status"])
    finally:
        stop.set()
        stop_server(proc)
    job_counts = count_jobs(home)
    shutil.rmtree(work, ignore_errors=True)

    warmup_s = args.warmup * 60
    fig = analyse(samples, warmup_s)
    processes = per_process(tree, warmup_s)
    total = sum(stats.counts.values())
    errors = sum(stats.errors.values())
    seconds = samples[-1][0]
    ok = fig["growth"] <= LIMIT and errors == 0 and all(b == "succeeded" for b in backups)
    load = os.getloadavg()

    print()
    print(f"requests: {total} in {seconds / 60:.1f} min ({total / seconds:.1f} req/s), "
          f"errors: {errors}")  # fmt: skip
    for sample in stats.error_samples:
        print("  ", sample)
    print(f"backups: {backups}; jobs: {dict(job_counts)}")
    print(
        f"RSS at start {fig['start'] / 2**20:.1f} MiB; after warm-up (median of the first "
        f"minute) {fig['baseline'] / 2**20:.1f} MiB; end (median of the last minute) "
        f"{fig['final'] / 2**20:.1f} MiB: growth {fig['growth'] * 100:+.2f}% "
        f"(limit +{LIMIT * 100:.0f}%); peak {fig['peak'] / 2**20:.1f} MiB "
        f"({fig['peak_growth'] * 100:+.2f}%); slope {fig['slope_mib_per_min']:+.3f} MiB/min"
    )
    for label, pid, a, b in processes:
        print(f"  {label} (pid {pid}): {a:.1f} -> {b:.1f} MiB ({b - a:+.1f})")
    print("PASS" if ok else "FAIL")

    if not args.no_write:
        plot(samples, warmup_s, fig, stats.done_at, stats.backup_at, t0, PNG)
        rows = "\n".join(
            f"| {name} | {stats.counts[name]} | {stats.errors[name]} | "
            f"{percentile(stats.latencies[name], 0.5) * 1000:.1f} | "
            f"{percentile(stats.latencies[name], 0.99) * 1000:.1f} |"
            for name, _ in [*MIX, ("backup", 0)]
            if stats.counts[name]
        )
        reproduce = f"python benchmarks/bench_soak.py --minutes {args.minutes:g}"
        if args.warmup != 2.0:
            reproduce += f" --warmup {args.warmup:g}"
        if args.clients != 4:
            reproduce += f" --clients {args.clients}"
        what = (
            f"`sctk serve --role all` (the API, one job worker loop with its process pool, the "
            f"collector, alerting, the scheduler) on SQLite, under {args.clients} closed-loop "
            f"clients for {seconds / 60:.1f} minutes of mixed load, with the resident set size "
            f"of its whole process tree sampled every second. After the {args.warmup:g}-minute "
            f"warm-up the RSS may grow by at most {LIMIT * 100:.0f}% (median of the last minute "
            f"against the median of the first minute after the warm-up). Run on "
            f"{started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; load average at the end {load[0]:.1f} / "
            f"{load[1]:.1f} / {load[2]:.1f} (other work shared the machine)."
        )
        verdict = (
            f"**{'PASS' if ok else 'FAIL'}**: RSS {fig['start'] / 2**20:.0f} MiB at start, "
            f"{fig['baseline'] / 2**20:.1f} MiB after the warm-up, {fig['final'] / 2**20:.1f} "
            f"MiB at the end: **growth {fig['growth'] * 100:+.2f}%** (limit "
            f"+{LIMIT * 100:.0f}%); highest sample after the warm-up {fig['peak'] / 2**20:.1f} "
            f"MiB ({fig['peak_growth'] * 100:+.2f}%); least-squares slope after the warm-up "
            f"{fig['slope_mib_per_min']:+.3f} MiB/min; {max(nprocs)} processes at most. "
            f"{total} requests ({total / seconds:.1f} req/s), {errors} errors; backups "
            f"through the API: {', '.join(backups) or 'none'}; jobs at the end: "
            f"{', '.join(f'{k} {v}' for k, v in sorted(job_counts.items()))}."
        )
        by_kind: dict[str, float] = defaultdict(float)
        for label, _, x, y in processes:
            by_kind[label] += y - x
        grown = sum(by_kind.values())
        top = max(by_kind, key=lambda k: by_kind[k]) if by_kind else "none"
        where = (
            f"Of the {grown:+.1f} MiB the processes gained after the warm-up, "
            f"{by_kind.get(top, 0.0):+.1f} MiB are in the {top} row(s) of the table below. "
            f"Backups were requested at minute "
            f"{', '.join(f'{(t - t0) / 60:.1f}' for t in stats.backup_at) or '-'} (green lines "
            "on the curve), each run as a job by one of the pool processes."
        )
        text = "\n\n".join(
            [
                SECTION,
                textwrap.fill(what, 95),
                f"Reproduce: `{reproduce}`",
                textwrap.fill(verdict, 95),
                textwrap.fill(where, 95),
                "| request | count | errors | p50 ms | p99 ms |\n"
                "| --- | ---: | ---: | ---: | ---: |\n" + rows,
                "Per process (median of the first minute after the warm-up, then of the last "
                "minute):\n\n| process | MiB after warm-up | MiB at the end | change |\n"
                "| --- | ---: | ---: | ---: |\n"
                + "\n".join(
                    f"| {lb} | {x:.1f} | {y:.1f} | {y - x:+.1f} |" for lb, _, x, y in processes
                ),
                "![RSS of sctk serve during the soak](soak.png)",
            ]
        )
        write_section(SECTION, text)
        print(f"wrote {RESULTS.name} section '{SECTION[3:]}' and {PNG.name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
