"""Fixtures shared by the monitoring tests."""

from tests.security.conftest import engine  # noqa: F401
