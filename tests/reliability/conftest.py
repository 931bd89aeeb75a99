"""The reliability suite (marker `reliability`): bounded load, fuzzing and faults on real
servers. Run alone with `pytest -m reliability`."""

from __future__ import annotations


def pytest_configure(config) -> None:
    # also declared in pyproject.toml; declared here too so that the suite runs under
    # --strict-markers from any checkout of this directory
    config.addinivalue_line(
        "markers", "reliability: bounded load, fuzzing and fault tests on real servers"
    )
