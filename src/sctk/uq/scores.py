"""Conformity scores and the calibrators that turn them into intervals.

Every learner predicts a centre `mean` and a spread `sigma` per row; a score says how far a
true value lies outside what the learner expected, and how wide an interval a score quantile
q buys:

    plain        s = |y - mean|                 interval mean +- q
    normalised   s = |y - mean| / sigma         interval mean +- q sigma
    cqr          s = |y - mean| - z sigma       interval mean +- (z sigma + q)

CQR (conformalized quantile regression, Romano et al. 2019) learns the band's two quantiles
[lo, hi] at the miscoverage `quantile_alpha`; its centre is their middle and the spread it is
given their half-distance (z = 1), so that its score |y - mean| - spread is
max(lo - y, y - hi) exactly, ties included (a count's zeros). The sigma a prediction reports
is that half-distance over the normal quantile of the level, a standard deviation like the
others'.

`SplitCalibrator`: one held-out calibration set, coverage >= 1 - alpha (Vovk et al.); with
groups (Mondrian conformal) the scores are kept per group, and the guarantee holds within
each group. `CrossCalibrator`: CV+ (Barber et al. 2021, "Predictive inference with the
jackknife+"), every row calibrates the model that did not see it; coverage >= 1 - 2 alpha in
the worst case, close to 1 - alpha in practice.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from sctk.errors import SctkError
from sctk.uq.conformal import MIN_SIGMA, ConformalCalibrator, check_alpha, min_points

ALL_GROUPS = "__all__"  # the pooled scores: for a group calibration never saw


class Score(ABC):
    """A conformity score: `scores` for calibration, `half` for widths, `threshold` its
    inverse (the largest score whose half-width stays within EXCESS)."""

    name = ""

    @abstractmethod
    def scores(self, y, mean, sigma) -> np.ndarray:
        """The score of each calibration row (larger: worse fit)."""

    @abstractmethod
    def half(self, sigma, q) -> np.ndarray:
        """The half-width of each row's interval at score quantile Q."""

    @abstractmethod
    def threshold(self, excess, sigma) -> np.ndarray:
        """The largest score whose half-width stays within EXCESS."""


class PlainScore(Score):
    name = "plain"

    def scores(self, y, mean, sigma):
        return np.abs(y - mean)

    def half(self, sigma, q):
        return np.broadcast_to(np.asarray(q, dtype=np.float64), np.shape(sigma)).copy()

    def threshold(self, excess, sigma):
        return excess


class NormalisedScore(Score):
    name = "normalised"

    def scores(self, y, mean, sigma):
        return np.abs(y - mean) / np.maximum(sigma, MIN_SIGMA)

    def half(self, sigma, q):
        return q * np.maximum(sigma, MIN_SIGMA)

    def threshold(self, excess, sigma):
        return excess / np.maximum(sigma, MIN_SIGMA)


@dataclass
class QuantileScore(Score):
    """CQR; Z is the normal quantile at which sigma was turned into the learnt band."""

    z: float = 1.6448536269514722
    name = "cqr"

    def scores(self, y, mean, sigma):
        return np.abs(y - mean) - self.z * sigma

    def half(self, sigma, q):
        # a negative score quantile narrows the band; below zero width an interval covers
        # nothing, so it stops at zero (which only adds coverage)
        return np.maximum(self.z * sigma + q, 0.0)

    def threshold(self, excess, sigma):
        return excess - self.z * sigma


SCORES = ("normalised", "cqr", "cqr-sided", "plain")


def make_score(name: str, z: float | None = None) -> Score:
    if name == "cqr-sided":
        return SidedScore()
    if name == "plain":
        return PlainScore()
    if name == "normalised":
        return NormalisedScore()
    if name == "cqr":
        return QuantileScore(z if z is not None else QuantileScore.z)
    raise SctkError(f"Unknown conformity score {name!r}; use one of {', '.join(SCORES)}.")


def _too_few(n: int, alpha: float, where: str = "") -> SctkError:
    """WHERE: '' or ' of group G' (Mondrian calibration counts per group)."""
    return SctkError(
        f"The calibration set{where} has {n} points, too few for alpha={alpha}: it needs at "
        f"least {min_points(alpha)}; use a larger calibration set or a larger alpha."
    )


def _rank(n: int, alpha: float) -> int:
    """The rank of the conformal quantile among N scores: ceil((n + 1)(1 - alpha))."""
    return math.ceil((n + 1) * (1.0 - alpha))


