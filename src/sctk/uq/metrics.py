"""Scores of predictive intervals and distributions (lower is better unless said)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from sctk.uq.conformal import check_alpha


def coverage(y, lower, upper) -> float:
    """Fraction of targets inside [lower, upper] (higher is better, up to the nominal)."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= lower) & (y <= upper)))


def mean_width(lower, upper) -> float:
    return float(np.mean(np.asarray(upper) - np.asarray(lower)))


def interval_score(y, lower, upper, alpha: float) -> float:
    """The Winkler (interval) score: width plus 2/alpha times the distance outside."""
    alpha = check_alpha(alpha)
    y, lower, upper = (np.asarray(a, dtype=np.float64) for a in (y, lower, upper))
    below = np.maximum(lower - y, 0.0)
    above = np.maximum(y - upper, 0.0)
    return float(np.mean((upper - lower) + (2.0 / alpha) * (below + above)))


def gaussian_nll(y, mu, sigma) -> float:
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    sigma = np.maximum(sigma, 1e-12)
    return float(np.mean(0.5 * np.log(2 * math.pi * sigma**2) + (y - mu) ** 2 / (2 * sigma**2)))


def gaussian_crps(y, mu, sigma) -> float:
    """Closed-form CRPS of N(mu, sigma^2) at y."""
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    sigma = np.maximum(sigma, 1e-12)
    z = (y - mu) / sigma
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + erf(z / math.sqrt(2)))
    return float(np.mean(sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))))


def calibration_curve(y, interval_at, levels=None) -> tuple[np.ndarray, np.ndarray]:
    """Empirical coverage of the central intervals at each nominal level.

    INTERVAL_AT(alpha) returns (lower, upper) at miscoverage alpha.
    """
    if levels is None:
        levels = np.linspace(0.05, 0.95, 19)
    levels = np.asarray(levels, dtype=np.float64)
    observed = np.array([coverage(y, *interval_at(1.0 - p)) for p in levels])
    return levels, observed


def miscalibration_area(levels, observed) -> float:
    """Mean absolute gap between nominal and observed coverage over the levels."""
    return float(np.mean(np.abs(np.asarray(observed) - np.asarray(levels))))
