"""A seeded synthetic suite of machine-metric series with labelled anomalies.

Each series looks like something the collector records: a noisy CPU-like percentage,
request rates and latencies with a daily cycle, memory and disk percentages that barely
move, flat quantised counts (worker processes, queue depth, open connections). They are
sampled once a minute (one week, the 1-minute aggregates) or once every 10 seconds (one
day). Into each, after the probation period, 1 to 3 anomalies are injected:

- spike: 1 to 3 samples far out (CPU pegged, a burst of queued jobs, workers gone);
- level shift: a lasting change of level (a deploy doubles the CPU cost, a lost worker);
- variance: the noise grows 3 to 5 times for one to three hours (thrashing, contention);
- leak: a slow linear climb over hours that then holds (a memory or disk leak).

Labels follow the Numenta Anomaly Benchmark: one window per anomaly, centred on its onset,
of length 10% of the series divided by the number of anomalies in it; the first 15% of
the series (at most 750 samples) is a probation period in which nothing is injected and
nothing is scored.

``python benchmarks/anomaly_suite.py --seed 7`` prints a summary of one suite.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

DAY = 86400.0
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC, so the daily cycle has a real phase


@dataclass
class Label:
    kind: str
    onset: int  # index of the first anomalous sample
    window: tuple[int, int]  # inclusive indices of the NAB window


@dataclass
class Series:
    name: str
    step: float  # seconds between samples
    t: np.ndarray  # epoch seconds
    x: np.ndarray
    labels: list[Label] = field(default_factory=list)

    @property
    def probation(self) -> int:
        return probation_length(len(self.x))

    @property
    def days(self) -> float:
        return (len(self.x) - self.probation) * self.step / DAY


def probation_length(n: int) -> int:
    """NAB's probation period: the first 15% of a series, at most 750 samples."""
    return int(min(math.floor(0.15 * n), 0.15 * 5000))


def place_onsets(rng: np.random.Generator, n: int) -> tuple[list[int], int]:
    """(sorted onsets, window span) of 1 to 3 anomalies in a series of N samples: after the
    probation, at least one window apart so that windows never overlap (real_suite.py
    places its anomalies the same way)."""
    count = int(rng.integers(1, 4))
    span = int(0.1 * n / count)
    first = probation_length(n) + span // 2 + 1
    last = n - span // 2 - 2
    onsets: list[int] = []
    tries = 0
    while len(onsets) < count and tries < 1000:
        tries += 1
        at = int(rng.integers(first, last))
        if all(abs(at - o) > span + 10 for o in onsets):
            onsets.append(at)
    onsets.sort()
    return onsets, span


# -- normal behaviour -------------------------------------------------------------------


@dataclass
class Template:
    name: str
    step: float
    n: int
    make: Callable[[np.random.Generator, np.ndarray], np.ndarray]  # (rng, t) -> clean series
    sigma: float  # the typical spread of its noise, for sizing the injected anomalies
    kinds: tuple[str, ...]  # anomaly kinds that make sense for it
    low: float = -math.inf
    high: float = math.inf
    quantum: float = 0.0  # 0: continuous; else values are rounded to this step


def _daily(t: np.ndarray, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * ((t - START) / DAY - 0.35 + phase))