@dataclass
class SplitCalibrator(ConformalCalibrator):
    """Split conformal with any Score, optionally per group (Mondrian).

    `scores_` holds every calibration score (pooled); `groups_` the sorted scores of each
    group when fitted with groups. A group calibration never saw gets the pooled scores (the
    marginal guarantee only)."""

    score: Score = field(default_factory=NormalisedScore)
    groups_: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.normalized = self.score.name == "normalised"

    def fit(self, y, mu, sigma=None, groups=None):
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        if y.shape != mu.shape:
            raise SctkError(
                f"Calibration targets and predictions differ in length ({y.size} vs {mu.size})."
            )
        sigma = np.ones_like(mu) if sigma is None else np.asarray(sigma, dtype=np.float64)
        s = self.score.scores(y, mu, sigma)
        if not np.all(np.isfinite(s)):
            raise SctkError("The calibration scores hold NaN or infinite values.")
        self.scores_ = np.sort(s)
        self.groups_ = {}
        if groups is not None:
            keys = group_keys(groups)
            for g in np.unique(keys):
                self.groups_[str(g)] = np.sort(s[keys == g])
        return self

    def _q(self, scores: np.ndarray, alpha: float, where: str = "") -> float:
        if scores.size == 0:
            raise SctkError("The model is not calibrated; fit it with a calibration set.")
        k = _rank(scores.size, alpha)
        if k > scores.size:
            raise _too_few(scores.size, alpha, where)
        return float(scores[k - 1])

    def quantile(self, alpha: float) -> float:
        return self._q(self.scores_, check_alpha(alpha))

    def interval(self, mu, sigma, alpha, groups=None):
        alpha = check_alpha(alpha)
        mu = np.asarray(mu, dtype=np.float64)
        sigma = np.ones_like(mu) if sigma is None else np.asarray(sigma, dtype=np.float64)
        if not self.groups_ or groups is None:
            half = self.score.half(sigma, self.quantile(alpha))
            return mu - half, mu + half
        keys = group_keys(groups)
        half = np.empty_like(mu)
        for g in np.unique(keys):
            rows = keys == g
            scores = self.groups_.get(str(g))  # a group calibration never saw: pooled
            q = self.quantile(alpha) if scores is None else self._q(scores, alpha, f" of group {g}")
            half[rows] = self.score.half(sigma[rows], q)
        return mu - half, mu + half


def group_keys(groups) -> np.ndarray:
    """Group labels as strings (a float column's 1.0 and an int's 1 are one group)."""
    values = np.asarray(groups).reshape(-1)
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    return values.astype(str)


@dataclass
class CrossCalibrator:
    """CV+: the out-of-fold scores of each of K fold models.

    For a test point x the interval runs from the floor(alpha (n + 1))-th smallest of
    mean_k(i)(x) - half(R_i) to the ceil((1 - alpha)(n + 1))-th smallest of
    mean_k(i)(x) + half(R_i) over the n training rows i (k(i) the fold model that did not
    see row i, R_i its score). Found by bisection on the count of candidates below t, which
    for each fold is one binary search in its sorted scores; the bound returned is the
    bracket's outer end, so it never lies inside the exact one."""

    score: Score
    fold_scores: list[np.ndarray]  # sorted, one array per fold
    fold_groups: list[dict[str, np.ndarray]] = field(default_factory=list)
    iterations: int = 40

    @property
    def n(self) -> int:
        return int(sum(s.size for s in self.fold_scores))

    @property
    def normalized(self) -> bool:
        return self.score.name == "normalised"

    def _kth(self, base: list[np.ndarray], sigma: list[np.ndarray], scores, k: int) -> np.ndarray:
        """The k-th smallest of base_f + half(sigma_f, R) over folds f and their scores R."""
        lo = np.min(
            [
                b + self.score.half(s, r[0])
                for b, s, r in zip(base, sigma, scores, strict=True)
                if r.size
            ],
            axis=0,
        )
        hi = np.max(
            [
                b + self.score.half(s, r[-1])
                for b, s, r in zip(base, sigma, scores, strict=True)
                if r.size
            ],
            axis=0,
        )
        lo = lo - 1e-9 * (1.0 + np.abs(lo))
        for _ in range(self.iterations):
            mid = 0.5 * (lo + hi)
            count = np.zeros(mid.shape, dtype=np.int64)
            for b, s, r in zip(base, sigma, scores, strict=True):
                if r.size:
                    count += np.searchsorted(r, self.score.threshold(mid - b, s), side="right")
            enough = count >= k
            hi = np.where(enough, mid, hi)
            lo = np.where(enough, lo, mid)
        return hi

    def interval(
        self, means: list[np.ndarray], sigmas: list[np.ndarray], alpha: float, groups=None
    ) -> tuple[np.ndarray, np.ndarray]:
        alpha = check_alpha(alpha)
        rows = means[0].shape[0]
        lower, upper = np.empty(rows), np.empty(rows)
        if groups is None or not self.fold_groups:
            parts = [(np.arange(rows), self.fold_scores, "")]
        else:
            keys = group_keys(groups)
            parts = []
            for g in np.unique(keys):
                scores = [fg.get(str(g), np.empty(0)) for fg in self.fold_groups]
                if sum(s.size for s in scores) == 0:
                    scores = self.fold_scores  # a group no fold saw: pooled
                parts.append((np.flatnonzero(keys == g), scores, f" of group {g}"))
        for idx, scores, where in parts:
            n = int(sum(s.size for s in scores))
            k = _rank(n, alpha)
            if k > n:
                raise _too_few(n, alpha, where)
            m = [mu[idx] for mu in means]
            s = [sg[idx] for sg in sigmas]
            upper[idx] = self._kth(m, s, scores, k)
            lower[idx] = -self._kth([-v for v in m], s, scores, k)
        return lower, upper


