"""sctk, the Scientific Computing Toolkit."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sctk")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
