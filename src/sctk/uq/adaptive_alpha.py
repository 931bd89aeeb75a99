"""Adaptive conformal inference (Gibbs and Candes, 2021): the miscoverage an interval is
built at, moved online by the intervals' own misses so that coverage holds under drift.

After each observed value y_t, with err_t = 1 when y_t fell outside the interval built at
alpha_t and 0 otherwise,

    alpha_{t+1} = alpha_t + gamma * (alpha - err_t)

so a miss lowers alpha_t (wider intervals next) and a hit raises it a little. Whatever the
data do, the long-run miss rate over T steps is within (max(alpha_1, 1 - alpha_1) + gamma)
/ (gamma T) of alpha (their Proposition 4.1): no exchangeability is needed.

alpha_t may leave (0, 1). The calibration holds n scores, so the conformal quantile exists
only for alpha_t >= 1 / (n + 1); below that the interval Gibbs and Candes use is the whole
line, and here it is the widest the calibration knows (its largest score), so that a bound
stays a finite number. Above 1 the interval would be empty; here the narrowest (the
smallest score). alpha_t itself is kept unclipped, so the update keeps its guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sctk.errors import SctkError

DEFAULT_GAMMA = 0.005


def check_gamma(gamma: float) -> float:
    if not (isinstance(gamma, int | float) and 0.0 < float(gamma) <= 0.5) or math.isnan(gamma):
        raise SctkError(f"gamma (the adaptive step) must lie in (0, 0.5]; got {gamma!r}.")
    return float(gamma)


def usable_alpha(alpha_t: float, n: int) -> float:
    """The conformal level for ALPHA_T with N calibration scores, clipped to the levels the
    scores give (see the module docstring): what a prediction and an observation ask the
    model's calibration for."""
    lowest = 1.0 / (n + 1) + 1e-12
    return float(min(max(alpha_t, lowest), 1.0 - 1e-6))


@dataclass
class Stream:
    """The outcome of running ACI over a batch: each row's interval and miss, the alpha_t
    each was built at, and the alpha_t for what comes next."""

    lower: np.ndarray
    upper: np.ndarray
    alpha_used: np.ndarray
    covered: np.ndarray
    alpha_next: float


def run(
    interval_at: Callable[[float], tuple[np.ndarray, np.ndarray]],
    n_calibration: int,
    y: np.ndarray,
    alpha: float,
    gamma: float,
    alpha_t: float,
) -> Stream:
    """Build each row's interval at the current alpha_t, see its value, update alpha_t; in
    row order (the order the values were observed in).

    INTERVAL_AT(a) gives every row's (lower, upper) at miscoverage a from the model's own
    calibration, whatever its score (normalised, CQR, CV+, per group): alpha_t is turned
    into the conformal level a prediction would use (`usable_alpha`), and since only the
    rank of the quantile changes between rows, each rank is asked for once."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = y.size
    lower, upper = np.empty(n), np.empty(n)
    used, covered = np.empty(n), np.empty(n, dtype=bool)
    by_rank: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in range(n):
        level = usable_alpha(alpha_t, n_calibration)
        rank = math.ceil((n_calibration + 1) * (1.0 - level))
        if rank not in by_rank:
            lo, hi = interval_at(level)
            by_rank[rank] = (np.asarray(lo).reshape(-1), np.asarray(hi).reshape(-1))
        lo, hi = by_rank[rank]
        lower[i], upper[i] = lo[i], hi[i]
        used[i] = alpha_t
        covered[i] = lower[i] <= y[i] <= upper[i]
        alpha_t = alpha_t + gamma * (alpha - (0.0 if covered[i] else 1.0))
    return Stream(lower, upper, used, covered, float(alpha_t))


def effective_alpha(session: Any, row: Any, alpha: float) -> float:
    """The miscoverage a prediction of model ROW at ALPHA is built at: alpha_t when the model
    is in adaptive mode for that alpha (made a valid conformal level by usable_alpha), else
    ALPHA unchanged."""
    from sctk.storage.models import UqAdaptive

    state = session.get(UqAdaptive, row.id)
    if state is None or not state.enabled or abs(state.alpha - alpha) > 1e-12:
        return alpha
    n = int((row.metrics or {}).get("n_calibration") or 0)
    if n <= 0:
        return alpha
    return usable_alpha(state.alpha_t, n)