class SidedScore(QuantileScore):
    """CQR with each side of the band conformalized on its own (Romano et al.'s asymmetric
    variant): the lower scores lo - y and the upper y - hi, each at its
    ceil((n + 1)(1 - alpha / 2))-th smallest; coverage >= 1 - alpha by a union bound. On a
    skewed target the band's two sides miss by different amounts, and one symmetric
    correction widens the side that needed none."""

    name = "cqr-sided"

    def __init__(self) -> None:
        super().__init__(1.0)


@dataclass
class SidedCalibrator:
    """Split calibration for SidedScore (optionally per group, as SplitCalibrator)."""

    score: Score = field(default_factory=SidedScore)
    lower_: np.ndarray = field(default_factory=lambda: np.empty(0))
    upper_: np.ndarray = field(default_factory=lambda: np.empty(0))
    groups_: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    normalized = False

    @property
    def n(self) -> int:
        return int(self.lower_.size)

    @property
    def scores_(self) -> np.ndarray:
        return np.sort(np.maximum(self.lower_, self.upper_))

    def fit(self, y, centre, spread, groups=None):
        y, centre, spread = (
            np.asarray(a, dtype=np.float64).reshape(-1) for a in (y, centre, spread)
        )
        low, high = y - (centre - spread), (centre + spread) - y
        self.lower_, self.upper_ = np.sort(-low), np.sort(-high)
        self.groups_ = {}
        if groups is not None:
            keys = group_keys(groups)
            for g in np.unique(keys):
                rows = keys == g
                self.groups_[str(g)] = (np.sort(-low[rows]), np.sort(-high[rows]))
        return self

    @staticmethod
    def _q(scores: np.ndarray, alpha: float, where: str = "") -> float:
        if scores.size == 0:
            raise SctkError("The model is not calibrated; fit it with a calibration set.")
        k = _rank(scores.size, alpha / 2)
        if k > scores.size:
            raise SctkError(
                f"The calibration set{where} has {scores.size} points, too few for "
                f"alpha={alpha}: it needs at least {min_points(alpha / 2)} (each side of the "
                "band at alpha / 2); use a larger calibration set or a larger alpha."
            )
        return float(scores[k - 1])

    def interval(self, centre, spread, alpha, groups=None):
        alpha = check_alpha(alpha)
        centre = np.asarray(centre, dtype=np.float64)
        spread = np.asarray(spread, dtype=np.float64)
        q_lo = np.full(centre.shape, self._q(self.lower_, alpha))
        q_hi = np.full(centre.shape, self._q(self.upper_, alpha))
        if self.groups_ and groups is not None:
            keys = group_keys(groups)
            for g in np.unique(keys):
                if str(g) in self.groups_:
                    lo_s, hi_s = self.groups_[str(g)]
                    rows = keys == g
                    q_lo[rows] = self._q(lo_s, alpha, f" of group {g}")
                    q_hi[rows] = self._q(hi_s, alpha, f" of group {g}")
        lower, upper = (centre - spread) - q_lo, (centre + spread) + q_hi
        return np.minimum(lower, upper), np.maximum(lower, upper)


@dataclass
class SidedCrossCalibrator:
    """CV+ for SidedScore: each side of the band by CV+ on its own at alpha / 2. The upper
    bound is the ceil((1 - alpha / 2)(n + 1))-th smallest of hi_k(i)(x) + (y_i - hi_k(i)(x_i))
    over the training rows i, the lower one mirrored with lo - y (CrossCalibrator's search
    with plain scores, on each side's learnt quantile). No per-group form."""

    score: Score
    fold_lower: list[np.ndarray]  # sorted lo - y of each fold's rows, under its fold model
    fold_upper: list[np.ndarray]  # sorted y - hi
    iterations: int = 40
    normalized = False

    @property
    def n(self) -> int:
        return int(sum(s.size for s in self.fold_lower))

    def interval(
        self, centres: list[np.ndarray], spreads: list[np.ndarray], alpha: float, groups=None
    ) -> tuple[np.ndarray, np.ndarray]:
        alpha = check_alpha(alpha)
        n = self.n
        k = _rank(n, alpha / 2)
        if k > n:
            raise SctkError(
                f"The calibration set has {n} points, too few for alpha={alpha}: it needs at "
                f"least {min_points(alpha / 2)} (each side of the band at alpha / 2); use a "
                "larger calibration set or a larger alpha."
            )
        search = CrossCalibrator(PlainScore(), self.fold_upper, iterations=self.iterations)
        ones = [np.ones_like(c) for c in centres]
        his = [c + s for c, s in zip(centres, spreads, strict=True)]
        los = [-(c - s) for c, s in zip(centres, spreads, strict=True)]
        upper = search._kth(his, ones, self.fold_upper, k)
        lower = -search._kth(los, ones, self.fold_lower, k)
        return np.minimum(lower, upper), np.maximum(lower, upper)
