"""What security adds: the health checks of the keyring, accounts and tokens.

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def health_checks() -> None:
    import sctk.security.checks  # noqa: F401 - its decorators declare them
