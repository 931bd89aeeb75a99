"""Job kinds every installation has: ones that exercise the queue itself."""

from __future__ import annotations

import math
import time
from typing import Any

from sctk.errors import SctkError
from sctk.jobs.kinds import JobContext, job_kind

MAX_SLEEP_SECONDS = 60.0
"""The longest a `sleep` job may sleep: a diagnostic must not be a way to hold a worker."""
MAX_SLEEP_STEPS = 10_000
_SLICE = 0.1  # the longest the sleep goes without looking whether it must stop


@job_kind("noop", "Do nothing; measures the queue's own overhead.")
def noop(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"echo": params.get("echo")}


def _sleep_params(params: dict[str, Any]) -> tuple[float, int]:
    seconds, steps = params.get("seconds", 1.0), params.get("steps", 10)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 <= seconds <= MAX_SLEEP_SECONDS
    ):
        raise SctkError(
            f"A sleep job's 'seconds' must be a number from 0 to {MAX_SLEEP_SECONDS:g}, not "
            f"{str(seconds)[:40]}; it is a diagnostic, not a way to hold a worker."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_SLEEP_STEPS:
        raise SctkError(
            f"A sleep job's 'steps' must be a whole number from 1 to {MAX_SLEEP_STEPS}, not "
            f"{str(steps)[:40]}."
        )
    return float(seconds), steps


def _check_sleep(params: dict[str, Any]) -> None:
    _sleep_params(params)


@job_kind(
    "sleep",
    f"Sleep (at most {MAX_SLEEP_SECONDS:g} s) in steps, reporting progress: for trying "
    "cancellation and events.",
    check=_check_sleep,
)
def sleep(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    seconds, steps = _sleep_params(params)
    start = time.monotonic()
    for i in range(steps):
        step_end = start + seconds * (i + 1) / steps
        # in short slices, so that a cancel stops it within one of them whatever the steps
        while (left := step_end - time.monotonic()) > 0:
            ctx.checkpoint()
            time.sleep(min(left, _SLICE))
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    return {"slept": seconds}


@job_kind("fail", "Always raise: for trying retries and dead jobs.")
def fail(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    raise RuntimeError(str(params.get("message", "this job always fails")))
