"""Metrics collector overhead: CPU seconds per hour and memory of collection at 1 Hz.

Run by hand (not a test):

    python benchmarks/bench_collector.py [--minutes 3] [--interval 1.0] [--no-write]

Two child processes run side by side for the same number of minutes, on the same machine,
each on a fresh SQLite data directory:

- collector: sctk.monitoring.collector.Collector with the real psutil sampler at the given
  interval, its 1-hour window, a 1-minute aggregate written to the database each minute (and
  the retention prune), and, when sctk.monitoring.anomaly exists, one anomaly detector per
  metric (the configured default) fed every sample through `collector.subscribe`;
- baseline (the peer): an idle Python process that imports the same modules and opens the
  same database engine, then sleeps.

Each child measures its own CPU time (user + system, all threads, getrusage) and its resident
memory from the moment setup ends to the end of the run, polling RSS every 2 s. What the
collector costs is the difference between the two: CPU seconds per hour =
(collector CPU - baseline CPU) / run seconds x 3600 (goal: at most 6, i.e. 0.17% of a core);
memory = collector peak RSS - baseline peak RSS (goal: at most 40 MiB). Numpy allocates the
window's ring buffers whole but the kernel only maps pages once written, so a run shorter than
the window also reports the window's full size, the RSS an hour of samples will reach.

The figures are printed and written to benchmarks/RESULTS.md, section
"Metrics collector overhead".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from results import RESULTS, write_section  # benchmarks/results.py

SECTION = "## Metrics collector overhead"
MIB = 2**20
GOAL_CPU_SECONDS_PER_HOUR = 6.0
GOAL_MEMORY_MIB = 40.0


# --- the children ----------------------------------------------------------------------------


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _detection(collector, settings) -> dict:
    """Subscribe one detector per metric (the configured default); what it found."""
    try:
        from sctk.monitoring import anomaly
    except ImportError:
        return {"detection": False}
    detectors: dict = {}
    found = {"anomalies": 0}
    anomaly_settings = getattr(settings, "anomaly", None)

    def make(metric: str):
        if anomaly_settings is not None and hasattr(anomaly, "detector_for"):
            return anomaly.detector_for(metric, anomaly_settings)
        return anomaly.make_detector(anomaly.DEFAULT_DETECTOR)

    def detect(now, sample) -> None:
        t = now.timestamp()
        for metric, value in sample.items():
            det = detectors.get(metric)
            if det is None:
                det = detectors[metric] = make(metric)
            if det.update(t, value) is not None:
                found["anomalies"] += 1

    collector.subscribe(detect)
    return {"detection": True, "detectors": detectors, "found": found}


def child(kind: str, home: Path, seconds: float, interval: float) -> dict:
    # the same imports and the same engine in both children: only the collection differs
    from sctk import config
    from sctk.monitoring import store  # noqa: F401
    from sctk.monitoring.collector import Collector
    from sctk.storage.engine import make_engine

    with contextlib.suppress(ImportError):
        from sctk.monitoring import anomaly  # noqa: F401
    settings = config.load(home, {"monitor": {"interval_seconds": interval}}).settings
    engine = make_engine(settings)
    collector = Collector.from_settings(settings, engine) if kind == "collector" else None
    detection = _detection(collector, settings) if collector is not None else {}

    rss_start = _rss()
    peak = rss_start
    cpu_start = _cpu()
    wall_start = time.monotonic()
    if collector is not None:
        collector.start()
    stop = threading.Event()
    while not stop.wait(2.0):
        peak = max(peak, _rss())
        if time.monotonic() - wall_start >= seconds:
            break
    if collector is not None:
        collector.stop()
    wall = time.monotonic() - wall_start
    cpu = _cpu() - cpu_start
    rss_end = _rss()
    peak = max(peak, rss_end)
    out = {
        "kind": kind,
        "seconds": wall,
        "cpu_seconds": cpu,
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_peak": peak,
    }
    if collector is not None:
        from sqlalchemy import func, select

        from sctk.storage.engine import session_scope
        from sctk.storage.models import MetricAggregate

        with session_scope(engine) as s:
            out["aggregates"] = s.scalar(select(func.count()).select_from(MetricAggregate))
        out["samples"] = collector.samples
        out["series"] = len(collector.window.names())
        out["window_bytes"] = collector.window.nbytes()
        out["window_capacity"] = collector.window.capacity
        if detection.get("detection"):
            dets = detection["detectors"]
            out["detectors"] = len(dets)
            out["detector"] = type(next(iter(dets.values()))).__name__ if dets else ""
            out["anomalies"] = detection["found"]["anomalies"]
            sizes = [getattr(d, "state_size", 0) for d in dets.values()]
            out["detector_state"] = sum(s() if callable(s) else s for s in sizes)
    engine.dispose()
    return out


# --- the parent ------------------------------------------------------------------------------


def run_children(minutes: float, interval: float) -> tuple[dict, dict]:
    from sctk.ops.init_home import init_home

    with tempfile.TemporaryDirectory(prefix="sctk-bench-collector-") as tmp:
        procs = {}
        for kind in ("collector", "baseline"):
            home = Path(tmp) / kind
            init_home(home)
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
            env["XDG_DATA_HOME"] = tmp
            procs[kind] = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    kind,
                    "--home",
                    str(home),
                    "--minutes",
                    str(minutes),
                    "--interval",
                    str(interval),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        results = {}
        for kind, proc in procs.items():
            stdout, _ = proc.communicate(timeout=minutes * 60 + 300)
            if proc.returncode != 0:
                raise SystemExit(f"the {kind} child failed (exit {proc.returncode})")
            results[kind] = json.loads(stdout.strip().splitlines()[-1])
    return results["collector"], results["baseline"]


def figures(c: dict, b: dict) -> dict:
    per_hour = 3600.0 / c["seconds"]
    cpu_h = (c["cpu_seconds"] - b["cpu_seconds"] * c["seconds"] / b["seconds"]) * per_hour
    peak_mib = (c["rss_peak"] - b["rss_peak"]) / MIB
    growth_mib = ((c["rss_end"] - c["rss_start"]) - (b["rss_end"] - b["rss_start"])) / MIB
    # pages of the window not yet written in a short run: what an hour will add at most
    unwritten = c["window_bytes"] * (1 - min(1.0, c["samples"] / c["window_capacity"])) / MIB
    return {
        "cpu_per_hour": cpu_h,
        "collector_cpu_per_hour": c["cpu_seconds"] * per_hour,
        "baseline_cpu_per_hour": b["cpu_seconds"] * 3600.0 / b["seconds"],
        "core_percent": cpu_h / 36.0,
        "ratio": c["cpu_seconds"] / b["cpu_seconds"] if b["cpu_seconds"] else float("inf"),
        "peak_mib": peak_mib,
        "growth_mib": growth_mib,
        "projected_mib": peak_mib + unwritten,
        "window_mib": c["window_bytes"] / MIB,
    }


def report(c: dict, b: dict, f: dict, minutes: float, interval: float) -> str:
    command = f"python benchmarks/bench_collector.py --minutes {minutes:g}"
    if interval != 1.0:
        command += f" --interval {interval:g}"
    detection = (
        f"{c['detectors']} `{c['detector']}` anomaly detectors (one per metric, "
        f"{c.get('detector_state', 0)} samples of state at the end; {c['anomalies']} "
        f"{'anomaly' if c['anomalies'] == 1 else 'anomalies'} flagged)"
        if c.get("detectors")
        else "no anomaly detection (sctk.monitoring.anomaly not present)"
    )
    met_cpu = "met" if f["cpu_per_hour"] <= GOAL_CPU_SECONDS_PER_HOUR else "not met"
    met_mem = "met" if f["projected_mib"] <= GOAL_MEMORY_MIB else "not met"
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"Python {platform.python_version()}; command: `{command}`.",
        "",
        f"Two processes side by side for {minutes:g} minutes on fresh SQLite data directories. "
        f"'collector': the collector at {1 / interval:g} Hz with the real psutil sampler "
        f"({c['series']} series: CPU, memory, disk, network in/out, sctk's own CPU and RSS, "
        f"load; {c['samples']} samples), its 1-hour window, {c['aggregates']} 1-minute "
        f"aggregates written to the database, and {detection}. 'baseline' (the peer): an idle "
        "Python process with the same imports and the same database engine. CPU is user + "
        "system time of all threads (getrusage) from the end of setup to the end of the run; "
        "RSS is polled every 2 s over the same span.",
        "",
        "| process | CPU s | CPU s per hour | RSS at start MiB | RSS peak MiB | RSS growth MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r, per_h in (
        ("collector", c, f["collector_cpu_per_hour"]),
        ("baseline", b, f["baseline_cpu_per_hour"]),
    ):
        lines.append(
            f"| {name} | {r['cpu_seconds']:.2f} | {per_h:.2f} | {r['rss_start'] / MIB:.1f} | "
            f"{r['rss_peak'] / MIB:.1f} | {(r['rss_end'] - r['rss_start']) / MIB:+.1f} |"
        )
    lines += [
        "",
        f"Attributable to collection and detection: **{f['cpu_per_hour']:.2f} CPU seconds per "
        f"hour** ({f['core_percent']:.3f}% of one core; the collector process used "
        f"{f['ratio']:.1f} x the baseline's CPU), and **{f['peak_mib']:.1f} MiB** of peak RSS "
        f"over the baseline ({f['growth_mib']:+.1f} MiB of growth during the run). The window "
        f"allocates {f['window_mib']:.2f} MiB for an hour of samples; counting its pages not yet "
        f"written in this run, the memory after an hour is at most {f['projected_mib']:.1f} MiB "
        "(the detectors' windows are bounded too, but fill only over their own span: a run "
        "of 60 minutes or more measures them full).",
        "",
        f"- CPU at most {GOAL_CPU_SECONDS_PER_HOUR:g} s per hour: **{met_cpu}** "
        f"({f['cpu_per_hour']:.2f}).",
        f"- Memory at most {GOAL_MEMORY_MIB:g} MiB for collection and detection: **{met_mem}** "
        f"({f['projected_mib']:.1f} MiB, projected to a full window).",
        "",
        "A load average above the number of CPUs means the machine was shared while measuring; "
        "both processes ran at the same time, so they shared it alike.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="Length of the run.")
    parser.add_argument("--interval", type=float, default=1.0, help="Sampling interval (s).")
    parser.add_argument("--no-write", action="store_true", help=f"Do not update {RESULTS}.")
    parser.add_argument("--child", choices=("collector", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.home, args.minutes * 60, args.interval)))
        return
    collector, baseline = run_children(args.minutes, args.interval)
    f = figures(collector, baseline)
    print(json.dumps({"collector": collector, "baseline": baseline, **f}, indent=2))
    print(
        f"collection + detection: {f['cpu_per_hour']:.2f} CPU s/hour "
        f"(x{f['ratio']:.1f} the idle baseline's CPU), {f['peak_mib']:.1f} MiB peak RSS over "
        f"the baseline, {f['projected_mib']:.1f} MiB projected to a full window"
    )
    if not args.no_write:
        write_section(SECTION, report(collector, baseline, f, args.minutes, args.interval))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
