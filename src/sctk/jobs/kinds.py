"""The registry of job kinds: what a job of each kind runs.

A kind's function is a plain top-level function (so a process pool or a Dask worker can
pickle it) taking the job's parameters and a JobContext, and returning a JSON-able result.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sctk.errors import SctkError

# Modules that register job kinds when imported; each domain adds its own.
KIND_MODULES = ["sctk.jobs.builtin", "sctk.pipeline.jobs", "sctk.uq.jobs", "sctk.backup.jobs"]


class JobContext(Protocol):
    """What a running job may use. Progress and log lines become job events."""

    job_id: int

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1]; raises JobCancelled when the job was cancelled."""

    def log(self, line: str) -> None:
        """Append a log line to the job's events."""

    @property
    def home(self) -> str:
        """The data directory (a path string, so that it pickles everywhere)."""


class JobCancelled(Exception):
    """Raised inside a job by ctx.progress() once cancellation was requested."""


@dataclass(frozen=True)
class JobKind:
    name: str
    func: Callable[[dict[str, Any], JobContext], dict[str, Any] | None]
    description: str
    permission: str  # who may submit it (see sctk.security.roles)
    # checks a submission's parameters (one sentence, a 400) before a job is queued
    check: Callable[[dict[str, Any]], Any] | None = None


_KINDS: dict[str, JobKind] = {}


def job_kind(name: str, description: str, permission: str = "jobs.run", check=None):
    """Register FUNC as the job kind NAME; CHECK(params), when given, refuses bad parameters
    at submission."""

    def register(func):
        _KINDS[name] = JobKind(name, func, description, permission, check)
        return func

    return register


def kinds() -> dict[str, JobKind]:
    for module in KIND_MODULES:
        importlib.import_module(module)
    return dict(_KINDS)


def get_kind(name: str) -> JobKind:
    known = kinds()
    if name not in known:
        raise SctkError(
            f"Unknown job kind '{name[:100]}'; known kinds: {', '.join(sorted(known))}."
        )
    return known[name]
