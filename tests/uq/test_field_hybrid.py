"""FieldHybridRegressor on the flow demo: calibrated, better than the physics alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sctk.errors import SctkError
from sctk.uq import metrics
from sctk.uq.field_hybrid import FieldHybridRegressor
from sctk.uq.flow import FlowProblem, make_pairs

SMALL = FlowProblem(n=16, fine=32, fine_steps=32)


def small_physics(velocity):
    from sctk.uq.flow import coarse_physics

    return coarse_physics(velocity, SMALL)


@pytest.fixture(scope="module")
def flow():
    return make_pairs(120, seed=0, problem=SMALL)


@pytest.fixture(scope="module")
def model(flow):
    X, _, Y = flow
    return FieldHybridRegressor(
        physics=small_physics, dx=2 * np.pi / 16, epochs=25, width=16, seed=0
    ).fit(X[:40], Y[:40], X[40:60], Y[40:60])


def test_coverage_over_random_calibration_and_test_splits(flow, model):
    X, _, Y = flow
    pool_X, pool_Y = X[40:], Y[40:]
    mean, sigma = model._mean_sigma(pool_X)
    covered = []
    for split in range(20):
        order = np.random.default_rng(split).permutation(len(pool_X))
        cal, test = order[:40], order[40:]
        model.calibrator_.fit(pool_Y[cal].ravel(), mean[cal].ravel(), sigma[cal].ravel())
        lower, upper = model.calibrator_.interval(mean[test], sigma[test], 0.1)
        covered.append(metrics.coverage(pool_Y[test], lower, upper))
    assert 0.88 <= np.mean(covered) <= 0.93, covered
    assert min(covered) >= 0.85, covered  # 10,240 calibration and test points each


def test_the_hybrid_beats_the_physics_alone(flow, model):
    X, S, Y = flow
    out = model.predict_interval(X[60:], alpha=0.1)
    hybrid = np.sqrt(np.mean((out["mean"] - Y[60:]) ** 2))
    physics = np.sqrt(np.mean((S[60:] - Y[60:]) ** 2))
    assert hybrid < 0.9 * physics, (hybrid, physics)
    assert out["psi"].shape == (60,) and np.all((out["psi"] > 0) & (out["psi"] <= 1))
    assert out["lower"].shape == X[60:].shape


def test_bad_fields_are_refused(flow, model):
    X, _, _ = flow
    with pytest.raises(SctkError, match="shape"):
        model.predict(X[:, :, :8, :8])
    with pytest.raises(SctkError, match="NaN or infinite"):
        model.predict(np.where(X > 0.5, np.inf, X))
    with pytest.raises(SctkError, match="B, C>=2, H, W"):
        model.predict(X[0])


def test_log_sigma_is_clamped_in_value_yet_keeps_its_gradient():
    """A log sigma beyond its bounds is clamped, but the NLL still pulls it back: a plain
    clamp's zero gradient left flow-demo pixels stuck at the upper bound."""
    from sctk.uq.networks import LOG_SIGMA_MAX, LOG_SIGMA_MIN, clamp_passing_gradient

    raw = torch.tensor([-20.0, 0.5, 50.0], requires_grad=True)
    out = clamp_passing_gradient(raw)
    assert out.tolist() == [LOG_SIGMA_MIN, 0.5, LOG_SIGMA_MAX]
    out.sum().backward()
    assert raw.grad.tolist() == [1.0, 1.0, 1.0]
