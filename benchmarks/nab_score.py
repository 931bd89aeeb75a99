"""Scoring detections the way the Numenta Anomaly Benchmark (NAB) scores them.

Written from NAB's published description (Lavin and Ahmad, "Evaluating Real-time Anomaly
Detection Algorithms - the Numenta Anomaly Benchmark", 2015, and the NAB scoring notes),
with NAB's three application profiles: standard (A_TP = 1, A_FP = 0.11, A_FN = 1), low
false positives (A_FP = 0.22) and low false negatives (A_FN = 2).

- Every labelled anomaly has a window (see anomaly_suite.py). Within a window only the
  earliest detection counts, rewarded by the scaled sigmoid of its relative position y
  (y = -1 at the window's left edge, 0 just past its right edge):
  sigma(y) = 2 / (1 + exp(5 y)) - 1, divided by sigma(-1) so the earliest possible
  detection earns exactly A_TP. Later detections in the same window neither add nor cost.
- Every detection outside a window is a false positive costing A_FP times -sigma(y), where
  y is its distance past the end of the previous window in window lengths (so a detection
  just after a window costs little, one three windows or more away costs the full A_FP);
  a detection before the first window costs the full A_FP.
- A window with no detection costs A_FN.
- Detections in the probation period are not scored.

The raw scores of all series are summed and normalised over the whole suite:
100 * (raw - null) / (perfect - null), where null is a detector that never fires (it
misses every window: -A_FN each) and perfect detects every window at its first sample
(A_TP each). So never firing scores 0, perfect scores 100, and a detector whose false
positives cost more than its detections earn scores below 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

A_TP = 1.0
A_FP = 0.11
A_FN = 1.0


@dataclass(frozen=True)
class Profile:
    """NAB's weights of a true positive, a false positive and a missed window."""

    name: str
    tp: float
    fp: float
    fn: float


STANDARD = Profile("standard", A_TP, A_FP, A_FN)
LOW_FP = Profile("low FP", 1.0, 0.22, 1.0)
LOW_FN = Profile("low FN", 1.0, 0.11, 2.0)
PROFILES = (STANDARD, LOW_FP, LOW_FN)


def scaled_sigmoid(y: float) -> float:
    """NAB's reward curve: ~0.987 at y=-1 (window start), 0 at y=0, ~-0.987 at y=1."""
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass
class SeriesScore:
    raw: float
    null: float
    perfect: float
    windows: int
    detected: int  # windows with at least one detection
    in_window: int  # detections inside windows (every one, not only the first)
    false_positives: int  # detections outside every window
    detections: int  # all scored detections


def score_series(
    detections: Sequence[int],
    windows: Sequence[tuple[int, int]],
    probation: int = 0,
    profile: Profile = STANDARD,
) -> SeriesScore:
    """Score detection sample indices against inclusive (start, end) index WINDOWS."""
    windows = sorted(windows)
    best: list[float | None] = [None] * len(windows)
    raw = 0.0
    in_window = fps = scored = 0
    for i in sorted(set(detections)):
        if i < probation:
            continue
        scored += 1
        inside = None
        prev = None
        for k, (lo, hi) in enumerate(windows):
            if lo <= i <= hi:
                inside = k
                break
            if hi < i:
                prev = k
        if inside is not None:
            lo, hi = windows[inside]
            width = hi - lo + 1
            y = -(hi - i + 1) / width
            reward = profile.tp * scaled_sigmoid(y) / scaled_sigmoid(-1.0)
            if best[inside] is None or reward > best[inside]:
                best[inside] = reward
            in_window += 1
        else:
            fps += 1
            if prev is None:
                y = 3.0
            else:
                lo, hi = windows[prev]
                y = (i - hi) / max(hi - lo, 1)
            raw += profile.fp * scaled_sigmoid(y)  # negative: sigma(y) < 0 past a window
    for reward in best:
        raw += -profile.fn if reward is None else reward
    return SeriesScore(
        raw=raw,
        null=-profile.fn * len(windows),
        perfect=profile.tp * len(windows),
        windows=len(windows),
        detected=sum(1 for r in best if r is not None),
        in_window=in_window,
        false_positives=fps,
        detections=scored,
    )


def normalised(scores: Sequence[SeriesScore]) -> float:
    """The suite's NAB score: 0 for a detector that never fires, 100 for a perfect one."""
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    return 100.0 * (raw - null) / (perfect - null)


def recall_table(rows: list[dict], kinds: list[str], key: str) -> list[str]:
    """Markdown lines: windows detected / windows of each kind of anomaly, a row per
    detector (ROWS carry "per_kind" {kind: (detected, windows)} and their name under KEY)."""
    lines = [
        "| detector | " + " | ".join(kinds) + " |",
        "| --- | " + " | ".join("---:" for _ in kinds) + " |",
    ]
    for r in rows:
        cells = [f"{r['per_kind'][k][0]}/{r['per_kind'][k][1]}" for k in kinds]
        lines.append(f"| `{r[key]}` | " + " | ".join(cells) + " |")
    return lines
