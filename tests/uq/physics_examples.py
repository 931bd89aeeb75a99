"""Physics functions the tests name as 'tests.uq.physics_examples:NAME', as a user would."""

import os
import time

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


HOLD_FILE_ENV = "SCTK_TEST_HOLD_FILE"


def hold_first_caller(X: np.ndarray) -> np.ndarray:
    """sin of the first feature; but where SCTK_TEST_HOLD_FILE is set, the first process to
    call it writes its pid there and hangs (until killed, at most a minute), so that a test
    knows which server holds a prediction in flight. Later callers pass."""
    path = os.environ.get(HOLD_FILE_ENV)
    if path:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # a hold, not a wait for a condition
                time.sleep(0.1)
    return np.sin(X[:, 0])


NAMES = ("sine_of_first", "wrong_length", "small_flow", "inverse_of_first", "hold_first_caller")


def register() -> None:
    """Register these functions in this process, as a user's own Python code would (a string
    names a physics only through sctk.uq.physics_registry); a served process of a test gets
    them from [uq] physics_allowed instead."""
    import sys

    from sctk.uq import physics_registry

    module = sys.modules[__name__]
    for name in NAMES:
        physics_registry.register(f"tests.uq.physics_examples:{name}", getattr(module, name))
