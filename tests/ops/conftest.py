"""Fixtures for the operations tests."""

from tests.security.conftest import engine  # noqa: F401
