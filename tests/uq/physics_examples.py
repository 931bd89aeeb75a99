"""Physics functions the tests name as 'tests.uq.physics_examples:NAME', as a user would."""

import numpy as np


def sine_of_first(X: np.ndarray) -> np.ndarray:
    return np.sin(X[:, 0])


def wrong_length(X: np.ndarray) -> np.ndarray:
    return np.zeros(len(X) + 1)
