"""sctk, the Scientific Computing Toolkit."""

from __future__ import annotations

from functools import cache


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sctk")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # read on first use: importlib.metadata costs ~0.1 s, which commands that never show
    # the version (a one-file restore, a health probe) should not pay
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'sctk' has no attribute {name!r}")
