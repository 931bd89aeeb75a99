"""HybridRegressor: reproducible, calibrated, and clear about bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes

from sctk.errors import SctkError
from sctk.uq import metrics
from sctk.uq.hybrid import HybridRegressor

# these tests are about the network: the method is fixed (the automatic choice has its own)
FAST = {"epochs": 8, "hidden": (32, 32), "patience": 5, "method": "mlp-normalised"}


def heteroscedastic(rng, n):
    """y = sin(x0) + 0.3 x1 + noise whose sd (0.1 + 0.5 |x0|) is known."""
    X = rng.uniform(-3, 3, (n, 2))
    sigma = 0.1 + 0.5 * np.abs(X[:, 0])
    return X, np.sin(X[:, 0]) + 0.3 * X[:, 1] + rng.normal(0, sigma), sigma


def test_seeded_fits_are_reproducible():
    rng = np.random.default_rng(0)
    X, y, _ = heteroscedastic(rng, 600)
    a = HybridRegressor(physics="tests.uq.physics_examples:sine_of_first", seed=3, **FAST)
    b = HybridRegressor(physics="tests.uq.physics_examples:sine_of_first", seed=3, **FAST)
    out_a = a.fit(X, y).predict_interval(X[:50])
    out_b = b.fit(X, y).predict_interval(X[:50])
    for key in ("mean", "lower", "upper", "sigma", "psi"):
        assert np.array_equal(out_a[key], out_b[key]), key
    other = HybridRegressor(seed=4, **FAST).fit(X, y).predict(X[:50])
    assert not np.array_equal(other, out_a["mean"])


def test_coverage_over_random_splits_of_a_heteroscedastic_problem():
    rng = np.random.default_rng(11)
    covered = []
    for split in range(20):
        X, y, _ = heteroscedastic(rng, 3000)
        model = HybridRegressor(seed=split, **FAST)
        model.fit(X[:1000], y[:1000], X_cal=X[1000:2000], y_cal=y[1000:2000])
        out = model.predict_interval(X[2000:], alpha=0.1)
        covered.append(metrics.coverage(y[2000:], out["lower"], out["upper"]))
    assert 0.88 <= np.mean(covered) <= 0.93, covered
    assert min(covered) >= 0.85, covered  # calibration and test sets hold 1,000 points each


def test_coverage_over_random_splits_of_the_diabetes_data():
    data = load_diabetes()
    X, y = data.data, data.target
    covered = []
    for split in range(20):
        order = np.random.default_rng(split).permutation(len(y))
        train, cal, test = order[:200], order[200:321], order[321:]
        model = HybridRegressor(seed=split, **FAST)
        model.fit(X[train], y[train], X_cal=X[cal], y_cal=y[cal])
        out = model.predict_interval(X[test], alpha=0.1)
        covered.append(metrics.coverage(y[test], out["lower"], out["upper"]))
    assert 0.88 <= np.mean(covered) <= 0.93, covered


def test_normalised_intervals_adapt_to_the_noise():
    rng = np.random.default_rng(5)
    X, y, sigma = heteroscedastic(rng, 4000)
    model = HybridRegressor(seed=0, epochs=40, patience=10, method="mlp-normalised").fit(
        X[:2000], y[:2000], X_cal=X[2000:3000], y_cal=y[2000:3000]
    )
    out = model.predict_interval(X[3000:], alpha=0.1)
    width = out["upper"] - out["lower"]
    noisy = sigma[3000:] > np.quantile(sigma[3000:], 0.8)
    quiet = sigma[3000:] < np.quantile(sigma[3000:], 0.2)
    assert width[noisy].mean() > 2 * width[quiet].mean()
    assert metrics.coverage(y[3000:][noisy], out["lower"][noisy], out["upper"][noisy]) >= 0.8
    assert np.all((out["psi"] > 0) & (out["psi"] <= 1))


def test_the_scheduled_alpha_stays_within_its_bounds():
    rng = np.random.default_rng(2)
    X, y, _ = heteroscedastic(rng, 800)
    model = HybridRegressor(
        physics="tests.uq.physics_examples:sine_of_first",
        alpha_mode="scheduled",
        alpha=0.5,
        alpha_bounds=(0.2, 0.6),
        scheduler={"high": 0.5, "low": 0.1, "up": 0.1},
        seed=0,
        **FAST,
    ).fit(X, y)
    alphas = [h["alpha"] for h in model.history_]
    assert all(0.2 - 1e-6 <= a <= 0.6 + 1e-6 for a in alphas), alphas
    assert max(alphas) > 0.5  # the scheduler did move it


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda m, X: m.predict(X[:, :1]), "X has 1 features but the model was trained on 2"),
        (lambda m, X: m.predict(np.where(X > 1, np.nan, X)), "NaN or infinite"),
        (lambda m, X: m.predict_interval(X, alpha=1.0), "alpha must lie strictly between"),
        (lambda m, X: m.predict_interval(X, alpha=0.0001), "too few for alpha=0.0001"),
        (lambda m, X: m.predict(np.zeros((2, 2, 2))), "2D array"),
    ],
)
def test_bad_input_gets_one_sentence(call, fragment):
    rng = np.random.default_rng(0)
    X, y, _ = heteroscedastic(rng, 300)
    model = HybridRegressor(seed=0, **FAST).fit(X, y)
    with pytest.raises(SctkError, match=fragment):
        call(model, X)


def test_bad_configuration_gets_one_sentence():
    X = np.zeros((20, 2))
    y = np.zeros(20)
    with pytest.raises(SctkError, match="'tests.uq.physics_examples:missing' is not registered"):
        HybridRegressor(physics="tests.uq.physics_examples:missing", **FAST).fit(X, y)
    with pytest.raises(SctkError, match="one finite value per row"):
        HybridRegressor(physics="tests.uq.physics_examples:wrong_length", **FAST).fit(X, y)
    with pytest.raises(SctkError, match="alpha_mode"):
        HybridRegressor(alpha_mode="guess", **FAST).fit(X, y)
    with pytest.raises(SctkError, match="not fitted"):
        HybridRegressor().predict(X)
    with pytest.raises(SctkError, match="nll_beta must lie between 0 and 1"):
        HybridRegressor(nll_beta=2.0, **FAST).fit(X, y)


def test_the_hand_carried_input_gradient_matches_autograd():
    from sctk.uq.networks import ResidualMLP

    torch.manual_seed(3)
    net = ResidualMLP(5, (16, 8, 4))
    x = torch.randn(64, 5)
    mean, log_sigma, grad = net.forward_with_input_gradient(x)
    x_auto = x.clone().requires_grad_(True)
    mean_auto, log_sigma_auto = net(x_auto)
    (grad_auto,) = torch.autograd.grad(mean_auto.sum(), x_auto)
    assert torch.allclose(mean, mean_auto) and torch.allclose(log_sigma, log_sigma_auto)
    assert torch.allclose(grad, grad_auto, atol=1e-6)
