"""Streaming anomaly detectors for one metric series each.

Every detector has the same small interface: parameters in ``__init__``, ``update(t, x)``
fed one sample at a time (t in epoch seconds) returning an :class:`Anomaly` or ``None``, and
``reset()``. State is bounded: every window is a fixed-size deque, so a detector costs the
same memory after a year as after an hour.

Three detectors are provided:

- ``adaptive`` (the default): an adaptive forecast (level, daily and weekly profiles) with
  a scale that follows the level and a tail factor for heavy-tailed series; it learns a
  lasting change at once (reported once) and costs O(1) per sample. See
  :class:`AdaptiveDetector`; chosen on real recorded series (benchmarks/real_suite.py,
  benchmarks/bench_anomaly_real.py), where ``robust`` flagged every point after a regime
  change.
- ``three_sigma``: the maintenance guide's rule, |x - mean| > 3 sigma over the trailing
  window, with no minimum duration and no cooldown. Kept for comparison and for whoever
  wants it; on machine metrics it flags about 30 noisy samples a day per series
  (benchmarks/bench_anomaly.py), and every change of a flat series.
- ``robust`` (the default before ``adaptive``): sorted-window medians and quantiles, with
  level, spike, variance and drift tests. See :class:`RobustDetector`.

Every detector also keeps ``score``, the last sample's anomaly score in [0, 1].

Window sizes count samples, cooldowns count seconds. The defaults were chosen on series
sampled every 10 s and every minute; for 1 Hz samples, ``[anomaly] sample_seconds = 60``
wraps each detector in :class:`Averaged` so that it sees 1-minute means. ``make_detector``
and ``detector_for`` build detectors from names and settings (``[anomaly]``, with
per-metric overrides); :class:`DetectorSet` keeps one per metric for a collector.
"""

from __future__ import annotations

import bisect
import difflib
import inspect
import itertools
import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sctk.errors import ConfigError
from sctk.registry import Registry

if TYPE_CHECKING:  # its validator imports this module
    from sctk.monitoring.anomaly_settings import AnomalySettings

DEFAULT_DETECTOR = "adaptive"


@dataclass(frozen=True)
class Anomaly:
    """One anomalous episode, reported once, at the sample that made it certain."""

    start: float  # epoch seconds of the first sample of the episode
    flagged: float  # epoch seconds of the sample at which it was reported
    value: float  # the value that made the episode certain
    score: float  # how far out it is, in robust standard deviations (or sigmas)
    kind: str  # "spike", "level shift", "variance", "drift"
    message: str  # one sentence for a person
    metric: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, times as UTC ISO 8601."""
        out = asdict(self)
        for key in ("start", "flagged"):
            out[key] = datetime.fromtimestamp(getattr(self, key), UTC).isoformat()
        return out


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# the kinds after which the forecast relearns its normal (``relearn_samples``)
_CHANGES = frozenset({"level shift", "drift"})


def _score(z: float, threshold: float) -> float:
    """z² / (z² + threshold²): the [0, 1] score of a deviation of Z yardsticks."""
    if math.isinf(z):
        return 1.0
    return z * z / (z * z + threshold * threshold)


_FINEST = 1e-6


def _resolution(x: float) -> float:
    """The decimal grid X sits on: 1 for 4.0, 0.1 for 55.3, at finest 1e-6 (a float).

    Counts and rounded percentages are quantised; the step is read off the values
    themselves rather than off the changes, so that the first jump of a flat series is
    measured against the grid and not against itself."""
    for digits in range(7):
        if abs(round(x, digits) - x) <= 1e-9 * max(1.0, abs(x)):
            return 10.0**-digits
    return _FINEST


class _SortedWindow:
    """The last N values in arrival order and in sorted order (quantiles in O(1))."""

    __slots__ = ("maxlen", "order", "sorted")

    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self.order: deque[float] = deque()
        self.sorted: list[float] = []

    def __len__(self) -> int:
        return len(self.order)

    def add(self, x: float) -> None:
        if len(self.order) == self.maxlen:
            old = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.order.append(x)
        bisect.insort(self.sorted, x)

    def clear(self) -> None:
        self.order.clear()
        self.sorted.clear()

    def quantile(self, p: float) -> float:
        s = self.sorted
        pos = p * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class Detector(ABC):
    """Base class: ``update(t, x) -> Anomaly | None`` and ``reset()``.

    ``score`` is the last sample's anomaly score in [0, 1]: 0 on the expected value, 0.5
    at the detector's threshold, towards 1 beyond, monotone in the deviation (alert
    rules can watch it: ``on = "anomaly_score"``)."""

    name = ""
    metric = ""
    score = 0.0

    @abstractmethod
    def update(self, t: float, x: float) -> Anomaly | None:
        """Take one sample; the anomaly it makes certain, if any."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything learnt so far."""

    def _anomaly(self, **fields: Any) -> Anomaly:
        return Anomaly(metric=self.metric, **fields)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(
            f"Detector parameter '{name}' must be a whole number of at least {low}, "
            f"got {value!r}; fix it in the [anomaly] settings."
        )
    return value


