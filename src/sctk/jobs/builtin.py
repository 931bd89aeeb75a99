"""Job kinds every installation has: ones that exercise the queue itself."""

from __future__ import annotations

import time
from typing import Any

from sctk.jobs.kinds import JobContext, job_kind


@job_kind("noop", "Do nothing; measures the queue's own overhead.")
def noop(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"echo": params.get("echo")}


@job_kind("sleep", "Sleep in steps, reporting progress: for trying cancellation and events.")
def sleep(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    seconds = float(params.get("seconds", 1.0))
    steps = max(1, int(params.get("steps", 10)))
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    return {"slept": seconds}


@job_kind("fail", "Always raise: for trying retries and dead jobs.")
def fail(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    raise RuntimeError(str(params.get("message", "this job always fails")))