def _wander(rng: np.random.Generator, n: int, sd: float, keep: float = 0.995) -> np.ndarray:
    """A slow AR(1) wander: levels that drift a little over hours."""
    e = rng.normal(0, sd * math.sqrt(1 - keep * keep), n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = keep * acc + e[i]
        out[i] = acc
    return out


def _cpu_minute(rng, t):
    n = len(t)
    base = rng.uniform(25, 40)
    x = base + rng.uniform(8, 15) * _daily(t) + 3.0 * rng.standard_t(5, n)
    # a cron job every hour: a short burst that is normal, not an anomaly
    x[(np.arange(n) % 60) == 5] += rng.uniform(5, 12)
    return x


def _cpu_10s(rng, t):
    n = len(t)
    return rng.uniform(10, 30) + _wander(rng, n, 2.0) + 4.0 * rng.standard_t(4, n)


def _requests(rng, t):
    lam = rng.uniform(150, 300) * (1 + 0.5 * _daily(t, 0.05))
    return rng.poisson(lam).astype(float)


def _latency(rng, t):
    n = len(t)
    return 40 * (1 + 0.2 * _daily(t, 0.05)) * np.exp(0.12 * rng.standard_normal(n))


def _memory(rng, t):
    n = len(t)
    return rng.uniform(45, 65) + _wander(rng, n, 0.4) + 0.15 * rng.standard_normal(n)


def _rss(rng, t):
    n = len(t)
    # a garbage-collected heap: slow saw teeth under the noise
    saw = 6 * ((np.arange(n) % 180) / 180.0)
    return rng.uniform(250, 400) + saw + 1.5 * rng.standard_normal(n)


def _disk(rng, t):
    n = len(t)
    growth = 0.15 * (t - t[0]) / DAY  # 0.15 points a day: log files
    return rng.uniform(40, 70) + growth + 0.02 * rng.standard_normal(n)


def _workers(rng, t):
    n = len(t)
    x = np.full(n, 4.0)
    # a worker restarted now and then: one sample at 3
    x[rng.random(n) < 0.003] = 3.0
    return x


def _queue(rng, t):
    return rng.poisson(0.4, len(t)).astype(float)


def _connections(rng, t):
    n = len(t)
    x = np.full(n, float(rng.integers(8, 16)))
    blips = rng.random(n) < 0.05
    x[blips] += rng.choice([-1.0, 1.0], blips.sum())
    return x


SLV = ("spike", "level", "variance")
TEMPLATES = [
    Template("cpu_percent", 60, 10080, _cpu_minute, 3.5, SLV, 0, 100, 0.1),
    Template("cpu_percent_10s", 10, 8640, _cpu_10s, 4.5, SLV, 0, 100, 0.1),
    Template("http_requests_per_min", 60, 10080, _requests, 15.0, SLV, 0),
    Template("http_latency_ms", 60, 10080, _latency, 4.8, SLV, 0),
    Template("memory_percent", 60, 10080, _memory, 0.15, ("spike", "level", "leak"), 0, 100, 0.1),
    Template(
        "process_rss_mb", 10, 8640, _rss, 1.5, ("spike", "level", "leak", "variance"), 0, None, 1
    ),
    Template("disk_percent", 60, 10080, _disk, 0.05, ("level", "leak"), 0, 100, 0.1),
    Template("worker_processes", 10, 8640, _workers, 0.5, ("spike", "level"), 0, None, 1),
    Template("jobs_queued", 60, 10080, _queue, 0.7, ("spike", "level"), 0, None, 1),
    Template("open_connections", 10, 8640, _connections, 0.5, SLV, 0, None, 1),
]
for _tpl in TEMPLATES:
    if _tpl.high is None:
        _tpl.high = math.inf


# -- anomalies ---------------------------------------------------------------------------


def _inject(rng: np.random.Generator, tpl: Template, x: np.ndarray, kind: str, at: int, span: int):
    """Change X in place from index AT; SPAN is the label window length (for leaks)."""
    n = len(x)
    s = tpl.sigma
    sign = 1.0 if rng.random() < 0.75 else -1.0  # machine metrics mostly go wrong upwards
    # no room on one side (a count near zero, a percentage near 100): the other side
    day = x[max(at - int(DAY / tpl.step), 0) : at]  # a daily cycle must fit too
    need = (20 if kind == "spike" else 10) * s
    room_up = tpl.high - float(np.percentile(day, 99))
    room_down = float(np.percentile(day, 1)) - tpl.low
    if sign > 0 and room_up < need and room_down > room_up:
        sign = -1.0
    elif sign < 0 and room_down < need and room_up > room_down:
        sign = 1.0
    if kind == "spike":
        length = int(rng.integers(1, 4))
        if tpl.name == "worker_processes":
            x[at : at + length] = 0.0  # every worker gone at once
        else:
            x[at : at + length] += sign * rng.uniform(10, 20) * s
    elif kind == "level":
        if tpl.name == "worker_processes":
            x[at:] -= 1.0  # one worker lost for good: a persistent, quantised shift
        else:
            x[at:] += sign * max(rng.uniform(6, 10) * s, tpl.quantum * 3)
    elif kind == "variance":
        length = int(rng.integers(60, 180)) if tpl.step == 60 else int(rng.integers(180, 600))
        end = min(at + length, n)
        mid = np.median(x[max(at - 60, 0) : at])
        noise_sd = max(s, tpl.quantum)
        x[at:end] += rng.uniform(2, 4) * noise_sd * rng.standard_t(5, end - at)
        x[at:end] = np.where(np.isfinite(x[at:end]), x[at:end], mid)
    elif kind == "leak":
        # the climb reaches 12-20 sigma by the window's end, then holds
        ramp = span // 2 + int(rng.integers(0, span // 2 + 1))
        total = rng.uniform(12, 20) * s * (ramp / (span / 2))
        climb = np.minimum(np.arange(n - at), ramp) / ramp * total
        x[at:] += climb
    else:  # pragma: no cover
        raise ValueError(kind)


def make_series(rng: np.random.Generator, tpl: Template, index: int) -> Series:
    t = START + np.arange(tpl.n) * tpl.step
    x = tpl.make(rng, t).astype(float)
    n = tpl.n
    onsets, span = place_onsets(rng, n)
    kinds = [str(rng.choice(tpl.kinds)) for _ in onsets]
    # a leak or a shift that holds to the end is easiest to keep apart from the others last
    labels = []
    for at, kind in zip(onsets, kinds, strict=True):
        _inject(rng, tpl, x, kind, at, span)
        half = span // 2
        labels.append(Label(kind, at, (at - half, min(at - half + span - 1, n - 1))))
    x = np.clip(x, tpl.low, tpl.high)
    if tpl.quantum:
        x = np.round(x / tpl.quantum) * tpl.quantum
    return Series(f"{tpl.name}#{index}", tpl.step, t, x, labels)


def make_suite(seed: int, copies: int = 3) -> list[Series]:
    """COPIES series of every template, all drawn from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [make_series(rng, tpl, i) for i in range(copies) for tpl in TEMPLATES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--copies", type=int, default=3)
    args = parser.parse_args()
    suite = make_suite(args.seed, args.copies)
    kinds: dict[str, int] = {}
    for s in suite:
        for label in s.labels:
            kinds[label.kind] = kinds.get(label.kind, 0) + 1
        print(
            f"{s.name:26} n={len(s.x):6} step={s.step:4.0f}s "
            f"{', '.join(f'{lb.kind}@{lb.onset}' for lb in s.labels)}"
        )
    print(f"{len(suite)} series, {sum(kinds.values())} anomalies: {kinds}")


if __name__ == "__main__":
    main()