def _check_float(name: str, value: Any, low: float, *, inclusive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value >= low if inclusive else value > low
    if not ok:
        bound = f"at least {low}" if inclusive else f"greater than {low}"
        raise ConfigError(
            f"Detector parameter '{name}' must be a number {bound}, got {value!r}; "
            "fix it in the [anomaly] settings."
        )
    return float(value)


class ThreeSigma(Detector):
    """The guide's rule: flag every sample with |x - mean| > k sigma of the trailing window.

    No minimum duration and no cooldown, on purpose: this is the behaviour the guide
    describes, kept so that it can be compared with (and chosen over) the default. On a
    flat series the standard deviation is zero and every change is flagged.
    """

    name = "three_sigma"

    def __init__(self, window: int = 60, sigmas: float = 3.0, min_points: int = 10):
        self.window = _check_int("window", window, 2)
        self.sigmas = _check_float("sigmas", sigmas, 0.0)
        self.min_points = _check_int("min_points", min_points, 2)
        if self.min_points > self.window:
            raise ConfigError(
                f"Detector parameter 'min_points' ({min_points}) cannot exceed 'window' "
                f"({window}); lower min_points or widen the window."
            )
        self.reset()

    def reset(self) -> None:
        self.score = 0.0
        self._values: deque[float] = deque(maxlen=self.window)
        self._sum = 0.0
        self._sumsq = 0.0

    def update(self, t: float, x: float) -> Anomaly | None:
        x = float(x)
        if not math.isfinite(x):
            return None
        found = None
        n = len(self._values)
        if n >= self.min_points:
            mean = self._sum / n
            sd = math.sqrt(max(self._sumsq / n - mean * mean, 0.0))
            # running sums leave rounding dust on a flat series; below it, sd is zero
            if sd < 1e-9 * max(1.0, abs(mean)):
                sd = 0.0
            dev = abs(x - mean)
            if sd > 0:
                self.score = _score(dev / sd, self.sigmas)
            else:
                self.score = 1.0 if dev > 1e-12 * max(1.0, abs(mean)) else 0.0
            if dev > self.sigmas * sd and dev > 1e-12 * max(1.0, abs(mean)):
                score = dev / sd if sd > 0 else math.inf
                found = self._anomaly(
                    start=t,
                    flagged=t,
                    value=x,
                    score=score,
                    kind="spike",
                    message=f"value {_fmt(x)} is {_fmt(score)} sigma from the mean "
                    f"{_fmt(mean)} of the last {n} samples.",
                )
        if n == self.window:
            old = self._values[0]
            self._sum -= old
            self._sumsq -= old * old
        self._values.append(x)
        self._sum += x
        self._sumsq += x * x
        return found


class RobustDetector(Detector):
    """Robust level, spike, variance and drift tests with one cooldown (the previous default).

    - Baseline: only samples that were not part of an anomalous episode. The level is the
      median of the newest ``window // 2`` of them (so that it follows a daily cycle); the
      scale is the interquartile range of the residuals around that moving level over the
      last ``window`` samples, over 1.349 (a robust sigma). The scale is floored so that
      flat, quantised series (where the IQR and the MAD are zero) work: by the mean
      absolute deviation, by ``quantum_floor`` times the quantisation step (the decimal
      grid the values sit on: 1 for counts, 0.1 for a rounded percentage), by
      ``relative_floor`` times the level, and by the widest deviation already in the
      baseline over ``threshold`` (a blip of a size seen before is not news).
    - Spike / level shift: a sample more than ``threshold`` robust sigmas out opens an
      episode; samples in it stay out of the baseline. If ``confirm`` samples of the episode
      are out on the same side, it is a level shift: reported once, and the baseline is
      rebuilt from the episode's samples so the new level is quiet (mostly-in, mostly-out
      samples make it a "variance" episode instead). A return to the level before the last
      shift is a recovery and is not reported. An episode that settles (``end_after`` quiet
      samples) before that is a spike if one sample went beyond ``spike_threshold``, or two
      or more beyond three quarters of it; otherwise it was noise.
    - Variance: the median absolute first difference over the last ``variance_window``
      samples against the same over the baseline (differences ignore level shifts and
      slow drifts); above ``variance_ratio`` times is a variance change, reported once,
      and the wider spread becomes the baseline.
    - Drift (slow leaks): the median of each block of ``window // 4`` baseline samples is
      kept for the last ``drift_blocks`` blocks. Once ``drift_history`` + ``drift_run``
      blocks are known, a drift is a run of ``drift_run`` blocks (the newest being the
      current block so far) trending one way (Mann-Kendall tau of at least 0.5) that ends
      more than ``drift_threshold`` robust sigmas (of the whole window, wander included)
      beyond every block of the history before
      it; the history (a day at one sample a minute) keeps a daily cycle, already seen,
      from counting. Level shifts move the history with them.
    - After any report nothing else is reported for ``cooldown`` seconds: one episode is one
      anomaly. States keep updating meanwhile, so the baseline follows what happened.
    """

    name = "robust"

    def __init__(
        self,
        window: int = 120,
        min_points: int = 30,
        threshold: float = 5.0,
        spike_threshold: float = 10.0,
        confirm: int = 5,
        end_after: int = 3,
        cooldown: float = 900.0,
        quantum_floor: float = 0.15,
        relative_floor: float = 0.001,
        variance_window: int = 45,
        variance_ratio: float = 2.5,
        drift_blocks: int = 48,
        drift_run: int = 8,
        drift_threshold: float = 2.5,
        drift_history: int = 40,
    ):
        self.window = _check_int("window", window, 8)
        self.min_points = _check_int("min_points", min_points, 4)
        if self.min_points > self.window:
            raise ConfigError(
                f"Detector parameter 'min_points' ({min_points}) cannot exceed 'window' "
                f"({window}); lower min_points or widen the window."
            )
        self.threshold = _check_float("threshold", threshold, 0.0)
        self.spike_threshold = _check_float("spike_threshold", spike_threshold, 0.0)
        self.confirm = _check_int("confirm", confirm, 1)
        self.end_after = _check_int("end_after", end_after, 1)
        self.cooldown = _check_float("cooldown", cooldown, 0.0, inclusive=True)
        self.quantum_floor = _check_float("quantum_floor", quantum_floor, 0.0, inclusive=True)
        self.relative_floor = _check_float("relative_floor", relative_floor, 0.0, inclusive=True)
        self.variance_window = _check_int("variance_window", variance_window, 4)
        self.variance_ratio = _check_float("variance_ratio", variance_ratio, 1.0)
        self.drift_blocks = _check_int("drift_blocks", drift_blocks, 0)
        self.drift_run = _check_int("drift_run", drift_run, 2)
        self.drift_threshold = _check_float("drift_threshold", drift_threshold, 0.0)
        self.drift_history = _check_int("drift_history", drift_history, 1)
        if self.drift_blocks and self.drift_history + self.drift_run > self.drift_blocks:
            raise ConfigError(
                f"Detector parameters 'drift_history' + 'drift_run' "
                f"({self.drift_history + self.drift_run}) cannot exceed 'drift_blocks' "
                f"({drift_blocks}); keep more blocks or shorten the history."
            )
        self.reset()

    # -- state -----------------------------------------------------------------------

    def reset(self) -> None:
        self.score = 0.0
        self._base = _SortedWindow(self.window)  # values of the baseline
        # the level is the median of the newest samples (it follows a daily cycle); the
        # scale comes from the residuals around that moving level over the whole window
        self._local = _SortedWindow(max(self.window // 2, 4))
        self._resid = _SortedWindow(self.window)
        self._base_diffs = _SortedWindow(self.window)  # |first differences| of the baseline
        self._recent_diffs = _SortedWindow(self.variance_window)
        self._recent: deque[float] = deque(maxlen=self.variance_window)  # raw values
        self._recent_times: deque[float] = deque(maxlen=self.variance_window)
        self._prev: float | None = None
        self._quantum = math.inf
        self._quiet_until = -math.inf
        self._episode: _Episode | None = None
        self._before_shift: tuple[float, float] | None = None  # (median, scale) pre-shift
        self._variance_high = False
        self._block: list[float] = []
        self._blocks: deque[float] = deque(maxlen=max(self.drift_blocks, 1))
        self._history_range: tuple[float, float, int] | None = None  # cached (max, min, n)

    @property
    def state_size(self) -> int:
        """Samples held in memory; bounded by the window sizes whatever the run length."""
        episode = len(self._episode.values) if self._episode else 0
        return (
            len(self._base)
            + len(self._local)
            + len(self._resid)
            + len(self._base_diffs)
            + len(self._recent_diffs)
            + len(self._recent)
            + len(self._recent_times)
            + len(self._block)
            + len(self._blocks)
            + episode
        )

    @property
    def capacity(self) -> int:
        """The most samples ``state_size`` can ever be: fixed by the parameters alone."""
        w, v = self.window, self.variance_window
        return 3 * w + max(w // 2, 4) + 3 * v + max(w // 4, 1) + max(self.drift_blocks, 1) + w

    # -- statistics ------------------------------------------------------------------

    def _floor(self, level: float) -> float:
        q = self._quantum if math.isfinite(self._quantum) else 0.0
        return max(self.quantum_floor * q, self.relative_floor * abs(level), 1e-9)

    def _baseline(self) -> tuple[float, float]:
        """(median, robust sigma) of the baseline window."""
        med = self._local.quantile(0.5)
        r = self._resid
        scale = (r.quantile(0.75) - r.quantile(0.25)) / 1.349
        if scale <= 0:
            # IQR is zero on a mostly flat series: any spread at all shows in the mean
            # absolute deviation (0 only when the window is perfectly flat)
            scale = 1.2533 * sum(abs(v) for v in r.order) / len(r)
        # nothing within the range the baseline already holds is out: on a quantised
        # series that blips by one step now and then, a blip is not news
        widest = max(r.sorted[-1], -r.sorted[0]) / self.threshold
        return med, max(scale, widest, self._floor(med))

    def _diff_scale(self, s: list[float]) -> float:
        """Median of sorted absolute differences, floored at one quantisation step."""
        n = len(s)
        med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
        # on a quantised series the median change flips between 0 and one step with no
        # change in behaviour; one step is the least spread that means anything
        q = self._quantum if math.isfinite(self._quantum) else 0.0
        return max(med, q, 1e-9)

    # -- the update --------------------------------------------------------------------

    def update(self, t: float, x: float) -> Anomaly | None:
        x = float(x)
        if not math.isfinite(x):
            return None
        if self._quantum > _FINEST:
            self._quantum = min(self._quantum, _resolution(x))
        diff = None
        if self._prev is not None:
            diff = abs(x - self._prev)
            self._recent_diffs.add(diff)
        self._prev = x
        self._recent.append(x)
        self._recent_times.append(t)

        if len(self._base) < self.min_points:
            self._admit(x, diff)
            return None

        med, scale = self._baseline()
        found = self._level(t, x, med, scale, diff)
        variance = self._variance(t, x)
        found = found or variance
        drift = self._drift(t, x, self._wide_scale(scale))
        found = found or drift
        if found is None:
            return None
        if t < self._quiet_until:
            return None
        self._quiet_until = t + self.cooldown
        return found

    def _admit(self, x: float, diff: float | None) -> None:
        """Take a sample into the baseline."""
        if len(self._local):
            self._resid.add(x - self._local.quantile(0.5))
        self._local.add(x)
        self._base.add(x)
        if diff is not None:
            self._base_diffs.add(diff)
        self._block.append(x)
        if len(self._block) >= max(self.window // 4, 1):
            self._block.sort()
            self._blocks.append(self._block[len(self._block) // 2])
            self._history_range = None
            self._block = []

    def _rebaseline(self, values: list[float]) -> None:
        self._base.clear()
        self._base_diffs.clear()
        self._local.clear()
        self._resid.clear()
        self._block = []
        prev = None
        level = sorted(values)[len(values) // 2]
        for v in values:
            self._base.add(v)
            self._local.add(v)
            self._resid.add(v - level)
            if prev is not None:
                self._base_diffs.add(abs(v - prev))
            prev = v

    def _level(
        self, t: float, x: float, med: float, scale: float, diff: float | None
    ) -> Anomaly | None:
        z = (x - med) / scale
        self.score = _score(z, self.threshold)
        out = abs(z) > self.threshold
        ep = self._episode
        if ep is None:
            if out:
                self._episode = _Episode(t, x, z, med, scale)
            else:
                self._admit(x, diff)
            return None
        ep.add(x, z, out, diff)
        # an episode that neither settles nor confirms (out on both sides by turns) is
        # settled by force at a window's length, which also keeps its memory bounded
        if ep.same_side >= self.confirm or len(ep.values) >= self.window:
            return self._confirm_shift(t, x, ep)
        if ep.quiet_run >= self.end_after:
            self._episode = None
            for v, d, was_out in ep.samples():
                if not was_out:
                    self._admit(v, d)
            # one sample needs to be far out; two or more out together are less likely noise
            if ep.max_abs_z >= self.spike_threshold or (
                ep.out_count >= 2 and ep.max_abs_z >= self.spike_threshold * 0.75
            ):
                peak = ep.peak
                return self._anomaly(
                    start=ep.start,
                    flagged=t,
                    value=peak,
                    score=ep.max_abs_z,
                    kind="spike",
                    message=f"spike to {_fmt(peak)} ({_fmt(ep.max_abs_z)} robust sigma from "
                    f"the baseline {_fmt(ep.med)} ± {_fmt(ep.scale)}) over "
                    f"{ep.out_count} sample{'s' if ep.out_count > 1 else ''}.",
                )
        return None

    def _confirm_shift(self, t: float, x: float, ep: _Episode) -> Anomaly | None:
        self._episode = None
        values = ep.values
        new_med = sorted(values)[len(values) // 2]
        old = (ep.med, ep.scale)
        recovery = False
        if self._before_shift is not None:
            prev_med, prev_scale = self._before_shift
            recovery = abs(new_med - prev_med) <= self.threshold * prev_scale
        self._before_shift = None if recovery else old
        self._rebaseline(values)
        # the blocks before the shift, moved by the shift, stay a history for the drift test
        delta = new_med - ep.med
        self._blocks = deque((b + delta for b in self._blocks), maxlen=self._blocks.maxlen)
        self._history_range = None
        if recovery:
            return None
        mixed = ep.out_count < 0.7 * len(values)
        score = abs(new_med - ep.med) / ep.scale
        if mixed:
            return self._anomaly(
                start=ep.start,
                flagged=t,
                value=x,
                score=ep.max_abs_z,
                kind="variance",
                message=f"unstable: {ep.out_count} of {len(values)} samples more than "
                f"{_fmt(self.threshold)} robust sigma from the baseline {_fmt(ep.med)}; "
                "re-baselined on them.",
            )
        return self._anomaly(
            start=ep.start,
            flagged=t,
            value=x,
            score=score,
            kind="level shift",
            message=f"level shift from {_fmt(ep.med)} to {_fmt(new_med)} "
            f"({'+' if new_med >= ep.med else '-'}{_fmt(score)} robust sigma); "
            "the new level is the baseline from now on.",
        )

    def _variance(self, t: float, x: float) -> Anomaly | None:
        if len(self._recent_diffs) < self.variance_window or len(self._base_diffs) < (
            self.min_points
        ):
            return None
        recent = self._diff_scale(self._recent_diffs.sorted)
        base = self._diff_scale(self._base_diffs.sorted)
        ratio = recent / base
        if ratio <= self.variance_ratio:
            if ratio < 0.5 * self.variance_ratio:
                self._variance_high = False
            return None
        if self._variance_high:
            return None
        self._variance_high = True
        # the wider spread is the new normal for the level test too
        if self._episode is None:
            self._rebaseline(list(self._recent))
        return self._anomaly(
            start=self._recent_times[0],  # somewhere in the short window it began
            flagged=t,
            value=x,
            score=ratio,
            kind="variance",
            message=f"variability up {_fmt(ratio)} times (median change between samples "
            f"{_fmt(recent)} against {_fmt(base)} in the baseline).",
        )

    def _wide_scale(self, scale: float) -> float:
        """Robust sigma of the whole baseline window around its median: what a slow wander
        of the level adds to the noise, the yardstick for a drift."""
        b = self._base
        return max((b.quantile(0.75) - b.quantile(0.25)) / 1.349, scale)

    def _drift(self, t: float, x: float, scale: float) -> Anomaly | None:
        run = self.drift_run
        if not self.drift_blocks or len(self._blocks) < self.drift_history + run:
            return None
        # tested at every sample, the newest block being the median of the last block's
        # worth of baseline samples, so that a leak is seen without waiting for a block end
        block_len = max(self.window // 4, 1)
        order = self._base.order
        if len(order) < block_len:
            return None
        if self._history_range is None:
            history = list(itertools.islice(self._blocks, 0, len(self._blocks) - run + 1))
            self._history_range = (max(history), min(history), len(history))
        high, low, n_history = self._history_range
        margin = self.drift_threshold * scale
        last = list(itertools.islice(order, len(order) - block_len, len(order)))
        # cheap test first: a median beyond the range needs its block beyond it too
        if max(last) <= high + margin and min(last) >= low - margin:
            return None
        last.sort()
        blocks = list(self._blocks)
        tail = blocks[-run + 1 :] + [last[block_len // 2]]
        # Mann-Kendall: the share of later-minus-earlier pairs that rise, minus those that fall
        pairs = [(a, b) for k, a in enumerate(tail) for b in tail[k + 1 :]]
        tau = sum((b > a) - (b < a) for a, b in pairs) / len(pairs)
        if tau >= 0.5 and tail[-1] > high + margin:
            sign = 1
        elif tau <= -0.5 and tail[-1] < low - margin:
            sign = -1
        else:
            return None
        # the climb so far is the new normal: forget the history it left behind
        self._blocks = deque(tail[:-1], maxlen=self._blocks.maxlen)
        self._history_range = None
        change = tail[-1] - (high if sign > 0 else low)
        return self._anomaly(
            start=t,
            flagged=t,
            value=x,
            score=abs(change) / scale,
            kind="drift",
            message=f"slow {'rise' if sign > 0 else 'fall'} over the last {run * block_len} "
            f"samples to {_fmt(tail[-1])}, {_fmt(abs(change))} "
            f"({_fmt(abs(change) / scale)} robust sigma) beyond the range of the "
            f"{n_history * block_len} samples before.",
        )


class _Episode:
    """Samples since a value first left the baseline, until it settles or is confirmed."""

    __slots__ = (
        "start",
        "med",
        "scale",
        "sign",
        "values",
        "diffs",
        "outs",
        "same_side",
        "out_count",
        "quiet_run",
        "max_abs_z",
        "peak",
    )

    def __init__(self, t: float, x: float, z: float, med: float, scale: float):
        self.start = t
        self.med = med
        self.scale = scale
        self.sign = 1 if z > 0 else -1
        self.values = [x]
        self.diffs: list[float | None] = [None]
        self.outs = [True]
        self.same_side = 1
        self.out_count = 1
        self.quiet_run = 0
        self.max_abs_z = abs(z)
        self.peak = x

    def add(self, x: float, z: float, out: bool, diff: float | None) -> None:
        self.values.append(x)
        self.diffs.append(diff)
        self.outs.append(out)
        if out:
            self.out_count += 1
            self.quiet_run = 0
            if (z > 0) == (self.sign > 0):
                self.same_side += 1
            if abs(z) > self.max_abs_z:
                self.max_abs_z = abs(z)
                self.peak = x
        else:
            self.quiet_run += 1

    def samples(self):
        return zip(self.values, self.diffs, self.outs, strict=True)


class Averaged(Detector):
    """Feeds INNER the mean of each period of SECONDS instead of every sample.

    At one sample a second a metric is mostly noise; the 1-minute means are what the
    default detector's parameters were chosen on. An anomaly is reported when the period
    that shows it closes, stamped with that moment.
    """

    def __init__(self, inner: Detector, seconds: float):
        self.inner = inner
        self.seconds = _check_float("sample_seconds", seconds, 0.0)
        self.name = inner.name
        self.reset()

    @property
    def metric(self) -> str:  # type: ignore[override]
        return self.inner.metric

    @metric.setter
    def metric(self, value: str) -> None:
        self.inner.metric = value

    @property
    def score(self) -> float:  # type: ignore[override]
        """The inner detector's score of the last period it was fed."""
        return self.inner.score

    def reset(self) -> None:
        self.inner.reset()
        self._period: int | None = None
        self._sum = 0.0
        self._count = 0

    def update(self, t: float, x: float) -> Anomaly | None:
        x = float(x)
        if not math.isfinite(x):
            return None
        period = math.floor(t / self.seconds)
        found = None
        if period != self._period:
            if self._count:
                start = self._period * self.seconds  # type: ignore[operator]
                found = self.inner.update(start, self._sum / self._count)
                if found is not None:
                    found = replace(found, flagged=t)
            self._period, self._sum, self._count = period, 0.0, 0
        self._sum += x
        self._count += 1
        return found


_TAIL_P = 0.001  # the tail tracked: the 99.9th percentile of |residual|
_TAIL_GAUSS = 4.12  # where it is for Gaussian noise, in mean absolute deviations
_WEEK_ORIGIN = 3  # 1970-01-01 was a Thursday: (days since the epoch + 3) % 7 is 0 on Mondays
# a profile needs several samples in each of its periods: a daily profile of a series
# sampled once a day would put every sample in the same hourly bin, learn there the last
# residual and so forecast yesterday's value (a level shift then looks like one jump); so
# the daily profile is kept only for samples at most 3 hours apart, the weekly one for
# samples at most 1.5 days apart
_DAILY_STEP = 3 * 3600.0
_WEEKLY_STEP = 1.5 * 86400.0


class AdaptiveDetector(Detector):
    """The default detector: an adaptive forecast and a normalised score, O(1) per sample.

    Built for real series, where the normal changes: a level that moves for good after a
    deploy, counts whose noise grows with their level, heavy tails, daily and weekly
    cycles. Every sample is compared with a forecast:

    - forecast = level + daily profile (24 hourly bins) + weekly profile (7 day bins), the
      bins keyed by the sample's UTC time so that any sampling rate works. A profile is a
      slow average of what the level leaves over in each bin; it is used once a day (a
      week) of history exists and stays near zero where the history shows no cycle; the
      daily one only for samples at most 3 hours apart, the weekly one at most 1.5 days
      apart (gaps such as nights aside);
    - the level is an exponentially weighted mean of the deseasonalised values, each step
      clipped to ``clip`` scales so that one outlier barely moves it. Two are kept, a
      smooth one (``alpha``) and a quick one (``fast_alpha``), with the mean absolute
      residual of each; the forecast uses the quick one where it has been clearly better
      (a series that wanders, where the last values say most), else the smooth one;
    - the scale is that exponentially weighted mean absolute residual (``scale_alpha``),
      also clipped, so it follows the level of a bursty count series and grows with a
      lasting change of variability; it is floored at ``quantum_floor`` quantisation steps
      and ``relative_floor`` times the level (flat and quantised series), and for counts
      (whole numbers) at the Poisson noise of the level;
    - heavy tails: the 99th percentile of the residuals, in scales, is tracked (stochastic
      approximation, O(1)); beyond what Gaussian noise gives, it widens the yardstick, so
      a series whose normal has fat tails is not flagged for them.

    The normalised deviation z (residual / scale / tail factor) gives the ``score``,
    z² / (z² + threshold²): 0 on the forecast, 0.5 at the threshold, towards 1 beyond,
    monotone in the deviation; ``score`` holds the last sample's. A sample with z beyond
    ``threshold`` is *out*. Decisions:

    - spike: a run of out samples that ends (an in sample) before it makes a level shift,
      a lone one beyond ``spike_factor`` times the threshold (heavy tails give lone
      outliers), two or more in a row on one side beyond the threshold; reported when it
      ends;
    - level shift: ``confirm`` out samples in a row on one side; the level is reset to
      their median (the new normal at once), reported unless it is a return to the level
      before the last shift (a recovery);
    - drift (leaks): a slower level is left behind by a leak a quicker one follows (the
      quick level against the smooth one, the smooth one against a slow follower,
      ``drift_alpha``); a gap beyond ``drift_threshold`` times the usual gap of the pair
      (learnt from quiet times) and the scale is reported once, until the gaps close; and
      beyond ``drift_margin`` times the widest excursion of the gap that came back by
      itself (a series that wanders with the weather or the demand leaves its slower
      average and returns; a leak does not), that widest excursion forgotten at
      ``drift_memory`` per sample; a drift back to the level the last reported drift left
      is a recovery, not reported;
    - lasting shift (CUSUM): a shift smaller than the threshold, which the level would
      absorb within tens of samples, still leaves a run of residuals on one side; the
      one-sided sums of the residuals in scales beyond ``cusum_k`` (each clipped to
      ``clip``) pass ``cusum_h``: reported as a drift (the quick level becomes the
      smooth one), a way back to the level the last drift left being a recovery;
    - variance: ``variance_count`` out samples (either side) within ``variance_span``
      samples; the scale is widened to what they show;
    - wider spread: a quick mean absolute residual (``variance_alpha``, each clipped to
      ``clip`` scales) beyond ``variance_ratio`` times the scale while the quick mean of
      the signed residual stays under half of it (both sides, not a level that moved);
      the scale is widened to it;
    - after any report nothing is reported for ``cooldown`` seconds or ``cooldown_samples``
      samples, whichever is longer (one episode, one anomaly, whatever the sampling
      rate), while the state keeps learning; after a level shift or a drift, for
      ``relearn_samples`` samples (the forecast is relearning the new normal, and what it
      flags meanwhile is the same change settling: a deploy in two steps, a level that
      overshoots, noise that grew with the level).

    The defaults were chosen on the tuning parts of benchmarks/real_suite.py (real recorded
    series; ``python benchmarks/bench_anomaly_real.py --tune``); ``drift_margin`` and
    ``drift_memory`` (and ``season_rate`` 0.2 instead of 0.1, so that a daily cycle is
    learnt before its swings widen the drift limit) also on its fresh part, after that
    part's first report showed the drift test firing on series that wander (see
    benchmarks/RESULTS.md). After fresh-2's report (seen, so tuning data too), on all four
    tuning parts: no daily profile for daily samples, two outs in a row make a spike,
    drifts back are recoveries, and ``threshold`` 5.0, ``spike_factor`` 1.43 (a lone
    outlier still needs 7.15 scales, as before), ``variance_count`` 4,
    ``drift_threshold`` 3.0, ``drift_memory`` 0.0002. After fresh-3's report, on the five
    tuning parts: the CUSUM, ``cusum_k`` 1.0, ``cusum_h`` 15, and the short against the
    long scale, ``variance_ratio`` 1.8, ``variance_alpha`` 0.1. After fresh-4's report, on
    the six tuning parts, for fewer false alarms (most were drifts and level shifts on
    series that wander, and alarms within a few hundred samples of a reported change):
    ``relearn_samples`` 100, ``confirm`` 4, ``drift_threshold`` 3.5. Its fresh-5 part is
    what no default was chosen on.
    """

    name = "adaptive"

    def __init__(
        self,
        alpha: float = 0.05,
        fast_alpha: float = 0.5,
        scale_alpha: float = 0.02,
        threshold: float = 5.0,
        spike_factor: float = 1.43,
        confirm: int = 4,
        variance_count: int = 4,
        variance_span: int = 30,
        clip: float = 3.0,
        min_points: int = 30,
        cooldown: float = 900.0,
        cooldown_samples: int = 10,
        quantum_floor: float = 0.3,
        relative_floor: float = 0.001,
        season_rate: float = 0.2,
        tail_rate: float = 0.05,
        drift_alpha: float = 0.005,
        drift_threshold: float = 3.5,
        drift_margin: float = 1.5,
        drift_memory: float = 0.0002,
        cusum_k: float = 1.0,
        cusum_h: float = 15.0,
        variance_ratio: float = 1.8,
        variance_alpha: float = 0.1,
        relearn_samples: int = 100,
    ):
        self.alpha = _check_float("alpha", alpha, 0.0)
        self.fast_alpha = _check_float("fast_alpha", fast_alpha, 0.0)
        self.scale_alpha = _check_float("scale_alpha", scale_alpha, 0.0)
        self.threshold = _check_float("threshold", threshold, 0.0)
        self.spike_factor = _check_float("spike_factor", spike_factor, 1.0, inclusive=True)
        self.confirm = _check_int("confirm", confirm, 1)
        self.variance_count = _check_int("variance_count", variance_count, 2)
        self.variance_span = _check_int("variance_span", variance_span, 2)
        self.clip = _check_float("clip", clip, 0.0)
        self.min_points = _check_int("min_points", min_points, 2)
        self.cooldown = _check_float("cooldown", cooldown, 0.0, inclusive=True)
        self.cooldown_samples = _check_int("cooldown_samples", cooldown_samples, 0)
        self.quantum_floor = _check_float("quantum_floor", quantum_floor, 0.0, inclusive=True)
        self.relative_floor = _check_float("relative_floor", relative_floor, 0.0, inclusive=True)
        self.season_rate = _check_float("season_rate", season_rate, 0.0, inclusive=True)
        self.tail_rate = _check_float("tail_rate", tail_rate, 0.0, inclusive=True)
        self.drift_alpha = _check_float("drift_alpha", drift_alpha, 0.0)
        self.drift_threshold = _check_float("drift_threshold", drift_threshold, 0.0, inclusive=True)
        self.drift_margin = _check_float("drift_margin", drift_margin, 0.0, inclusive=True)
        self.drift_memory = _check_float("drift_memory", drift_memory, 0.0, inclusive=True)
        self.cusum_k = _check_float("cusum_k", cusum_k, 0.0, inclusive=True)
        self.cusum_h = _check_float("cusum_h", cusum_h, 0.0, inclusive=True)
        self.variance_ratio = _check_float("variance_ratio", variance_ratio, 0.0, inclusive=True)
        self.variance_alpha = _check_float("variance_alpha", variance_alpha, 0.0)
        self.relearn_samples = _check_int("relearn_samples", relearn_samples, 0)
        for key, value in (
            ("alpha", alpha),
            ("fast_alpha", fast_alpha),
            ("scale_alpha", scale_alpha),
            ("drift_alpha", drift_alpha),
        ):
            if value > 1:
                raise ConfigError(
                    f"Detector parameter '{key}' must be at most 1, got {value!r}; "
                    "fix it in the [anomaly] settings."
                )
        self.reset()

    def reset(self) -> None:
        self.score = 0.0
        self._n = 0
        self._level = 0.0  # the smooth level (alpha) and its mean absolute residual
        self._scale = 0.0
        self._fast = 0.0  # the quick level (fast_alpha) and its mean absolute residual
        self._fast_scale = 0.0
        self._tail_q = 0.0  # the tracked 99th percentile of |residual|
        self._tail_down = 1.0 - self.tail_rate * _TAIL_P / (1.0 - _TAIL_P)
        self._quantum = math.inf
        self._day = [0.0] * 24
        self._week = [0.0] * 7
        self._first_t: float | None = None
        self._prev_t: float | None = None
        self._step = 0.0  # typical seconds between samples
        self._run: list[float] = []  # deseasonalised values of the current out run
        self._run_side = 0
        self._run_start = 0.0
        self._run_peak = (0.0, 0.0, 0.0, 0.0)  # (z, value, expected, scale) of its peak
        self._outs: deque[int] = deque(maxlen=self.variance_count)
        self._before_shift: float | None = None
        self._quiet_until = -math.inf
        self._slow = 0.0  # a slow follower of the level: a leak leaves it behind
        self._wander = 0.0  # the usual gap between the level and its slow follower
        self._wander_fast = 0.0  # the usual gap between the quick and the smooth level
        self._drifting = False
        self._before_drift: float | None = None  # the level a reported drift left
        # the widest excursion of each gap that came back (the series' own wandering), and
        # the widest of the excursion under way
        self._peak_fast = self._peak_slow = 0.0
        self._exc_fast = self._exc_slow = 0.0
        self._cusum_up = self._cusum_down = 0.0  # CUSUM of the standardised residuals
        self._short = 0.0  # a quick mean absolute residual, against the scale
        self._short_side = 0.0  # the same of the signed residual: a shift, not a spread

    @property
    def capacity(self) -> int:
        """Values held whatever the run length: the profiles, the out run, the out times."""
        return 24 + 7 + self.confirm + self.variance_count

    def update(self, t: float, x: float) -> Anomaly | None:
        x = float(x)
        if not math.isfinite(x):
            return None
        if self._quantum > _FINEST:
            self._quantum = min(self._quantum, _resolution(x))
        n = self._n = self._n + 1
        if self._prev_t is None:
            self._first_t = self._prev_t = t
            self._level = self._fast = x
            return None
        dt = t - self._prev_t
        self._prev_t = t
        if dt > 0:
            # a gap (a night, a weekend of a business-hours series) is not the sampling
            # step: each interval counts for at most twice the step so far
            step = self._step
            if step == 0:
                self._step = dt
            else:
                self._step = step + 0.05 * ((dt if dt < 2 * step else 2 * step) - step)
        age = t - self._first_t  # type: ignore[operator]
        hour = int(t // 3600) % 24
        dow = (int(t // 86400) + _WEEK_ORIGIN) % 7
        step = self._step
        day = self._day[hour] if age >= 86400 and step <= _DAILY_STEP else 0.0
        week = self._week[dow] if age >= 14 * 86400 and step <= _WEEKLY_STEP else 0.0
        deseason = x - day - week
        slow_level, fast_level = self._level, self._fast
        r_slow, r_fast = deseason - slow_level, deseason - fast_level
        e_slow, e_fast = self._scale, self._fast_scale
        # forecast with whichever level has been the better lately: the smooth one on noisy
        # series, the quick one where the series wanders (its last values say most)
        fast = e_fast < 0.9 * e_slow
        level, r, e = (fast_level, r_fast, e_fast) if fast else (slow_level, r_slow, e_slow)
        floor = max(self.quantum_floor * self._quantum, self.relative_floor * abs(level), 1e-9)
        if self._quantum >= 1 and level > 1:
            # a count that varies: Poisson noise at least (mean absolute deviation
            # 0.8 sqrt(level)), so that a quiet stretch does not shrink the yardstick; a
            # flat count (four workers) is no Poisson draw and keeps its own floor
            count_floor = 0.8 * math.sqrt(level)
            if count_floor > floor and e > 0.5 * count_floor:
                floor = count_floor
        # the yardstick: the mean absolute residual, or where the tails are heavier than
        # Gaussian noise's (or the series bursty), the 99.9th percentile of the residuals
        # over what it is for Gaussian noise; the percentile is tracked by stochastic
        # approximation, multiplicative so that it follows the series' magnitude
        ar = abs(r)
        q = self._tail_q
        if ar > q:
            # from the floor up, multiplicatively: one sample never sets it
            q = q * (1.0 + self.tail_rate)
            self._tail_q = q if q > floor * _TAIL_GAUSS else floor * _TAIL_GAUSS
        else:
            self._tail_q = q * self._tail_down
        wide = q / _TAIL_GAUSS
        scale = e if e > floor else floor
        if wide > scale:
            scale = wide
        zn = ar / scale
        thr = self.threshold
        self.score = zn * zn / (zn * zn + thr * thr)  # _score, inlined: the hot path
        if n <= self.min_points:
            # warming up: plain running means, nothing reported; the tail starts at the
            # widest residual seen (a bursty series shows it from the start)
            if ar > q:
                self._tail_q = ar
            w = 1.0 / n
            self._level = self._slow = slow_level + w * r_slow
            self._fast = fast_level + self.fast_alpha * r_fast
            self._scale += w * (abs(r_slow) - e_slow)
            self._fast_scale += w * (abs(r_fast) - e_fast)
            return None

        found = None
        # the scales learn from every sample, clipped: lasting wider noise becomes normal
        sa, clip = self.scale_alpha, self.clip
        a_slow, a_fast = abs(r_slow), abs(r_fast)
        cap_slow = clip * (e_slow if e_slow > floor else floor)
        cap_fast = clip * (e_fast if e_fast > floor else floor)
        self._scale = e_slow + sa * ((a_slow if a_slow < cap_slow else cap_slow) - e_slow)
        self._fast_scale = e_fast + sa * ((a_fast if a_fast < cap_fast else cap_fast) - e_fast)
        if self.variance_ratio:
            short, va = self._short, self.variance_alpha
            lim = clip * scale
            short = self._short = short + va * ((ar if ar < lim else lim) - short)
            rc = r if -lim < r < lim else (lim if r > 0 else -lim)
            side = self._short_side = self._short_side + va * (rc - self._short_side)
            # wider residuals on both sides: a level that moved gives them on one side
            if (
                short > self.variance_ratio * scale
                and abs(side) < 0.5 * short
                and not self._drifting
            ):
                self._short = scale
                self._short_side = 0.0
                # the wider spread is the new normal
                self._scale = max(self._scale, short)
                self._fast_scale = max(self._fast_scale, short)
                found = self._anomaly(
                    start=t,
                    flagged=t,
                    value=x,
                    score=self.score,
                    kind="variance",
                    message=f"unstable: the residuals lately average {_fmt(short)}, "
                    f"{_fmt(short / scale)} times the usual {_fmt(scale)}.",
                )
        if zn > thr:
            found = self._out(t, x, r, zn, level, scale, deseason) or found
        else:
            if self._run:
                found = self._run_ended(t) or found
            # each level steps towards the value, the step clipped: one outlier barely moves it
            if a_slow > cap_slow:
                r_slow = cap_slow if r_slow > 0 else -cap_slow
            if a_fast > cap_fast:
                r_fast = cap_fast if r_fast > 0 else -cap_fast
            self._level = slow_level + self.alpha * r_slow
            self._fast = fast_level + self.fast_alpha * r_fast
            self._learn_season(hour, dow, x - self._level, day, week)
            if self.cusum_h:
                found = found or self._cusum(t, x, r / scale, level)
            if self.drift_threshold:
                found = found or self._drift(t, x, scale)
        if found is None or t < self._quiet_until:
            return None
        samples = self.cooldown_samples
        if found.kind in _CHANGES and self.relearn_samples > samples:
            # a change was reported: the forecast is relearning the new normal, and what
            # it flags meanwhile is that same episode settling, not news
            samples = self.relearn_samples
        hold = samples * self._step
        self._quiet_until = t + (hold if hold > self.cooldown else self.cooldown)
        return found

    def _learn_season(self, hour: int, dow: int, left: float, day: float, week: float) -> None:
        """Move the profile bins of this sample towards what the level leaves over."""
        step = self._step
        if not self.season_rate or step <= 0:
            return
        if step <= _DAILY_STEP:
            g = self.season_rate * step / 3600.0
            self._day[hour] += (g if g < 1 else 1.0) * (left - week - self._day[hour])
        if step <= _WEEKLY_STEP:
            g = self.season_rate * step / 86400.0
            self._week[dow] += (g if g < 1 else 1.0) * (left - day - self._week[dow])

    def _out(
        self, t: float, x: float, r: float, zn: float, level: float, scale: float, deseason: float
    ) -> Anomaly | None:
        side = 1 if r > 0 else -1
        if side != self._run_side or not self._run:
            self._run.clear()
            self._run_side = side
            self._run_start = t
            self._run_peak = (0.0, x, x - r, scale)
        self._run.append(deseason)
        if zn > self._run_peak[0]:
            self._run_peak = (zn, x, x - r, scale)
        self._outs.append(self._n)
        expected = x - r
        if len(self._run) >= self.confirm:
            values = sorted(self._run)
            self._run.clear()
            new = values[len(values) // 2]
            prev = self._before_shift
            recovery = prev is not None and abs(new - prev) <= self.threshold * scale
            self._before_shift = None if recovery else level
            self._level = self._slow = self._fast = new
            if recovery:
                return None
            change = (new - level) / scale
            return self._anomaly(
                start=self._run_start,
                flagged=t,
                value=x,
                score=self.score,
                kind="level shift",
                message=f"level shift from {_fmt(level)} to {_fmt(new)} "
                f"({'+' if change >= 0 else ''}{_fmt(change)} scales); "
                "the new level is the normal from now on.",
            )
        outs = self._outs
        if len(outs) == self.variance_count and self._n - outs[0] < self.variance_span:
            outs.clear()
            # the wider spread is the new normal
            self._scale = max(self._scale, abs(r) / self.clip)
            self._fast_scale = max(self._fast_scale, abs(r) / self.clip)
            return self._anomaly(
                start=t,
                flagged=t,
                value=x,
                score=self.score,
                kind="variance",
                message=f"unstable: {self.variance_count} values more than "
                f"{_fmt(self.threshold)} scales from the expected within "
                f"{self.variance_span} samples (now {_fmt(x)} against {_fmt(expected)}).",
            )
        return None

    def _cusum(self, t: float, x: float, z: float, level: float) -> Anomaly | None:
        """A small lasting shift the level tracking would absorb: the one-sided sums of
        the standardised residuals beyond ``cusum_k`` scales pass ``cusum_h``. The quick
        level becomes the smooth one, and the episode counts as a drift (the drift test
        stays quiet until the slow follower has caught up, and a way back is a recovery)."""
        if self._drifting:
            # a drift already reported: the same episode is not news twice
            self._cusum_up = self._cusum_down = 0.0
            return None
        k, clip = self.cusum_k, self.clip
        z = clip if z > clip else -clip if z < -clip else z
        up = self._cusum_up + z - k
        down = self._cusum_down - z - k
        self._cusum_up = up = up if up > 0 else 0.0
        self._cusum_down = down = down if down > 0 else 0.0
        h = self.cusum_h
        if up < h and down < h:
            return None
        self._cusum_up = self._cusum_down = 0.0
        new = self._level = self._fast
        return self._drift_found(
            t,
            x,
            new,
            level,
            0.5 * abs(level - self._before_drift) if self._before_drift is not None else 0.0,
            f"{'rise' if up >= h else 'fall'}: a lasting shift from {_fmt(level)} "
            f"to {_fmt(new)} (cumulative excess {_fmt(max(up, down))} scales).",
        )

    def _drift(self, t: float, x: float, scale: float) -> Anomaly | None:
        """A leak: a quicker level runs away from a slower one by more than
        ``drift_threshold`` times their usual gap (and the noise scale). Two pairs, so that
        both a climb over tens of samples (the quick level against the smooth one) and one
        over hundreds (the smooth level against its slow follower) are seen."""
        level, fast = self._level, self._fast
        slow = self._slow = self._slow + self.drift_alpha * (level - self._slow)
        gap_fast, gap_slow = abs(fast - level), abs(level - slow)
        wander_fast, wander_slow = self._wander_fast, self._wander
        k = self.drift_threshold
        limit_fast = k * (wander_fast if wander_fast > scale else scale)
        limit_slow = k * (wander_slow if wander_slow > scale else scale)
        m = self.drift_margin
        if m:
            # an excursion that came back was the series wandering, not a leak: the limit
            # stays beyond the widest of those (forgotten slowly, drift_memory per sample)
            limit_fast = max(limit_fast, m * self._peak_fast)
            limit_slow = max(limit_slow, m * self._peak_slow)
            keep = 1.0 - self.drift_memory
            self._peak_fast *= keep
            self._peak_slow *= keep
            if gap_fast <= wander_fast:
                if self._exc_fast > self._peak_fast:
                    self._peak_fast = self._exc_fast
                self._exc_fast = 0.0
            elif gap_fast > self._exc_fast:
                self._exc_fast = gap_fast
            if gap_slow <= wander_slow:
                if self._exc_slow > self._peak_slow:
                    self._peak_slow = self._exc_slow
                self._exc_slow = 0.0
            elif gap_slow > self._exc_slow:
                self._exc_slow = gap_slow
        if self._drifting:
            self._drifting = gap_fast > 0.5 * limit_fast or gap_slow > 0.5 * limit_slow
            return None
        # the usual gaps learn from quiet times only, quickly at first
        rate = self.drift_alpha * 0.25
        w = 1.0 / (self._n - self.min_points)
        w = w if w > rate else rate
        self._wander_fast = wander_fast + w * (gap_fast - wander_fast)
        self._wander = wander_slow + w * (gap_slow - wander_slow)
        if gap_fast > limit_fast:
            ahead, behind, gap, limit = fast, level, gap_fast, limit_fast
        elif gap_slow > limit_slow:
            ahead, behind, gap, limit = level, slow, gap_slow, limit_slow
        else:
            return None
        before = self._before_drift
        if before is not None and abs(behind - before) <= 0.5 * limit:
            before = None  # the way back must start away from where the last drift left
        return self._drift_found(
            t,
            x,
            ahead,
            behind,
            0.5 * limit if before is not None else 0.0,
            f"{'rise' if ahead > behind else 'fall'}: the level {_fmt(ahead)} is "
            f"{_fmt(gap)} from its slower average {_fmt(behind)}, "
            f"{_fmt(gap * k / limit)} times the usual gap.",
        )

    def _drift_found(
        self, t: float, x: float, ahead: float, behind: float, home: float, message: str
    ) -> Anomaly | None:
        """A drift from BEHIND to AHEAD (the drift test's or the CUSUM's): reported once,
        unless it comes back within HOME of the level the last reported drift left (a
        series that wanders out and back is flagged once, on the way out)."""
        self._drifting = True
        before = self._before_drift
        if before is not None and abs(ahead - before) < home:
            self._before_drift = None
            return None
        self._before_drift = behind
        return self._anomaly(
            start=t, flagged=t, value=x, score=self.score, kind="drift", message=message
        )

    def _run_ended(self, t: float) -> Anomaly | None:
        """A run of out samples that ended before it made a level shift: a spike if one
        of them was far enough out."""
        count = len(self._run)
        self._run.clear()
        zn, x, expected, scale = self._run_peak
        # one sample out needs to be far out (heavy tails give lone ones now and then);
        # two or more out in a row on one side are rarely noise, the threshold suffices
        if zn < (self.spike_factor * self.threshold if count < 2 else self.threshold):
            return None
        score = _score(zn, self.threshold)
        return self._anomaly(
            start=self._run_start,
            flagged=t,
            value=x,
            score=score,
            kind="spike",
            message=f"spike to {_fmt(x)} against {_fmt(expected)} expected (± {_fmt(scale)}, "
            f"score {score:.3f}) over {count} sample{'s' if count > 1 else ''}.",
        )


# declared by plugins (sctk.plugins): the built-in ones below, and installed packages'
DETECTORS: Registry[type[Detector]] = Registry("anomaly detector", "anomaly_detectors")

D = TypeVar("D", bound=type[Detector])


def detector(cls: D) -> D:
    """Declare the Detector class CLS under its `name` (selectable in [monitoring.anomaly])."""
    DETECTORS.add(cls.name, cls, cls.__module__)
    return cls


for _builtin in (AdaptiveDetector, RobustDetector, ThreeSigma):
    detector(_builtin)


def make_detector(name: str, **params: Any) -> Detector:
    """A detector by registry name with its parameters; a bad name or parameter is a
    ConfigError in one sentence."""
    cls = DETECTORS.get(name)
    if cls is None:
        raise ConfigError(
            f"Unknown anomaly detector '{name}'; choose one of: {', '.join(sorted(DETECTORS))}."
        )
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [p for p in params if p not in accepted]
    if unknown:
        raise ConfigError(
            f"Detector '{name}' has no parameter '{unknown[0]}'; "
            f"its parameters are: {', '.join(accepted)}."
        )
    return cls(**params)


def check_settings(settings: AnomalySettings, known_metrics: set[str] | None = None) -> None:
    """Validate the detector settings (names, parameters and, when given, that every
    per-metric override names a known metric); raise ConfigError on the first problem."""
    make_detector(settings.detector, **settings.params)
    for metric, override in settings.metrics.items():
        if known_metrics is not None and metric not in known_metrics:
            close = difflib.get_close_matches(metric, sorted(known_metrics), n=1)
            hint = (
                f"did you mean '{close[0]}'?" if close else "remove the override or fix its name."
            )
            raise ConfigError(f"Anomaly override for unknown metric '{metric}'; {hint}")
        _build(metric, settings, override)


def _build(metric: str, settings: AnomalySettings, override: Any) -> Detector:
    name = override.detector or settings.detector
    params = dict(settings.params) if name == settings.detector else {}
    params.update(override.params)
    try:
        return make_detector(name, **params)
    except ConfigError as exc:
        raise ConfigError(f"Anomaly settings for metric '{metric}': {exc.message}") from None


def detector_for(
    metric: str, settings: AnomalySettings, known_metrics: set[str] | None = None
) -> Detector:
    """The detector configured for METRIC: its override in ``[anomaly.metrics]`` if any,
    else the default detector with the default parameters."""
    override = settings.metrics.get(metric)
    if known_metrics is not None and metric not in known_metrics:
        raise ConfigError(
            f"Unknown metric '{metric}'; known metrics are: {', '.join(sorted(known_metrics))}."
        )
    if override is None:
        det = make_detector(settings.detector, **settings.params)
    else:
        det = _build(metric, settings, override)
    if getattr(settings, "sample_seconds", 0):
        det = Averaged(det, settings.sample_seconds)
    det.metric = metric
    return det


class DetectorSet:
    """One detector per metric, made on first sight from the settings: what the collector
    feeds each sample to (``update(metric, t, x)``)."""

    def __init__(self, settings: AnomalySettings, known_metrics: set[str] | None = None):
        check_settings(settings, known_metrics)
        self.settings = settings
        self.known_metrics = known_metrics
        self.detectors: dict[str, Detector] = {}

    def update(self, metric: str, t: float, x: float) -> Anomaly | None:
        det = self.detectors.get(metric)
        if det is None:
            det = self.detectors[metric] = detector_for(metric, self.settings, self.known_metrics)
        return det.update(t, x)

    def score(self, metric: str) -> float:
        """METRIC's detector's score of its last sample (0 before any)."""
        det = self.detectors.get(metric)
        return det.score if det is not None else 0.0

    def reset(self, metric: str | None = None) -> None:
        """Forget what was learnt about METRIC (every metric when None)."""
        for name, det in self.detectors.items():
            if metric is None or name == metric:
                det.reset()
