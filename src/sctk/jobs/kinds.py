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

# Parameter names no job may be given: who a job runs for comes from the credential that
# submitted it (JobContext.owner), never from what the caller writes.
RESERVED_PARAMS = frozenset({"owner"})

# Modules that register job kinds when imported; each domain adds its own.
KIND_MODULES = [
    "sctk.jobs.builtin",
    "sctk.pipeline.jobs",
    "sctk.uq.jobs",
    "sctk.uq.predict_job",
    "sctk.backup.jobs",
]


class JobContext(Protocol):
    """What a running job may use. Progress and log lines become job events."""

    job_id: int
    owner: str  # who submitted the job: record what it makes under this name

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1]; raises JobCancelled when the job was cancelled."""

    def log(self, line: str) -> None:
        """Append a log line to the job's events."""

    def cancelled(self) -> bool:
        """Whether the job must stop now (cancelled or past its maximum run time); cheap
        enough to ask between any two steps."""

    def checkpoint(self) -> None:
        """Raise (JobCancelled, JobTimedOut) when the job must stop; call it between steps."""

    @property
    def home(self) -> str:
        """The data directory (a path string, so that it pickles everywhere)."""


class JobCancelled(Exception):
    """Raised inside a job by ctx.progress() or ctx.checkpoint() once cancellation was
    requested."""


class JobTimedOut(Exception):
    """Raised inside a job by ctx.checkpoint() once it ran past its maximum run time."""


@dataclass(frozen=True)
class JobKind:
    name: str
    func: Callable[[dict[str, Any], JobContext], dict[str, Any] | None]
    description: str
    permission: str  # who may submit it (see sctk.security.roles)
    # refuses bad parameters at submission with one sentence (SctkError), not a failed job
    check: Callable[[dict[str, Any]], None] | None = None


_KINDS: dict[str, JobKind] = {}


def job_kind(
    name: str,
    description: str,
    permission: str = "jobs.run",
    check: Callable[[dict[str, Any]], None] | None = None,
):
    """Register FUNC as the job kind NAME; CHECK(params), if given, runs at submission."""

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
