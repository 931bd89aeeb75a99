"""Split conformal calibration and the interval metrics."""

from __future__ import annotations

import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.uq import metrics
from sctk.uq.conformal import ConformalCalibrator, min_points


def _heteroscedastic(rng, n):
    x = rng.uniform(-3, 3, n)
    sigma = 0.1 + 0.5 * np.abs(x)
    return x, np.sin(x) + rng.normal(0, sigma), np.sin(x), sigma


def test_normalised_intervals_cover_at_the_nominal_rate_on_average():
    rng = np.random.default_rng(7)
    covered = []
    for _ in range(40):
        _, y_cal, mu_cal, s_cal = _heteroscedastic(rng, 500)
        _, y_test, mu_test, s_test = _heteroscedastic(rng, 2000)
        cal = ConformalCalibrator(normalized=True).fit(y_cal, mu_cal, s_cal)
        covered.append(metrics.coverage(y_test, *cal.interval(mu_test, s_test, 0.1)))
    assert 0.88 <= float(np.mean(covered)) <= 0.93
    assert min(covered) > 0.85


def test_plain_intervals_have_one_width_and_normalised_ones_follow_sigma():
    rng = np.random.default_rng(1)
    _, y, mu, sigma = _heteroscedastic(rng, 1000)
    plain = ConformalCalibrator(normalized=False).fit(y, mu)
    lo, hi = plain.interval(mu, None, 0.1)
    assert np.allclose(hi - lo, (hi - lo)[0])
    norm = ConformalCalibrator(normalized=True).fit(y, mu, sigma)
    lo, hi = norm.interval(mu, sigma, 0.1)
    assert np.corrcoef(hi - lo, sigma)[0, 1] > 0.999
    # with the true sigma the normalised interval is narrower on average at equal coverage
    assert metrics.mean_width(*norm.interval(mu, sigma, 0.1)) < metrics.mean_width(
        *plain.interval(mu, None, 0.1)
    )


def test_the_quantile_is_the_finite_sample_order_statistic():
    cal = ConformalCalibrator(normalized=False).fit(np.arange(1, 20, dtype=float), np.zeros(19))
    # n = 19, alpha = 0.1: k = ceil(20 * 0.9) = 18 -> the 18th smallest score
    assert cal.quantile(0.1) == 18.0
    assert min_points(0.1) == 9 and min_points(0.05) == 19


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_alpha_outside_the_open_unit_interval_is_refused(alpha):
    cal = ConformalCalibrator(normalized=False).fit(np.ones(50), np.zeros(50))
    with pytest.raises(SctkError, match="alpha must lie strictly between 0 and 1"):
        cal.quantile(alpha)


def test_a_calibration_set_too_small_for_alpha_is_refused():
    cal = ConformalCalibrator(normalized=False).fit(np.ones(8), np.zeros(8))
    with pytest.raises(SctkError, match="8 points, too few for alpha=0.1: it needs at least 9"):
        cal.quantile(0.1)


def test_nan_and_mismatched_inputs_are_refused():
    with pytest.raises(SctkError, match="NaN or infinite"):
        ConformalCalibrator(normalized=False).fit(np.array([1.0, np.nan]), np.zeros(2))
    with pytest.raises(SctkError, match="differ in length"):
        ConformalCalibrator(normalized=False).fit(np.ones(3), np.zeros(2))


def test_metrics_on_hand_computed_cases():
    y = np.array([0.0, 1.0, 5.0])
    lo, hi = np.array([-1.0, 0.0, 0.0]), np.array([1.0, 2.0, 2.0])
    assert metrics.coverage(y, lo, hi) == pytest.approx(2 / 3)
    assert metrics.mean_width(lo, hi) == 2.0
    # the third point is 3 above its interval: 2 + (2 / 0.5) * 3 = 14
    assert metrics.interval_score(y, lo, hi, 0.5) == pytest.approx((2 + 2 + 14) / 3)
    # CRPS of N(0, 1) at 0 is 2 * pdf(0) - 1 / sqrt(pi)
    assert metrics.gaussian_crps([0.0], [0.0], [1.0]) == pytest.approx(
        2 / np.sqrt(2 * np.pi) - 1 / np.sqrt(np.pi)
    )
    assert metrics.gaussian_nll([0.0], [0.0], [1.0]) == pytest.approx(0.5 * np.log(2 * np.pi))


def test_calibration_curve_of_calibrated_intervals_is_near_the_diagonal():
    rng = np.random.default_rng(3)
    _, y_cal, mu_cal, s_cal = _heteroscedastic(rng, 4000)
    _, y, mu, s = _heteroscedastic(rng, 4000)
    cal = ConformalCalibrator(normalized=True).fit(y_cal, mu_cal, s_cal)
    levels, observed = metrics.calibration_curve(y, lambda a: cal.interval(mu, s, a))
    assert metrics.miscalibration_area(levels, observed) < 0.02
