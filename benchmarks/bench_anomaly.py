"""Anomaly detectors on a seeded synthetic suite of machine metrics, scored like NAB.

Run by hand (not a test):

    python benchmarks/bench_anomaly.py [--seed 2026] [--copies 3] [--no-write]

The suite (benchmarks/anomaly_suite.py) has noisy CPU-like series, request rates and
latencies with a daily cycle, near-flat memory and disk percentages and flat quantised
counts, sampled per minute (a week) or per 10 s (a day), with injected spikes, level
shifts, variance changes and slow leaks and one labelled window per anomaly. Every
detector is fed every series sample by sample through ``update(t, x)``, with its untuned
default settings; a returned Anomaly is a detection at that sample.

Peer, in the same run: the maintenance guide's rule (``three_sigma``: |x - mean| > 3 sigma
over the trailing window) against the default detector (``adaptive``), with the previous
default (``robust``) beside them. Scored by
benchmarks/nab_score.py (NAB standard profile, normalised: never firing = 0, perfect =
100), plus recall (windows detected), precision (detections inside a window / all
detections) and false alarms per day (detections outside every window, per day of scored
data). Goal: the default scores at least 40 points above the guide's rule with fewer than
a quarter of its false alarms.

The defaults of ``robust`` were chosen by looking at suites drawn with other seeds
(seeds 7 to 11 during development), those of ``adaptive`` on the tuning parts of the real
suite (benchmarks/bench_anomaly_real.py); the seed of the figures in RESULTS.md (2026) was
not used to choose either.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from anomaly_suite import Series, make_suite
from nab_score import SeriesScore, normalised, recall_table, score_series
from results import RESULTS, write_section

from sctk.monitoring.anomaly import make_detector

SECTION = "## Anomaly detection"
# (registry name, parameters, label); the first two are the comparison, both untuned
# defaults; the third is a reference only: the guide's rule with a six times longer window,
# to show that its false alarms are not an artefact of its window length
DETECTORS = [
    ("three_sigma", {}, "guide's 3-sigma rule"),
    ("adaptive", {}, "default"),
    ("robust", {}, "previous default"),
    ("three_sigma", {"window": 360}, "guide's rule, window 360 (reference)"),
]
BENCH_SEED = 2026
TUNE_SEEDS = range(7, 12)  # the seeds the defaults were chosen on; never the bench seed


def run_detector(name: str, params: dict, series: Series) -> tuple[list[int], list[str], int]:
    """Indices and kinds of the detections of a fresh NAME detector on SERIES; updates made."""
    det = make_detector(name, **params)
    hits: list[int] = []
    kinds: list[str] = []
    for i, (t, x) in enumerate(zip(series.t.tolist(), series.x.tolist(), strict=True)):
        found = det.update(t, x)
        if found is not None:
            hits.append(i)
            kinds.append(found.kind)
    return hits, kinds, len(series.x)


def state_bytes(name: str, params: dict, samples: int = 20_000) -> int:
    """Memory one detector holds after SAMPLES noisy samples (tracemalloc, steady state)."""
    import tracemalloc

    import numpy as np

    xs = np.random.default_rng(0).normal(40, 3, samples).tolist()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    det = make_detector(name, **params)
    for i, x in enumerate(xs):
        det.update(1.7e9 + i, x)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del det
    return held


def evaluate(name: str, params: dict, suite: list[Series]) -> dict:
    scores: list[SeriesScore] = []
    per_kind: dict[str, list[int]] = {}
    per_series: list[tuple[str, SeriesScore]] = []
    updates = 0
    # CPU time of this process: on a shared machine the wall clock counts others' turns
    start = time.process_time()
    for s in suite:
        hits, _kinds, n = run_detector(name, params, s)
        updates += n
        sc = score_series(hits, [lb.window for lb in s.labels], s.probation)
        scores.append(sc)
        per_series.append((s.name, sc))
        for lb in s.labels:
            lo, hi = lb.window
            found = any(lo <= h <= hi for h in hits)
            per_kind.setdefault(lb.kind, [0, 0])
            per_kind[lb.kind][0] += int(found)
            per_kind[lb.kind][1] += 1
    elapsed = time.process_time() - start
    windows = sum(s.windows for s in scores)
    detections = sum(s.detections for s in scores)
    fps = sum(s.false_positives for s in scores)
    days = sum(s.days for s in suite)
    return {
        "name": name + "".join(f" {k}={v}" for k, v in params.items()),
        "score": normalised(scores),
        "recall": sum(s.detected for s in scores) / windows,
        "precision": (sum(s.in_window for s in scores) / detections) if detections else 0.0,
        "fps": fps,
        "fa_per_day": fps / days,
        "detections": detections,
        "per_kind": per_kind,
        "per_series": per_series,
        "us_per_update": elapsed / updates * 1e6,
        "kib": state_bytes(name, params) / 1024,
    }


def report(rows: list[dict], suite: list[Series], seed: int, command: str) -> str:
    guide, default = rows[0], rows[1]
    windows = sum(len(s.labels) for s in suite)
    days = sum(s.days for s in suite)
    kinds = sorted({lb.kind for s in suite for lb in s.labels})
    counts = {k: sum(lb.kind == k for s in suite for lb in s.labels) for k in kinds}
    fa_ratio = default["fps"] / guide["fps"] if guide["fps"] else float("nan")
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; command: `{command}`.",
        "",
        f"Suite: `benchmarks/anomaly_suite.py`, seed {seed}: {len(suite)} series "
        f"(CPU-like, request rate and latency with a daily cycle, memory, disk, RSS, and "
        f"flat quantised counts: worker processes, queued jobs, open connections; per minute "
        f"for a week or per 10 s for a day), {windows} injected anomalies "
        f"({', '.join(f'{counts[k]} {k}' for k in kinds)}), "
        f"{days:.1f} days of scored data. Each detector is fed every sample through "
        "`update(t, x)` with its untuned default settings. Scored as NAB scores "
        "(`benchmarks/nab_score.py`, standard profile A_TP=1, A_FP=0.11, A_FN=1; a window of "
        "10% of the series / anomalies centred on each onset; earliest detection in a "
        "window rewarded by the scaled sigmoid; probation 15%, at most 750 samples), "
        "normalised so that never firing scores 0 and a perfect detector 100. Precision "
        "counts every detection inside a window as true; false alarms are the detections "
        "outside every window.",
        "",
        f"The defaults of `robust` were chosen on suites drawn with seeds "
        f"{TUNE_SEEDS[0]} to {TUNE_SEEDS[-1]} (`--seed N --no-write`), those of `adaptive` "
        "on the tuning parts of the real suite (next section); seed "
        f"{seed} was not looked at while choosing them. A NAB score below 0 means the false "
        "positives cost more than the detections earn (the scale has no lower bound).",
        "",
        "| detector | NAB score | recall | precision | false alarms | per day | detections "
        "| µs per sample | state KiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r, (_, _, label) in zip(rows, DETECTORS, strict=True):
        lines.append(
            f"| {label} (`{r['name']}`) | {r['score']:.1f} | {r['recall']:.2f} | "
            f"{r['precision']:.3f} | {r['fps']} | {r['fa_per_day']:.1f} | "
            f"{r['detections']} | {r['us_per_update']:.1f} | {r['kib']:.1f} |"
        )
    lines += [
        "",
        "Recall by kind of anomaly (windows detected / windows):",
        "",
        *recall_table(rows, kinds, "name"),
    ]
    gap = default["score"] - guide["score"]
    at_onset = normalised(
        [
            score_series([lb.onset for lb in s.labels], [lb.window for lb in s.labels], s.probation)
            for s in suite
        ]
    )
    goal = gap >= 40 and fa_ratio < 0.25
    lines += [
        "",
        f"The default scores {gap:+.1f} points against the guide's rule, with "
        f"{fa_ratio:.4f} times its false alarms ({default['fps']} against {guide['fps']}); "
        f"goal (>= +40 points, < 0.25 times the false alarms): "
        f"{'met' if goal else 'NOT met'}.",
        "",
        f"On this suite the previous default (`robust`, whose defaults were chosen on it) "
        f"scores {rows[2]['score']:.1f} against the default's {default['score']:.1f}: "
        "`adaptive` misses the smallest lasting changes of flat quantised counts (one worker "
        "lost of four is one quantisation step, under its floor) and spikes that `robust` "
        "sees; on the real recorded series of the next section the order is the other way "
        "round.",
        "",
        "For scale: NAB's perfect detector fires at each window's first sample, half a "
        "window before the anomaly begins; a streaming detector flagging every onset at "
        f"once would score {at_onset:.1f} on this suite. The default reports a spike when it ends "
        "(the next normal sample, which tells it from a shift), a level shift after 4 "
        "samples out on one side, and a slow leak when the level runs away from its slow "
        "average further than the series wandered by itself; then nothing for its cooldown "
        "(900 s).",
        "",
        "µs per sample is the CPU time (`time.process_time`) of `update` over the whole "
        "suite (the scoring included), Python, one core; the machine was shared (load average "
        f"{os.getloadavg()[0]:.1f} at the end), which CPU time counts far less than wall time "
        "but still somewhat, so the figure is approximate; state KiB is the memory "
        "one detector holds after 20000 samples (tracemalloc), fixed by its windows.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=BENCH_SEED)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--detail", action="store_true", help="print per-series scores")
    args = parser.parse_args()
    suite = make_suite(args.seed, args.copies)
    rows = []
    for name, params, label in DETECTORS:
        r = evaluate(name, params, suite)
        rows.append(r)
        print(
            f"{label:38} NAB {r['score']:7.1f}  recall {r['recall']:.2f}  precision "
            f"{r['precision']:.3f}  false alarms {r['fps']:6d} ({r['fa_per_day']:.1f}/day)  "
            f"{r['us_per_update']:.1f} µs/sample, {r['kib']:.1f} KiB"
        )
        if args.detail:
            for sname, sc in r["per_series"]:
                print(
                    f"    {sname:26} windows {sc.detected}/{sc.windows} fp {sc.false_positives:5d} "
                    f"raw {sc.raw:7.2f}"
                )
    guide, default = rows[0], rows[1]
    ratio = default["fps"] / guide["fps"] if guide["fps"] else float("nan")
    print(
        f"default - guide: {default['score'] - guide['score']:+.1f} points; "
        f"false alarms ratio default/guide: {ratio:.4f}"
    )
    command = "python benchmarks/bench_anomaly.py" + (
        f" --seed {args.seed}" if args.seed != BENCH_SEED else ""
    )
    if args.copies != 3:
        command += f" --copies {args.copies}"
    text = report(rows, suite, args.seed, command)
    if not args.no_write and args.seed not in TUNE_SEEDS:
        write_section(SECTION, text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
