"""What security adds: the health checks of the keyring, accounts and tokens.

Declared in sctk's pyproject.toml under [project.entry-points."sctk.plugins"]; see
sctk.plugins for how a registry calls these."""

from __future__ import annotations


def health_checks() -> None:
    import sctk.security.checks  # noqa: F401 - its decorators declare them
