"""A physics function an admin lists in sctk.toml ([uq] physics_allowed) in the tests; never
registered by the test process itself, so only that setting can admit it."""

import numpy as np


def double_first(X: np.ndarray) -> np.ndarray:
    return 2.0 * np.asarray(X, dtype=np.float64)[:, 0]
