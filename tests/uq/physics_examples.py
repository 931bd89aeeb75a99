"""Physics functions the tests name as 'tests.uq.physics_examples:NAME', as a user would."""

import numpy as np


def sine_of_first(X: np.ndarray) -> np.ndarray:
    return np.sin(X[:, 0])


def wrong_length(X: np.ndarray) -> np.ndarray:
    return np.zeros(len(X) + 1)


def small_flow(velocity: np.ndarray) -> np.ndarray:
    """The demo's coarse physics on the small grid the field tests use."""
    from sctk.uq.flow import FlowProblem, coarse_physics

    return coarse_physics(velocity, FlowProblem(n=16, fine=32, fine_steps=32))


def inverse_of_first(X: np.ndarray) -> np.ndarray:
    """A physics that divides by a feature: infinite on a row of zeros."""
    return 1.0 / X[:, 0]
