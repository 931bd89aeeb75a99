"""Split conformal calibration: intervals with finite-sample marginal coverage >= 1 - alpha.

With n calibration scores s_i (exchangeable with the test point's score), the interval built
from the ceil((n + 1)(1 - alpha))-th smallest score covers the test point with probability at
least 1 - alpha. Normalised scores |y - mu| / sigma give intervals mu +- q * sigma that widen
where the model expects more noise; plain scores |y - mu| give one width for every point.
The scores are kept sorted, so any alpha can be asked at prediction time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sctk.errors import SctkError

MIN_SIGMA = 1e-12


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, int | float) and 0.0 < float(alpha) < 1.0) or math.isnan(alpha):
        raise SctkError(f"alpha must lie strictly between 0 and 1; got {alpha!r}.")
    return float(alpha)


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise SctkError(f"{name} holds {bad} NaN or infinite value(s); remove or fill them.")
    return array


def min_points(alpha: float) -> int:
    """The fewest calibration points for which the conformal quantile at ALPHA is finite."""
    return math.ceil(1.0 / check_alpha(alpha)) - 1


@dataclass
class ConformalCalibrator:
    """Holds sorted nonconformity scores; `normalized` selects |y - mu| / sigma."""

    normalized: bool = True
    scores_: np.ndarray = field(default_factory=lambda: np.empty(0))

    def fit(self, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray | None = None):
        y, mu = _finite("y", y), _finite("the predicted mean", mu)
        if y.shape != mu.shape:
            raise SctkError(
                f"Calibration targets and predictions differ in length ({y.size} vs {mu.size})."
            )
        residual = np.abs(y - mu)
        if self.normalized:
            if sigma is None:
                raise SctkError("Normalised conformal scores need the predicted sigma.")
            sigma = np.maximum(_finite("sigma", sigma), MIN_SIGMA)
            residual = residual / sigma
        self.scores_ = np.sort(residual)
        return self

    @property
    def n(self) -> int:
        return int(self.scores_.size)

    def quantile(self, alpha: float) -> float:
        """The conformal quantile: the ceil((n + 1)(1 - alpha))-th smallest score."""
        alpha = check_alpha(alpha)
        if self.n == 0:
            raise SctkError("The model is not calibrated; fit it with a calibration set.")
        k = math.ceil((self.n + 1) * (1.0 - alpha))
        if k > self.n:
            raise SctkError(
                f"The calibration set has {self.n} points, too few for alpha={alpha}: "
                f"it needs at least {min_points(alpha)}; use a larger calibration set or a "
                "larger alpha."
            )
        return float(self.scores_[k - 1])

    def interval(
        self, mu: np.ndarray, sigma: np.ndarray | None, alpha: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds at miscoverage ALPHA."""
        q = self.quantile(alpha)
        mu = np.asarray(mu, dtype=np.float64)
        if self.normalized:
            if sigma is None:
                raise SctkError("Normalised conformal intervals need the predicted sigma.")
            half = q * np.maximum(np.asarray(sigma, dtype=np.float64), MIN_SIGMA)
        else:
            half = np.full_like(mu, q)
        return mu - half, mu + half
